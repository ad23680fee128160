"""Errors raised by the reference implementation for bad configs and checkpoints (the CLI prints them as one line)."""


class MarsRefError(ValueError):
    """A config or checkpoint that cannot be used; the message says what is wrong and where."""
