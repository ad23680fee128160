"""Checkpoint directories that are either complete or invisible, in safetensors + JSON (nothing is unpickled).

Layout of `<run>/ckpt/step_000123/` (the step number counts optimiser steps done; training resumes at that step):
  model.safetensors             trainable parameters, full (consolidated) fp32 master weights, by parameter name
  optimizer[_rankR].{safetensors,json}   optimiser state: tensors in safetensors, the rest of the tree in JSON
                                (single engine: one file, the state is replicated; ZeRO-3: one per rank, partitioned)
  scheduler.json, trainer.json  LR-scheduler state; step, config, world size, engine, elapsed time
  rng_rankR.{safetensors,json}  torch / numpy / python RNG states of each rank
  manifest.json                 size and sha256 of every file above, written last
Every rank writes into `.tmp_step_000123/`; rank 0 then writes the manifest, renames the directory into place
(atomic on POSIX) and finally rewrites the `latest` pointer file atomically. A directory named `step_*` therefore
always holds a complete checkpoint, and `load` re-checks the manifest so a truncated or edited file is rejected.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from mars_eval.errors import MarsEvalError
from mars_eval.io import atomic_write_text

MANIFEST = "manifest.json"
LATEST = "latest"
_STEP_DIR = re.compile(r"^step_(\d+)$")


def step_dir_name(step: int) -> str:
    return f"step_{step:06d}"


# ---- state trees: nested dict/list/tuple of tensors and JSON scalars <-> (JSON skeleton, flat tensor dict) ------
def flatten_tree(obj: Any, tensors: dict[str, torch.Tensor] | None = None, path: str = "t") -> tuple[Any, dict]:
    """Split `obj` into a JSON-able skeleton and a {key: tensor} dict for safetensors; refuses other objects."""
    tensors = {} if tensors is None else tensors
    if isinstance(obj, torch.Tensor):
        tensors[path] = obj.detach().to("cpu", copy=True).contiguous()
        return {"__tensor__": path}, tensors
    if isinstance(obj, tuple):
        return {"__tuple__": [flatten_tree(v, tensors, f"{path}.{i}")[0] for i, v in enumerate(obj)]}, tensors
    if isinstance(obj, list):
        return [flatten_tree(v, tensors, f"{path}.{i}")[0] for i, v in enumerate(obj)], tensors
    if isinstance(obj, dict):
        items = [[k, flatten_tree(v, tensors, f"{path}.{k}")[0]] for k, v in obj.items()]
        for k, _ in items:
            if not isinstance(k, str | int) or isinstance(k, bool):
                raise MarsEvalError(f"cannot store state key {k!r} at {path} (only str and int keys)")
        return {"__items__": items}, tensors
    if obj is None or isinstance(obj, bool | int | float | str):
        return obj, tensors
    raise MarsEvalError(f"cannot store a {type(obj).__name__} at {path} in a checkpoint (tensors and JSON values only)")


def unflatten_tree(skel: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(skel, list):
        return [unflatten_tree(v, tensors) for v in skel]
    if isinstance(skel, dict):
        if "__tensor__" in skel:
            return tensors[skel["__tensor__"]]
        if "__tuple__" in skel:
            return tuple(unflatten_tree(v, tensors) for v in skel["__tuple__"])
        return {k: unflatten_tree(v, tensors) for k, v in skel["__items__"]}
    return skel


# ---- reading -------------------------------------------------------------------------------------------------
def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def read_json(path: Path) -> Any:
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise MarsEvalError(f"cannot read checkpoint file {path}: {e}") from None


def read_tensors(path: Path) -> dict[str, torch.Tensor]:
    try:
        return load_file(str(path), device="cpu")
    except (OSError, SafetensorError) as e:
        raise MarsEvalError(f"cannot read checkpoint file {path}: {e}") from None


def read_tree(directory: Path, stem: str) -> Any:
    return unflatten_tree(read_json(directory / f"{stem}.json"), read_tensors(directory / f"{stem}.safetensors"))


def verify(directory: Path) -> dict:
    """Check every file against the manifest (size, then sha256); return the manifest."""
    manifest = read_json(directory / MANIFEST)
    for name, meta in manifest.get("files", {}).items():
        p = directory / name
        if not p.is_file():
            raise MarsEvalError(f"checkpoint {directory} is missing {name}")
        size = p.stat().st_size
        if size != meta["bytes"]:
            raise MarsEvalError(f"checkpoint file {p} has {size} bytes, the manifest says {meta['bytes']} (truncated?)")
        if _sha256(p) != meta["sha256"]:
            raise MarsEvalError(f"checkpoint file {p} does not match its sha256 in the manifest (corrupted)")
    return manifest


def list_checkpoints(root: Path) -> list[tuple[int, Path]]:
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if (m := _STEP_DIR.match(p.name)) and p.is_dir()]
    return sorted(found)


def find_latest(root: Path) -> Path | None:
    """The directory the `latest` pointer names; without a pointer (a crash right after the rename) the highest
    complete step directory. Temporary directories are never considered."""
    pointer = root / LATEST
    if pointer.is_file():
        name = pointer.read_text(encoding="utf-8").strip()
        if not _STEP_DIR.match(name) or not (root / name).is_dir():
            raise MarsEvalError(f"{pointer} names {name!r}, which is not a checkpoint directory in {root}")
        return root / name
    found = list_checkpoints(root)
    return found[-1][1] if found else None


# ---- writing -------------------------------------------------------------------------------------------------
def _fsync_file(path: Path) -> None:
    with open(path, "rb+") as f:
        os.fsync(f.fileno())


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class CheckpointWriter:
    """Files of one checkpoint, written by every rank into the shared temporary directory.

    Protocol: rank 0 `prepare()`; barrier; every rank `write_*`; barrier; rank 0 `commit()`.
    """

    def __init__(self, root: Path, step: int):
        self.root = Path(root)
        self.step = step
        self.tmp = self.root / f".tmp_{step_dir_name(step)}"
        self.final = self.root / step_dir_name(step)

    def prepare(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        if self.tmp.exists():  # left by a run killed while writing: never complete, safe to drop
            shutil.rmtree(self.tmp)
        self.tmp.mkdir()

    def write_tensors(self, name: str, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None):
        path = self.tmp / name
        save_file({k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}, str(path), metadata=metadata)
        _fsync_file(path)

    def write_json(self, name: str, obj: Any) -> None:
        path = self.tmp / name
        path.write_text(json.dumps(obj, sort_keys=True, ensure_ascii=False) + "\n", encoding="utf-8")
        _fsync_file(path)

    def write_tree(self, stem: str, obj: Any) -> None:
        skel, tensors = flatten_tree(obj)
        self.write_tensors(f"{stem}.safetensors", tensors)
        self.write_json(f"{stem}.json", skel)

    def commit(self, keep_last: int) -> Path:
        files = {p.name: {"bytes": p.stat().st_size, "sha256": _sha256(p)} for p in sorted(self.tmp.iterdir())}
        self.write_json(MANIFEST, {"format": 1, "step": self.step, "files": files})
        _fsync_dir(self.tmp)
        if self.final.exists():  # the same step written by an earlier attempt that was resumed from before it
            trash = self.root / f".old_{self.final.name}"
            shutil.rmtree(trash, ignore_errors=True)
            os.replace(self.final, trash)
            shutil.rmtree(trash)
        os.replace(self.tmp, self.final)
        _fsync_dir(self.root)
        atomic_write_text(self.root / LATEST, self.final.name + "\n")
        for _, old in list_checkpoints(self.root)[:-keep_last]:
            if old != self.final:
                shutil.rmtree(old, ignore_errors=True)
        return self.final


