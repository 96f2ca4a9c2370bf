import errno
import importlib


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


def require(module: str, purpose: str, install: str | None = None):
    """Import an optional dependency, or fail with one line saying what needs it and how to install it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise UserError(f"{purpose} needs the Python package '{module}', which is not installed; "
                        f"install it with: pip install {install or module}") from None


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
