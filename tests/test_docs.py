"""The documentation: the site builds with --strict (every link and anchor resolves, every docstring renders), the
CLI reference its hook generates covers the whole config registry, and the README stays a short front door whose
relative links all point at files of the repository."""
import os
import re
import subprocess
import sys
import unicodedata
from importlib import resources
from pathlib import Path

import pytest
import yaml

from multissl.cli import GROUPS, options

ROOT = Path(__file__).parents[1]
DOCS = ROOT / "docs"
SECTIONS = ("data", "trainer", "optim", "ema", "run")
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
FENCE = re.compile(r"^(```|~~~).*?^\1", re.S | re.M)
GENERATED = "<!-- multissl:"  # a page whose tables (and their anchors) a hook writes at build time


def pages() -> list[Path]:
    return [ROOT / "README.md", *sorted(DOCS.rglob("*.md"))]


def prose(path: Path) -> str:
    """The Markdown of a page without code (fenced, indented or inline), where a `[x](y)` is not a link."""
    text = FENCE.sub("", path.read_text())
    text = re.sub(r"^(?: {4}|\t).*$", "", text, flags=re.M)
    return re.sub(r"`[^`\n]*`", "", text)


def slug(heading: str) -> str:
    """The anchor Python-Markdown's toc (MkDocs) gives a heading; GitHub's agrees on the headings used here."""
    text = re.sub(r"[`*]", "", heading)
    text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    text = re.sub(r"[^\w\s-]", "", text).strip().lower()
    return re.sub(r"[-\s]+", "-", text)


def anchors(path: Path) -> set[str]:
    found = set()
    for line in FENCE.sub("", path.read_text()).splitlines():
        m = re.match(r"^#{1,6}\s+(.*?)\s*(?:\{\s*#([\w-]+)\s*\})?\s*$", line)
        if m:
            found.add(m.group(2) or slug(m.group(1)))
    return found


def option_keys(group: str, option: str) -> list[str]:
    """The keys an option's YAML sets, as the command line spells them."""
    text = (resources.files("multissl.configs") / group / f"{option}.yaml").read_text()
    prefix = "" if "@package _global_" in text else f"{group}."

    def leaves(node, at=""):
        for k, v in node.items():
            if isinstance(v, dict) and v:
                yield from leaves(v, f"{at}{k}.")
            elif k != "_target_":
                yield f"{prefix}{at}{k}"

    return list(leaves(yaml.safe_load(text) or {}))


def test_the_readme_is_a_short_front_door():
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= 250, f"README.md has {len(lines)} lines; the manual belongs in docs/"


def test_the_readme_installs_and_tests_as_ci_does():
    """CI (.ci/run) runs the README's install and test commands: keep both in one block, exactly."""
    readme = (ROOT / "README.md").read_text()
    blocks = re.findall(r"^```bash\n(.*?)^```", readme, re.S | re.M)
    assert any(b.splitlines() == ['pip install -e ".[dev]"', "pytest"] for b in blocks), blocks
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert 'pip install -e ".[dev]"' in ci and "pytest" in ci


@pytest.mark.parametrize("page", pages(), ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_points_at_a_file_that_exists(page):
    bad = []
    for target in LINK.findall(prose(page)):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto: — not a file
            continue
        path, _, anchor = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        if not file.is_relative_to(ROOT):
            bad.append(f"{target}: outside the repository")
        elif not file.exists():
            bad.append(f"{target}: no such file")
        elif anchor and file.suffix == ".md" and GENERATED not in file.read_text() and anchor not in anchors(file):
            bad.append(f"{target}: no heading with that anchor")
    assert not bad, bad


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    pytest.importorskip("mkdocs")  # CI installs the docs extra (through dev); this only guards a bare install
    out = tmp_path_factory.mktemp("site")
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)], cwd=ROOT,
                          capture_output=True, text=True, timeout=300,
                          env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    return out


@pytest.mark.slow
def test_the_cli_reference_lists_every_key_and_option_of_the_registry(site):
    html = (site / "cli" / "index.html").read_text()

    def cell(key):  # a key cell of a generated table (the hand-written table spells its keys `key=`)
        return f"<td><code>{key}</code></td>"

    def section(anchor):  # the generated section of one option: from its heading to the next heading
        start = html.find(f'id="{anchor}"')
        return "" if start < 0 else html[start:html.find("<h", start + 1)]

    train = yaml.safe_load((resources.files("multissl.configs") / "train.yaml").read_text())
    missing = [f"{s}.{k}" for s in SECTIONS for k in train[s] if cell(f"{s}.{k}") not in html]
    for group in GROUPS:
        for option in options(group):
            own = section(f"{group}-{option}")
            if not own:
                missing.append(f"{group}={option}")
            missing += [f"{group}={option}: {k}" for k in option_keys(group, option) if cell(k) not in own]
    assert not missing, missing


@pytest.mark.slow
def test_the_api_page_is_generated_from_the_docstrings(site):
    html = (site / "api" / "index.html").read_text()
    for name in ("multissl.export.load_encoder", "multissl.registry.register", "multissl.train.run",
                 "multissl.train.execute", "multissl.cli.load_config", "multissl.contracts.Domain",
                 "multissl.contracts.compatible", "multissl.dist.gather", "multissl.dist.GlobalBatchNorm"):
        assert f'id="{name}"' in html, name
