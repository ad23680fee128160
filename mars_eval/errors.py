"""The error type that library code raises for bad input; the CLI prints it as one line and exits 1."""

from mars_ref.errors import MarsRefError


class MarsEvalError(MarsRefError):
    """A user-facing error: the message must name the offending file or value and fit on one line.

    It subclasses `MarsRefError` so that the CLI catches errors of both packages with one clause.
    """
