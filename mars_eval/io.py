"""Atomic file writes: a reader sees either nothing or the complete file, never a partial one."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from mars_eval.errors import MarsEvalError


def atomic_write(path: str | os.PathLike, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp_path)`` then rename the temporary file over ``path`` (same directory, so same filesystem)."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as e:
        raise MarsEvalError(f"cannot write to {path.parent}: {e.strerror or e}") from None
    os.close(fd)
    tmp_path = Path(tmp)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp_path, 0o666 & ~umask)  # mkstemp makes 0600 files; results are ordinary files
    try:
        write(tmp_path)
        with open(tmp_path, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp_path, path)
    except OSError as e:
        tmp_path.unlink(missing_ok=True)
        raise MarsEvalError(f"cannot write {path}: {e.strerror or e}") from None
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise
    return path


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    return atomic_write(path, lambda p: p.write_bytes(data))


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write(path, lambda p: p.write_text(text, encoding="utf-8"))


def atomic_write_json(path: str | os.PathLike, obj) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, ensure_ascii=False, sort_keys=True) + "\n")


def atomic_write_jsonl(path: str | os.PathLike, rows: Iterable[dict]) -> Path:
    return atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False, sort_keys=True) + "\n" for r in rows))


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    """Read a JSONL file; a torn last line (a crash mid-append) is an error that names the file and line."""
    path = Path(path)
    rows = []
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise MarsEvalError(f"cannot read {path}: {e.strerror or e}") from None
    for i, line in enumerate(text.split("\n"), 1):  # not splitlines: U+2028 etc. may stand raw in JSON strings
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            raise MarsEvalError(f"{path}:{i}: not a JSON line") from None
    return rows


def writable_dir(path: str | os.PathLike) -> Path:
    """Create `path` if needed and check that we can write in it, before any long work starts."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise MarsEvalError(f"cannot create output directory {path}: {e.strerror or e}") from None
    if not path.is_dir():
        raise MarsEvalError(f"output path is not a directory: {path}")
    if not os.access(path, os.W_OK | os.X_OK):
        raise MarsEvalError(f"output directory is not writable: {path}")
    return path


@contextmanager
def staged_dir(out: str | os.PathLike, check: Callable[[Path], Path]) -> Iterator[Path]:
    """Yield a fresh hidden directory beside `out`; on success it replaces `out` by rename, on any error it goes.

    `check(out)` validates the target (and returns it as an absolute path) before the work and again before the
    swap, so a directory that someone filled meanwhile, or that holds unrelated files, is never replaced.
    """
    out = check(Path(out))
    tmp = out.parent / f".{out.name}.partial-{os.getpid()}-{time.monotonic_ns()}"
    try:
        tmp.mkdir(parents=True)
    except OSError as e:
        raise MarsEvalError(f"cannot create output directory {out}: {e.strerror or e}") from None
    try:
        yield tmp
        check(out)
        old = None
        if out.is_dir():
            if any(out.iterdir()):
                old = out.parent / f".{out.name}.old-{os.getpid()}-{time.monotonic_ns()}"
                os.rename(out, old)
            else:
                out.rmdir()
        os.rename(tmp, out)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        raise MarsEvalError(f"cannot write {out}: {e.strerror or e}") from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
