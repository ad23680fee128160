"""GenEval's decision for one image: detections + a prompt's metadata -> (correct, reason). Pure functions.

The rules of the official `evaluation/evaluate_images.py` (github.com/djghosh13/geneval), with its defaults:

1. Per class, detections are sorted by confidence, kept when confidence > 0.3 (> 0.9 for `counting` prompts),
   cut to the best 16, then greedily de-duplicated by box IoU >= `max_overlap` (1.0 = no de-duplication,
   the official default; IoU counts pixels inclusively, +1 per side, as the official `compute_iou`).
2. Each include clause takes its class's `count` most confident objects: fewer -> wrong. With a colour, each
   of those objects is classified (color.py: CLIP on the masked crop) and all must have it. With a position,
   each of them must stand in the relation to every object of the target clause, which must itself have
   matched (`relative_position`).
3. An exclude clause fails the image when `count` or more objects of its class were kept.

Relative position (official): with box centres c and sizes (w, h), offset = c_a - c_b shrunk towards 0 by
0.1 * (size_a + size_b) per axis; no relation when both shrunk components are below 1e-3 px; otherwise
(dx, dy) = shrunk offset / |offset| and "left of" when dx < -0.5, "right of" when dx > 0.5, "above" when
dy < -0.5, "below" when dy > 0.5 (y down). Boxes are in pixels of the scored image.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from mars_eval.errors import MarsEvalError
from mars_eval.geneval.metadata import COLORS, PromptSpec

Box = tuple[float, float, float, float]


@dataclass(frozen=True)
class Detection:
    label: str  # class name in GenEval's vocabulary (object_names.txt, or the world's kinds)
    score: float  # the detector's confidence for this class
    box: Box  # (x0, y0, x1, y1) in pixels of the scored image
    mask: np.ndarray | None = field(default=None, compare=False, repr=False)  # (H, W) bool, or None
    color: str | None = None  # the object's colour when the detector reads it (world); else colour.py's


@dataclass(frozen=True)
class RuleSettings:
    """The official `--options` and their defaults."""

    threshold: float = 0.3
    counting_threshold: float = 0.9
    max_objects: int = 16
    max_overlap: float = 1.0  # de-duplication IoU; 1.0 = off
    position_threshold: float = 0.1

    def __post_init__(self):
        for name in ("threshold", "counting_threshold"):
            v = getattr(self, name)
            if not 0.0 <= v < 1.0:
                raise MarsEvalError(f"GenEval {name} must be in [0, 1), got {v}")
        if self.max_objects < 1:
            raise MarsEvalError(f"GenEval max_objects must be >= 1, got {self.max_objects}")
        if not 0.0 < self.max_overlap <= 1.0:
            raise MarsEvalError(f"GenEval max_overlap must be in (0, 1], got {self.max_overlap}")
        if self.position_threshold < 0:
            raise MarsEvalError(f"GenEval position_threshold must be >= 0, got {self.position_threshold}")

    def threshold_for(self, tag: str) -> float:
        return self.counting_threshold if tag == "counting" else self.threshold

    @property
    def lowest(self) -> float:
        """Detections at or below this never count for any task (a detector may drop them early)."""
        return min(self.threshold, self.counting_threshold)


@dataclass(frozen=True)
class Verdict:
    correct: bool
    reason: str  # "" when correct; else the failed checks, "; "-separated


# classify(objects, class name) -> one colour name per object (color.py); None: use each Detection.color
ColorFn = Callable[[Sequence[Detection], str], list[str]]


def iou(a: Box, b: Box) -> float:
    """Box IoU with inclusive pixel areas ((x1 - x0 + 1) * (y1 - y0 + 1)), as the official compute_iou."""
    def area(x0, y0, x1, y1):
        return max(x1 - x0 + 1, 0) * max(y1 - y0 + 1, 0)
    inter = area(max(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), min(a[3], b[3]))
    union = area(*a) + area(*b) - inter
    return inter / union if union else 0.0


def kept(dets: Sequence[Detection], tag: str, settings: RuleSettings = RuleSettings()) -> dict[str, list[Detection]]:
    """Class -> its kept detections, most confident first (step 1); classes with none are absent."""
    thr = settings.threshold_for(tag)
    out: dict[str, list[Detection]] = {}
    for label in dict.fromkeys(d.label for d in dets):
        order = sorted((d for d in dets if d.label == label and d.score > thr), key=lambda d: -d.score)
        order = order[: settings.max_objects]
        picked: list[Detection] = []
        while order:
            best = order.pop(0)
            picked.append(best)
            if settings.max_overlap < 1:
                order = [d for d in order if iou(best.box, d.box) < settings.max_overlap]
        if picked:
            out[label] = picked
    return out


def relative_position(a: Box, b: Box, margin: float = 0.1) -> frozenset[str]:
    """The relations of box a to box b under the official rule (module docstring)."""
    off = np.array([(a[0] + a[2]) / 2 - (b[0] + b[2]) / 2, (a[1] + a[3]) / 2 - (b[1] + b[3]) / 2])
    size = np.array([abs(a[2] - a[0]) + abs(b[2] - b[0]), abs(a[3] - a[1]) + abs(b[3] - b[1])])
    shrunk = np.maximum(np.abs(off) - margin * size, 0) * np.sign(off)
    if np.all(np.abs(shrunk) < 1e-3):
        return frozenset()
    dx, dy = shrunk / math.hypot(*off)
    rels = set()
    if dx < -0.5:
        rels.add("left of")
    if dx > 0.5:
        rels.add("right of")
    if dy < -0.5:
        rels.add("above")
    if dy > 0.5:
        rels.add("below")
    return frozenset(rels)


def evaluate(found: dict[str, list[Detection]], spec: PromptSpec, settings: RuleSettings = RuleSettings(),
             classify: ColorFn | None = None) -> Verdict:
    """Steps 2-3 on the kept detections (`kept`)."""
    reasons: list[str] = []
    groups: list[list[Detection] | None] = []  # each include clause's matched objects (None: not matched)
    for req in spec.include:
        objs = found.get(req.cls, [])[: req.count]
        ok = len(objs) >= req.count
        if not ok:
            reasons.append(f"expected {req.cls}>={req.count}, found {len(objs)}")
        if ok and req.color is not None:
            colors = _colors(objs, req.cls, classify)
            n = colors.count(req.color)
            if n < req.count:
                ok = False
                seen = ", ".join(f"{colors.count(c)} {c}" for c in COLORS if c in colors)
                reasons.append(f"expected {req.color} {req.cls}>={req.count}, found {n} {req.color}; and {seen}")
        if ok and req.position is not None:
            rel, target = req.position
            if groups[target] is None:
                ok = False
                reasons.append(f"no target for {req.cls} to be {rel}")
            else:
                ok, why = _positions(objs, groups[target], rel, req.cls, settings.position_threshold)
                if not ok:
                    reasons.append(why)
        groups.append(objs if ok else None)
    for exc in spec.exclude:
        n = len(found.get(exc.cls, []))
        if n >= exc.count:
            reasons.append(f"expected {exc.cls}<{exc.count}, found {n}")
    return Verdict(not reasons, "; ".join(reasons))


def judge(dets: Sequence[Detection], spec: PromptSpec, settings: RuleSettings = RuleSettings(),
          classify: ColorFn | None = None) -> Verdict:
    """GenEval's verdict for one image's detections (all classes, any order)."""
    return evaluate(kept(dets, spec.tag, settings), spec, settings, classify)


def _colors(objs: list[Detection], cls: str, classify: ColorFn | None) -> list[str]:
    if classify is not None:
        colors = list(classify(objs, cls))
        if len(colors) != len(objs):
            raise ValueError(f"colour classifier returned {len(colors)} colours for {len(objs)} objects")
        return colors
    if any(d.color is None for d in objs):
        raise ValueError(f"a {cls} detection has no colour and no colour classifier was given")
    return [d.color for d in objs]  # type: ignore[misc]


def _positions(objs: list[Detection], targets: list[Detection], rel: str, cls: str,
               margin: float) -> tuple[bool, str]:
    for o in objs:
        for t in targets:
            found = relative_position(o.box, t.box, margin)
            if rel not in found:
                return False, f"expected {cls} {rel} target, found {' and '.join(sorted(found)) or 'no relation'}"
    return True, ""
