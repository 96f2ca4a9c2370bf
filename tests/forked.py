"""`python <script> …` or `python -m <module> …` as its own process, forked from a server that imported torch and the
engine once (multiprocessing's forkserver with preloaded modules): a test that starts many short runs pays the imports
once, not per process. Each process is a fresh fork of that server (no test's state), runs the script or module as
__main__ with its own argv, environment and working folder, and writes its stdout and stderr to files; `Forked`
answers as subprocess.Popen does."""
import multiprocessing
import os
import runpy
import subprocess
import sys
import tempfile
from pathlib import Path

SERVER = multiprocessing.get_context("forkserver")
# torch._dynamo: what torch.optim's first optimizer imports (seconds of every training process); tests/ is on sys.path
SERVER.set_forkserver_preload(["torch", "torch._dynamo", "multissl.train", "tiny", "toys"])


def _main(args: list[str], env: dict, cwd: str, out: str, err: str):
    os.environ.clear()
    os.environ.update(env)
    os.chdir(cwd)
    for fd, path in ((1, out), (2, err)):
        f = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        os.dup2(f, fd)
        os.close(f)
    import torch
    torch.set_num_threads(int(env.get("OMP_NUM_THREADS", "1")))  # the server's OpenMP read its own environment
    if args[0] == "-m":  # as python -m: the module's file as argv[0]
        sys.argv = [args[1], *args[2:]]
        runpy.run_module(args[1], run_name="__main__", alter_sys=True)
    else:
        sys.argv = list(args)
        runpy.run_path(args[0], run_name="__main__")  # its sys.exit(status) is the process's exit status


class Forked:
    """`python *args` (a script and its arguments, or "-m", a module and its arguments) in `cwd` with `env`:
    communicate(timeout) -> (stdout, stderr), wait(timeout), returncode (negative: the signal that ended it, as
    Popen's), poll(), send_signal()."""

    def __init__(self, args: list, env: dict, cwd):
        self._files = tempfile.mkdtemp(prefix="forked-")
        self._out, self._err = (os.path.join(self._files, n) for n in ("out", "err"))
        self.args = [str(a) for a in args]
        self._proc = SERVER.Process(target=_main, args=(self.args, dict(env), str(cwd), self._out, self._err))
        self._proc.start()

    @property
    def returncode(self) -> int | None:
        return self._proc.exitcode

    def poll(self) -> int | None:
        return self._proc.exitcode

    def send_signal(self, signum: int):
        os.kill(self._proc.pid, signum)

    def wait(self, timeout: float | None = None) -> int:
        self.communicate(timeout)
        return self.returncode

    def communicate(self, timeout: float | None = None) -> tuple[str, str]:
        self._proc.join(timeout)
        if self._proc.exitcode is None:
            self._proc.kill()
            self._proc.join()
            raise subprocess.TimeoutExpired(self.args, timeout)
        return tuple(Path(p).read_text(errors="replace") for p in (self._out, self._err))
