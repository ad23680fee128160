"""The error type that library code raises for bad input; the CLI prints it as one line and exits 1."""

import pickle

from mars_ref.errors import MarsRefError


class MarsEvalError(MarsRefError):
    """A user-facing error: the message must name the offending file or value and fit on one line.

    It subclasses `MarsRefError` so that the CLI catches errors of both packages with one clause.
    """


# What loaders of third-party checkpoints (transformers, open_clip) may raise for a bad weights file.
LOAD_ERRORS = (OSError, ValueError, KeyError, RuntimeError, pickle.UnpicklingError)


def load_failure(e: BaseException) -> str:
    """One line for a failed third-party load. A pickle that torch's `weights_only` loader refused gets a plain
    reason instead of torch's advice on how to load it unsafely."""
    if isinstance(e, pickle.UnpicklingError):
        return "the weights file holds pickled objects other than tensors; refused (torch.load weights_only)"
    return " ".join(str(e).split()) or type(e).__name__
