"""Turn a caption-level spec (groups + relations) into drawn objects whose boxes make every relation true.

Rejection sampling: each object's centre is drawn uniformly where it fits (the `free` layout) or near its slot
(the `slots` layout, see slot_centres), and kept when it satisfies every
relation to the objects already placed and overlaps unrelated objects no more than the category allows.
When an object finds no place, the whole layout restarts with all sizes shrunk a little. Mild overlap
between unrelated objects is allowed on purpose (occlusion makes the images harder and more realistic);
counting scenes keep their objects apart so a count is unambiguous. An "in front of" pair must be legible at
the world's 32 px: the object in front covers HIDDEN of the silhouette behind it, measured on the silhouettes
(boxes overlap far more than shapes do), so that both which one is on top and what the one behind is can be
seen; and the overlap is at least HIDDEN[0] of the front one's silhouette too, so the same pair drawn the other
way round (the false image a judge is calibrated on) is as legible. For the same reason an object whose texture the prompt states, and either object of an "in front of" pair, is
never smaller than LEGIBLE_EXTENT (nor than its size word allows).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from mars_ref.errors import MarsRefError
from mars_ref.world import lexicon as L
from mars_ref.world.render import silhouette
from mars_ref.world.scene import (
    MIN_OCCLUSION,
    SIZE_RATIO,
    Box,
    Group,
    Obj,
    Relation,
    box_area,
    box_overlap,
    spatial_holds,
)

MARGIN = 0.02  # objects stay this far inside the canvas
MAX_OCCLUDED = 0.6  # "in front of": the boxes overlap by at most this share of the smaller one
# "in front of": the share of the silhouette behind that the one in front covers. Measured with the small world's
# judges on 800 fresh scenes: below 0.2 the order is read right at true boxes 60-90 % of the time (the overlap is a
# few pixels), above 0.4 the kind of the object behind 87-90 % (92-100 % in between). The overlap also covers at
# least HIDDEN[0] of the front silhouette: with less, v11's judges took the pair drawn the other way round for the
# prompt 22-33 % of the time (15 of 113 calibration pairs), with more 2-6 %
HIDDEN = (0.2, 0.4)
# an object whose texture the prompt states, or that is one of an "in front of" pair, is at least this big (10 px
# at the 32 px base, where a pattern's period is 3 px). The small world's judges misread 30-41 % of stated textures
# on objects of 5-8 px, 5-10 % at 8-10 px, 0-4 % above; and the kind of the object behind (v10 judges, 600 scenes)
# 27 % at 7-8 px, 13 % at 8-9, 5 % at 9-12
LEGIBLE_EXTENT = 0.31
SILHOUETTE_PX = 64  # pixels per canvas unit at which silhouettes are compared (2x the 32 px base)
TRIES_PER_OBJECT = 120
RESTARTS = 40
# slots layout: centres are drawn within SLOT_JITTER of the slot, a range that widens by SLOT_WIDEN per restart
# (after ~10 restarts it covers the canvas: a spec whose slots cannot hold it is laid out freely)
SLOT_JITTER = 0.04
SLOT_WIDEN = 1.35
# slots layout: object extents by the number of objects, so that neighbouring slots do not overlap
SLOT_SIZES = {1: (0.5, 0.6), 2: (0.36, 0.44), 3: (0.25, 0.3)}
SLOT_SIZES_MANY = (0.2, 0.25)


class LayoutError(MarsRefError):
    """No placement satisfies the spec on this canvas (e.g. three big objects in a row)."""


def _r4(x: float) -> float:
    return round(float(x), 4)


def _jitter_rgb(color: str, rng: np.random.Generator) -> tuple[int, int, int]:
    base = np.array(L.COLOR_RGB[color], dtype=np.float64)
    return tuple(int(v) for v in np.clip(base + rng.normal(0, 7, 3), 0, 255).round())


def _attributes(groups, relations, rng):
    """Per member: (color, texture, shape, flip, rgb). Unstated attributes are random but consistent with the
    relations (a same-colour pair shares its colour)."""
    same = {(r.subj, r.obj) for r in relations if r.rel == "same_color_as"}
    shared = {}
    for a, b in same:
        c = groups[a].color or groups[b].color or L.COLORS[rng.integers(len(L.COLORS))]
        shared[a] = shared[b] = c
    out = []
    for gi, g in enumerate(groups):
        members = []
        for _ in range(g.count):
            color = g.color or shared.get(gi) or L.COLORS[rng.integers(len(L.COLORS))]
            texture = g.texture or (
                "plain" if rng.random() < 0.55 else L.TEXTURES[rng.integers(1, len(L.TEXTURES))]
            )
            shape = (g.shape or L.SHAPES[rng.integers(len(L.SHAPES))]) if g.kind in L.SHAPEABLE else None
            members.append((color, texture, shape, bool(rng.random() < 0.5), _jitter_rgb(color, rng)))
        out.append(members)
    return out


def _sizes(groups, relations, category, rng, shrink: float, slots: bool = False) -> list[list[float]]:
    """Object extents per group; relations on size fix a clear ratio, size words pick their range."""
    n_total = sum(g.count for g in groups)
    if slots:
        lo, hi = SLOT_SIZES.get(n_total, SLOT_SIZES_MANY)
    elif category == "numeracy" or n_total > 3:
        lo, hi = (0.17, 0.26) if n_total > 3 else (0.2, 0.34)
    else:
        lo, hi = 0.24, 0.46
    sizes = []
    for g in groups:
        rng_lo, rng_hi = L.SIZE_RANGES[g.size] if g.size else (lo, hi)
        sizes.append([float(rng.uniform(rng_lo, rng_hi)) for _ in range(g.count)])
    occluding = {i for r in relations if r.rel in ("in_front_of", "behind") for i in (r.subj, r.obj)}
    floor = [min(LEGIBLE_EXTENT, L.SIZE_RANGES[g.size][1] if g.size else 1.0)
             if g.texture or gi in occluding else 0.0 for gi, g in enumerate(groups)]
    for r in relations:
        if r.rel in ("bigger_than", "smaller_than"):
            big, small = (r.subj, r.obj) if r.rel == "bigger_than" else (r.obj, r.subj)
            base_lo = max(0.19, floor[small] / 0.93)
            base = float(rng.uniform(base_lo, max(0.27, base_lo)))
            sizes[small] = [base * float(rng.uniform(0.93, 1.0)) for _ in sizes[small]]
            sizes[big] = [base * float(rng.uniform(1.65, 2.1)) for _ in sizes[big]]
    return [[_r4(max(s * (1.0 if g.size else shrink), f)) for s in ss]
            for g, f, ss in zip(groups, floor, sizes, strict=True)]


def _order(groups, relations) -> list[int]:
    """Place the object of a spatial relation first so its subject can be sampled around it."""
    order = list(range(len(groups)))
    for r in relations:
        if r.obj in order and order.index(r.obj) > order.index(r.subj):
            order.remove(r.obj)
            order.insert(order.index(r.subj), r.obj)
    return order


def _centre_range(w, h, canvas, rel_for_first: str | None):
    cw, ch = canvas
    x0, x1 = w / 2 + MARGIN, cw - w / 2 - MARGIN
    y0, y1 = h / 2 + MARGIN, ch - h / 2 - MARGIN
    # the relation's object goes to the side that leaves room for its subject
    if rel_for_first == "left_of":
        x0 = max(x0, min(x1, cw * 0.45))
    elif rel_for_first == "right_of":
        x1 = min(x1, max(x0, cw * 0.55))
    elif rel_for_first == "above":
        y0 = max(y0, min(y1, ch * 0.45))
    elif rel_for_first == "below":
        y1 = min(y1, max(y0, ch * 0.55))
    return x0, x1, y0, y1


def _slot_order(n_groups: int, relations) -> list[int] | None:
    """Groups in slot order (left to right, or top to bottom): caption order, moved so that every spatial relation
    reads along the axis; None when the relations want both axes or a cycle."""
    spatial = [r for r in relations if r.rel in L.SPATIAL_RELATIONS]
    if len({r.rel in ("above", "below") for r in spatial}) > 1:
        return None
    order = list(range(n_groups))
    for r in spatial:
        first, second = (r.subj, r.obj) if r.rel in ("left_of", "above") else (r.obj, r.subj)
        if order.index(first) > order.index(second):
            order.remove(first)
            order.insert(order.index(second), first)
    ok = all(order.index(r.subj if r.rel in ("left_of", "above") else r.obj)
             < order.index(r.obj if r.rel in ("left_of", "above") else r.subj) for r in spatial)
    return order if ok else None


def slot_centres(groups, relations, canvas) -> dict[tuple[int, int], tuple[float, float]] | None:
    """The slots layout: a centre per (group, member). Up to three objects share one row (one column when a
    relation is above / below) in slot order; more fill a grid of two rows, row by row. None: no slot layout
    fits the relations (the scene is laid out freely)."""
    order = _slot_order(len(groups), relations)
    if order is None:
        return None
    members = [(gi, m) for gi in order for m in range(groups[gi].count)]
    n, (cw, ch) = len(members), canvas
    vertical = any(r.rel in ("above", "below") for r in relations)
    cols, rows = (n, 1) if n <= 3 else (-(-n // 2), 2)
    if vertical:
        cols, rows = rows, cols
    cells = [((c + 0.5) * cw / cols, (r + 0.5) * ch / rows) for r in range(rows) for c in range(cols)]
    if vertical:
        cells = [((c + 0.5) * cw / cols, (r + 0.5) * ch / rows) for c in range(cols) for r in range(rows)]
    return dict(zip(members, cells[:n], strict=True))


def _wh(kind: str, s: float) -> tuple[float, float]:
    a = L.KIND_ASPECT[kind]
    return (s, s / a) if a >= 1 else (s * a, s)


def layout(
    groups: tuple[Group, ...],
    relations: tuple[Relation, ...],
    category: str,
    canvas: tuple[float, float],
    rng: np.random.Generator,
    slots: bool = False,
) -> tuple[Obj, ...]:
    """Objects in drawing order for the spec; raises LayoutError when none is found (an impossible spec).
    slots=True draws each centre near its slot (slot_centres) instead of anywhere."""
    attrs = _attributes(groups, relations, rng)
    fronts = {frozenset((r.subj, r.obj)): (r.subj if r.rel == "in_front_of" else r.obj)
              for r in relations if r.rel in ("in_front_of", "behind")}  # occlusion pair -> the group in front
    max_overlap = 0.0 if category in ("numeracy", "spatial") or sum(g.count for g in groups) > 3 else 0.12
    cw, ch = canvas
    targets = slot_centres(groups, relations, canvas) if slots else None
    shrink = 1.0
    for restart in range(RESTARTS):
        sizes = _sizes(groups, relations, category, rng, shrink, targets is not None)
        jitter = SLOT_JITTER * SLOT_WIDEN**restart
        placed: list[Obj] = []
        for gi in _order(groups, relations):
            kind = groups[gi].kind
            first_rel = next((r.rel for r in relations if r.obj == gi), None)
            near = next((r for r in relations if r.subj == gi and r.rel in ("in_front_of", "behind")), None)
            for m in range(groups[gi].count):
                s = sizes[gi][m]
                w, h = _wh(kind, s)
                x0, x1, y0, y1 = _centre_range(w, h, canvas, first_rel)
                if x0 > x1 or y0 > y1:
                    break
                color, texture, shape, flip, rgb = attrs[gi][m]
                if near is not None:  # sample around the already placed partner: the overlap is the point
                    partner = next(o for o in placed if o.group == near.obj)
                    px, py, ps = partner.cx, partner.cy, partner.s
                    ang = rng.uniform(0, 2 * np.pi, TRIES_PER_OBJECT)
                    dist = rng.uniform(0.3, 0.55, TRIES_PER_OBJECT) * (s + ps) / 2
                    xs = np.clip(px + dist * np.cos(ang), w / 2 + MARGIN, cw - w / 2 - MARGIN)
                    ys = np.clip(py + dist * np.sin(ang), h / 2 + MARGIN, ch - h / 2 - MARGIN)
                elif targets is not None:
                    tx, ty = targets[gi, m]
                    xs = np.clip(tx + rng.uniform(-jitter, jitter, TRIES_PER_OBJECT), w / 2 + MARGIN, cw - w / 2 - MARGIN)
                    ys = np.clip(ty + rng.uniform(-jitter, jitter, TRIES_PER_OBJECT), h / 2 + MARGIN, ch - h / 2 - MARGIN)
                else:
                    xs, ys = rng.uniform(x0, x1, TRIES_PER_OBJECT), rng.uniform(y0, y1, TRIES_PER_OBJECT)
                for cx, cy in zip(xs.round(4).tolist(), ys.round(4).tolist(), strict=True):
                    obj = Obj(kind, gi, color, texture, shape, cx, cy, s, rgb, flip)
                    if _fits(obj, placed, relations, fronts, max_overlap, canvas):
                        placed.append(obj)
                        break
                else:
                    break  # no place for this object
            else:
                continue
            break  # an object found no place: restart
        else:
            return _z_order(placed, relations, rng)
        shrink *= 0.93
    raise LayoutError(f"no layout found for {groups} with {relations}")


@lru_cache(maxsize=256)  # an object already placed is compared with every candidate position of its partner
def _silhouette(obj: Obj, canvas: tuple[float, float]) -> np.ndarray:
    return silhouette(obj, canvas, SILHOUETTE_PX)


def hidden_share(front: Obj, back: Obj, canvas: tuple[float, float]) -> float:
    """The share of `back`'s silhouette that `front` covers (were it drawn over it)."""
    sf, sb = _silhouette(front, canvas), _silhouette(back, canvas)
    return float((sf * sb).sum() / max(float(sb.sum()), 1e-9))


def _fits(obj: Obj, placed: list[Obj], relations, fronts: dict, max_overlap: float, canvas) -> bool:
    box, s, gi = obj.box, obj.s, obj.group
    area_c = box_area(box)
    for o in placed:
        gj, other, s_o = o.group, o.box, o.s
        area = box_overlap(box, other)
        small = min(area_c, box_area(other))
        front = fronts.get(frozenset((gi, gj))) if gj != gi else None
        if front is not None:
            if area < (MIN_OCCLUSION + 0.05) * small or area > MAX_OCCLUDED * small:
                return False
            f, b = (obj, o) if front == gi else (o, obj)
            if not HIDDEN[0] <= hidden_share(f, b, canvas) <= HIDDEN[1] or hidden_share(b, f, canvas) < HIDDEN[0]:
                return False
        else:
            if area > max_overlap * small + 1e-12:
                return False
            if max_overlap == 0.0 and _gap(box, other) < 0.02:
                return False
        if gj == gi:
            continue
        for r in relations:
            if r.subj == gi and r.obj == gj:
                a, b, sa, sb = box, other, s, s_o
            elif r.subj == gj and r.obj == gi:
                a, b, sa, sb = other, box, s_o, s
            else:
                continue
            if r.rel in L.SPATIAL_RELATIONS and not spatial_holds(a, b, r.rel):
                return False
            if r.rel == "bigger_than" and not sa >= SIZE_RATIO * sb:
                return False
            if r.rel == "smaller_than" and not sb >= SIZE_RATIO * sa:
                return False
            # in_front_of / behind depend on the drawing order (fixed afterwards); same_color_as on colours
    return True


def _gap(a: Box, b: Box) -> float:
    return max(b[0] - a[2], a[0] - b[2], b[1] - a[3], a[1] - b[3])


def _z_order(objs: list[Obj], relations, rng) -> tuple[Obj, ...]:
    """Random drawing order, then the members of each occlusion pair swapped into the stated order."""
    perm = [int(i) for i in rng.permutation(len(objs))]
    order = [objs[i] for i in perm]
    for r in relations:
        if r.rel not in ("in_front_of", "behind"):
            continue
        front, back = (r.subj, r.obj) if r.rel == "in_front_of" else (r.obj, r.subj)
        slots = sorted(i for i, o in enumerate(order) if o.group in (front, back))
        members = [o for o in order if o.group == back] + [o for o in order if o.group == front]
        for slot, o in zip(slots, members, strict=True):
            order[slot] = o
    return tuple(order)
