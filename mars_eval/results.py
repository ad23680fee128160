"""Results rows: one JSON object per (run, metric), appended to JSONL files that reports read.

Appends are serialised with an exclusive `flock` on a side lock file and land by atomic rename, so concurrent
writers (parallel CI jobs, two ablation runs) never interleave or tear a line, and a crash leaves the old file.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import subprocess
import time
from collections.abc import Iterable
from contextlib import contextmanager
from pathlib import Path

from mars_eval.errors import MarsEvalError
from mars_eval.io import atomic_write_text, read_jsonl


def git_commit(cwd: str | Path | None = None) -> str:
    """The current commit (short) or 'unknown' outside a git checkout."""
    try:
        out = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=cwd, capture_output=True, text=True,
                             timeout=10)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def config_hash(obj) -> str:
    """A short stable hash of a JSON-able config: names cached artifacts and results rows."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, ensure_ascii=False, default=str).encode()).hexdigest()[:16]


@contextmanager
def _locked(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def append_rows(path: str | os.PathLike, rows: Iterable[dict]) -> None:
    """Append rows to a JSONL results file: all or nothing, safe against concurrent appenders."""
    path = Path(path)
    new = "".join(json.dumps(r, ensure_ascii=False, sort_keys=True) + "\n" for r in rows)
    try:
        with _locked(path):
            old = path.read_text(encoding="utf-8") if path.exists() else ""
            if old and not old.endswith("\n"):
                raise MarsEvalError(f"{path}: last line is incomplete; refusing to append")
            atomic_write_text(path, old + new)
    except OSError as e:
        raise MarsEvalError(f"cannot append to {path}: {e.strerror or e}") from None


def read_rows(path: str | os.PathLike) -> list[dict]:
    return read_jsonl(path)


def stamp(row: dict, **extra) -> dict:
    """Add the provenance every row carries: commit and time."""
    return {"commit": git_commit(), "time": time.strftime("%Y-%m-%dT%H:%M:%S"), **row, **extra}
