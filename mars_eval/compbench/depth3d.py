"""3D-spatial score (T2I-CompBench++ `UniDet_eval/3D_spatial_eval.py`): detector + monocular depth.

Official rule: relation = first of ("in front of", "behind", "hidden") in the prompt; objects = first and last
NOUN; the depth map is the model's relative inverse depth (MiDaS DPT-hybrid: larger = nearer), min-max
normalised per image and stored as 8 bits; each object's nearness is the mean of the map inside its box. Then

    IoU > 0.5:       1 if the nearness order is right, else 0
    0 < IoU < 0.5:   IoU / 0.5 if the order is right, else 0     (no overlap, or IoU = 0.5 exactly -> 0)
    score = 0.25*conf1 + 0.25*conf2 + 0.5*position  (one object found: 0.25*conf; no 0.5 floor in 3D)

"in front of": object 1 nearer; "behind" and "hidden" (as in "A hidden by B"): object 1 farther.

Depth model: any transformers `AutoModelForDepthEstimation` checkpoint that predicts relative inverse depth
(DPT / DPT-hybrid MiDaS as the official, Depth Anything); set `larger_is_nearer=False` for metric-depth models.
Its own image processor replaces the official 480x480 resize. Fixed official bugs: the box region was read
from the map as `map[x0:x1, y0:y1]` (rows indexed by x), and each object took the *last* matching detection
before the loop stopped instead of the best; here rows are y and the highest-scoring detection is used.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from mars_eval.compbench.detector import Detection
from mars_eval.compbench.detector_spatial import iou
from mars_eval.errors import LOAD_ERRORS, MarsEvalError, load_failure

RELATIONS_3D = ("in front of", "behind", "hidden")


@dataclass(frozen=True)
class DepthConfig:
    larger_is_nearer: bool = True  # MiDaS / DPT / Depth Anything predict inverse depth
    quantise_8bit: bool = True  # the official stores the normalised map as an 8-bit PNG
    iou_threshold: float = 0.5
    batch_size: int = 8
    device: str = "cpu"

    def __post_init__(self):
        if not 0 < self.iou_threshold <= 1 or self.batch_size < 1:
            raise MarsEvalError(f"invalid depth config: {self}")


class DepthJudge:
    def __init__(self, model_dir: str | Path, config: DepthConfig | None = None):
        from transformers import AutoImageProcessor, AutoModelForDepthEstimation

        self.config = config or DepthConfig()
        model_dir = Path(model_dir)
        if not model_dir.is_dir():
            raise MarsEvalError(f"depth model directory not found: {model_dir}")
        try:
            self.processor = AutoImageProcessor.from_pretrained(model_dir, local_files_only=True)
            self.model = AutoModelForDepthEstimation.from_pretrained(model_dir, local_files_only=True)
        except LOAD_ERRORS as e:
            raise MarsEvalError(f"cannot load a depth model from {model_dir}: {load_failure(e)[:300]}") from None
        self.model.eval().to(self.config.device)
        self.name = f"{self.model.config.model_type}:{model_dir.name}"

    @torch.inference_mode()
    def nearness(self, images: Sequence[Image.Image]) -> list[np.ndarray]:
        """Per image an (H, W) map in [0, 1], 1 = nearest, at the image's own resolution."""
        out: list[np.ndarray] = [np.zeros(0)] * len(images)
        for size in dict.fromkeys(im.size for im in images):  # same-size batches: no padding effects
            idx = [i for i, im in enumerate(images) if im.size == size]
            for s in range(0, len(idx), self.config.batch_size):
                part = idx[s : s + self.config.batch_size]
                ims = [images[i].convert("RGB") for i in part]
                inputs = self.processor(images=ims, return_tensors="pt").to(self.config.device)
                pred = self.model(**inputs)
                maps = self.processor.post_process_depth_estimation(pred, target_sizes=[(im.height, im.width) for im in ims])
                for i, m in zip(part, maps, strict=True):
                    out[i] = normalise(m["predicted_depth"].float().cpu().numpy(), self.config)
        return out


def normalise(depth: np.ndarray, config: DepthConfig = DepthConfig()) -> np.ndarray:
    """Min-max to [0, 1] with 1 = nearest (official), optionally rounded to 8 bits as the official PNG."""
    d = depth.astype(np.float64)
    if not config.larger_is_nearer:
        d = -d
    span = d.max() - d.min()
    d = (d - d.min()) / span if span > 0 else np.zeros_like(d)
    return np.round(d * 255) / 255 if config.quantise_8bit else d


@dataclass(frozen=True)
class Spatial3DResult:
    score: float
    relation: str | None
    obj1: str | None
    obj2: str | None
    conf1: float | None
    conf2: float | None
    position: float | None


def find_relation_3d(prompt: str) -> str | None:
    return next((r for r in RELATIONS_3D if r in prompt), None)


def _mean_in_box(nearness: np.ndarray, box) -> float:
    x0, y0, x1, y1 = (int(v) for v in box)  # the official truncates coordinates with int()
    h, w = nearness.shape
    region = nearness[max(y0, 0) : min(y1, h), max(x0, 0) : min(x1, w)]  # rows are y
    return float(region.mean()) if region.size else float("nan")


def position_3d(relation: str | None, b1, b2, nearness: np.ndarray, iou_threshold: float = 0.5) -> float:
    o = iou(b1, b2)
    diff = _mean_in_box(nearness, b1) - _mean_in_box(nearness, b2)  # > 0: object 1 nearer
    if relation == "in front of":
        right_order = diff > 0
    elif relation in ("behind", "hidden"):
        right_order = diff < 0
    else:
        return 0.0
    if not right_order:
        return 0.0
    if o > iou_threshold:
        return 1.0
    return o / iou_threshold if 0 < o < iou_threshold else 0.0  # official: IoU exactly at the threshold -> 0


def spatial3d_score(prompt: str, obj1: str | None, obj2: str | None, detections: Sequence[Detection],
                    nearness: np.ndarray, config: DepthConfig = DepthConfig()) -> Spatial3DResult:
    from mars_eval.compbench.detector_spatial import canonical

    dets = sorted(detections, key=lambda d: -d.score)
    c1, c2 = (canonical(o) if o else None for o in (obj1, obj2))
    # official 3D matching is by substring ("dog" matches a "hot dog" label)
    d1 = next((d for d in dets if c1 and c1 in canonical(d.label)), None)
    d2 = next((d for d in dets if c2 and c2 in canonical(d.label) and not (c1 == c2 and d is d1)), None)
    relation, position = find_relation_3d(prompt), None
    if d1 is not None and d2 is not None:
        position = position_3d(relation, d1.box, d2.box, nearness, config.iou_threshold)
        score = 0.25 * d1.score + 0.25 * d2.score + 0.5 * position
    elif d1 is not None or d2 is not None:
        score = 0.25 * (d1 or d2).score
    else:
        score = 0.0
    return Spatial3DResult(score, relation, obj1, obj2, d1.score if d1 else None, d2.score if d2 else None, position)
