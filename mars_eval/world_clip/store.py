"""Write a checkpoint directory atomically: build it in a hidden sibling, then rename it into place.

A reader therefore sees either the previous complete directory or the new complete one, never a half-written
mix. A directory that is not empty is only replaced when it holds `marker` (i.e. it is a checkpoint of the same
kind), so a typo in `--out` cannot wipe unrelated files.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

from mars_eval.errors import MarsEvalError
from mars_eval.io import staged_dir as io_staged_dir


def check_out_dir(out: str | os.PathLike, marker: str) -> Path:
    out = Path(out).absolute()
    if out.exists() and not out.is_dir():
        raise MarsEvalError(f"output path is not a directory: {out}")
    if out.is_dir() and any(out.iterdir()) and not (out / marker).is_file():
        raise MarsEvalError(f"output directory is not empty and holds no {marker}: {out}")
    parent = next((p for p in out.parents if p.exists()), None)
    if parent is not None and not parent.is_dir():
        raise MarsEvalError(f"cannot create {out}: {parent} is a file")
    return out


def staged_dir(out: str | os.PathLike, marker: str):
    """Yield an empty hidden directory next to `out`; on success it replaces `out`, on error it is removed."""
    return io_staged_dir(out, functools.partial(check_out_dir, marker=marker))
