"""`python -m multissl.shards <data.path> <out> domain=<name> [data.key=value …] [--chunk-bytes 64MB]` — writes what
the domain reads at data.path (a folder, a table, a corpus, a buffer, an HF dataset) as shards in the new folder
<out>: LitData chunks per split and multissl-shards.json. Train from them with data.path=<out>, or with the URL of
that folder copied to object storage (s3://…, gs://…, azure://…, hf://…): the same samples, order, labels and
classes as the files, so the same run.

The data keys that choose what is read (data.text_column, data.target, data.skip_bad …) apply when writing, as in
training; the domain's recipe (sizes, views, tokenizer) applies when training, to what the shards hold."""
import sys

from omegaconf import OmegaConf

from multissl.cli import compose_config, take_option
from multissl.contracts import CAPABILITIES, Sharded, has
from multissl.errors import UserError
from multissl.registry import resolve


def convert(path: str, out: str, overrides: list[str], chunk_bytes: str | None = None) -> dict:
    """Writes the shards of `path` read as the composed config's domain reads it; returns their meta."""
    from multissl.domains import shards
    if not any(a.startswith("domain=") for a in overrides):
        raise UserError("name the domain that reads the data: python -m multissl.shards <data.path> <out> "
                        "domain=<image|audio|video|text|tabular|rl>")
    cfg = compose_config([*overrides, f"data.path={path}"])
    cls = resolve(cfg.domain._target_)
    if not has(cls, Sharded):
        raise UserError(f"domain={cfg.meta.domain} cannot write {CAPABILITIES[Sharded]}: it has no records(data)")
    if shards.is_shards(path):
        raise UserError(f"{path} already holds shards; train from it with data.path={path}")
    splits = cls.records(OmegaConf.to_container(cfg.data))
    meta = shards.write(cfg.meta.domain, splits, out, str(path), chunk_bytes or shards.CHUNK_BYTES)
    counts = ", ".join(f"{s} {v['count']}" for s, v in meta["splits"].items())
    print(f"multissl: wrote {meta['form']} shards of domain={meta['domain']} ({counts} items) to {out}; train with "
          f"data.path={out}", file=sys.stderr)
    return meta


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        sys.exit(0 if argv else 2)
    chunk_bytes, argv = take_option(argv, "--chunk-bytes")
    paths = [a for a in argv if "=" not in a]
    try:
        if len(paths) != 2:
            raise UserError("give the data and a new folder: python -m multissl.shards <data.path> <out> "
                            "domain=<name> [data.key=value …]")
        convert(paths[0], paths[1], [a for a in argv if "=" in a], chunk_bytes)
    except UserError as e:
        print(f"multissl: error: {e}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
