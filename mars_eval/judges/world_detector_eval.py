"""Held-out evaluation of the world detector, and the Platt calibration of its objectness scores.

CenterNet heatmap peaks rank objects well but are not probabilities (a centre near a cell border splits its
mass over two cells), while the judges multiply them like probabilities. So after training, the detector is run
on held-out world images, each peak is matched to a ground-truth object or not (by position: the finder is
class-agnostic, kinds are the reader's), and a logistic map `P(object) = sigmoid(a * logit(peak) + b)` is
fitted to those labels (Platt scaling). The same matching gives the reader's per-attribute accuracies for the
training summary, and the order reader's accuracy on the held-out scenes that state an occlusion relation.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from PIL import Image

from mars_eval.judges.world_decode import IDENTITY, Detection, calibrate_score, detect, logit
from mars_eval.judges.world_order import is_over, occlusion_pair
from mars_eval.judges.world_targets import COLOR_INDEX, KIND_INDEX, SHAPE_INDEX, TEXTURE_INDEX, scene_objects
from mars_ref.world.scene import Obj, Scene

MATCH_RADIUS = 0.06  # canvas units (2 px at 32 px): a peak this close to an object's centre found it


def match(dets: list[Detection], scene: Scene, by_kind: bool = True) -> list[tuple[Detection, tuple | None]]:
    """Each detection with the ground-truth object (of its most likely kind, with `by_kind`) it found (greedy by
    score), or None."""
    objects = scene_objects(scene)
    free = list(range(len(objects)))
    out = []
    for d in sorted(dets, key=lambda d: -d.score):
        cx, cy = (d.box[0] + d.box[2]) / 2, (d.box[1] + d.box[3]) / 2
        best, best_dist = None, MATCH_RADIUS
        kind = int(np.argmax(d.kind))
        for k in free:
            if by_kind and KIND_INDEX[objects[k][0]] != kind:
                continue
            b = objects[k][4]
            dist = math.hypot(cx - (b[0] + b[2]) / 2, cy - (b[1] + b[3]) / 2)
            if dist <= best_dist:
                best, best_dist = k, dist
        if best is not None:
            free.remove(best)
        out.append((d, objects[best] if best is not None else None))
    return out


def nearest(dets: list[Detection], obj: Obj) -> Detection | None:
    """The detection centred closest to `obj`'s box centre, within MATCH_RADIUS."""
    x0, y0, x1, y1 = obj.box
    dist = [(math.hypot((d.box[0] + d.box[2] - x0 - x1) / 2, (d.box[1] + d.box[3] - y0 - y1) / 2), k)
            for k, d in enumerate(dets)]
    best = min(dist, default=(math.inf, -1))
    return dets[best[1]] if best[0] <= MATCH_RADIUS else None


def fit_platt(scores: list[float], labels: list[int], steps: int = 200) -> tuple[float, float]:
    """Logistic regression of labels on logit(score) (two parameters, L-BFGS)."""
    if len(set(labels)) < 2:
        return IDENTITY
    x = torch.tensor([logit(s) for s in scores], dtype=torch.float64)
    y = torch.tensor(labels, dtype=torch.float64)
    ab = torch.tensor(IDENTITY, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([ab], max_iter=steps, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(ab[0] * x + ab[1], y)
        loss.backward()
        return loss

    opt.step(closure)
    a, b = ab.detach().tolist()
    return (a, b) if math.isfinite(a) and math.isfinite(b) and a > 0 else IDENTITY


def evaluate_detector(model, images: torch.Tensor, scenes: list[Scene]) -> tuple[tuple[float, float], dict]:
    """(Platt parameters, metrics) on held-out `images` (N, 3, H, W) uint8 with their scenes."""
    pil = [Image.fromarray(a) for a in images.permute(0, 2, 3, 1).numpy()]
    dets = detect(model, pil, threshold=0.02)
    scores, labels = [], []
    hits = {"kind": [], "color": [], "texture": [], "shape": [], "order": []}
    n_objects = 0
    for ds, scene in zip(dets, scenes, strict=True):
        n_objects += len(scene.objects)
        pair = occlusion_pair(scene)
        if pair is not None:
            da, db = nearest(ds, pair[0]), nearest(ds, pair[1])
            if da is not None and db is not None and da is not db:
                hits["order"].append((da.over[db.index] > 0.5) == is_over(scene, *pair))
        for d, obj in match(ds, scene, by_kind=False):
            scores.append(d.score)
            labels.append(int(obj is not None))
            if obj is None:
                continue
            kind, color, texture, shape, _ = obj
            hits["kind"].append(int(np.argmax(d.kind)) == KIND_INDEX[kind])
            hits["color"].append(int(np.argmax(d.color)) == COLOR_INDEX[color])
            hits["texture"].append(int(np.argmax(d.texture)) == TEXTURE_INDEX[texture])
            if shape is not None:
                hits["shape"].append(int(np.argmax(d.shape)) == SHAPE_INDEX[shape])
    platt = fit_platt(scores, labels)
    found = sum(labels)
    metrics = {
        "n_images": len(scenes),
        "objects": n_objects,
        # an object is found when a peak within MATCH_RADIUS has calibrated P(object) >= 0.5
        "recall_at_0.5": sum(1 for s, y in zip(scores, labels, strict=True) if y and calibrate_score(s, platt) >= 0.5)
        / max(1, n_objects),
        "false_peaks_at_0.5": sum(1 for s, y in zip(scores, labels, strict=True)
                                  if not y and calibrate_score(s, platt) >= 0.5) / max(1, len(scenes)),
        "matched": found / max(1, n_objects),
        # reader accuracies (argmax) at the matched peaks
        **{f"{k}_accuracy": float(np.mean(v)) if v else None for k, v in hits.items()},
    }
    return platt, metrics
