"""`open_source(spec)`: the source a path names (or a `kind:` prefix forces)."""

from __future__ import annotations

from pathlib import Path

from mars_eval.errors import MarsEvalError
from mars_eval.sources.base import Source

KINDS = ("jsonl", "folder", "wds")


def open_source(spec: str, max_bad_fraction: float = 0.01) -> Source:
    from mars_eval.sources.files import FolderSource, JsonlSource
    from mars_eval.sources.wds import WdsSource

    spec = str(spec)
    kind, _, rest = spec.partition(":")
    if kind in KINDS and rest:
        path = rest
    else:
        kind, path = _infer(spec), spec
    cls = {"jsonl": JsonlSource, "folder": FolderSource, "wds": WdsSource}[kind]
    return cls(path, max_bad_fraction)


def _infer(spec: str) -> str:
    if spec.endswith(".jsonl"):
        return "jsonl"
    if ".tar" in Path(spec).name:
        return "wds"
    if Path(spec).is_dir():
        return "folder"
    raise MarsEvalError(f"cannot tell what kind of data source {spec} is: give a .jsonl manifest, a folder, "
                        f"tar shards, or a prefix ({', '.join(k + ':' for k in KINDS)})")
