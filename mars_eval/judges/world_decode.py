"""Detector maps -> detections: per-kind score peaks (3x3 local maxima) with attribute distributions and boxes.

Images of any size are brought to the detector's scale first (`prepare`): shorter side 32 px (box filter when
shrinking, as the world renderer itself anti-aliases), the longer side rounded to a multiple of 4. Boxes come
back in canvas units (the image's shorter side = 1), the unit the world's relation geometry uses.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np
import torch
from PIL import Image

from mars_eval.judges.world_detector import STRIDE, normalise

SHORT_SIDE = 32
IDENTITY = (1.0, 0.0)  # Platt parameters that leave scores unchanged


def logit(p: float) -> float:
    p = min(max(p, 1e-6), 1 - 1e-6)
    return math.log(p / (1 - p))


def calibrate_score(score: float, platt: tuple[float, float]) -> float:
    """sigmoid(a * logit(score) + b): a heatmap peak as P(an object is centred here)."""
    a, b = platt
    return 1.0 / (1.0 + math.exp(-(a * logit(score) + b)))


@dataclass(frozen=True)
class Detection:
    score: float  # peak of P(object centred here) * P(kind): "an object of this kind is centred here"
    box: tuple[float, float, float, float]  # (x0, y0, x1, y1) in canvas units
    kind: np.ndarray  # over lexicon.KINDS: one-hot for the detector (one peak per kind), any distribution allowed
    color: np.ndarray  # over lexicon.COLORS
    texture: np.ndarray  # over lexicon.TEXTURES
    shape: np.ndarray  # over lexicon.SHAPES (meaningful for shapeable kinds only)
    occluded: float  # probability that a later object covers part of it

    @property
    def extent(self) -> float:
        """The longer box side: the world's object size `s`."""
        return max(self.box[2] - self.box[0], self.box[3] - self.box[1])


def prepare(image: Image.Image) -> torch.Tensor:
    """PIL image -> uint8 (3, H, W) at the detector's scale (shorter side 32, sides multiples of 4)."""
    image = image.convert("RGB")
    w, h = image.size
    k = SHORT_SIDE / min(w, h)
    size = (max(4, round(w * k / 4) * 4), max(4, round(h * k / 4) * 4))
    if size != (w, h):
        image = image.resize(size, Image.BOX if k < 1 else Image.BICUBIC)
    return torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1)


@torch.no_grad()
def detect(model, images: list[Image.Image], threshold: float = 0.05, max_dets: int = 24,
           platt: tuple[float, float] = IDENTITY) -> list[list[Detection]]:
    """Detections per image, best first, scores mapped through `platt`. Images of different sizes are run one
    size-group at a time."""
    prepared = [prepare(im) for im in images]
    out: list[list[Detection] | None] = [None] * len(images)
    by_size: dict[tuple[int, int], list[int]] = {}
    for i, t in enumerate(prepared):
        by_size.setdefault(tuple(t.shape[1:]), []).append(i)
    for (h, w), idx in by_size.items():
        maps = model(normalise(torch.stack([prepared[i] for i in idx])))
        for j, i in enumerate(idx):
            dets = _peaks({k: v[j] for k, v in maps.items()}, min(h, w), threshold, max_dets)
            out[i] = [replace(d, score=calibrate_score(d.score, platt)) for d in dets] if platt != IDENTITY else dets
    return out  # type: ignore[return-value]


def _peaks(maps: dict[str, torch.Tensor], px_per_unit: float, threshold: float, max_dets: int) -> list[Detection]:
    # per-kind scores P(object) * P(kind); peaks per kind, so overlapping objects of different kinds both survive
    heat = torch.sigmoid(maps["center"]) * torch.softmax(maps["kind"], dim=0)  # (K, h, w)
    local_max = torch.nn.functional.max_pool2d(heat[None], 3, 1, 1)[0]
    ks, ys, xs = torch.nonzero((heat >= local_max) & (heat > threshold), as_tuple=True)
    order = torch.argsort(heat[ks, ys, xs], descending=True)[:max_dets]
    probs = {k: torch.softmax(maps[k], dim=0) for k in ("color", "texture", "shape")}  # (C, h, w)
    n_kinds = heat.shape[0]
    cells = px_per_unit / STRIDE
    dets = []
    for k, y, x in zip(ks[order].tolist(), ys[order].tolist(), xs[order].tolist(), strict=True):
        off = torch.sigmoid(maps["offset"][:, y, x])
        cx, cy = (x + float(off[0])) / cells, (y + float(off[1])) / cells
        bw, bh = torch.exp(maps["size"][:, y, x]).tolist()
        kind = np.zeros(n_kinds)
        kind[k] = 1.0
        dets.append(Detection(
            float(heat[k, y, x]),
            (cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2),
            kind,
            *(probs[name][:, y, x].numpy() for name in ("color", "texture", "shape")),
            float(torch.sigmoid(maps["occluded"][0, y, x])),
        ))
    return dets
