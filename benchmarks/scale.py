"""Start-up at scale: does reading users' data cost memory or time that grows with its size? Per domain and form on
disk — a folder of small PNGs and a saved HF dataset of them (image), a folder of short WAVs (audio), a CSV (tabular),
a .txt of one text a line (text), a replay buffer as one .npz and as a folder of .npy (rl), a .npy of clips (video),
and shards (`python -m multissl.shards`) of the PNG folder, the .txt and the .npz — data of N samples is generated
(cheaply: a few distinct samples, repeated) once under --work, then each (form, N) runs the real command in a fresh
process:

    python -m multissl.train domain=<d> data.path=<data> trainer.max_steps=1 trainer.eval_every=0 \
        trainer.baseline=false trainer.log_every=1 trainer.checkpoint_every=0 data.num_workers=0 run.dir=<temporary>

with an empty multissl cache (a first run: the text tokenizer is trained, the .npz buffer copied into .npy files).
It is stopped once metrics.jsonl holds its first training step: the seconds to that step (from the process's
start: the interpreter, the imports, the data's listing and checks, the model and one step) and the process's peak
resident memory until then (os.wait4's ru_maxrss; loader workers, when data.num_workers asks for them, count as
their largest process) are the figures. Memory that does not grow with N shows as a ratio near 1 between sizes.

A shard form's data is its source form's at the same N, converted by `python -m multissl.shards` (on a cache of its
own); the seconds that took are the table's "convert s", apart from the first-step figure. The seconds writing each
form's data took are printed, not tabled; both are recorded in the data's .done marker, so reused data keeps them.

    python benchmarks/scale.py                                  # every form at 10,000 and 100,000 samples
    python benchmarks/scale.py --domains image,rl --sizes 1000 10000 --work /tmp/scale
    python benchmarks/scale.py --forms image-folder,image-shards --sizes 1000000
    python benchmarks/scale.py … -- data.num_workers=2           # any training override after --
"""
import argparse
import io
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import wave
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
import results  # noqa: E402

RUN = ["trainer.max_steps=1", "trainer.eval_every=0", "trainer.baseline=false", "trainer.log_every=1",
       "trainer.checkpoint_every=0", "data.num_workers=0"]
CLASSES = 10  # class subfolders of the file folders; the CSV's label values


def variants(make, count: int = 16) -> list:
    """`count` distinct samples (file bytes or arrays): the N samples repeat them, so writing N costs N copies."""
    rng = np.random.default_rng(0)
    return [make(rng) for _ in range(count)]


def write_files(root: Path, n: int, suffix: str, encode):
    """root/c<k>/<i>.<suffix>: n files in CLASSES class subfolders, made once; a file costs one write_bytes of bytes
    encoded once (millions of files)."""
    blobs = variants(encode)
    folders = [root / f"c{k}" for k in range(CLASSES)]
    for folder in folders:
        folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        (folders[i % CLASSES] / f"{i:07d}{suffix}").write_bytes(blobs[i % len(blobs)])


def png(rng) -> bytes:
    from PIL import Image
    out = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(out, format="PNG")
    return out.getvalue()


def wav(rng) -> bytes:
    out = io.BytesIO()
    with wave.open(out, "wb") as w:  # 0.1 s of 16 kHz mono int16
        w.setnchannels(1), w.setsampwidth(2), w.setframerate(16000)
        w.writeframes((rng.normal(0, 3000, 1600)).astype("<i2").tobytes())
    return out.getvalue()


def image_folder(path: Path, n: int):
    write_files(path, n, ".png", png)


def hf_images(path: Path, n: int):
    """A saved HF dataset: an Image column holding the PNGs' bytes and a ClassLabel, as the folder's files and
    classes. Written from a generator (Arrow batches on disk, never the n rows in memory) into a temporary cache."""
    import datasets
    blobs = variants(png)

    def rows():
        for i in range(n):
            yield {"image": {"bytes": blobs[i % len(blobs)], "path": None}, "label": i % CLASSES}

    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(num_classes=CLASSES)})
    with tempfile.TemporaryDirectory(dir=path.parent) as tmp:  # from_generator's Arrow file, copied by save_to_disk
        datasets.Dataset.from_generator(rows, features=features, cache_dir=tmp).save_to_disk(str(path))


def audio_folder(path: Path, n: int):
    write_files(path, n, ".wav", wav)


def csv_table(path: Path, n: int):
    import pandas as pd
    rng = np.random.default_rng(0)
    table = pd.DataFrame({f"x{j}": rng.normal(size=n).round(3) for j in range(6)})
    table["city"] = rng.choice(["paris", "lyon", "nice", "lille"], n)
    table["children"] = rng.integers(0, 4, n)
    table["label"] = rng.integers(0, CLASSES, n)
    table.to_csv(path, index=False)


def txt_corpus(path: Path, n: int):
    rng = np.random.default_rng(0)
    words = np.array(["".join(rng.choice(list("abcdefghijklmnopqrstuvwxyz"), rng.integers(2, 9))) for _ in range(500)])
    with open(path, "w") as f:
        f.writelines(" ".join(rng.choice(words, rng.integers(5, 20))) + "\n" for _ in range(n))


def buffer_arrays(n: int) -> dict:
    """n steps of 40 x 40 grayscale frames (the smallest the default frame encoder takes is 36) in episodes of 100."""
    frames = np.stack(variants(lambda rng: rng.integers(0, 256, (40, 40), dtype=np.uint8)))
    step = np.arange(n)
    return {"obs": frames[step % len(frames)], "action": step % 2, "reward": np.ones(n, np.float32),
            "terminated": step % 100 == 99, "truncated": np.zeros(n, bool)}


def npz_buffer(path: Path, n: int):
    np.savez(path, **buffer_arrays(n))


def npy_buffer(path: Path, n: int):
    path.mkdir()
    for key, a in buffer_arrays(n).items():
        np.save(path / f"{key}.npy", a)


def npy_clips(path: Path, n: int):
    """[n 8 16 16] uint8 clips, written a block at a time into the file's memory map."""
    clips = np.stack(variants(lambda rng: rng.integers(0, 256, (8, 16, 16), dtype=np.uint8)))
    out = np.lib.format.open_memmap(path, "w+", np.uint8, (n, *clips.shape[1:]))
    for start in range(0, n, 4096):
        stop = min(n, start + 4096)
        out[start:stop] = clips[np.arange(start, stop) % len(clips)]
    out.flush()


def shards(source: Path, out: Path, domain: str):
    """python -m multissl.shards <source> <out> domain=<domain>, as a user runs it, on a cache of its own (the
    domain's reader may fill one: a corpus, a buffer's arrays), removed after. In a process of its own: the runs
    measured later are this process's children, and a child's peak memory counts the parent's at its fork."""
    cmd = [sys.executable, "-m", "multissl.shards", str(source), str(out), f"domain={domain}"]
    with tempfile.TemporaryDirectory(dir=out.parent) as tmp:
        done = subprocess.run(cmd, env={**os.environ, "MULTISSL_CACHE": tmp}, capture_output=True, text=True,
                              check=False)
    if done.returncode:
        raise RuntimeError(f"{shlex.join(cmd)} failed (exit {done.returncode}):\n{done.stderr[-3000:]}")


# form -> (domain, what the table calls it, the data's file name, its writer or, for shards, the form they convert,
# overrides the data needs)
FORMS = {
    "image-folder": ("image", "folder of 16x16 PNGs", "images", image_folder, []),
    "image-hf": ("image", "saved HF dataset of 16x16 PNGs", "dataset", hf_images, []),
    "image-shards": ("image", "shards of 16x16 PNGs", "shards", "image-folder", []),
    "audio-folder": ("audio", "folder of 0.1 s WAVs", "clips", audio_folder, []),
    "tabular-csv": ("tabular", "CSV, 9 columns", "table.csv", csv_table, ["data.target=label"]),
    "text-txt": ("text", ".txt, a text a line", "corpus.txt", txt_corpus, []),
    "text-shards": ("text", "shards of the .txt's texts", "shards", "text-txt", []),
    "rl-npz": ("rl", ".npz buffer, 40x40 frames", "buffer.npz", npz_buffer, []),
    "rl-npy": ("rl", "folder of .npy, 40x40 frames", "buffer", npy_buffer, []),
    "rl-shards": ("rl", "shards of the .npz buffer", "shards", "rl-npz", []),
    "video-npy": ("video", ".npy of 8x16x16 clips", "clips.npy", npy_clips, []),
}


def converted(form: str) -> bool:
    return isinstance(FORMS[form][3], str)


def data(work: Path, form: str, n: int) -> Path:
    """<work>/data/<form>-<n>/<name>, written once: a .done marker says it is complete and holds the seconds the
    writing took (for shards, the conversion alone: their source form's data is written, or reused, first)."""
    folder = work / "data" / f"{form}-{n}"
    domain, _, name, writer, _ = FORMS[form]
    path = folder / name
    if not (folder / ".done").exists():
        source = data(work, writer, n) if converted(form) else None
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        tic = time.perf_counter()
        if source:
            shards(source, path, domain)
        else:
            writer(path, n)
        (folder / ".done").write_text(json.dumps({"seconds": time.perf_counter() - tic}))
    return path


def written_in(path: Path) -> float | None:
    """The seconds data() took to write `path`, from its .done marker (None: a marker that predates the figure)."""
    try:
        return json.loads((path.parent / ".done").read_text())["seconds"]
    except (ValueError, KeyError):
        return None


def stepped(metrics: Path) -> bool:
    """metrics.jsonl holds a training step's row (a torn last line is not one yet)."""
    try:
        lines = metrics.read_text().splitlines()
    except FileNotFoundError:
        return False
    for line in lines:
        try:
            if "loss" in json.loads(line):
                return True
        except ValueError:
            pass
    return False


def first_step(cmd: list[str], env: dict, folder: Path, timeout: float) -> tuple[float, int]:
    """Run cmd (its run.dir is `folder`) until its first training step is logged, then kill it: (seconds to that
    step, peak resident bytes of the process)."""
    with open(folder.parent / "stderr.txt", "w+") as err:
        tic = time.perf_counter()
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=err, start_new_session=True)
        try:
            while not stepped(folder / "metrics.jsonl"):
                if proc.poll() is not None:
                    err.seek(0)
                    raise RuntimeError(f"{shlex.join(cmd)} ended (exit {proc.returncode}) before its first step:\n"
                                       f"{err.read()[-3000:]}")
                if time.perf_counter() - tic > timeout:
                    raise RuntimeError(f"{shlex.join(cmd)}: no training step within {timeout:.0f} s")
                time.sleep(0.02)
            seconds = time.perf_counter() - tic
        finally:
            if proc.returncode is None:  # reaped here, by wait4, for the child's own resource usage
                os.killpg(proc.pid, signal.SIGKILL)  # its group: the process and any loader workers
                _, status, usage = os.wait4(proc.pid, 0)
                proc.returncode = os.waitstatus_to_exitcode(status)
    return seconds, usage.ru_maxrss * 1024  # Linux: KiB


def measure(work: Path, form: str, n: int, overrides: list[str], timeout: float) -> dict:
    domain, what, _, _, extra = FORMS[form]
    path = data(work, form, n)
    took = written_in(path)
    print(f"scale: {form} N={n}: data {'converted' if converted(form) else 'written'} in "
          f"{'?' if took is None else f'{took:.1f}'} s", file=sys.stderr)
    with tempfile.TemporaryDirectory(dir=work) as tmp:
        env = {**os.environ, "MULTISSL_CACHE": str(Path(tmp) / "cache")}  # empty: what a first run costs
        folder = Path(tmp) / "run"
        cmd = [sys.executable, "-m", "multissl.train", f"domain={domain}", f"data.path={path}", *RUN, *extra,
               f"run.dir={folder}", *overrides]
        seconds, rss = first_step(cmd, env, folder, timeout)
    return {"domain": domain, "form": what, "n": n, "seconds": seconds, "rss_mib": rss / 2**20,
            "convert_s": took if converted(form) else None}


def table(rows: list[dict]) -> str:
    """One row per (form, N); the ratio is the peak RSS over that form's at the first size; "convert s" the seconds
    the shard forms' conversion took (blank for other forms, and for shards whose marker lacks the figure)."""
    first = {}
    lines = ["| domain | form | N | seconds to first step | peak RSS MiB | RSS / RSS at first N | convert s |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        base = first.setdefault(r["form"], r["rss_mib"])
        r["rss_ratio"] = r["rss_mib"] / base
        convert = "" if r.get("convert_s") is None else f"{r['convert_s']:.1f}"
        lines.append(f"| {r['domain']} | {r['form']} | {r['n']:,} | {r['seconds']:.1f} | {r['rss_mib']:.0f} | "
                     f"{r['rss_ratio']:.2f} | {convert} |")
    return "\n".join(lines)


def main(argv=None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--domains", help="comma-separated domains, each with all its forms (default: every domain)")
    p.add_argument("--forms", help=f"comma-separated forms, of --domains when given (default: every form): "
                                   f"{', '.join(FORMS)}")
    p.add_argument("--sizes", type=int, nargs="+", default=[10000, 100000], help="samples N (default: %(default)s)")
    p.add_argument("--work", default=str(Path(tempfile.gettempdir()) / "multissl-scale"),
                   help="folder of the generated data (kept for the next run), caches and runs (default: %(default)s)")
    p.add_argument("--timeout", type=float, default=600, help="seconds a run may take to its first step")
    results.add_argument(p)
    p.add_argument("overrides", nargs="*", help="training overrides (after --)")
    args = p.parse_args(argv)
    domains = sorted({spec[0] for spec in FORMS.values()})
    for option, known in (("domains", domains), ("forms", list(FORMS))):
        unknown = sorted(set((getattr(args, option) or "").split(",")) - set(known) - {""})
        if unknown:
            p.error(f"unknown --{option} {', '.join(unknown)}; choose among {', '.join(known)}")
    picked = [f for f, spec in FORMS.items() if (not args.domains or spec[0] in args.domains.split(","))
              and (not args.forms or f in args.forms.split(","))]
    if not picked:
        p.error(f"no form of --domains {args.domains} is among --forms {args.forms}")
    work = Path(args.work).expanduser()
    work.mkdir(parents=True, exist_ok=True)
    rows = []
    for form in picked:
        for n in args.sizes:
            rows.append(measure(work, form, n, args.overrides, args.timeout))
            print(f"scale: {form} N={n}: {rows[-1]['seconds']:.1f} s, {rows[-1]['rss_mib']:.0f} MiB", file=sys.stderr)
    text = table(rows)
    print(text)
    results.write(Path(args.results) / "scale.md", text, results.command_line(__file__, argv), note=(
        f"Seconds from the start of `python -m multissl.train` to its first logged training step, and the process's "
        f"peak resident memory until then, per domain and form of data on disk at N samples (the data generated: "
        f"a few distinct samples repeated), each run on an empty multissl cache. Shard forms hold their source "
        f"form's data at the same N, converted by `python -m multissl.shards`: convert s is the seconds that took "
        f"(not part of the first step's). Overrides: {' '.join(RUN + args.overrides)}."))
    return rows


if __name__ == "__main__":
    main()
