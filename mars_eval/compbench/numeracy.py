"""Numeracy score from detections: the rule of T2I-CompBench++ `UniDet_eval/numeracy_eval.py`.

Targets: every number word ("a", "an", "one" ... "eight") followed by an object of `new_objects.txt` (singular or
plural, one or two tokens) gives (object, count). Detections of the same label that overlap (IoU > 0.9, or one
box more than 90 % inside the other, with the official +1 pixel box convention in the 479-px detector frame) are
merged. Each target weighs 1/len(targets): half of it when the object is detected at all, the other half when
the number of its detections equals the count. A detected label that contains the target as a substring is
renamed to it first (official: "wine glass" counts for "glass").

Fixed official bugs: a number word the official `w2n` cannot read (or a singular noun after "two") crashed or
shifted counts against objects; a prompt with no target divided by zero (here it is an error raised before
scoring, naming the prompt); tokens are compared in lower case.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

from mars_eval.compbench.detector import Detection
from mars_eval.compbench.detector_spatial import canonical, official_frame_scale, scale_box
from mars_eval.compbench.noun_phrases import Parse
from mars_eval.errors import MarsEvalError
from mars_eval.prompts import PromptSet

NUMBER_WORDS = {"a": 1, "an": 1, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7,
                "eight": 8, "nine": 9, "ten": 10}


@lru_cache(maxsize=1)
def object_forms() -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(singulars, plurals) of `new_objects.txt` in file order ("knife - knives")."""
    sing, plur = [], []
    for line in PromptSet.builtin("new_objects").texts:
        s, _, p = line.partition(" - ")
        sing.append(s.strip().lower())
        plur.append(p.strip().lower())
    return tuple(sing), tuple(plur)


@dataclass(frozen=True)
class NumeracyResult:
    score: float
    targets: tuple[tuple[str, int], ...]  # (object, count) parsed from the prompt
    detected: tuple[int, ...]  # detections per target after merging


def numeracy_targets(parse: Parse) -> list[tuple[str, int]]:
    """(singular object, count) for every "<number> <object>" in the prompt."""
    sing, plur = object_forms()
    toks = [t.lower() for t in parse.tokens]
    out: list[tuple[str, int]] = []
    for i, t in enumerate(toks):
        if t not in NUMBER_WORDS:
            continue
        cands = ([f"{toks[i + 1]} {toks[i + 2]}"] if i + 2 < len(toks) else []) + ([toks[i + 1]] if i + 1 < len(toks) else [])
        for w in cands:
            if w in sing or w in plur:
                one = NUMBER_WORDS[t] == 1
                obj = w if (w in sing and (one or w not in plur)) else sing[plur.index(w)]
                out.append((obj, NUMBER_WORDS[t]))
                break
    if not out:
        raise MarsEvalError(f"numeracy prompt has no '<number> <object>' from new_objects.txt: {parse.text!r}")
    return out


def _same_object(b1, b2) -> bool:
    """Official duplicate test (+1 pixel areas): IoU > 0.9 or more than 90 % of either box inside the other."""
    iw = max(0.0, min(b1[2], b2[2]) - max(b1[0], b2[0]) + 1)
    ih = max(0.0, min(b1[3], b2[3]) - max(b1[1], b2[1]) + 1)
    inter = iw * ih
    a1 = (b1[2] - b1[0] + 1) * (b1[3] - b1[1] + 1)
    a2 = (b2[2] - b2[0] + 1) * (b2[3] - b2[1] + 1)
    return inter / (a1 + a2 - inter) > 0.9 or inter / a1 > 0.9 or inter / a2 > 0.9


def numeracy_score(targets: Sequence[tuple[str, int]], detections: Sequence[Detection],
                   image_size: tuple[int, int]) -> NumeracyResult:
    sx, sy = official_frame_scale(*image_size)
    labels: list[str] = []
    boxes: list[tuple[float, float, float, float]] = []
    for d in sorted(detections, key=lambda d: -d.score):
        lab, box = canonical(d.label), scale_box(d.box, sx, sy)
        if not any(lab == kl and _same_object(box, kb) for kl, kb in zip(labels, boxes, strict=True)):
            labels.append(lab)
            boxes.append(box)
    w = 1.0 / len(targets)
    score, found = 0.0, []
    for obj, count in targets:
        obj = canonical(obj)
        if obj not in labels:
            labels = [obj if obj in lab else lab for lab in labels]
        n = labels.count(obj)
        found.append(n)
        if n:
            score += 0.5 * w
            if n == count:
                score += 0.5 * w
    return NumeracyResult(score, tuple((o, c) for o, c in targets), tuple(found))
