import contextlib
import errno
import importlib
import re


class UserError(Exception):
    """A problem with the user's input or configuration. The CLI prints its one-line message (which
    names the problem and the fix) and exits with status 2 — no traceback."""

    def __init__(self, message: str = ""):
        # raised in a loader worker, it reaches the main process re-made by torch (ExceptionWrapper.reraise) with
        # the worker's whole traceback as its text: keep the line the worker's error said
        marker = f"{__name__}.UserError: "
        if isinstance(message, str) and message.startswith("Caught UserError") and marker in message:
            message = message.rsplit(marker, 1)[1].strip()
        super().__init__(message)


def reason(e: Exception, limit: int = 160) -> str:
    """The first sentence of an exception's message, for a one-line UserError about a third-party failure."""
    line = (str(e).strip().splitlines() or [type(e).__name__])[0]
    return line.split(". ")[0].rstrip(".")[:limit]


# The modules of each extra (pyproject.toml [project.optional-dependencies]) by import name: a domain used without
# its extra says which install command brings them (tests/test_extras.py checks this table against pyproject.toml).
EXTRAS = {"torchaudio": "audio", "soundfile": "audio", "espeakng_loader": "audio",
          "av": "video",
          "tokenizers": "text", "chatterbot_corpus": "text", "transformers": "text",
          "gymnasium": "rl", "ale_py": "rl", "pygame": "rl", "stable_baselines3": "rl", "minari": "rl",
          "litdata": "shards", "onnx": "onnx", "onnxscript": "onnx", "onnxruntime": "onnx",
          "timm": "timm"}


def install_command(module: str) -> str:
    top = module.split(".")[0]
    return f"pip install 'multissl[{EXTRAS[top]}]'" if top in EXTRAS else f"pip install {top}"


def missing_module(e: BaseException) -> str | None:
    """The top-level module a ModuleNotFoundError is about — also when a loader worker's error reaches the main
    process as text — if it belongs to an extra; else None."""
    if not isinstance(e, ImportError):
        return None
    found = getattr(e, "name", None) or next(iter(re.findall(r"No module named '([\w.]+)'", str(e))), None)
    top = found.split(".")[0] if found else None
    return top if top in EXTRAS else None


@contextlib.contextmanager
def needs_extras(what: str):
    """A module of an extra missing inside the block (where an import is lazy: a domain's reader, its default data)
    becomes one line: what needs it and the install command."""
    try:
        yield
    except ImportError as e:
        module = missing_module(e)
        if module is None:
            raise
        raise UserError(f"{what} needs the Python package '{module}', which is not installed; install it with: "
                        f"{install_command(module)}") from None


def require(module: str, purpose: str, install: str | None = None):
    """Import an optional dependency, or fail with one line saying what needs it and how to install it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise UserError(f"{purpose} needs the Python package '{module}', which is not installed; "
                        f"install it with: {install or install_command(module)}") from None


DISK_FULL = (errno.ENOSPC, errno.EFBIG, errno.EDQUOT)


def disk_error(e: BaseException, what: str | None = None) -> str | None:
    """One line for a write that failed because the disk (or the file-size limit) is full; None for other errors."""
    cause = e if isinstance(e, OSError) else e.__cause__ or e.__context__
    full = isinstance(cause, OSError) and cause.errno in DISK_FULL or "No space left" in str(e) or "File too large" in \
        str(e) or "file write failed" in str(e)
    if not full:
        return None
    where = what or getattr(cause, "filename", None) or "a file"
    return f"no space left writing {where}; free space there (or point run.dir at another disk) and relaunch"
