"""Scene samplers, one per T2I-CompBench category analogue.

A sampler first draws what the caption will say (`sample_spec`: groups + relations, cheap, used for prompt
sets) and then a layout and a background that make it true (`realize`). Attributes a caption does not mention
are still drawn at random, so images vary beyond their captions.

  color / shape / texture   attribute binding across 2-3 objects of different kinds
  spatial                   A on the left of / on the right of / above / below B (checkable from boxes)
  non_spatial               A bigger than / smaller than / in front of / behind / the same color as B
  numeracy                  counts 1-5 of one or two kinds ("three red balls and two stars")
  complex                   attributes + relation(s); sub-kinds like T2I-CompBench's complex split:
                            "spatial" (spatial relation), "action" (non-spatial relation),
                            "spatialaction" (both)
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from mars_ref.errors import MarsRefError
from mars_ref.world import lexicon as L
from mars_ref.world.backgrounds import sample_background
from mars_ref.world.layout import LayoutError, layout
from mars_ref.world.scene import Group, Relation, Scene
from mars_ref.world.style import DEFAULT_STYLE, WorldStyle

CATEGORIES: tuple[str, ...] = ("color", "shape", "texture", "spatial", "non_spatial", "complex", "numeracy")
COMPLEX_KINDS: tuple[str, ...] = ("spatial", "action", "spatialaction")
SIZE_RELATIONS = ("bigger_than", "smaller_than")
OCCLUSION_RELATIONS = ("in_front_of", "behind")
MAX_SPEC_TRIES = 20


def _pick(rng: np.random.Generator, items, k: int | None = None):
    if k is None:
        return items[int(rng.integers(len(items)))]
    return [items[int(i)] for i in rng.choice(len(items), size=k, replace=False)]


def _n_objects(rng) -> int:
    return 2 if rng.random() < 0.72 else 3


def _attribute_spec(rng, attr: str, values) -> tuple[Group, ...]:
    pool = L.SHAPEABLE if attr == "shape" else L.KINDS
    n = _n_objects(rng)
    kinds, vals = _pick(rng, pool, n), _pick(rng, values, n)
    return tuple(Group(k, **{attr: v}) for k, v in zip(kinds, vals, strict=True))


def complex_kind(relations) -> str:
    """Which sub-part a complex prompt has: 'spatial', 'action' (non-spatial) or 'spatialaction' (both)."""
    rels = {r.rel if isinstance(r, Relation) else r["rel"] for r in relations}
    sp, ns = bool(rels & set(L.SPATIAL_RELATIONS)), bool(rels & set(L.NONSPATIAL_RELATIONS))
    return "spatialaction" if sp and ns else ("spatial" if sp else "action")


def complex_spec(rng, sub: str | None = None):
    sub = sub or _pick(rng, COMPLEX_KINDS)
    if sub == "spatial":
        rels = [_pick(rng, L.SPATIAL_RELATIONS)]
    elif sub == "action":
        rels = [_pick(rng, SIZE_RELATIONS + OCCLUSION_RELATIONS)]
    else:
        rels = [_pick(rng, L.SPATIAL_RELATIONS), _pick(rng, SIZE_RELATIONS)]
    kinds = _pick(rng, L.KINDS, 2)
    sized = any(r in SIZE_RELATIONS for r in rels)
    groups = []
    for gi, kind in enumerate(kinds):
        attrs = (
            ["color", "texture"] + (["shape"] if kind in L.SHAPEABLE else []) + ([] if sized else ["size"])
        )
        weights = np.array([3.0, 1.5] + [1.5] * (len(attrs) - 2))
        chosen = [
            attrs[int(i)]
            for i in rng.choice(
                len(attrs), size=1 + int(rng.random() < 0.45), replace=False, p=weights / weights.sum()
            )
        ]
        values = {
            "color": _pick(rng, L.COLORS),
            "texture": _pick(rng, L.TEXTURES),
            "shape": _pick(rng, L.SHAPES),
            "size": _pick(rng, ("small", "big")),
        }
        count = 1
        if gi == 0 and not any(r in OCCLUSION_RELATIONS for r in rels) and rng.random() < 0.25:
            count = int(rng.integers(2, 4))
        if count > 1:
            values["size"] = "small"  # several big objects do not fit beside another one
        groups.append(Group(kind, count=count, **{a: values[a] for a in chosen}))
    if groups[0].size and groups[1].size and groups[0].size == groups[1].size == "big" and sub != "action":
        groups[1] = replace(groups[1], size="small")  # two big objects rarely fit beside each other
    return tuple(groups), tuple(Relation(0, r, 1) for r in rels)


def sample_spec(category: str, rng: np.random.Generator) -> tuple[tuple[Group, ...], tuple[Relation, ...]]:
    """What a caption of `category` says: groups (in caption order) and relations from group 0 to group 1."""
    if category == "color":
        return _attribute_spec(rng, "color", L.COLORS), ()
    if category == "shape":
        return _attribute_spec(rng, "shape", L.SHAPES), ()
    if category == "texture":
        return _attribute_spec(rng, "texture", L.TEXTURES), ()
    if category in ("spatial", "non_spatial"):
        rels = L.SPATIAL_RELATIONS if category == "spatial" else L.NONSPATIAL_RELATIONS
        kinds = _pick(rng, L.KINDS, 2)
        return (Group(kinds[0]), Group(kinds[1])), (Relation(0, _pick(rng, rels), 1),)
    if category == "numeracy":
        if rng.random() < 0.55:
            counts = [int(rng.integers(1, L.MAX_COUNT + 1))]
        else:
            a = int(rng.integers(1, 5))
            counts = [a, int(rng.integers(1, min(4, 6 - a) + 1))]
        kinds = _pick(rng, L.KINDS, len(counts))
        return tuple(
            Group(k, count=c, color=_pick(rng, L.COLORS) if rng.random() < 0.35 else None)
            for k, c in zip(kinds, counts, strict=True)
        ), ()
    if category == "complex":
        return complex_spec(rng)
    raise MarsRefError(f"unknown world category {category!r} (expected one of {', '.join(CATEGORIES)})")


def realize(
    category: str, groups, relations, rng: np.random.Generator, aspect: tuple[int, int] = (1, 1),
    style: WorldStyle = DEFAULT_STYLE,
) -> Scene:
    """A scene (layout + background, drawn in the world's style) that makes the spec true."""
    probe = Scene(category, aspect, sample_background(rng, style.backgrounds), tuple(groups), tuple(relations))
    objects = layout(probe.groups, probe.relations, category, probe.canvas, rng, style.layout == "slots")
    return Scene(category, aspect, probe.background, probe.groups, probe.relations, objects)


def sample_scene(category: str, rng: np.random.Generator, aspect: tuple[int, int] = (1, 1),
                 style: WorldStyle = DEFAULT_STYLE) -> Scene:
    """A random scene of `category`; `aspect` = (width, height) in lowest terms."""
    for _ in range(MAX_SPEC_TRIES):
        groups, relations = sample_spec(category, rng)
        try:
            return realize(category, groups, relations, rng, aspect, style)
        except LayoutError:
            continue  # a spec that does not fit this canvas (rare): draw another one
    raise MarsRefError(f"no {category} scene fits aspect {aspect} after {MAX_SPEC_TRIES} specs")


SWAPPABLE = {"color": L.COLORS, "shape": L.SHAPES, "texture": L.TEXTURES, "size": ("small", "big")}


def one_word_counterfactual(groups: tuple[Group, ...], rng: np.random.Generator) -> tuple[Group, ...]:
    """The caption's groups with one word changed: a stated attribute (colour, shape, texture or size) of one group,
    drawn uniformly among the stated ones, set to another value - or, when none is stated, one group's kind
    replaced by a kind the caption does not name. A hard negative: the caption it gives differs from the
    original in that one word, which the image contradicts."""
    stated = [(gi, a) for gi, g in enumerate(groups) for a in SWAPPABLE if getattr(g, a) is not None]
    if stated:
        return swap_word(groups, *stated[int(rng.integers(len(stated)))], rng)
    return swap_word(groups, int(rng.integers(len(groups))), "kind", rng)


def swap_word(groups: tuple[Group, ...], gi: int, attr: str, rng: np.random.Generator) -> tuple[Group, ...]:
    """The groups with group gi's `attr` (a SWAPPABLE attribute, or "kind") set to another value: for a kind, one
    the caption does not name (and that can take the group's shape, if it has one)."""
    g = groups[gi]
    if attr == "kind":
        named = {x.kind for x in groups}
        options = [k for k in L.KINDS if k not in named and (g.shape is None or k in L.SHAPEABLE)]
    else:
        options = [v for v in SWAPPABLE[attr] if v != getattr(g, attr)]
    return groups[:gi] + (replace(g, **{attr: _pick(rng, options)}),) + groups[gi + 1:]
