"""MkDocs hook: the CLI reference's tables, built from the installed config registry when the site is built.

The page holds a placeholder; this hook replaces it with every engine key of train.yaml (its sections data, trainer,
optim, ema and run) and every option of the domain, objective and encoder groups with its own keys. Defaults and
meanings come from the YAML files themselves (`importlib.resources.files("multissl.configs")`, the registry the CLI
composes), so the page cannot drift from what `python -m multissl.train` accepts. A second placeholder, on the
contracts page, becomes the table of optional contract members (`multissl.contracts.OPTIONAL`)."""
import re
from importlib import resources

import yaml

PLACEHOLDER = "<!-- multissl:cli-reference -->"
OPTIONAL_PLACEHOLDER = "<!-- multissl:optional-members -->"
SECTIONS = ("data", "trainer", "optim", "ema", "run")
GROUPS = (("domain", "Domains"), ("objective", "Objectives"), ("encoder", "Encoders"))
KEY = re.compile(r"^(\s*)([A-Za-z_][\w.-]*):(.*)$")


def split_comment(rest: str) -> tuple[str, str | None]:
    """A YAML line's value and its comment: a `#` that starts a comment follows whitespace, outside quotes."""
    quote = None
    for i, c in enumerate(rest):
        if quote:
            quote = None if c == quote else quote
        elif c in "'\"":
            quote = c
        elif c == "#" and (i == 0 or rest[i - 1].isspace()):
            return rest[:i].strip(), rest[i + 1:].strip()
    return rest.strip(), None


def read_comments(text: str) -> tuple[dict, dict, list]:
    """Parse a config file's lines: (raw value text by dotted key, meaning by dotted key, notes).

    A key's meaning is the comment on its line plus the comment-only lines below it that are indented deeper than
    the key (continuations); a key without one takes the comment block right above it. Comment blocks that no key
    took, and comments on mapping keys, become notes."""
    raw, meaning, notes = {}, {}, []
    stack: list[tuple[int, str]] = []
    block: list[str] = []
    last, last_indent = None, 0
    for line in text.splitlines():
        stripped = line.strip()
        indent = len(line) - len(line.lstrip(" "))
        if not stripped:
            last = None
            if block:
                notes.append(" ".join(block))
                block = []
            continue
        if stripped.startswith("#"):
            body = stripped[1:].strip()
            if body.startswith("@package"):
                continue
            if last is not None and indent > last_indent:
                meaning[last] += " " + body
            else:
                last = None
                block.append(body)
            continue
        m = KEY.match(line)
        if not m or stripped.startswith("- "):
            last = None
            continue
        key_indent, key, rest = len(m.group(1)), m.group(2), m.group(3)
        while stack and stack[-1][0] >= key_indent:
            stack.pop()
        path = ".".join([k for _, k in stack] + [key])
        stack.append((key_indent, key))
        value, comment = split_comment(rest)
        raw[path] = value
        if comment is None and block:
            comment = " ".join(block)
        elif block:
            notes.append(" ".join(block))
        block = []
        if comment is not None:
            meaning[path] = comment
            last, last_indent = path, key_indent
        else:
            last = None
    if block:
        notes.append(" ".join(block))
    return raw, meaning, notes


def leaves(node: dict, prefix: str = "") -> list[tuple[str, object]]:
    """(dotted key, default) of every leaf of a mapping, in file order; an empty mapping is a leaf."""
    out = []
    for k, v in node.items():
        path = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            out += leaves(v, path + ".")
        else:
            out.append((path, v))
    return out


def fmt(value) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return "[" + ", ".join(fmt(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {fmt(v)}" for k, v in value.items()) + "}"
    return str(value)


def prose(text: str) -> str:
    """A YAML comment as Markdown table-cell text: code spans kept, everything else escaped."""
    def plain(p: str) -> str:
        p = p.replace("\\", "\\\\")
        for c in "*_[]`":
            p = p.replace(c, "\\" + c)
        return p.replace("<", "&lt;").replace("|", "\\|")

    if text.count("`") % 2:  # an unpaired backtick is a character, not a code span
        return plain(text)
    parts = text.split("`")
    # Python-Markdown's tables leave a code span's pipes alone (an escape there would show)
    return "`".join(plain(p) if i % 2 == 0 else p for i, p in enumerate(parts))


def code(text: str) -> str:
    return f"`` {text} ``" if "`" in text else f"`{text}`"


def table(rows: list[tuple[str, str, str]]) -> list[str]:
    out = ["| key | default | meaning |", "| --- | --- | --- |"]
    out += [f"| {code(k)} | {code(d)} | {prose(m)} |" for k, d, m in rows]
    return out + [""]


def rows(raw: dict, meaning: dict, keys: list[tuple[str, object]], prefix: str = ""):
    """Table rows for `keys` (dotted within the file); shown as `prefix + key`."""
    return [(prefix + k, raw.get(k) or fmt(v), meaning.get(k, "")) for k, v in keys]


def engine(root) -> list[str]:
    text = (root / "train.yaml").read_text()
    data = yaml.safe_load(text)
    raw, meaning, _ = read_comments(text)
    out = ["### Engine keys", "",
           "`configs/train.yaml`: the keys every run has, whatever its domain, objective and encoder.", ""]
    for section in SECTIONS:
        out += [f"#### `{section}`", ""]
        if meaning.get(section):
            out += [prose(meaning[section]), ""]
        out += table(rows(raw, meaning, leaves(data[section], f"{section}.")))
    return out


def group(root, name: str, title: str, default: str | None) -> list[str]:
    from multissl.cli import options

    names = options(name)
    out = [f"### {title}", "",
           f"`{name}=<option>` picks `configs/{name}/<option>.yaml`; its keys are set as `{name}.<key>=<value>`.", "",
           "| option | class |", "| --- | --- |"]
    files = {}
    for option in names:
        text = (root / name / f"{option}.yaml").read_text()
        files[option] = text, yaml.safe_load(text) or {}
        target = files[option][1].get("_target_") or files[option][1].get(name, {}).get("_target_", "")
        mark = " (default)" if option == default else ""
        out.append(f"| [`{name}={option}`](#{name}-{option}){mark} | `{target}` |")
    out.append("")
    for option in names:
        text, data = files[option]
        raw, meaning, notes = read_comments(text)
        glob = "@package _global_" in text  # its keys are paths from the config's root (encoder.dim, optim.base_lr)
        prefix = "" if glob else f"{name}."
        keys = [(k, v) for k, v in leaves(data) if k.split(".")[-1] != "_target_"]
        mappings = [k for k in meaning if k not in dict(keys) and k.split(".")[-1] != "_target_"]
        out += [f"#### `{name}={option}` {{ #{name}-{option} }}", ""]
        for note in notes:
            out += [prose(note), ""]
        for k in mappings:  # a comment on a mapping key (rl's `default:`) says what the mapping is
            out += [f"{code(prefix + k)}: {prose(meaning[k])}", ""]
        out += table(rows(raw, meaning, keys, prefix)) if keys else ["No keys of its own.", ""]
    return out


def reference() -> str:
    root = resources.files("multissl.configs")
    defaults = {}
    for item in yaml.safe_load((root / "train.yaml").read_text()).get("defaults", []):
        if isinstance(item, dict):
            defaults.update(item)
    out = engine(root)
    for name, title in GROUPS:
        out += group(root, name, title, defaults.get(name))
    return "\n".join(out)


def optional_members() -> str:
    """multissl.contracts.OPTIONAL as one table per contract: the members a class may leave out, their defaults."""
    from multissl.contracts import OPTIONAL

    out = []
    for contract, members in OPTIONAL.items():
        if not members:  # a capability whose every member is required
            continue
        out += [f"### {contract.__name__}", "", "| member | default | meaning |", "| --- | --- | --- |"]
        for name, (default, meaning) in members.items():
            shown = "a function: see its meaning" if callable(default) else code(repr(default))
            out.append(f"| `{name}` | {shown} | {prose(meaning)} |")
        out.append("")
    return "\n".join(out)


def on_page_markdown(markdown, page, config, files):
    if PLACEHOLDER in markdown:
        markdown = markdown.replace(PLACEHOLDER, reference())
    if OPTIONAL_PLACEHOLDER in markdown:
        markdown = markdown.replace(OPTIONAL_PLACEHOLDER, optional_members())
    return markdown
