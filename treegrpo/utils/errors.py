"""Errors a user can act on: the CLI prints their message alone (no stack trace) and exits non-zero."""


class UserError(Exception):
    """A problem with the user's input or environment; the message names the bad value and the fix."""
