"""Write a checkpoint directory atomically: build it in a hidden sibling, then rename it into place.

A reader therefore sees either the previous complete directory or the new complete one, never a half-written
mix. A directory that is not empty is only replaced when it holds `marker` (i.e. it is a checkpoint of the same
kind), so a typo in `--out` cannot wipe unrelated files.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from mars_eval.errors import MarsEvalError


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


@contextmanager
def staged_dir(out: str | os.PathLike, marker: str) -> Iterator[Path]:
    """Yield an empty hidden directory next to `out`; on success it replaces `out`, on error it is removed."""
    out = check_out_dir(out, marker)
    tmp = out.parent / f".{out.name}.partial-{os.getpid()}-{time.monotonic_ns()}"
    try:
        tmp.mkdir(parents=True)
    except OSError as e:
        raise MarsEvalError(f"cannot create output directory {out}: {e.strerror or e}") from None
    try:
        yield tmp
        check_out_dir(out, marker)
        old = None
        if out.is_dir():
            old = out.parent / f".{out.name}.old-{os.getpid()}-{time.monotonic_ns()}"
            os.rename(out, old)
        os.rename(tmp, out)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        raise MarsEvalError(f"cannot write {out}: {e.strerror or e}") from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
