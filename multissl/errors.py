class UserError(Exception):
    """A problem with the user's input or configuration. The CLI prints its one-line message (which
    names the problem and the fix) and exits with status 2 — no traceback."""
