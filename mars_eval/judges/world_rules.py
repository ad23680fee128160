"""Per-category world judge scores from detections and the prompt's parse (pure functions, no model, no I/O).

The semantics mirror T2I-CompBench's judges, with the world detector standing in for BLIP-VQA, UniDet and CLIP:

    attribute (color / shape / texture; BLIP-VQA)  product over noun phrases of P(phrase present), where
        P(phrase) = max over detections of P(object) * P(kind) * P(each stated colour / shape / texture / size)
    spatial (UniDet 2D)                            0.25 * conf1 + 0.25 * conf2 + 0.5 * position, with the best
        detection of each noun, position = T2I-CompBench's rule (centre offset on the dominant axis in the
        right direction; 1 if IoU < 0.1 else 0.1 / IoU), or 0.25 * conf when only one object is found
    non_spatial (CLIP)                             conf1 * conf2 * P(relation): size ratio for bigger / smaller,
        box overlap and the order reader's P(drawn over) for in front of / behind, colour agreement for the
        same colour as
    3d_spatial (T2I-CompBench++)                   non_spatial's score over the prompt's "in front of" /
        "behind" relations (the world's depth order is its drawing order)
    numeracy (UniDet counting)                     product over noun phrases of [detected count == stated count]
    complex (3-in-1)                               mean of the parts its relations call for (complex_kind):
        spatial -> attribute + spatial, action -> attribute + non_spatial, spatialaction -> all three

A detection counts for a noun when P(object) * P(kind) >= COUNT_THRESHOLD. Every score is in [0, 1].

`passes` turns a score into the judge's yes/no (used for calibration): score > 0.5, except for complex, where
the 3-in-1 mean of a prompt that is wrong in one part is still above 0.5 (1 and 0 average to 0.5, a wrong
relation scores 0.5 in the spatial part); a complex prompt passes when every part it uses passes.
"""

from __future__ import annotations

import math

import numpy as np

from mars_eval.errors import MarsEvalError
from mars_eval.judges.world_decode import Detection
from mars_eval.judges.world_targets import COLOR_INDEX, KIND_INDEX, SHAPE_INDEX, TEXTURE_INDEX
from mars_ref.world import lexicon as L
from mars_ref.world.sampling import OCCLUSION_RELATIONS, complex_kind
from mars_ref.world.scene import MIN_OCCLUSION, box_area, box_overlap

COUNT_THRESHOLD = 0.5
PASS = 0.5
SIZE_SPLIT = 0.34  # between the "small" (<= 0.26) and "big" (>= 0.44) extents, geometric midpoint
SIZE_TEMP = 0.1  # softness of the size-word test, in log units
RATIO_SPLIT = math.log(1.25)  # "bigger than" needs a clear size ratio (the world draws >= 1.65)
RATIO_TEMP = 0.08
OVERLAP_TEMP = 0.03


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-max(-60.0, min(60.0, x))))


def object_prob(d: Detection, kind: str) -> float:
    return d.score * float(d.kind[KIND_INDEX[kind]])


def size_prob(d: Detection, size: str) -> float:
    z = (math.log(max(d.extent, 1e-6)) - math.log(SIZE_SPLIT)) / SIZE_TEMP
    return _sigmoid(z) if size == "big" else _sigmoid(-z)


def phrase_prob(d: Detection, group: dict) -> float:
    """P(this detection is the noun phrase `group`: kind and every attribute the prompt states)."""
    p = object_prob(d, group["kind"])
    if group.get("color"):
        p *= float(d.color[COLOR_INDEX[group["color"]]])
    if group.get("texture"):
        p *= float(d.texture[TEXTURE_INDEX[group["texture"]]])
    if group.get("shape"):
        p *= float(d.shape[SHAPE_INDEX[group["shape"]]])
    if group.get("size"):
        p *= size_prob(d, group["size"])
    return p


def attribute_score(dets: list[Detection], groups: list[dict]) -> tuple[float, dict]:
    probs = [max((phrase_prob(d, g) for d in dets), default=0.0) for g in groups]
    return float(np.prod(probs)), {"phrase_probs": probs}


def best(dets: list[Detection], kind: str, exclude: Detection | None = None) -> tuple[Detection | None, float]:
    cands = [(object_prob(d, kind), i) for i, d in enumerate(dets) if d is not exclude]
    if not cands:
        return None, 0.0
    p, i = max(cands)
    return (dets[i], p) if p > 0 else (None, 0.0)


def _pair(dets: list[Detection], groups: list[dict], rel: dict):
    a, pa = best(dets, groups[rel["subj"]]["kind"])
    b, pb = best(dets, groups[rel["obj"]]["kind"], exclude=a)
    return a, pa, b, pb


def _iou(a, b) -> float:
    inter = box_overlap(a, b)
    union = box_area(a) + box_area(b) - inter
    return inter / union if union > 0 else 0.0


def position(rel: str, a, b) -> float:
    """T2I-CompBench's position rule on boxes (x0, y0, x1, y1), y down: is box a `rel` box b?"""
    dx = (b[0] + b[2] - a[0] - a[2]) / 2  # > 0: b is right of a
    dy = (b[1] + b[3] - a[1] - a[3]) / 2  # > 0: b is below a
    ok = {"left_of": dx > 0 and abs(dx) > abs(dy), "right_of": dx < 0 and abs(dx) > abs(dy),
          "above": dy > 0 and abs(dy) > abs(dx), "below": dy < 0 and abs(dy) > abs(dx)}[rel]
    if not ok:
        return 0.0
    o = _iou(a, b)
    return 1.0 if o < 0.1 else 0.1 / o


def spatial_score(dets: list[Detection], groups: list[dict], relations: list[dict]) -> tuple[float, dict]:
    rels = [r for r in relations if r["rel"] in L.SPATIAL_RELATIONS]
    if not rels:
        raise MarsEvalError("a spatial judgement needs a spatial relation in the prompt")
    scores, subs = [], []
    for r in rels:
        a, pa, b, pb = _pair(dets, groups, r)
        if a is not None and b is not None:
            pos = position(r["rel"], a.box, b.box)
            s = 0.25 * pa + 0.25 * pb + 0.5 * pos
        else:
            pos, s = None, 0.25 * max(pa, pb)
        scores.append(s)
        subs.append({"rel": r["rel"], "conf1": pa, "conf2": pb, "position": pos})
    return float(np.mean(scores)), {"spatial": subs}


def relation_prob(rel: str, a: Detection, b: Detection) -> float:
    """P(a rel b) for the non-spatial relations, from boxes, the order reader and colour distributions."""
    if rel in ("bigger_than", "smaller_than"):
        z = (math.log(a.extent / b.extent) - RATIO_SPLIT) / RATIO_TEMP
        zs = (math.log(b.extent / a.extent) - RATIO_SPLIT) / RATIO_TEMP
        return _sigmoid(z if rel == "bigger_than" else zs)
    if rel in OCCLUSION_RELATIONS:
        share = box_overlap(a.box, b.box) / max(1e-9, min(box_area(a.box), box_area(b.box)))
        overlap = _sigmoid((share - MIN_OCCLUSION) / OVERLAP_TEMP)
        a_over_b = float(a.over[b.index])
        return overlap * (a_over_b if rel == "in_front_of" else 1 - a_over_b)
    if rel == "same_color_as":
        return float(np.dot(a.color, b.color))
    raise MarsEvalError(f"not a non-spatial relation: {rel!r}")


def non_spatial_score(dets: list[Detection], groups: list[dict], relations: list[dict],
                      only: tuple[str, ...] = L.NONSPATIAL_RELATIONS) -> tuple[float, dict]:
    rels = [r for r in relations if r["rel"] in only]
    if not rels:
        raise MarsEvalError(f"this judgement needs one of the relations {', '.join(only)} in the prompt")
    scores, subs = [], []
    for r in rels:
        a, pa, b, pb = _pair(dets, groups, r)
        p_rel = relation_prob(r["rel"], a, b) if a is not None and b is not None else 0.0
        scores.append(pa * pb * p_rel)
        subs.append({"rel": r["rel"], "conf1": pa, "conf2": pb, "relation_prob": p_rel})
    return float(np.mean(scores)), {"non_spatial": subs}


def counts(dets: list[Detection], groups: list[dict]) -> list[int]:
    """Detections per noun phrase: P(object) * P(kind) (and the stated colour) above COUNT_THRESHOLD."""
    out = []
    for g in groups:
        cond = {"kind": g["kind"], "color": g.get("color")}
        out.append(sum(phrase_prob(d, cond) >= COUNT_THRESHOLD for d in dets))
    return out


def numeracy_score(dets: list[Detection], groups: list[dict]) -> tuple[float, dict]:
    found = counts(dets, groups)
    match = [int(n == g["count"]) for n, g in zip(found, groups, strict=True)]
    official = float(np.mean([0.5 * (n > 0) + 0.5 * m for n, m in zip(found, match, strict=True)]))
    return float(np.prod(match)), {"counts": found, "stated": [g["count"] for g in groups],
                                   "t2i_compbench_partial": official}


def complex_score(dets: list[Detection], groups: list[dict], relations: list[dict]) -> tuple[float, dict]:
    kind = complex_kind(relations) if relations else "attribute"
    parts = {"attribute": attribute_score(dets, groups)}
    if kind in ("spatial", "spatialaction"):
        parts["spatial"] = spatial_score(dets, groups, relations)
    if kind in ("action", "spatialaction"):
        parts["non_spatial"] = non_spatial_score(dets, groups, relations)
    score = float(np.mean([s for s, _ in parts.values()]))
    subs = {"complex_kind": kind, "parts": {k: s for k, (s, _) in parts.items()}}
    for _, sub in parts.values():
        subs.update(sub)
    return score, subs


def passes(category: str, score: float, subscores: dict) -> bool:
    """The judge's decision: does the image show the prompt?"""
    if category == "complex":
        return all(s > PASS for s in subscores["parts"].values())
    return score > PASS


def score_parse(category: str, dets: list[Detection], parse: dict) -> tuple[float, dict]:
    """The category's judge score for one image's detections and the prompt's parse (`parse_caption`)."""
    groups, relations = parse["objects"], parse["relations"]
    if category in ("color", "shape", "texture"):
        return attribute_score(dets, groups)
    if category == "spatial":
        return spatial_score(dets, groups, relations)
    if category == "non_spatial":
        return non_spatial_score(dets, groups, relations)
    if category == "3d_spatial":
        score, sub = non_spatial_score(dets, groups, relations, OCCLUSION_RELATIONS)
        return score, {"3d_spatial": sub["non_spatial"]}
    if category == "numeracy":
        return numeracy_score(dets, groups)
    if category == "complex":
        return complex_score(dets, groups, relations)
    raise MarsEvalError(f"unknown world judge category {category!r} (expected one of color, shape, texture, "
                        "spatial, non_spatial, numeracy, complex, 3d_spatial)")
