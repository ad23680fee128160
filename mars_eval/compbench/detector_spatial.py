"""2D-spatial score from detections: the rule of T2I-CompBench's `UniDet_eval/2D_spatial_eval.py`.

Per image: find the relation word (first of `RELATIONS` contained in the prompt), the two objects (first and
last NOUN of the prompt; for complex prompts the nouns around the preposition), the highest-scoring detection
of each, then

    both found: 0.25*conf1 + 0.25*conf2 + 0.5*position     one found: 0.25*conf     none: 0
    and any score below 0.5 becomes 0,

with `position` the official soft rule on box centres (left/right/top/bottom need the larger centre offset on
the right axis and IoU < 0.1, else iou_threshold/IoU; near/next to/on side of give 1 when either offset is
below 150 px, else 150/max offset). Distances are measured where the official measured them: in the frame of
the detector input, the image resized to short side 479 and long side <= 480.

Two official bugs are fixed by default (set the flags to False to reproduce the official numbers):
- `fix_on_top_of`: "on top of" is in the official relation list but `determine_position` only knows
  "on the top of", so every "on top of" prompt (many complex prompts) got position 0;
- `distinct_boxes`: when both nouns map to the same label ("a girl on the left of a man" -> person, person) the
  official compared the best box with itself; we use the two best distinct boxes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from mars_eval.compbench.detector import Detection
from mars_eval.compbench.noun_phrases import Parse
from mars_eval.errors import MarsEvalError

# Official order: the first one contained in the prompt wins.
RELATIONS = ("on side of", "next to", "near", "on the left of", "on the right of", "on the bottom of",
             "on the top of", "on top of")
# Prepositions that anchor the two objects of a complex prompt (official list, `--complex True` branch).
COMPLEX_PREPOSITIONS = ("on top of", "on bottom of", "on the left", "on the right", "next to", "on side of", "near")

# Names that denote the same detector class. The official maps girl/boy/man/woman -> person (and, for
# numeracy, ship -> boat, goldfish -> fish, painting -> picture); the rest bridge COCO-style label names.
SYNONYMS = (
    ("person", "girl", "boy", "man", "woman"),
    ("boat", "ship"),
    ("fish", "goldfish"),
    ("picture", "painting"),
    ("tv", "television", "telivision"),
    ("couch", "sofa"),
    ("cell phone", "phone", "mobile phone"),
    ("dining table", "table"),
    ("airplane", "aeroplane"),
    ("motorcycle", "motorbike"),
)
_CANON = {name: group[0] for group in SYNONYMS for name in group}

OFFICIAL_SHORT_SIDE, OFFICIAL_MAX_SIDE = 479, 480

Box = tuple[float, float, float, float]


def canonical(name: str) -> str:
    n = " ".join(name.lower().split())
    return _CANON.get(n, n)


@dataclass(frozen=True)
class SpatialRule:
    iou_threshold: float = 0.1
    distance_threshold: float = 150.0  # pixels in the official 479-px frame
    score_floor: float = 0.5  # scores below it become 0
    fix_on_top_of: bool = True
    distinct_boxes: bool = True

    def __post_init__(self):
        if not 0 < self.iou_threshold <= 1 or self.distance_threshold <= 0 or not 0 <= self.score_floor <= 1:
            raise MarsEvalError(f"invalid spatial rule thresholds: {self}")


@dataclass(frozen=True)
class SpatialResult:
    score: float
    relation: str | None
    obj1: str | None
    obj2: str | None
    conf1: float | None  # None: not detected
    conf2: float | None
    position: float | None  # None: not computed (an object missing)


def official_frame_scale(width: int, height: int) -> tuple[float, float]:
    """(sx, sy) mapping pixels to the official detector frame (torchvision Resize(479, max_size=480))."""
    short, long = (width, height) if width <= height else (height, width)
    new_short, new_long = OFFICIAL_SHORT_SIDE, int(OFFICIAL_SHORT_SIDE * long / short)
    if new_long > OFFICIAL_MAX_SIDE:
        new_short, new_long = int(OFFICIAL_MAX_SIDE * short / long), OFFICIAL_MAX_SIDE
    new_w, new_h = (new_short, new_long) if width <= height else (new_long, new_short)
    return new_w / width, new_h / height


def iou(b1: Box, b2: Box) -> float:
    ix = max(0.0, min(b1[2], b2[2]) - max(b1[0], b2[0]))
    iy = max(0.0, min(b1[3], b2[3]) - max(b1[1], b2[1]))
    inter = ix * iy
    union = (b1[2] - b1[0]) * (b1[3] - b1[1]) + (b2[2] - b2[0]) * (b2[3] - b2[1]) - inter
    return inter / union if union > 0 else 0.0


def relation_score(relation: str | None, b1: Box, b2: Box, rule: SpatialRule = SpatialRule()) -> float:
    """The official `determine_position`: is object 1 `relation` object 2? Soft score in [0, 1]."""
    if rule.fix_on_top_of and relation == "on top of":
        relation = "on the top of"
    dx = (b2[0] + b2[2]) / 2 - (b1[0] + b1[2]) / 2  # > 0: object 2 is right of object 1
    dy = (b2[1] + b2[3]) / 2 - (b1[1] + b1[3]) / 2  # > 0: object 2 is below object 1 (image y grows down)
    o = iou(b1, b2)
    thr_iou, thr_d = rule.iou_threshold, rule.distance_threshold
    if relation in ("next to", "on side of", "near"):
        if abs(dx) < thr_d or abs(dy) < thr_d:
            return 1.0
        return thr_d / max(abs(dx), abs(dy))
    horizontal = {"on the right of": dx < 0, "on the left of": dx > 0}
    vertical = {"on the bottom of": dy < 0, "on the top of": dy > 0}
    if relation in horizontal:
        ok, dominant = horizontal[relation], abs(dx) > abs(dy)
    elif relation in vertical:
        ok, dominant = vertical[relation], abs(dy) > abs(dx)
    else:
        return 0.0
    if not (ok and dominant):
        return 0.0
    return 1.0 if o < thr_iou else thr_iou / o


def find_relation(prompt: str) -> str | None:
    for r in RELATIONS:
        if r in prompt:
            return r
    return None


def objects_simple(parse: Parse) -> tuple[str | None, str | None]:
    """Official simple-prompt objects: the first and the last NOUN token."""
    nouns = [t for t, p in zip(parse.tokens, parse.pos, strict=True) if p == "NOUN"]
    return (nouns[0], nouns[-1]) if nouns else (None, None)


def objects_complex(parse: Parse) -> tuple[str | None, str | None]:
    """Official complex-prompt objects: the nearest NOUN/PROPN before each preposition and the first NOUN after
    it (or, when no NOUN follows, the first PROPN followed by a non-PROPN); exactly two objects or none."""
    toks, pos, n = parse.tokens, parse.pos, len(parse.tokens)
    objects: list[str] = []
    for i in range(n):
        k = next((k for k in (3, 2, 1) if parse.span(i, i + k) in COMPLEX_PREPOSITIONS), 0)
        if not k:
            continue
        before = next((toks[j] for j in range(i - 1, -1, -1) if pos[j] in ("NOUN", "PROPN")), None)
        if before is not None:
            objects.append(before)
        after = next((toks[j] for j in range(i + k, n) if pos[j] == "NOUN"), None)
        if after is None:
            after = next((toks[j] for j in range(i + k, n - 1) if pos[j] == "PROPN" and pos[j + 1] != "PROPN"), None)
        if after is not None:
            objects.append(after)
    return (objects[0], objects[1]) if len(objects) == 2 else (None, None)


def scale_box(box: Box, sx: float, sy: float) -> Box:
    return (box[0] * sx, box[1] * sy, box[2] * sx, box[3] * sy)


def spatial_score(
    prompt: str,
    obj1: str | None,
    obj2: str | None,
    detections: Sequence[Detection],
    image_size: tuple[int, int],
    rule: SpatialRule = SpatialRule(),
) -> SpatialResult:
    """Score one image from its detections (highest score first); `image_size` = (width, height)."""
    relation = find_relation(prompt)
    sx, sy = official_frame_scale(*image_size)
    dets = sorted(detections, key=lambda d: -d.score)
    c1 = canonical(obj1) if obj1 else None
    c2 = canonical(obj2) if obj2 else None
    d1 = next((d for d in dets if c1 is not None and canonical(d.label) == c1), None)
    d2 = next((d for d in dets if c2 is not None and canonical(d.label) == c2
               and not (rule.distinct_boxes and c1 == c2 and d is d1)), None)
    position = None
    if d1 is not None and d2 is not None:
        position = relation_score(relation, scale_box(d1.box, sx, sy), scale_box(d2.box, sx, sy), rule)
        score = 0.25 * d1.score + 0.25 * d2.score + 0.5 * position
    elif d1 is not None:
        score = 0.25 * d1.score
    elif d2 is not None:
        score = 0.25 * d2.score
    else:
        score = 0.0
    if score < rule.score_floor:
        score = 0.0
    return SpatialResult(score, relation, obj1, obj2, d1.score if d1 else None, d2.score if d2 else None, position)
