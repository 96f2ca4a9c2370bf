"""Start-up at scale: does reading users' data cost memory or time that grows with its size? Per domain and form on
disk — a folder of small PNGs (image), of short WAVs (audio), a CSV (tabular), a .txt of one text a line (text), a
replay buffer as one .npz and as a folder of .npy (rl), a .npy of clips (video) — data of N samples is generated
(cheaply: a few distinct samples, repeated) once under --work, then each (form, N) runs the real command in a fresh
process:

    python -m multissl.train domain=<d> data.path=<data> trainer.max_steps=1 trainer.eval_every=0 \
        trainer.baseline=false trainer.log_every=1 trainer.checkpoint_every=0 data.num_workers=0 run.dir=<temporary>

with an empty multissl cache (a first run: the text tokenizer is trained, the .npz buffer copied into .npy files).
It is stopped once metrics.jsonl holds its first training step: the seconds to that step (from the process's
start: the interpreter, the imports, the data's listing and checks, the model and one step) and the process's peak
resident memory until then (os.wait4's ru_maxrss; loader workers, when data.num_workers asks for them, count as
their largest process) are the figures. Memory that does not grow with N shows as a ratio near 1 between sizes.

    python benchmarks/scale.py                                  # every form at 10,000 and 100,000 samples
    python benchmarks/scale.py --domains image,rl --sizes 1000 10000 --work /tmp/scale
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
    """root/c<k>/<i>.<suffix>: n files in CLASSES class subfolders."""
    blobs = variants(encode)
    for k in range(CLASSES):
        (root / f"c{k}").mkdir(parents=True, exist_ok=True)
    for i in range(n):
        (root / f"c{i % CLASSES}" / f"{i:07d}{suffix}").write_bytes(blobs[i % len(blobs)])


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


# form -> (domain, what the table calls it, the data's file name, writer, overrides the data needs)
FORMS = {
    "image-folder": ("image", "folder of 16x16 PNGs", "images", image_folder, []),
    "audio-folder": ("audio", "folder of 0.1 s WAVs", "clips", audio_folder, []),
    "tabular-csv": ("tabular", "CSV, 9 columns", "table.csv", csv_table, ["data.target=label"]),
    "text-txt": ("text", ".txt, a text a line", "corpus.txt", txt_corpus, []),
    "rl-npz": ("rl", ".npz buffer, 40x40 frames", "buffer.npz", npz_buffer, []),
    "rl-npy": ("rl", "folder of .npy, 40x40 frames", "buffer", npy_buffer, []),
    "video-npy": ("video", ".npy of 8x16x16 clips", "clips.npy", npy_clips, []),
}


def data(work: Path, form: str, n: int) -> Path:
    """<work>/data/<form>-<n>/<name>, written once (a .done marker says it is complete)."""
    folder = work / "data" / f"{form}-{n}"
    path = folder / FORMS[form][2]
    if not (folder / ".done").exists():
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        FORMS[form][3](path, n)
        (folder / ".done").touch()
    return path


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
    with tempfile.TemporaryDirectory(dir=work) as tmp:
        env = {**os.environ, "MULTISSL_CACHE": str(Path(tmp) / "cache")}  # empty: what a first run costs
        folder = Path(tmp) / "run"
        cmd = [sys.executable, "-m", "multissl.train", f"domain={domain}", f"data.path={path}", *RUN, *extra,
               f"run.dir={folder}", *overrides]
        seconds, rss = first_step(cmd, env, folder, timeout)
    return {"domain": domain, "form": what, "n": n, "seconds": seconds, "rss_mib": rss / 2**20}


def table(rows: list[dict]) -> str:
    """One row per (form, N); the ratio is the peak RSS over that form's at the first size."""
    first = {}
    lines = ["| domain | form | N | seconds to first step | peak RSS MiB | RSS / RSS at first N |",
             "| --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        base = first.setdefault(r["form"], r["rss_mib"])
        r["rss_ratio"] = r["rss_mib"] / base
        lines.append(f"| {r['domain']} | {r['form']} | {r['n']:,} | {r['seconds']:.1f} | {r['rss_mib']:.0f} | "
                     f"{r['rss_ratio']:.2f} |")
    return "\n".join(lines)


def main(argv=None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--domains", default="image,audio,tabular,text,rl,video", help="comma-separated (rl: both forms)")
    p.add_argument("--sizes", type=int, nargs="+", default=[10000, 100000], help="samples N (default: %(default)s)")
    p.add_argument("--work", default=str(Path(tempfile.gettempdir()) / "multissl-scale"),
                   help="folder of the generated data (kept for the next run), caches and runs (default: %(default)s)")
    p.add_argument("--timeout", type=float, default=600, help="seconds a run may take to its first step")
    results.add_argument(p)
    p.add_argument("overrides", nargs="*", help="training overrides (after --)")
    args = p.parse_args(argv)
    picked, known = args.domains.split(","), sorted({spec[0] for spec in FORMS.values()})
    unknown = sorted(set(picked) - set(known))
    if unknown:
        p.error(f"unknown domain {', '.join(unknown)}; choose among {', '.join(known)}")
    work = Path(args.work).expanduser()
    work.mkdir(parents=True, exist_ok=True)
    rows = []
    for form in [f for f, spec in FORMS.items() if spec[0] in picked]:
        for n in args.sizes:
            rows.append(measure(work, form, n, args.overrides, args.timeout))
            print(f"scale: {form} N={n}: {rows[-1]['seconds']:.1f} s, {rows[-1]['rss_mib']:.0f} MiB", file=sys.stderr)
    text = table(rows)
    print(text)
    results.write(Path(args.results) / "scale.md", text, results.command_line(__file__, argv), note=(
        f"Seconds from the start of `python -m multissl.train` to its first logged training step, and the process's "
        f"peak resident memory until then, per domain and form of data on disk at N samples (the data generated: "
        f"a few distinct samples repeated), each run on an empty multissl cache. Overrides: "
        f"{' '.join(RUN + args.overrides)}."))
    return rows


if __name__ == "__main__":
    main()
