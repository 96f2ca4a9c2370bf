import importlib


class UserError(Exception):
    """A problem with the user's input or configuration. The CLI prints its one-line message (which
    names the problem and the fix) and exits with status 2 — no traceback."""


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
