"""On-disk cache of folder features and statistics, keyed by everything that changes them.

The key is a sha256 over: the folder's file list (relative names with size and mtime, or with a content sha256
when `content_hash=True`), the preprocessing protocol and resolution (with the Pillow / clean-fid /
torch-fidelity versions whose resizers it uses), the extractor (name, weights sha256, numeric precision) and a
format version. Touching, adding, removing or renaming any image gives a new key, so a stale entry is never
read; the folder's own path is not in the key, so a moved folder still hits. Entries are safetensors files (no
pickle) written atomically; an unreadable or inconsistent entry is recomputed and replaced.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np

from mars_eval.errors import MarsEvalError
from mars_eval.io import atomic_write_bytes
from mars_eval.metrics.features import FolderFeatures
from mars_eval.metrics.images import ImageFolder
from mars_eval.metrics.statistics import GaussianStats

CACHE_FORMAT = 1


def default_cache_dir() -> Path:
    """$MARS_EVAL_CACHE_DIR, else $XDG_CACHE_HOME/mars-eval, else ~/.cache/mars-eval."""
    env = os.environ.get("MARS_EVAL_CACHE_DIR")
    if env:
        return Path(env)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "mars-eval"


def _file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    except OSError as e:
        raise MarsEvalError(f"cannot read {path}: {e.strerror or e}") from None
    return h.hexdigest()


def folder_fingerprint(folder: ImageFolder, content_hash: bool = False) -> str:
    """sha256 over (relative name, size, mtime_ns) of every image, or (relative name, content sha256)."""
    h = hashlib.sha256()
    for rel, path in zip(folder.relative(), folder.files, strict=True):
        if content_hash:
            entry = [rel, _file_sha256(path)]
        else:
            try:
                st = path.stat()
            except OSError as e:
                raise MarsEvalError(f"cannot read {path}: {e.strerror or e}") from None
            entry = [rel, st.st_size, st.st_mtime_ns]
        h.update(json.dumps(entry, ensure_ascii=False).encode() + b"\n")
    return h.hexdigest()


def cache_key(fingerprint: str, preprocess: dict, extractor: dict) -> str:
    blob = {"format": CACHE_FORMAT, "files": fingerprint, "preprocess": preprocess, "extractor": extractor}
    return hashlib.sha256(json.dumps(blob, sort_keys=True).encode()).hexdigest()


def cache_path(cache_dir: str | os.PathLike, key: str) -> Path:
    return Path(cache_dir) / "inception-features" / f"{key}.safetensors"


def load(path: Path, key: str) -> FolderFeatures | None:
    """The cached entry, or None when absent or unusable (it will be recomputed). Entries written without the
    feature matrix (`keep=False`) have `features=None`; a caller that needs features recomputes."""
    from safetensors import SafetensorError, safe_open
    from safetensors.numpy import load_file

    if not path.is_file():
        return None
    try:
        with safe_open(str(path), framework="numpy") as f:
            meta = f.metadata() or {}
        if meta.get("key") != key:
            return None
        data = load_file(str(path))
        stats = GaussianStats(data["mu"], data["sigma"], int(meta["n"]))
        feats = data.get("features")
        if feats is not None and feats.shape != (stats.n, stats.dim):
            return None
        return FolderFeatures(stats, feats)
    except (SafetensorError, OSError, KeyError, ValueError, MarsEvalError):
        return None


def store(path: Path, key: str, value: FolderFeatures, info: dict) -> None:
    from safetensors.numpy import save

    tensors = {"mu": np.ascontiguousarray(value.stats.mu), "sigma": np.ascontiguousarray(value.stats.sigma)}
    if value.features is not None:
        tensors["features"] = np.ascontiguousarray(value.features)
    meta = {"key": key, "n": str(value.stats.n), "info": json.dumps(info, sort_keys=True, ensure_ascii=False)}
    atomic_write_bytes(path, save(tensors, metadata=meta))
