"""Errors a user can cause and fix; run.py prints their message, without a traceback, and exits 2."""


class UserError(ValueError):
    """A one-paragraph message that says what went wrong and what to do about it.

    A ValueError, because that is what it is (a value the user chose cannot work), and because
    LangGraph's server shows a ValueError's message in Studio, where other errors read only
    "An internal error occurred"."""
