"""Every process of a run stops together. A signal (SIGTERM from a scheduler, SIGUSR1 a while before a time limit —
SLURM's --signal —, SIGINT) may reach one process only — one node preempted — so the stop request is agreed across
processes at the end of every step: all of them save the checkpoint and exit at the same step (128 + the signal).
An exception on one process (a bad sample, a full disk) would leave the others waiting in a collective until the
process group's timeout, so the failing process tells the others through the process group's store and a watchdog
thread in each of them ends it at once; the message is the failing process's, shown once."""
import itertools
import os
import signal
import sys
import threading
import time

import torch
import torch.distributed as torch_dist

from multissl import dist

_runs = itertools.count()  # every process counts its runs alike, so a run's store keys are the same everywhere
_waits = itertools.count()


class Stopped(Exception):
    """A run that stopped on a signal, its checkpoint saved: the command exits with 128 + signum."""

    def __init__(self, signum: int, message: str):
        super().__init__(message)
        self.signum = signum


STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1, signal.SIGINT)


class StopSignal:
    """SIGTERM, SIGUSR1 and SIGINT end the current step; `agreed()` is the stop request of any process."""

    def __init__(self, install: bool = True):
        self.requested, self.signum, self.previous = None, 0, {}
        if install and threading.current_thread() is threading.main_thread():
            self.previous = {sig: signal.signal(sig, self.handle) for sig in STOP_SIGNALS}

    def handle(self, signum, frame):
        self.requested, self.signum = signal.Signals(signum).name, signum

    def agreed(self, device) -> bool:
        """True on every process when any process was signalled (one small all-reduce); the signal taken is the
        highest number requested, the same everywhere."""
        if dist.world_size() > 1:
            flag = torch.tensor([self.signum], device=device)
            torch_dist.all_reduce(flag, op=torch_dist.ReduceOp.MAX)
            if int(flag) and not self.signum:
                self.signum = int(flag)
                self.requested = f"{signal.Signals(self.signum).name} (to another process)"
        return bool(self.signum)

    def restore(self):
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)


def _store():
    try:
        return torch_dist.distributed_c10d._get_default_store()
    except Exception:  # no store (one process, or a backend without one): the process group's timeout remains
        return None


class Together:
    """Context manager around a run: an exception on this process tells every other process to exit with its status
    (2 for a UserError, 1 otherwise); a watchdog thread ends this process when another one failed. The process that
    failed first prints its message; an exception after another process's failure gets `shown_elsewhere` (that
    process's exit status)."""

    def __init__(self, poll_s: float = 0.5):
        self.poll_s = poll_s
        self.store = _store() if dist.world_size() > 1 else None
        self.key = f"multissl/run{next(_runs)}/failed"  # "<rank> <exit status>" of the first process that failed
        self.done = threading.Event()
        if self.store is not None:
            threading.Thread(target=self.watch, args=(poll_s,), daemon=True, name="multissl-watchdog").start()

    def watch(self, poll_s: float):
        while not self.done.wait(poll_s):
            try:
                if not self.store.check([self.key]):
                    continue
                rank, status = map(int, self.store.get(self.key).decode().split())
            except Exception:  # the store is gone: the main process ended; the collectives say the rest
                return
            if rank != dist.rank() and not self.done.is_set():
                self.seen()
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(status)  # the main thread may be blocked in a collective that will never complete

    def __enter__(self):
        return self

    def __exit__(self, kind, error, tb):
        self.done.set()
        if error is None or self.store is None or isinstance(error, (SystemExit, Stopped)):
            return False
        from multissl.errors import UserError
        mine = f"{dist.rank()} {2 if isinstance(error, UserError) else 1}"
        try:
            first = self.store.compare_set(self.key, "", mine).decode()
        except Exception:
            return False
        if first != mine:  # another process failed first and said why: exit as it does, silently
            error.shown_elsewhere = int(first.split()[1])
            self.seen()
            return False
        # the store lives in the main process: the first to fail waits (a few polls at most) until every other
        # process has read its failure, so that none is left polling a store that is gone
        deadline = time.monotonic() + 4 * self.poll_s + 1
        try:
            while time.monotonic() < deadline and self.store.add(f"{self.key}/seen", 0) < dist.world_size() - 1:
                time.sleep(self.poll_s / 5)
        except Exception:  # the store is gone: the main process read it and ended
            pass
        return False

    def seen(self):
        try:
            self.store.add(f"{self.key}/seen", 1)
        except Exception:
            pass


def main_first():
    """For a step the main process does first while the others wait without a timeout (preparing the data may take
    long): returns `release()` for the main process to call when done, after which the others' `wait()` returns."""
    store, key = (_store() if dist.world_size() > 1 else None), f"multissl/wait{next(_waits)}"

    def release():
        if store is not None:
            store.set(key, "1")

    def wait():
        pause = 0.005  # doubled up to half a second: a quick step (data already cached) costs a few ms of waiting,
        while store is not None and not store.check([key]):  # a long one a check every half second
            time.sleep(pause)
            pause = min(2 * pause, 0.5)
    return release, wait
