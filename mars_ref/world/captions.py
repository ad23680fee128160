"""Parallel English and Chinese captions of a scene's caption-level truth (its groups and relations).

Captions are template sentences, T2I-CompBench style ("a red ball and a blue box", "three red balls").
Each sentence form has one template per language; `parse.py` reads them back.

Supported structures (what the samplers produce):
  * a list of 1-3 groups, no relation:          "a red ball, a blue box and a green cup"
  * two groups and one relation 0 -> 1:          "a ball on the left of a box"
  * two groups, two relations 0 -> 1 (complex):  "a red ball on the left of a blue box, and the ball is bigger
                                                  than the box"
An optional resolution tag "<res WxH> " (width x height in pixels) starts Stage II captions.
"""

from __future__ import annotations

from mars_ref.errors import MarsRefError
from mars_ref.world import lexicon as L
from mars_ref.world.scene import Group, Relation, Scene

LANGS: tuple[str, ...] = ("en", "zh")


def res_tag(res: tuple[int, int] | None) -> str:
    return f"<res {res[0]}x{res[1]}> " if res else ""


def caption(scene: Scene, lang: str, res: tuple[int, int] | None = None) -> str:
    """The scene's caption in `lang` ("en" or "zh"); `res` = (width, height) prepends a resolution tag."""
    return caption_parts(scene.groups, scene.relations, lang, res, numeral_one=scene.category == "numeracy")


def caption_parts(
    groups: tuple[Group, ...],
    relations: tuple[Relation, ...],
    lang: str,
    res: tuple[int, int] | None = None,
    numeral_one: bool = False,
) -> str:
    if lang not in LANGS:
        raise MarsRefError(f"unknown caption language {lang!r} (expected one of {LANGS})")
    _check_structure(groups, relations)
    if lang == "en":
        nps = [np_en(g, numeral_one) for g in groups]
        body = _relation_en(groups, relations, nps) if relations else _list_en(nps)
    else:
        nps = [np_zh(g) for g in groups]
        body = _relation_zh(groups, relations, nps) if relations else _list_zh(nps)
    return res_tag(res) + body


# ---- English -----------------------------------------------------------------------------------------------
def np_en(g: Group, numeral_one: bool = False) -> str:
    words = [w for w in (g.size, g.shape, g.color, g.texture) if w] + [L.noun_en(g.kind, g.count)]
    if g.count == 1:
        det = "one" if numeral_one else L.article(words[0])
    else:
        det = L.NUM_EN[g.count]
    return " ".join([det, *words])


def _list_en(nps: list[str]) -> str:
    return nps[0] if len(nps) == 1 else ", ".join(nps[:-1]) + " and " + nps[-1]


def _relation_en(groups, relations, nps) -> str:
    first = f"{nps[0]} {L.REL_EN[relations[0].rel]} {nps[1]}"
    if len(relations) == 1:
        return first
    a, b = groups[0], groups[1]
    verb = "is" if a.count == 1 else "are"
    return (
        f"{first}, and the {L.noun_en(a.kind, a.count)} {verb} {L.REL_EN[relations[1].rel]} "
        f"the {L.noun_en(b.kind, b.count)}"
    )


# ---- Chinese -----------------------------------------------------------------------------------------------
def np_zh(g: Group) -> str:
    out = L.NUM_ZH[g.count] + L.classifier_zh(g.kind)
    if g.size:
        out += L.SIZE_WORDS[g.size] + "的"
    attrs = "".join(
        w
        for w in (
            g.shape and L.SHAPE_WORDS[g.shape],
            g.color and L.COLOR_WORDS[g.color][1],
            g.texture and L.TEXTURE_WORDS[g.texture],
        )
        if w
    )
    if attrs:
        out += attrs + "的"
    return out + L.noun_zh(g.kind)


def _list_zh(nps: list[str]) -> str:
    return nps[0] if len(nps) == 1 else "、".join(nps[:-1]) + "和" + nps[-1]


def _rel_zh(a: str, rel: str, b: str) -> str:
    if rel in L.REL_ZH_PLACE:
        return f"{a}在{b}的{L.REL_ZH_PLACE[rel]}"
    if rel in L.REL_ZH_COMPARE:
        return f"{a}比{b}{L.REL_ZH_COMPARE[rel]}"
    return f"{a}和{b}{L.REL_ZH_SAME_COLOR}"


def _relation_zh(groups, relations, nps) -> str:
    first = _rel_zh(nps[0], relations[0].rel, nps[1])
    if len(relations) == 1:
        return first
    return first + "，而且" + _rel_zh(L.noun_zh(groups[0].kind), relations[1].rel, L.noun_zh(groups[1].kind))


def _check_structure(groups, relations) -> None:
    if not 1 <= len(groups) <= 3:
        raise MarsRefError(f"a caption describes 1-3 groups, got {len(groups)}")
    if relations:
        ok = len(groups) == 2 and len(relations) <= 2 and all((r.subj, r.obj) == (0, 1) for r in relations)
        if not ok:
            raise MarsRefError(f"captions support 1-2 relations from group 0 to group 1, got {relations}")
    if len({g.kind for g in groups}) != len(groups):
        raise MarsRefError("the groups of a caption must be of different kinds")
