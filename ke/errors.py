"""User-facing errors: one sentence that names the bad input and how to fix it."""


class UserError(Exception):
    """Raised for bad input. The CLI prints the message alone (no traceback) and exits with status 2."""


class Interrupted(KeyboardInterrupt):
    """Ctrl-C during long work, with one sentence saying what was kept (the CLI prints it and exits with 130)."""
