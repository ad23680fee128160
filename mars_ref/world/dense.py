"""Dense captions: every drawn object of a scene with all its attributes and a coarse position, then the background.

Short T2I-CompBench-style captions state a few attributes of a busy scene, so they explain a small share of the
image and a small model learns to ignore them; training on captions that describe the whole image (DALL-E 3's
"better captions", PixArt-alpha's dense captions) teaches conditioning, and evaluation stays on the short prompts.

    "a big red striped hexagonal clock at the right, a small pink square button at the top left; a room background"
    "右边一座大的红色条纹六边形钟，左上方一颗小的粉色方形纽扣；房间背景"

Objects are listed in drawing order (back to front). Size is the class of the drawn extent (`lexicon.size_class`,
"medium" unsaid); texture "plain" is unsaid; the background is its kind and the colour name of its main colour.
"""

from __future__ import annotations

import colorsys

from mars_ref.errors import MarsRefError
from mars_ref.world import lexicon as L
from mars_ref.world.scene import Obj, Scene

# position on a 3 x 3 grid of the canvas: (column, row) -> English, Chinese
_COLS, _ROWS = ("left", "centre", "right"), ("top", "middle", "bottom")
POSITION_EN: dict[tuple[str, str], str] = {
    (c, r): ("in the centre" if (c, r) == ("centre", "middle") else
             f"at the {r if c == 'centre' else (c if r == 'middle' else r + ' ' + c)}")
    for c in _COLS for r in _ROWS
}
_COL_ZH = {"left": "左", "centre": "", "right": "右"}
_ROW_ZH = {"top": "上", "middle": "", "bottom": "下"}
POSITION_ZH: dict[tuple[str, str], str] = {
    (c, r): ("中间" if (c, r) == ("centre", "middle") else
             (_COL_ZH[c] + _ROW_ZH[r] + ("方" if c != "centre" and r != "middle" else "边")))
    for c in _COLS for r in _ROWS
}
BACKGROUND_WORDS: dict[str, tuple[str, str]] = {
    "gradient": ("gradient", "渐变"), "radial": ("glow", "光晕"), "noise": ("mottled", "斑驳"),
    "landscape": ("landscape", "风景"), "room": ("room", "房间"), "tiles": ("tiled", "瓷砖"),
    "plain": ("plain", "纯色"),
}
GREY = ("grey", "灰色")


def position(o: Obj, canvas: tuple[float, float]) -> tuple[str, str]:
    """(column, row) of the object's centre on a 3 x 3 grid of the canvas."""
    col = _COLS[min(2, int(3 * o.cx / canvas[0]))]
    row = _ROWS[min(2, int(3 * o.cy / canvas[1]))]
    return col, row


def colour_name(rgb) -> tuple[str, str]:
    """(English, Chinese) name of a muted background colour: grey when unsaturated, else the nearest palette hue."""
    r, g, b = (c / 255.0 for c in rgb)
    h, s, v = colorsys.rgb_to_hsv(r, g, b)
    if s < 0.12:
        return ("white", L.COLOR_WORDS["white"][1]) if v > 0.85 else GREY
    best, dist = "red", 9.0
    for name in ("red", "orange", "yellow", "green", "blue", "purple", "pink", "brown"):
        ph = colorsys.rgb_to_hsv(*(c / 255.0 for c in L.COLOR_RGB[name]))[0]
        d = min(abs(h - ph), 1 - abs(h - ph))
        if d < dist:
            best, dist = name, d
    return best, L.COLOR_WORDS[best][1]


def _object_en(o: Obj, canvas) -> str:
    size = L.size_class(o.s)
    words = [w for w in (size if size != "medium" else None, o.color,
                         o.texture if o.texture != "plain" else None, o.shape) if w] + [o.kind]
    return f"{L.article(words[0])} {' '.join(words)} {POSITION_EN[position(o, canvas)]}"


def _object_zh(o: Obj, canvas) -> str:
    size = L.size_class(o.s)
    attrs = "".join(w for w in (o.color and L.COLOR_WORDS[o.color][1],
                                L.TEXTURE_WORDS[o.texture] if o.texture != "plain" else None,
                                o.shape and L.SHAPE_WORDS[o.shape]) if w)
    size_zh = L.SIZE_WORDS[size] + "的" if size != "medium" else ""
    return f"{POSITION_ZH[position(o, canvas)]}一{L.classifier_zh(o.kind)}{size_zh}{attrs}的{L.noun_zh(o.kind)}"


def dense_caption(scene: Scene, lang: str) -> str:
    """Everything drawn in the scene, in `lang` ("en" or "zh")."""
    if not scene.objects:
        raise MarsRefError("a dense caption needs a realised scene (objects)")
    bg_en, bg_zh = BACKGROUND_WORDS[scene.background.kind]
    col_en, col_zh = colour_name(scene.background.colors[0])
    if lang == "en":
        objs = ", ".join(_object_en(o, scene.canvas) for o in scene.objects)
        return f"{objs}; a {col_en} {bg_en} background"
    if lang == "zh":
        objs = "，".join(_object_zh(o, scene.canvas) for o in scene.objects)
        return f"{objs}；{col_zh}{bg_zh}背景"
    raise MarsRefError(f"unknown caption language {lang!r} (expected 'en' or 'zh')")
