"""Detector maps -> detections: centre-score peaks (3x3 local maxima) with boxes, then the reader's kind and
attribute distributions from a crop at each box, and the order reader's P(drawn over) for each pair of
overlapping boxes.

Images of any size are brought to the detector's scale first (`prepare`): shorter side 32 px (box filter when
shrinking, as the world renderer itself anti-aliases), the longer side rounded to a multiple of 4. Boxes come
back in canvas units (the image's shorter side = 1), the unit the world's relation geometry uses.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
from PIL import Image

from mars_eval.judges.world_detector import STRIDE, normalise
from mars_ref.world.scene import box_overlap

SHORT_SIDE = 32
IDENTITY = (1.0, 0.0)  # Platt parameters that leave scores unchanged
CHUNK = 512  # objects per reader call (memory stays flat in the number of detections)


def logit(p: float) -> float:
    p = min(max(p, 1e-6), 1 - 1e-6)
    return math.log(p / (1 - p))


def calibrate_score(score: float, platt: tuple[float, float]) -> float:
    """sigmoid(a * logit(score) + b): a heatmap peak as P(an object is centred here)."""
    a, b = platt
    return 1.0 / (1.0 + math.exp(-(a * logit(score) + b)))


@dataclass(frozen=True)
class Detection:
    score: float  # P(an object is centred here), from the finder's heatmap peak (Platt-calibrated)
    box: tuple[float, float, float, float]  # (x0, y0, x1, y1) in canvas units
    kind: np.ndarray  # over lexicon.KINDS: P(kind | object), from the reader
    color: np.ndarray  # over lexicon.COLORS
    texture: np.ndarray  # over lexicon.TEXTURES
    shape: np.ndarray  # over lexicon.SHAPES (meaningful for shapeable kinds only)
    index: int = 0  # position in its image's detection list
    # P(this object is drawn over detection k of the same image), per k; 0.5 (no evidence) for itself and for
    # boxes that do not overlap
    over: np.ndarray = field(default_factory=lambda: np.full(1, 0.5))

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
        x = normalise(torch.stack([prepared[i] for i in idx]))  # (b, 3, h, w)
        maps = model(x)
        peaks = [_peaks(maps, j, threshold, max_dets) for j in range(len(idx))]
        index = torch.tensor([j for j, ps in enumerate(peaks) for _ in ps], dtype=torch.long)
        boxes = torch.tensor([p[1] for ps in peaks for p in ps], dtype=torch.float32).reshape(-1, 4)
        read = _chunked(model.read, x, index, boxes) if len(boxes) else {}
        probs = {k: torch.softmax(v, dim=1).numpy() for k, v in read.items()}
        over = _order(model, x, index, boxes, [len(ps) for ps in peaks])
        n, s = 0, min(h, w)  # s: pixels per canvas unit
        for j, i in enumerate(idx):
            k = len(peaks[j])
            dets = []
            for d, (score, (cx, cy, bw, bh)) in enumerate(peaks[j], n):
                dets.append(Detection(
                    calibrate_score(score, platt) if platt != IDENTITY else score,
                    ((cx - bw / 2) / s, (cy - bh / 2) / s, (cx + bw / 2) / s, (cy + bh / 2) / s),
                    *(probs[name][d] for name in ("kind", "color", "texture", "shape")),
                    index=d - n, over=over[j][d - n],
                ))
            n += k
            out[i] = dets
    return out  # type: ignore[return-value]


def _order(model, x: torch.Tensor, index: torch.Tensor, boxes: torch.Tensor, counts: list[int]) -> list[np.ndarray]:
    """Per image j (its counts[j] detections consecutive in `boxes` (N, 4) px): (n_j, n_j) P(a drawn over b) for
    pairs whose boxes overlap, else 0.5; one order-reader pass over all pairs, memory linear in the images."""
    out = [np.full((k, k), 0.5) for k in counts]
    xyxy = torch.cat([boxes[:, :2] - boxes[:, 2:] / 2, boxes[:, :2] + boxes[:, 2:] / 2], dim=1).tolist()
    pairs, start = [], 0  # (image, local a, local b, global a, global b)
    for j, k in enumerate(counts):
        for u in range(k):
            for v in range(u + 1, k):
                if box_overlap(xyxy[start + u], xyxy[start + v]) > 0:
                    pairs.append((j, u, v, start + u, start + v))
        start += k
    if pairs:
        a, b = torch.tensor([p[3] for p in pairs]), torch.tensor([p[4] for p in pairs])
        prob = torch.sigmoid(_chunked(model.order, x, index[a], boxes[a], boxes[b])).tolist()  # (P,)
        for (j, u, v, _, _), pr in zip(pairs, prob, strict=True):
            out[j][u, v], out[j][v, u] = pr, 1 - pr
    return out


def _chunked(fn, x: torch.Tensor, *per_item: torch.Tensor):
    """fn(x, *per_item[s]) over consecutive slices s of CHUNK items, outputs concatenated (tensors or dicts)."""
    n = len(per_item[0])
    parts = [fn(x, *(t[i:i + CHUNK] for t in per_item)) for i in range(0, n, CHUNK)]
    if isinstance(parts[0], dict):
        return {k: torch.cat([p[k] for p in parts]) for k in parts[0]}
    return torch.cat(parts)


def boxes_at(maps: dict[str, torch.Tensor], index: torch.Tensor, ys: torch.Tensor, xs: torch.Tensor) -> torch.Tensor:
    """(N, 4) boxes (cx, cy, w, h) in pixels that the finder's size and offset maps give at grid cells (ys, xs)
    (N,) of images `index` (N,): what decoding reports for a peak there."""
    px_per_unit = STRIDE * min(maps["size"].shape[-2:])
    off = torch.sigmoid(maps["offset"][index, :, ys, xs])  # (N, 2)
    centre = (torch.stack([xs, ys], dim=1) + off) * STRIDE
    return torch.cat([centre, torch.exp(maps["size"][index, :, ys, xs]) * px_per_unit], dim=1)


def _peaks(maps: dict[str, torch.Tensor], j: int, threshold: float, max_dets: int) -> list[tuple]:
    """(score, box (cx, cy, w, h) in pixels) per 3x3 local maximum of image j's centre score."""
    heat = torch.sigmoid(maps["center"][j, 0])  # (h, w)
    local_max = torch.nn.functional.max_pool2d(heat[None, None], 3, 1, 1)[0, 0]
    ys, xs = torch.nonzero((heat >= local_max) & (heat > threshold), as_tuple=True)
    order = torch.argsort(heat[ys, xs], descending=True)[:max_dets]
    ys, xs = ys[order], xs[order]
    boxes = boxes_at(maps, torch.full_like(ys, j), ys, xs).tolist()
    return [(float(h), tuple(b)) for h, b in zip(heat[ys, xs].tolist(), boxes, strict=True)]
