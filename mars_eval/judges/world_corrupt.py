"""Corrupted scenes for judge calibration: the prompt's scene changed so that the prompt becomes false.

Wherever possible the corruption is a minimal pair (same background, same layout, one thing changed), so a
judge is tested on exactly the property its category is about:

    color / shape / texture   swap the attribute between two noun phrases (binding error), or change one
                              phrase's value when the phrases do not differ
    spatial                   mirror the layout (left <-> right, or above <-> below)
    non_spatial               bigger <-> smaller (re-laid out), in front <-> behind (drawing order swapped),
                              same colour -> the second object recoloured
    3d_spatial                in front <-> behind (drawing order swapped)
    numeracy                  one object removed, or (for a count of 1 or at random) a scene with one more
    complex                   one of the above for a stated attribute or one of the relations (another one
                              when a swapped size relation cannot be laid out)

`corrupt` returns None when a scene offers nothing to corrupt (never happens for the world's samplers).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from mars_ref.world import lexicon as L
from mars_ref.world.layout import LayoutError
from mars_ref.world.sampling import OCCLUSION_RELATIONS, realize
from mars_ref.world.scene import Relation, Scene
from mars_ref.world.style import DEFAULT_STYLE, WorldStyle

OPPOSITE = {"left_of": "right_of", "right_of": "left_of", "above": "below", "below": "above",
            "bigger_than": "smaller_than", "smaller_than": "bigger_than",
            "in_front_of": "behind", "behind": "in_front_of"}
ATTR_VALUES = {"color": L.COLORS, "shape": L.SHAPES, "texture": L.TEXTURES}


def _set_attr(scene: Scene, group: int, attr: str, value: str) -> Scene:
    def change(o):
        if o.group != group:
            return o
        if attr == "color":
            return replace(o, color=value, rgb=L.COLOR_RGB[value])
        return replace(o, **{attr: value})

    groups = list(scene.groups)
    groups[group] = replace(groups[group], **{attr: value})
    return replace(scene, groups=tuple(groups), objects=tuple(change(o) for o in scene.objects))


def corrupt_attribute(scene: Scene, attr: str, rng: np.random.Generator) -> Scene | None:
    stated = [i for i, g in enumerate(scene.groups) if getattr(g, attr) is not None]
    if not stated:
        return None
    values = {i: getattr(scene.groups[i], attr) for i in stated}
    pairs = [(i, j) for i in stated for j in stated if i < j and values[i] != values[j]]
    if pairs and rng.random() < 0.7:
        i, j = pairs[int(rng.integers(len(pairs)))]
        return _set_attr(_set_attr(scene, i, attr, values[j]), j, attr, values[i])
    i = stated[int(rng.integers(len(stated)))]
    others = [v for v in ATTR_VALUES[attr] if v not in values.values()]
    return _set_attr(scene, i, attr, others[int(rng.integers(len(others)))])


def mirror(scene: Scene, rel: str) -> Scene:
    """Mirror object positions across the vertical (left/right) or horizontal (above/below) centre line."""
    cw, ch = scene.canvas
    if rel in ("left_of", "right_of"):
        objs = tuple(replace(o, cx=round(cw - o.cx, 4)) for o in scene.objects)
    else:
        objs = tuple(replace(o, cy=round(ch - o.cy, 4)) for o in scene.objects)
    rels = tuple(replace(r, rel=OPPOSITE[r.rel]) if r.rel == rel else r for r in scene.relations)
    return replace(scene, objects=objs, relations=rels)


def _relaid(scene: Scene, groups, relations, rng, style: WorldStyle) -> Scene | None:
    for _ in range(10):
        try:
            return realize(scene.category, tuple(groups), tuple(relations), rng, scene.aspect, style)
        except LayoutError:
            continue
    return None


def corrupt_relation(scene: Scene, r: Relation, rng: np.random.Generator,
                     style: WorldStyle = DEFAULT_STYLE) -> Scene | None:
    if r.rel in L.SPATIAL_RELATIONS:
        return mirror(scene, r.rel)
    if r.rel in ("bigger_than", "smaller_than"):
        rels = [replace(x, rel=OPPOSITE[x.rel]) if x == r else x for x in scene.relations]
        return _relaid(scene, scene.groups, rels, rng, style)
    if r.rel in OCCLUSION_RELATIONS:  # swap the drawing order of the pair's members
        objs = list(scene.objects)
        slots = [k for k, o in enumerate(objs) if o.group in (r.subj, r.obj)]
        members = [objs[k] for k in slots][::-1]
        for k, o in zip(slots, members, strict=True):
            objs[k] = o
        rels = tuple(replace(x, rel=OPPOSITE[x.rel]) if x == r else x for x in scene.relations)
        return replace(scene, objects=tuple(objs), relations=rels)
    if r.rel == "same_color_as":
        current = {o.color for o in scene.objects if o.group in (r.subj, r.obj)}
        others = [c for c in L.COLORS if c not in current]
        return _set_attr(scene, r.obj, "color", others[int(rng.integers(len(others)))])
    return None


def corrupt_count(scene: Scene, rng: np.random.Generator, style: WorldStyle = DEFAULT_STYLE) -> Scene | None:
    gi = int(rng.integers(len(scene.groups)))
    g = scene.groups[gi]
    if g.count >= 2 and (g.count == L.MAX_COUNT or rng.random() < 0.5):
        members = [k for k, o in enumerate(scene.objects) if o.group == gi]
        drop = members[int(rng.integers(len(members)))]
        groups = list(scene.groups)
        groups[gi] = replace(g, count=g.count - 1)
        return replace(scene, groups=tuple(groups), objects=tuple(o for k, o in enumerate(scene.objects) if k != drop))
    groups = list(scene.groups)
    groups[gi] = replace(g, count=g.count + 1)
    return _relaid(scene, groups, scene.relations, rng, style)


def corrupt(scene: Scene, category: str, rng: np.random.Generator, style: WorldStyle = DEFAULT_STYLE) -> Scene | None:
    """A scene for which the caption of `scene` is false, differing in the property `category` judges; a scene
    laid out anew (a size or count change) is drawn in the world's `style`."""
    if category in ATTR_VALUES:
        return corrupt_attribute(scene, category, rng)
    if category in ("spatial", "non_spatial"):
        return corrupt_relation(scene, scene.relations[0], rng, style)
    if category == "3d_spatial":
        r = next((r for r in scene.relations if r.rel in OCCLUSION_RELATIONS), None)
        return corrupt_relation(scene, r, rng, style) if r is not None else None
    if category == "numeracy":
        return corrupt_count(scene, rng, style)
    if category == "complex":
        options = [("rel", r) for r in scene.relations]
        options += [("attr", a) for a in ATTR_VALUES if any(getattr(g, a) for g in scene.groups)]
        for k in rng.permutation(len(options)):  # the next option when one cannot be laid out
            kind, what = options[int(k)]
            bad = corrupt_relation(scene, what, rng, style) if kind == "rel" else corrupt_attribute(scene, what, rng)
            if bad is not None:
                return bad
    return None
