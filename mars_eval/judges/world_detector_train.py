"""Train the world detector on a built world's 32 px corpora (Stage I images + Stage III low-resolution images).

Ground truth comes from each image's scene (its drawn objects); the judges never see it at scoring time.
Augmentations keep the ground truth exact: horizontal flips (boxes are mirrored) and translations by a few
pixels (boxes move with the content). Loss: CenterNet's focal loss on the centre heatmap and L1 for box size
and offset at object centres (the finder); cross-entropy for kind / colour / texture / shape on crops at the true
boxes, jittered in position and scale, and at the boxes the finder predicts (the reader: its errors at detected
boxes were mostly the finder's box sizes, a pixel off on a 10 px object); binary cross-entropy
for which of two overlapping objects is on top, on minimal pairs of fresh scenes (the order reader,
world_order.py). The first image of each minimal pair also joins the detector's batch, in place of a fresh
scene, so that the finder and the reader see many overlapping objects (the world's priors make them rare); with
`swapped_in_batch`, the second does too.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

from mars_eval.errors import MarsEvalError
from mars_eval.io import read_jsonl
from mars_eval.judges.world_decode import boxes_at
from mars_eval.judges.world_detector import READ_HEADS, STRIDE, DetectorConfig, WorldDetector, normalise
from mars_eval.judges.world_order import MinimalPairs
from mars_eval.judges.world_targets import IGNORE, scene_objects, targets
from mars_eval.world_clip.scenes import ScenePool, SceneStream
from mars_ref.vq_train import to_model_range, to_uint8
from mars_ref.world.scene import Scene

Progress = Callable[[int, int, float], None]
CORPORA = (("stage1", "image"), ("stage3", "low"))
IMAGE_SIZE = 32


@dataclass(frozen=True)
class DetectorTrainConfig:
    steps: int = 1200
    batch_size: int = 64
    lr: float = 3e-3
    weight_decay: float = 1e-4
    warmup: int = 50
    max_shift: int = 2
    flip: bool = True
    seed: int = 0
    fresh: float = 0.5  # share of each batch from new scenes rendered on the fly (world_clip/scenes.py)
    fresh_pool: int = 1024  # rendered fresh scenes kept; `fresh_refresh` of them are replaced per step
    fresh_refresh: int = 8
    box_jitter: float = 0.15  # reader crops: centre moved and size scaled by up to this share of the box
    finder_boxes: bool = True  # the reader and the order reader also read every object at the finder's box
    # fresh scenes per category, relative (others 1): the world's priors leave most objects plain, alone and
    # unoccluded, so textures, overlaps and crowds are asked for more often
    fresh_weights: tuple[tuple[str, float], ...] = (("texture", 3.0), ("complex", 2.0), ("non_spatial", 4.0),
                                                    ("numeracy", 2.0))
    order_pairs: int = 16  # minimal pairs per step for the order reader (2 images each); 0: no order reader
    # the second image of each minimal pair (the pair drawn the other way round) joins the detector batch too, on
    # top of batch_size: twice the partly hidden objects for the reader, whose kind misreads of them are most of
    # the 3D-spatial errors
    swapped_in_batch: bool = False
    vq_fraction: float = 0.5  # share of each batch shown as VQ reconstructions, when a VQ is given
    max_images: int | None = None  # use at most this many training images (tests)
    detector: DetectorConfig = field(default_factory=DetectorConfig)

    def __post_init__(self):
        if self.steps < 1 or self.batch_size < 1 or self.lr <= 0 or self.weight_decay < 0 or self.max_shift < 0:
            raise MarsEvalError(f"invalid judge training config: {self}")
        if self.fresh_pool < 1 or self.fresh_refresh < 0 or not 0 <= self.box_jitter < 0.5 or self.order_pairs < 0:
            raise MarsEvalError(f"invalid judge training config: fresh_pool {self.fresh_pool} >= 1, fresh_refresh "
                                f"{self.fresh_refresh} >= 0, box_jitter {self.box_jitter} in [0, 0.5), order_pairs "
                                f"{self.order_pairs} >= 0")
        if not 0 <= self.fresh < 1 or not 0 <= self.vq_fraction <= 1:
            raise MarsEvalError(f"fresh must be in [0, 1) and vq_fraction in [0, 1], got {self.fresh}, "
                                f"{self.vq_fraction}")
        if self.max_images is not None and self.max_images < 1:
            raise MarsEvalError(f"max_images must be >= 1, got {self.max_images}")

    def to_dict(self) -> dict:
        return asdict(self)


def load_training_scenes(world: str | Path, max_images: int | None = None) -> tuple[torch.Tensor, list[Scene]]:
    """(images (N, 3, 32, 32) uint8, scenes) of the world's 32 px square corpora."""
    from PIL import Image

    world = Path(world)
    if not (world / "stage1" / "manifest.jsonl").is_file():
        raise MarsEvalError(f"no stage1/manifest.jsonl in {world} (build one with `mars-eval world build`)")
    arrays, scenes = [], []
    for corpus, key in CORPORA:
        manifest = world / corpus / "manifest.jsonl"
        if not manifest.is_file():
            continue
        for i, row in enumerate(read_jsonl(manifest), 1):
            if max_images is not None and len(scenes) >= max_images:
                break
            if not isinstance(row.get(key), str) or not isinstance(row.get("scene"), dict):
                raise MarsEvalError(f"{manifest}:{i}: a row needs {key!r} and 'scene'")
            scene = Scene.from_dict(row["scene"])
            if scene.aspect != (1, 1):
                continue
            try:
                with Image.open(manifest.parent / row[key]) as im:
                    a = np.asarray(im.convert("RGB"))
            except OSError as e:
                raise MarsEvalError(f"cannot read world image {manifest.parent / row[key]}: {e}") from None
            if a.shape[:2] != (IMAGE_SIZE, IMAGE_SIZE):
                continue
            arrays.append(a)
            scenes.append(scene)
    if not scenes:
        raise MarsEvalError(f"no {IMAGE_SIZE}x{IMAGE_SIZE} training images in {world}")
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous(), scenes


def make_batch(images: torch.Tensor, scenes: list[Scene], cfg: DetectorTrainConfig,
               gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, list]:
    """Augmented (images (B, 3, H, W) float, heat (B, H/2, W/2), per-sample object targets) from uint8 images
    (B, 3, H, W) and their scenes."""
    m = cfg.max_shift
    batch = images.float()  # (B, 3, H, W)
    b, _, h, w = batch.shape
    flips = (torch.rand(b, generator=gen) < 0.5).tolist() if cfg.flip else [False] * b
    offs = torch.randint(0, 2 * m + 1, (b, 2), generator=gen).tolist() if m else [[0, 0]] * b
    padded = F.pad(batch, (m,) * 4, mode="replicate") if m else batch
    out, heats, objs = [], [], []
    for k in range(b):
        oy, ox = offs[k]
        img = padded[k, :, oy:oy + h, ox:ox + w]
        if flips[k]:
            img = img.flip(-1)
        out.append(img)
        # cropping at (oy, ox) moves the content by (m - ox, m - oy); a flip mirrors the shifted content
        sx = (ox - m) if flips[k] else (m - ox)
        objects = scene_objects(scenes[k], flips[k], (sx, m - oy), px_per_unit=float(min(h, w)))
        heat, tgt = targets(objects, h // STRIDE, w // STRIDE, float(min(h, w)))
        heats.append(torch.from_numpy(heat))
        objs.append(tgt)
    return normalise(torch.stack(out).round().clamp(0, 255)), torch.stack(heats), objs


def focal_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """CenterNet's penalty-reduced focal loss; logits and target (B, h, w)."""
    p = torch.sigmoid(logits).clamp(1e-4, 1 - 1e-4)
    pos = target.eq(1).float()
    pos_loss = -(torch.log(p) * (1 - p) ** 2 * pos).sum()
    neg_loss = -(torch.log(1 - p) * p ** 2 * (1 - target) ** 4 * (1 - pos)).sum()
    return (pos_loss + neg_loss) / pos.sum().clamp(min=1)


def object_boxes(objs: list, px_per_unit: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(image index (N,), true boxes (N, 4) = (cx, cy, w, h) in pixels) of the per-sample object targets."""
    flat = [(k, t) for k, ts in enumerate(objs) for t in ts]
    index = torch.tensor([k for k, _ in flat], dtype=torch.long)
    boxes = torch.tensor([[(t.cx + t.offset[0]) * STRIDE, (t.cy + t.offset[1]) * STRIDE,
                           math.exp(t.log_wh[0]) * px_per_unit, math.exp(t.log_wh[1]) * px_per_unit]
                          for _, t in flat], dtype=torch.float32).reshape(-1, 4)
    return index, boxes


def jitter_boxes(boxes: torch.Tensor, amount: float, gen: torch.Generator) -> torch.Tensor:
    """Boxes (N, 4) with the centre moved by up to `amount` x the longer side and the size scaled by up to
    exp(+-amount): the finder's boxes are about that far off, and the reader must not depend on exact ones."""
    if amount <= 0 or not len(boxes):
        return boxes
    u = torch.rand(len(boxes), 3, generator=gen) * 2 - 1  # (N, 3) in [-1, 1)
    ext = boxes[:, 2:].amax(dim=1)
    out = boxes.clone()
    out[:, 0] += u[:, 0] * amount * ext
    out[:, 1] += u[:, 1] * amount * ext
    out[:, 2:] *= torch.exp(u[:, 2:] * amount)
    return out


def detector_loss(model: WorldDetector, x: torch.Tensor, heat: torch.Tensor, objs: list,
                  gen: torch.Generator | None = None, box_jitter: float = 0.0,
                  finder_boxes: bool = False) -> tuple[torch.Tensor, dict]:
    """Finder + reader loss of one batch (images x (B, 3, H, W) normalised, targets from `make_batch`). The reader
    reads every object at its true box (jittered by `box_jitter`) and, with `finder_boxes`, also at the box the
    finder predicts at its centre, as a two-stage detector's heads train on the proposals they will see."""
    out = model(x)
    parts = {"center": focal_loss(out["center"][:, 0], heat)}
    flat = [t for ts in objs for t in ts]
    if flat:
        b, boxes = object_boxes(objs, float(min(x.shape[-2:])))
        y = torch.tensor([t.cy for t in flat])
        xs = torch.tensor([t.cx for t in flat])

        def at(name):  # (N, C) predictions at object centres
            return out[name][b, :, y, xs]

        size, offset = at("size"), torch.sigmoid(at("offset"))  # (N, 2) each
        parts["size"] = F.l1_loss(size, torch.tensor([t.log_wh for t in flat]))
        parts["offset"] = F.l1_loss(offset, torch.tensor([t.offset for t in flat]))
        read_at = [jitter_boxes(boxes, box_jitter, gen) if gen is not None else boxes]
        if finder_boxes:  # the boxes decoding would give at these centres: the reader learns the finder's errors
            read_at.append(boxes_at(out, b, y, xs).detach())
        read = model.read(x, b.repeat(len(read_at)), torch.cat(read_at))  # logits (len(read_at) * N, C)
        for name in READ_HEADS:  # kind, color, texture, shape (IGNORE where a kind has no shape)
            labels = torch.tensor([getattr(t, name) for t in flat]).repeat(len(read_at))
            if (labels != IGNORE).any():
                parts[name] = F.cross_entropy(read[name], labels, ignore_index=IGNORE)
    total = sum(parts.values())
    return total, {k: v.item() for k, v in parts.items()}


def order_loss(model: WorldDetector, images: torch.Tensor, box_a: torch.Tensor, box_b: torch.Tensor,
               labels: torch.Tensor, gen: torch.Generator, box_jitter: float, finder_boxes: bool = False) -> torch.Tensor:
    """Binary cross-entropy of the order reader on minimal pairs (`MinimalPairs.batch`: uint8 images (N, 3, H, W),
    boxes (N, 4) px, labels (N,)), both boxes jittered as the finder's are off; with `finder_boxes`, also at the
    boxes the finder predicts at the two objects' centres (as in `detector_loss`)."""
    x, index = normalise(images), torch.arange(len(images))
    a, b = [jitter_boxes(box_a, box_jitter, gen)], [jitter_boxes(box_b, box_jitter, gen)]
    if finder_boxes:
        training = model.training
        model.eval()  # as decoding runs it (and the batch norms' statistics stay the detector batch's)
        with torch.no_grad():
            maps = model(x)
        model.train(training)
        h, w = maps["size"].shape[-2:]
        for true, out in ((box_a, a), (box_b, b)):
            cells = (true[:, :2] / STRIDE).floor().long()  # (N, 2) x, y
            out.append(boxes_at(maps, index, cells[:, 1].clamp(0, h - 1), cells[:, 0].clamp(0, w - 1)))
    logits = model.order(x, index.repeat(len(a)), torch.cat(a), torch.cat(b))  # (len(a) * N,)
    return F.binary_cross_entropy_with_logits(logits, labels.repeat(len(a)))


def _lr(step: int, cfg: DetectorTrainConfig) -> float:
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    t = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
    return cfg.lr * 0.5 * (1 + math.cos(math.pi * min(1.0, t)))


def vq_roundtrip(vq, images: torch.Tensor) -> torch.Tensor:
    """uint8 (B, 3, H, W) -> the same images encoded and decoded by a VQ tokenizer, uint8 (B, 3, H, W)."""
    with torch.no_grad():
        y = vq.decode_codes(vq.encode(to_model_range(images)))  # (B, 3, H, W) in ~[-1, 1]
    return to_uint8(y)


def train_detector(images: torch.Tensor, scenes: list[Scene], cfg: DetectorTrainConfig,
                   progress: Progress | None = None, stream: SceneStream | None = None,
                   vq=None, pairs: MinimalPairs | None = None,
                   init: WorldDetector | None = None) -> tuple[WorldDetector, dict]:
    """Train from scratch (or from `init`'s weights, trained in place; its config must be `cfg.detector`) on the
    corpora (`images`, `scenes`) plus `cfg.fresh` of each batch from `stream`, and
    the order reader on `cfg.order_pairs` minimal pairs per step from `pairs` (the first image of each takes the
    place of a fresh scene in the detector's batch, the second joins it with `cfg.swapped_in_batch`); with a VQ
    tokenizer, `cfg.vq_fraction` of the images are shown as their VQ reconstruction (what a model's samples look
    like; the scene, hence the target, is unchanged). Returns the model (eval mode) and a summary."""
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    if init is not None and init.cfg != cfg.detector:
        raise MarsEvalError(f"initial detector config {init.cfg} differs from the training config {cfg.detector}")
    model = init if init is not None else WorldDetector(cfg.detector)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    n = len(scenes)
    n_fresh = round(cfg.fresh * cfg.batch_size) if stream is not None else 0
    batch = min(cfg.batch_size - n_fresh, n)
    n_pairs = cfg.order_pairs if pairs is not None else 0
    n_shared = min(n_fresh, n_pairs)  # minimal pairs whose first image joins the detector batch
    n_vq = round(cfg.vq_fraction * (batch + n_fresh - n_shared))
    pool = ScenePool(stream, max(cfg.fresh_pool, n_fresh), cfg.fresh_refresh) if n_fresh > n_shared else None
    history: list[dict] = []
    t0, cpu0 = time.perf_counter(), time.process_time()
    model.train()
    for step in range(cfg.steps):
        for g in opt.param_groups:
            g["lr"] = _lr(step, cfg)
        idx = torch.randperm(n, generator=gen)[:batch].tolist()
        imgs, scs = images[idx], [scenes[i] for i in idx]
        if n_pairs:
            p_imgs, p_scenes, box_a, box_b, labels = pairs.batch(n_pairs)
            if vq is not None and cfg.vq_fraction:
                pick = torch.rand(len(p_imgs), generator=gen) < cfg.vq_fraction
                p_imgs[pick] = vq_roundtrip(vq, p_imgs[pick])
            imgs, scs = torch.cat([imgs, p_imgs[0:2 * n_shared:2]]), scs + p_scenes[0:2 * n_shared:2]
        if pool is not None:
            fresh_imgs, fresh_scenes = pool.batch(n_fresh - n_shared, gen)
            imgs, scs = torch.cat([imgs, fresh_imgs]), scs + fresh_scenes
        if vq is not None and n_vq:
            pick = torch.randperm(len(scs) - n_shared, generator=gen)[:n_vq]
            pick = pick + (pick >= batch).long() * n_shared  # the minimal pairs had their turn
            imgs = imgs.clone()
            imgs[pick] = vq_roundtrip(vq, imgs[pick])
        if n_pairs and cfg.swapped_in_batch:
            imgs, scs = torch.cat([imgs, p_imgs[1::2]]), scs + p_scenes[1::2]
        x, heat, objs = make_batch(imgs, scs, cfg, gen)
        loss, parts = detector_loss(model, x, heat, objs, gen, cfg.box_jitter, cfg.finder_boxes)
        if n_pairs:
            o_loss = order_loss(model, p_imgs, box_a, box_b, labels, gen, cfg.box_jitter, cfg.finder_boxes)
            loss, parts = loss + o_loss, {**parts, "order": o_loss.item()}
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        history.append(parts)
        if progress is not None:
            progress(step + 1, cfg.steps, loss.item())
    model.eval()
    tail = history[-min(50, len(history)):]
    summary = {
        "steps": cfg.steps,
        "train_seconds": round(time.perf_counter() - t0, 2),
        "train_cpu_seconds": round(time.process_time() - cpu0, 2),  # wall time on an idle machine (1 thread)
        "n_images": n,
        "vq_augmented": vq is not None,
        "loss_last": {k: float(np.mean([h[k] for h in tail if k in h])) for k in history[-1]},
    }
    return model, summary
