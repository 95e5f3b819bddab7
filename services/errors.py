"""Errors a user can cause and fix; run.py prints their message, without a traceback, and exits 2."""


class UserError(Exception):
    """A one-paragraph message that says what went wrong and what to do about it."""
