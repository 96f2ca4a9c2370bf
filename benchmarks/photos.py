"""Phone photos at the defaults: a folder of N 4000 x 3000 JPEGs (every 5th EXIF-rotated to portrait, every 7th
grayscale), generated once and cached under the multissl cache, then `python -m multissl.train domain=image
data.path=<folder> trainer.max_steps=<steps>` in a subprocess. Prints the run's peak resident memory (the largest
process of its tree: resource.getrusage(RUSAGE_CHILDREN).ru_maxrss), the peak summed over the tree (sampled; loader
workers share pages with their parent, so this overcounts), and its wall time.

    python benchmarks/photos.py                      # 300 photos (more than the default batch of 256), 3 steps
    python benchmarks/photos.py --n 50 --steps 2 -- data.num_workers=0 trainer.baseline=false
"""
import argparse
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from multissl.domains.cache import default_cache_dir
from results import command_line, write

W, H = 4000, 3000


def photo_folder(n: int) -> Path:
    """<cache>/bench/photos-<n>/train/{a,b}/*.jpg, written once (a .done marker says the folder is complete): smooth
    random scenes with sensor-like noise, JPEG quality 90, a few MB each, like a phone's."""
    from PIL import Image
    root = default_cache_dir() / "bench" / f"photos-{n}"
    if (root / ".done").exists():
        return root
    rng = np.random.default_rng(0)
    for i in range(n):
        scene = Image.fromarray(rng.integers(0, 256, (9, 12, 3), dtype=np.uint8)).resize((W, H), Image.BICUBIC)
        pixels = np.asarray(scene, dtype=np.int16) + rng.integers(-6, 7, (H, W, 1), dtype=np.int16)
        im = Image.fromarray(pixels.clip(0, 255).astype(np.uint8))
        kw = {"quality": 90}
        if i % 7 == 3:
            im = im.convert("L")
        if i % 5 == 1:  # stored landscape, shown portrait
            exif = im.getexif()
            exif[0x0112] = 6
            kw["exif"] = exif
        d = root / "train" / "ab"[i % 2]
        d.mkdir(parents=True, exist_ok=True)
        im.save(d / f"{i:05d}.jpg", **kw)
        if (i + 1) % 50 == 0:
            print(f"photos: wrote {i + 1}/{n}", file=sys.stderr)
    (root / ".done").touch()
    return root


def tree_rss(pid: int) -> int:
    """Resident bytes of a process and its descendants now (0 once gone)."""
    import psutil
    try:
        p = psutil.Process(pid)
        procs = [p, *p.children(recursive=True)]
    except psutil.Error:
        return 0
    total = 0
    for q in procs:
        try:
            total += q.memory_info().rss
        except psutil.Error:
            pass
    return total


def run(cmd: list[str], cwd: str) -> tuple[int, float, int | None, str]:
    """(return code, wall seconds, peak summed tree RSS in bytes or None without psutil, stderr)."""
    try:
        import psutil  # noqa: F401
        sampled = [0]
    except ImportError:
        sampled = None
    tic = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    err = []
    reader = threading.Thread(target=lambda: err.extend(proc.stderr), daemon=True)
    reader.start()
    while proc.poll() is None:
        if sampled is not None:
            sampled[0] = max(sampled[0], tree_rss(proc.pid))
        time.sleep(0.2)
    reader.join()
    return proc.returncode, time.perf_counter() - tic, sampled and sampled[0], "".join(err)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=300, help="photos in the folder (more than the batch: the defaults)")
    ap.add_argument("--steps", type=int, default=3, help="trainer.max_steps")
    ap.add_argument("--out", default="photos", help="results file: a name under benchmarks/results/ or a path")
    ap.add_argument("overrides", nargs="*", help="training overrides (after --)")
    args = ap.parse_args(argv)
    command = command_line(__file__, argv)
    folder = photo_folder(args.n)
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "multissl.train", "domain=image", f"data.path={folder}",
               f"trainer.max_steps={args.steps}", f"run.dir={Path(tmp) / 'run'}", *args.overrides]
        rc, wall, tree, err = run(cmd, tmp)
    if rc != 0:
        print(err[-3000:], file=sys.stderr)
        print(f"photos: the run failed (exit {rc})", file=sys.stderr)
        return rc
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024  # Linux: kB
    chosen = [line for line in err.splitlines() if line.startswith(("multissl: from the headers",
                                                                     "multissl: domain.patch_size"))]
    print("\n".join(chosen))
    tree_txt = f"{tree / 2**30:.2f} GiB" if tree is not None else "n/a (pip install psutil)"
    table = ("| photos | steps | peak RSS, largest process | peak RSS, process tree (sampled) | wall |\n"
             "| --- | --- | --- | --- | --- |\n"
             f"| {args.n} x {W} x {H} JPEG | {args.steps} | {peak / 2**30:.2f} GiB | {tree_txt} | {wall:.1f} s |")
    print(table)
    write(args.out, table, command, note="A folder of phone photos (every 5th EXIF-rotated, every 7th gray) "
          "trained at the defaults; the run chose: " + "; ".join(c.removeprefix("multissl: ") for c in chosen)
          + ". Peak resident memory includes torch's own libraries (about 0.67 GiB once imported, CUDA build).")
    return 0


if __name__ == "__main__":
    sys.exit(main())
