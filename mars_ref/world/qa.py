"""Simple bilingual question answering about a caption, for the small LLM's text corpus.

Every question is answerable from the caption alone (the LLM never sees the image): the colour, texture or
shape a caption names, a count, or whether a stated relation (or its opposite) holds.
"""

from __future__ import annotations

import numpy as np

from mars_ref.world import lexicon as L
from mars_ref.world.scene import Group, Relation

OPPOSITE = {
    "left_of": "right_of",
    "right_of": "left_of",
    "above": "below",
    "below": "above",
    "bigger_than": "smaller_than",
    "smaller_than": "bigger_than",
    "in_front_of": "behind",
    "behind": "in_front_of",
}


def _the_en(g: Group) -> str:
    return f"the {L.noun_en(g.kind, g.count)}"


def _rel_question_zh(a: str, rel: str, b: str) -> str:
    if rel in L.REL_ZH_PLACE:
        return f"{a}在{b}的{L.REL_ZH_PLACE[rel]}吗？"
    if rel in L.REL_ZH_COMPARE:
        return f"{a}比{b}{L.REL_ZH_COMPARE[rel]}吗？"
    return f"{a}和{b}{L.REL_ZH_SAME_COLOR}吗？"


def questions(groups: tuple[Group, ...], relations: tuple[Relation, ...]) -> list[dict]:
    """All questions a caption answers, as {"en": (q, a), "zh": (q, a), "type": ...}."""
    out = []
    for g in groups:
        be = "is" if g.count == 1 else "are"
        n_zh = L.noun_zh(g.kind)
        if g.color:
            out.append(
                {
                    "type": "color",
                    "en": (f"what color {be} {_the_en(g)}?", g.color),
                    "zh": (f"{n_zh}是什么颜色的？", L.COLOR_WORDS[g.color][1]),
                }
            )
        if g.texture:
            out.append(
                {
                    "type": "texture",
                    "en": (f"what pattern {'does' if g.count == 1 else 'do'} {_the_en(g)} have?", g.texture),
                    "zh": (f"{n_zh}是什么花纹的？", L.TEXTURE_WORDS[g.texture]),
                }
            )
        if g.shape:
            out.append(
                {
                    "type": "shape",
                    "en": (f"what shape {be} {_the_en(g)}?", g.shape),
                    "zh": (f"{n_zh}是什么形状的？", L.SHAPE_WORDS[g.shape]),
                }
            )
        if g.size:
            out.append(
                {
                    "type": "size",
                    "en": (f"{be} {_the_en(g)} big or small?", g.size),
                    "zh": (f"{n_zh}是大的还是小的？", L.SIZE_WORDS[g.size]),
                }
            )
        clf = L.classifier_zh(g.kind)
        out.append(
            {
                "type": "count",
                "en": (f"how many {L.noun_en(g.kind, 2)} are there?", L.NUM_EN[g.count]),
                "zh": (f"有几{clf}{n_zh}？", L.NUM_ZH[g.count] + clf),
            }
        )
    for r in relations:
        a, b = groups[r.subj], groups[r.obj]
        be = "is" if a.count == 1 else "are"
        for rel, yes in ((r.rel, True), (OPPOSITE.get(r.rel), False)):
            if rel is None:
                continue
            out.append(
                {
                    "type": "relation",
                    "en": (f"{be} {_the_en(a)} {L.REL_EN[rel]} {_the_en(b)}?", "yes" if yes else "no"),
                    "zh": (
                        _rel_question_zh(L.noun_zh(a.kind), rel, L.noun_zh(b.kind)),
                        "是" if yes else "不是",
                    ),
                }
            )
    return out


def qa_lines(caption_en: str, caption_zh: str, groups, relations, rng: np.random.Generator) -> list[str]:
    """One English and one Chinese QA line about the caption, e.g. 'EN: ... Q: ... A: red'."""
    qs = questions(groups, relations)
    q = qs[int(rng.integers(len(qs)))]
    return [
        f"EN: {caption_en} Q: {q['en'][0]} A: {q['en'][1]}",
        f"ZH: {caption_zh} 问：{q['zh'][0]} 答：{q['zh'][1]}",
    ]
