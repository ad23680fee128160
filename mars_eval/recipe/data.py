"""World corpora as training examples: images VQ-encoded once, captions tokenised once, cached on disk.

The cache file is named by everything that determines it (corpus manifest, VQ weights, tokenizer), written
atomically, and holds only tensors (safetensors) and JSON, so loading it runs no code.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from mars_eval.errors import MarsEvalError
from mars_eval.io import atomic_write, read_jsonl
from mars_eval.metrics.images import load_rgb
from mars_ref.vq_train import to_model_range
from mars_ref.world import Scene, caption, render
from mars_ref.world.dense import dense_caption

HELD_OUT_SPLITS = ("val", "test")
DENSE_FORMAT = "dense/1"  # part of the corpus cache key: a change in the dense captions re-tokenises


@dataclass
class Corpus:
    """One world corpus, tokenised. Grids of one corpus may differ in size (Stage II aspect ratios)."""

    codes: list[torch.Tensor]  # per example (h*w,) int64 codebook indices (Stage III: the low-res grid)
    grids: list[tuple[int, int]]  # per example (h, w)
    captions: dict[str, list[list[int]]]  # lang -> per example caption token ids
    high: list[torch.Tensor] | None = None  # Stage III: (H*W,) high-res codes
    dense: dict[str, list[list[int]]] | None = None  # lang -> per example dense caption (mars_ref.world.dense)
    objects: list[torch.Tensor] | None = None  # per example (h*w,) bool: the token's patch meets an object's box

    def __len__(self) -> int:
        return len(self.codes)


def _file_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@torch.inference_mode()
def _encode(vq, root: Path, names: list[str], batch: int = 64) -> list[torch.Tensor]:
    """VQ-encode images (each read once), batching those of equal size; returns flattened codes per image."""
    arrays = [load_rgb(root / n) for n in names]  # (H, W, 3) uint8 each
    out: list[torch.Tensor | None] = [None] * len(names)
    sizes: dict[tuple[int, ...], list[int]] = {}
    for i, a in enumerate(arrays):
        sizes.setdefault(a.shape, []).append(i)
    for idx in sizes.values():
        for s in range(0, len(idx), batch):
            part = idx[s : s + batch]
            x = torch.from_numpy(np.stack([arrays[i] for i in part])).permute(0, 3, 1, 2)  # (b, 3, H, W) uint8
            codes = vq.encode(to_model_range(x))  # (b, h, w)
            for j, i in enumerate(part):
                out[i] = codes[j].reshape(-1).clone()
    return out  # type: ignore[return-value]


def load_corpus(world: Path, corpus: str, vq, vq_dir: Path, tokenizer, tokenizer_dir: Path, cache_dir: Path,
                limit: int | None = None) -> Corpus:
    """Corpus `corpus` ("stage1" | "stage2" | "stage3") of a world build, tokenised (cached)."""
    root = world / corpus
    manifest = root / "manifest.jsonl"
    if not manifest.is_file():
        raise MarsEvalError(f"no {corpus} corpus in {world} (missing {manifest}); build it with `mars-eval world build`")
    key = hashlib.sha256("|".join([corpus, str(limit), DENSE_FORMAT, _file_digest(manifest),
                                   _file_digest(vq_dir / "model.safetensors"),
                                   _file_digest(tokenizer_dir / "tokenizer.json")]).encode()).hexdigest()[:16]
    cache = cache_dir / f"corpus-{corpus}-{key}.safetensors"
    rows = read_jsonl(manifest)[:limit]
    if cache.is_file():
        return _from_cache(cache)
    f = vq.cfg.downsample_factor
    if corpus == "stage3":
        codes = _encode(vq, root, [r["low"] for r in rows])
        high = _encode(vq, root, [r["high"] for r in rows])
        grids = [(r["low_size"][1] // f, r["low_size"][0] // f) for r in rows]
    else:
        codes, high = _encode(vq, root, [r["image"] for r in rows]), None
        grids = [(r["height"] // f, r["width"] // f) for r in rows]
    caps = {lang: [tokenizer(r[f"caption_{lang}"], add_special_tokens=False)["input_ids"] for r in rows]
            for lang in ("en", "zh")}
    dense = None
    if corpus == "stage1":
        scenes = [Scene.from_dict(r["scene"]) for r in rows]
        dense = {lang: tokenizer([dense_caption(s, lang) for s in scenes], add_special_tokens=False)["input_ids"]
                 for lang in ("en", "zh")}
    c = Corpus(codes, grids, caps, high, dense)
    _to_cache(c, cache)
    return c


def val_prompts(world: Path) -> set[str]:
    """The English val prompts of a world build (its prompts/*_val*.txt): no training scene carries one."""
    files = sorted((Path(world) / "prompts").glob("*_val*.txt"))
    if not files:
        raise MarsEvalError(f"no val prompt files in {Path(world) / 'prompts'}; rebuild the world")
    return {line for f in files for line in f.read_text(encoding="utf-8").splitlines() if line}


@torch.inference_mode()
def scenes_corpus(scenes: list[Scene], vq, tokenizer, px: int = 32) -> Corpus:
    """Scenes rendered at px x px, VQ-encoded and captioned (short and dense, EN and ZH), as a Corpus."""
    x = torch.from_numpy(np.stack([np.asarray(render(s, px, px)) for s in scenes])).permute(0, 3, 1, 2)  # uint8
    codes = vq.encode(to_model_range(x))  # (B, h, w)
    caps = {lang: tokenizer([caption(s, lang) for s in scenes], add_special_tokens=False)["input_ids"]
            for lang in ("en", "zh")}
    dense = {lang: tokenizer([dense_caption(s, lang) for s in scenes], add_special_tokens=False)["input_ids"]
             for lang in ("en", "zh")}
    h, w = codes.shape[1:]
    return Corpus(list(codes.flatten(1)), [(h, w)] * len(scenes), caps, dense=dense,
                  objects=[object_tokens(s, h, w) for s in scenes])


def object_tokens(scene: Scene, h: int, w: int) -> torch.Tensor:
    """(h*w,) bool: which cells of an h x w token grid over a square scene meet a drawn object's box."""
    mask = torch.zeros(h, w, dtype=torch.bool)
    for o in scene.objects:
        x0, y0, x1, y1 = o.box  # canvas units: the square canvas is [0, 1]^2
        c0, c1 = max(0, int(np.floor(x0 * w))), min(w, int(np.ceil(x1 * w)))
        r0, r1 = max(0, int(np.floor(y0 * h))), min(h, int(np.ceil(y1 * h)))
        mask[r0:r1, c0:c1] = True
    return mask.flatten()


def _to_cache(c: Corpus, path: Path) -> None:
    tensors = {"codes": torch.cat(c.codes), "code_len": torch.tensor([len(x) for x in c.codes])}
    if c.high is not None:
        tensors["high"] = torch.cat(c.high)
        tensors["high_len"] = torch.tensor([len(x) for x in c.high])
    meta = {"grids": json.dumps(c.grids), "captions": json.dumps(c.captions), "dense": json.dumps(c.dense)}
    atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata=meta))


def _from_cache(path: Path) -> Corpus:
    from safetensors import safe_open

    t = load_file(str(path))
    with safe_open(str(path), "pt") as f:
        meta = f.metadata()
    codes = list(torch.split(t["codes"], t["code_len"].tolist()))
    high = list(torch.split(t["high"], t["high_len"].tolist())) if "high" in t else None
    return Corpus(codes, [tuple(g) for g in json.loads(meta["grids"])], json.loads(meta["captions"]), high,
                  json.loads(meta.get("dense", "null")))


def load_world_images(world: Path, held_out: int, max_images: int | None = None):
    """Read a world's `manifest.jsonl` (one image path per row) into uint8 tensors (N, 3, H, W).

    Rows name their image under "image" (or "path" / "file"), relative to the world directory. Held-out images
    are the rows whose "split" is val/test when the manifest has splits, else the last `held_out` rows (at most
    a tenth of the images).
    Only the most common image size is kept (a VQ batch needs one size); the others are counted as skipped.
    Returns (train, held, held_names, skipped).
    """
    manifest = world / "manifest.jsonl"
    if not manifest.is_file():
        raise MarsEvalError(f"no manifest.jsonl in {world} (build one with `mars-eval world build`)")
    rows = read_jsonl(manifest)
    if max_images is not None:
        rows = rows[:max_images]
    entries = []
    for i, row in enumerate(rows, 1):
        rel = next((row[k] for k in ("image", "path", "file") if isinstance(row.get(k), str)), None)
        if rel is None:
            raise MarsEvalError(f"{manifest}:{i}: row has no image path (keys 'image', 'path' or 'file')")
        entries.append((world / rel, row.get("split")))
    if not entries:
        raise MarsEvalError(f"{manifest} lists no images")
    has_splits = any(s is not None for _, s in entries)
    if has_splits:
        held_mask = [s in HELD_OUT_SPLITS for _, s in entries]
    else:
        held_out = min(held_out, max(1, len(entries) // 10))
        if not 0 < held_out < len(entries):
            raise MarsEvalError(f"--held-out {held_out} must be between 1 and {len(entries) - 1} "
                                f"({len(entries)} images in {manifest})")
        held_mask = [i >= len(entries) - held_out for i in range(len(entries))]
    images = [load_rgb(path) for path, _ in entries]
    size = Counter(a.shape for a in images).most_common(1)[0][0]
    keep = [i for i, a in enumerate(images) if a.shape == size]

    def stack(idx):
        if not idx:
            return torch.empty(0, 3, size[0], size[1], dtype=torch.uint8)
        return torch.from_numpy(np.stack([images[i] for i in idx])).permute(0, 3, 1, 2).contiguous()

    train_idx = [i for i in keep if not held_mask[i]]
    held_idx = [i for i in keep if held_mask[i]]
    if not train_idx or not held_idx:
        raise MarsEvalError(f"{manifest}: need both training and held-out images of size {size[1]}x{size[0]}, "
                            f"got {len(train_idx)} and {len(held_idx)}")
    return stack(train_idx), stack(held_idx), [entries[i][0].name for i in held_idx], len(images) - len(keep)
