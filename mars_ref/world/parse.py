"""Parsers that turn an English or Chinese world caption back into its caption-level truth.

`parse_caption(caption(scene, lang), lang) == scene.truth(res)` for every scene the samplers make, in both
languages; that is how the tests prove the two captions describe the same scene. The parsers are small
recursive-descent readers over the lexicon's tables (longest match first), and accept a few common variants
("to the left of", "colour") so hand-written world prompts parse too.
"""

from __future__ import annotations

import re

from mars_ref.errors import MarsRefError
from mars_ref.world import lexicon as L

_RES = re.compile(r"^\s*<res\s+(\d+)\s*x\s*(\d+)\s*>\s*")


class Cursor:
    """Longest-match reader; in English a match must end at a word boundary."""

    def __init__(self, text: str, words: bool):
        self.text, self.pos, self.words = text, 0, words

    def take(self, options: dict):
        best = None
        for key in options:
            if self.text.startswith(key, self.pos) and (best is None or len(key) > len(best)):
                end = self.pos + len(key)
                if self.words and end < len(self.text) and self.text[end] not in " ,":
                    continue
                best = key
        if best is None:
            return None
        self.pos += len(best)
        if self.words:
            while self.pos < len(self.text) and self.text[self.pos] == " ":
                self.pos += 1
        return options[best]

    def need(self, options: dict, what: str):
        v = self.take(options)
        if v is None:
            raise self.error(f"expected {what}")
        return v

    @property
    def done(self) -> bool:
        return self.pos >= len(self.text)

    def error(self, why: str) -> MarsRefError:
        return MarsRefError(f"cannot parse caption at char {self.pos} ({why}): {self.text!r}")


def parse_caption(text: str, lang: str) -> dict:
    """Caption -> {"objects": [{kind, count, color, shape, texture, size}], "relations": [{subj, rel, obj}],
    "res": [w, h] | None}; raises MarsRefError on anything outside the world's grammar."""
    if not isinstance(text, str):
        raise MarsRefError(f"caption must be a string, got {type(text).__name__}")
    m = _RES.match(text)
    res = [int(m.group(1)), int(m.group(2))] if m else None
    body = text[m.end() :] if m else text
    if lang == "en":
        groups, rels = _parse_en(body)
    elif lang == "zh":
        groups, rels = _parse_zh(body)
    else:
        raise MarsRefError(f"unknown caption language {lang!r} (expected 'en' or 'zh')")
    return {"objects": groups, "relations": rels, "res": res}


# ---- English -----------------------------------------------------------------------------------------------
_DET_EN = {"a": 1, "an": 1, **{w: i for i, w in enumerate(L.NUM_EN) if i >= 1}}
NOUN_EN = {**{k: (k, 1) for k in L.KINDS}, **{v[0]: (k, 2) for k, v in L.KIND_WORDS.items()}}
REL_EN_PHRASES = {
    **{v: k for k, v in L.REL_EN.items()},
    "to the left of": "left_of",
    "to the right of": "right_of",
    "left of": "left_of",
    "right of": "right_of",
    "the same colour as": "same_color_as",
    "on top of": "above",
    "under": "below",
    "larger than": "bigger_than",
}
_SIZE_EN = {w: w for w in L.SIZE_WORDS} | {"large": "big"}
_SHAPE_EN = {w: w for w in L.SHAPES}
_COLOR_EN = {w: w for w in L.COLORS}
_TEX_EN = {w: w for w in L.TEXTURES} | {"spotted": "dotted", "polka-dot": "dotted", "checked": "checkered"}


def norm_en(text: str) -> str:
    t = " ".join(text.lower().replace(",", " , ").split()).rstrip(" .")
    return t.replace(" , ", ", ")


def read_np_en(cur: Cursor) -> dict:
    count = cur.need(_DET_EN, "a determiner or number")
    g = {"kind": None, "count": count, "color": None, "shape": None, "texture": None, "size": None}
    g["size"] = cur.take(_SIZE_EN)
    g["shape"] = cur.take(_SHAPE_EN)
    g["color"] = cur.take(_COLOR_EN)
    g["texture"] = cur.take(_TEX_EN)
    kind, number = cur.need(NOUN_EN, "an object noun")
    if kind == "fish":  # same word in both numbers
        number = 1 if count == 1 else 2
    if (count == 1) != (number == 1):
        raise cur.error(f"number of {kind!r} disagrees with count {count}")
    if g["shape"] and kind not in L.SHAPEABLE:
        raise cur.error(f"{kind!r} has no shape attribute")
    g["kind"] = kind
    return g


def _parse_en(text: str) -> tuple[list, list]:
    cur = Cursor(norm_en(text), words=True)
    groups = [read_np_en(cur)]
    rels: list[dict] = []
    rel = cur.take(REL_EN_PHRASES)
    if rel:
        groups.append(read_np_en(cur))
        rels.append({"subj": 0, "rel": rel, "obj": 1})
        if cur.take({", and the": True, ", the": True}):
            _ref_en(cur, groups[0])
            cur.need({"is": 1, "are": 2}, "'is' or 'are'")
            rels.append({"subj": 0, "rel": cur.need(REL_EN_PHRASES, "a relation"), "obj": 1})
            cur.need({"the": True}, "'the'")
            _ref_en(cur, groups[1])
    else:
        while cur.take({",": True}):
            groups.append(read_np_en(cur))
        if cur.take({"and": True}):
            groups.append(read_np_en(cur))
    if not cur.done:
        raise cur.error("unexpected words")
    _distinct(groups, cur)
    return groups, rels


def _ref_en(cur: Cursor, group: dict) -> None:
    kind, _ = cur.need(NOUN_EN, "an object noun")
    if kind != group["kind"]:
        raise cur.error(f"'the {kind}' does not refer to a {group['kind']}")


# ---- Chinese -----------------------------------------------------------------------------------------------
_NUM_ZH = {"一": 1, "两": 2, "二": 2, "三": 3, "四": 4, "五": 5}
_CLF_ZH = {c: c for c in {v[2] for v in L.KIND_WORDS.values()}}
NOUN_ZH = {v[1]: k for k, v in L.KIND_WORDS.items()}
_SIZE_ZH = {v + "的": k for k, v in L.SIZE_WORDS.items()}
_SHAPE_ZH = {v: k for k, v in L.SHAPE_WORDS.items()}
_COLOR_ZH = {v[1]: k for k, v in L.COLOR_WORDS.items()} | {
    v[1].rstrip("色"): k for k, v in L.COLOR_WORDS.items()
}
_TEX_ZH = {v: k for k, v in L.TEXTURE_WORDS.items()}
PLACE_ZH = {v: k for k, v in L.REL_ZH_PLACE.items()} | {
    "左侧": "left_of",
    "右侧": "right_of",
    "上方": "above",
    "下方": "below",
}
_COMPARE_ZH = {v: k for k, v in L.REL_ZH_COMPARE.items()}


def norm_zh(text: str) -> str:
    t = "".join(text.split()).rstrip("。.")
    return t.replace(",", "，")


def read_np_zh(cur: Cursor) -> dict:
    count = cur.need(_NUM_ZH, "a number")
    clf = cur.need(_CLF_ZH, "a classifier")
    g = {"kind": None, "count": count, "color": None, "shape": None, "texture": None, "size": None}
    g["size"] = cur.take(_SIZE_ZH)
    g["shape"] = cur.take(_SHAPE_ZH)
    g["color"] = cur.take(_COLOR_ZH)
    g["texture"] = cur.take(_TEX_ZH)
    if g["shape"] or g["color"] or g["texture"]:
        cur.take({"的": True})
    kind = cur.need(NOUN_ZH, "an object noun")
    if clf != L.classifier_zh(kind) and clf != "个":
        raise cur.error(f"classifier {clf!r} does not fit {L.noun_zh(kind)!r}")
    if g["shape"] and kind not in L.SHAPEABLE:
        raise cur.error(f"{kind!r} has no shape attribute")
    g["kind"] = kind
    return g


def _rel_zh(cur: Cursor, rhs) -> str | None:
    """After the subject: 在 B 的左边 / 比 B 大 / 和 B 颜色相同; `rhs` reads B. Returns the relation or None."""
    if cur.take({"在": True}):
        rhs()
        cur.need({"的": True}, "'的'")
        return cur.need(PLACE_ZH, "a place word")
    if cur.take({"比": True}):
        rhs()
        return cur.need(_COMPARE_ZH, "'大' or '小'")
    return None


def _parse_zh(text: str) -> tuple[list, list]:
    cur = Cursor(norm_zh(text), words=False)
    groups = [read_np_zh(cur)]
    rels: list[dict] = []
    rel = _rel_zh(cur, lambda: groups.append(read_np_zh(cur)))
    if rel is None and cur.take({"和": True}):
        groups.append(read_np_zh(cur))
        if cur.take({L.REL_ZH_SAME_COLOR: True}):
            rel = "same_color_as"
    elif rel is None:
        while cur.take({"、": True}):
            groups.append(read_np_zh(cur))
        if cur.take({"和": True}):
            groups.append(read_np_zh(cur))
    if rel:
        rels.append({"subj": 0, "rel": rel, "obj": 1})
        if cur.take({"，而且": True, "，并且": True, "，": True}):
            _ref_zh(cur, groups[0])
            rel2 = _rel_zh(cur, lambda: _ref_zh(cur, groups[1]))
            if rel2 is None:
                cur.need({"和": True}, "a relation")
                _ref_zh(cur, groups[1])
                cur.need({L.REL_ZH_SAME_COLOR: True}, "'颜色相同'")
                rel2 = "same_color_as"
            rels.append({"subj": 0, "rel": rel2, "obj": 1})
    if not cur.done:
        raise cur.error("unexpected characters")
    _distinct(groups, cur)
    return groups, rels


def _ref_zh(cur: Cursor, group: dict) -> None:
    kind = cur.need(NOUN_ZH, "an object noun")
    if kind != group["kind"]:
        raise cur.error(f"{L.noun_zh(kind)!r} does not refer to {L.noun_zh(group['kind'])!r}")


def _distinct(groups: list, cur: Cursor) -> None:
    if len({g["kind"] for g in groups}) != len(groups):
        raise cur.error("the same kind is named twice")
