"""The world's closed vocabulary, in English and Chinese.

Everything a caption can say is listed here, so captions are generated from tables and parsed back with the
same tables: a word missing from a table cannot appear in a caption, and a caption the parser accepts names
only things the renderer can draw.
"""

from __future__ import annotations

# ---- object kinds ------------------------------------------------------------------------------------------
# kind -> (English plural, Chinese noun, Chinese classifier). Order is part of the world's definition
# (sampling uses it), so append new kinds at the end.
KIND_WORDS: dict[str, tuple[str, str, str]] = {
    "ball": ("balls", "球", "个"),
    "box": ("boxes", "盒子", "个"),
    "cup": ("cups", "杯子", "个"),
    "tree": ("trees", "树", "棵"),
    "house": ("houses", "房子", "座"),
    "star": ("stars", "星星", "颗"),
    "car": ("cars", "汽车", "辆"),
    "fish": ("fish", "鱼", "条"),
    "flower": ("flowers", "花", "朵"),
    "heart": ("hearts", "爱心", "颗"),
    "moon": ("moons", "月亮", "个"),
    "hat": ("hats", "帽子", "顶"),
    "bottle": ("bottles", "瓶子", "个"),
    "umbrella": ("umbrellas", "伞", "把"),
    "kite": ("kites", "风筝", "只"),
    "sign": ("signs", "牌子", "块"),
    "clock": ("clocks", "钟", "个"),
    "cake": ("cakes", "蛋糕", "块"),
    "button": ("buttons", "纽扣", "颗"),
}
KINDS: tuple[str, ...] = tuple(KIND_WORDS)

# Kinds whose outline is a free attribute ("a triangular sign"); the others have a fixed silhouette.
SHAPEABLE: tuple[str, ...] = ("kite", "sign", "clock", "cake", "button")

# Width:height of each kind's bounding box (the longer side is the object's size `s`).
KIND_ASPECT: dict[str, float] = {
    "ball": 1.0,
    "box": 1.0,
    "cup": 1.15,
    "tree": 0.8,
    "house": 0.9,
    "star": 1.0,
    "car": 1.6,
    "fish": 1.6,
    "flower": 0.75,
    "heart": 1.1,
    "moon": 1.0,
    "hat": 1.35,
    "bottle": 0.45,
    "umbrella": 1.0,
    "kite": 0.75,
    "sign": 0.7,
    "clock": 1.0,
    "cake": 0.85,
    "button": 1.0,
}

# ---- attributes --------------------------------------------------------------------------------------------
# colour -> (sRGB, Chinese)
COLOR_WORDS: dict[str, tuple[tuple[int, int, int], str]] = {
    "red": ((214, 38, 38), "红色"),
    "orange": ((245, 137, 28), "橙色"),
    "yellow": ((246, 212, 36), "黄色"),
    "green": ((52, 168, 66), "绿色"),
    "blue": ((40, 92, 214), "蓝色"),
    "purple": ((138, 64, 190), "紫色"),
    "pink": ((246, 128, 184), "粉色"),
    "brown": ((136, 82, 42), "棕色"),
    "white": ((246, 246, 246), "白色"),
    "black": ((28, 28, 30), "黑色"),
}
COLORS: tuple[str, ...] = tuple(COLOR_WORDS)
COLOR_RGB: dict[str, tuple[int, int, int]] = {k: v[0] for k, v in COLOR_WORDS.items()}

TEXTURE_WORDS: dict[str, str] = {"plain": "纯色", "striped": "条纹", "dotted": "圆点", "checkered": "格子"}
TEXTURES: tuple[str, ...] = tuple(TEXTURE_WORDS)

SHAPE_WORDS: dict[str, str] = {
    "round": "圆形",
    "square": "方形",
    "triangular": "三角形",
    "diamond": "菱形",
    "hexagonal": "六边形",
}
SHAPES: tuple[str, ...] = tuple(SHAPE_WORDS)

# Size classes by the object's extent `s` in units of the canvas' shorter side.
SIZE_WORDS: dict[str, str] = {"small": "小", "big": "大"}
SIZES: tuple[str, ...] = ("small", "medium", "big")
SIZE_RANGES: dict[str, tuple[float, float]] = {
    "small": (0.19, 0.26),
    "medium": (0.28, 0.40),
    "big": (0.44, 0.58),
}


def size_class(s: float) -> str:
    """The size word an extent deserves; the gaps between the ranges are 'medium' too."""
    if s < 0.265:
        return "small"
    if s >= 0.42:
        return "big"
    return "medium"


# ---- relations ---------------------------------------------------------------------------------------------
SPATIAL_RELATIONS: tuple[str, ...] = ("left_of", "right_of", "above", "below")
NONSPATIAL_RELATIONS: tuple[str, ...] = (
    "bigger_than",
    "smaller_than",
    "in_front_of",
    "behind",
    "same_color_as",
)
RELATIONS: tuple[str, ...] = SPATIAL_RELATIONS + NONSPATIAL_RELATIONS

REL_EN: dict[str, str] = {
    "left_of": "on the left of",
    "right_of": "on the right of",
    "above": "above",
    "below": "below",
    "bigger_than": "bigger than",
    "smaller_than": "smaller than",
    "in_front_of": "in front of",
    "behind": "behind",
    "same_color_as": "the same color as",
}
# Chinese relations wrap the object: A 在 B 的左边 / A 比 B 大 / A 和 B 颜色相同
REL_ZH_PLACE: dict[str, str] = {
    "left_of": "左边",
    "right_of": "右边",
    "above": "上面",
    "below": "下面",
    "in_front_of": "前面",
    "behind": "后面",
}
REL_ZH_COMPARE: dict[str, str] = {"bigger_than": "大", "smaller_than": "小"}
REL_ZH_SAME_COLOR = "颜色相同"

# ---- numbers -----------------------------------------------------------------------------------------------
MAX_COUNT = 5
NUM_EN: tuple[str, ...] = ("zero", "one", "two", "three", "four", "five")
NUM_ZH: tuple[str, ...] = ("零", "一", "两", "三", "四", "五")
NUM_ZH_PLAIN: tuple[str, ...] = ("零", "一", "二", "三", "四", "五")  # for "第N步"-style ordinals


def article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def noun_en(kind: str, count: int) -> str:
    return kind if count == 1 else KIND_WORDS[kind][0]


def noun_zh(kind: str) -> str:
    return KIND_WORDS[kind][1]


def classifier_zh(kind: str) -> str:
    return KIND_WORDS[kind][2]
