"""A world scene: what the caption says (groups + relations) and how it was realised (objects + background).

`Group` and `Relation` are the caption-level ground truth (`Scene.truth()`, which `parse_caption` recovers
from either language). `Obj` is one drawn instance with its full attributes and box, so judges can check an
image against more than the caption says. Coordinates are in units of the canvas' shorter side, y pointing
down, so the same scene renders at any resolution of its aspect ratio (Stage III renders one scene at 32 and
64 px).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from math import gcd

from mars_ref.errors import MarsRefError
from mars_ref.world import lexicon as L

BACKGROUNDS: tuple[str, ...] = ("gradient", "radial", "noise", "landscape", "room", "tiles")  # the varied style
PLAIN_BACKGROUND = "plain"  # the plain style's one kind: a single muted colour


@dataclass(frozen=True)
class Group:
    """One noun phrase of the caption: `count` objects of `kind`; None = the caption does not say."""

    kind: str
    count: int = 1
    color: str | None = None
    shape: str | None = None
    texture: str | None = None
    size: str | None = None

    def __post_init__(self):
        _check(self.kind in L.KINDS, f"unknown kind {self.kind!r}")
        _check(1 <= self.count <= L.MAX_COUNT, f"count {self.count} outside 1..{L.MAX_COUNT}")
        _check(self.color is None or self.color in L.COLORS, f"unknown color {self.color!r}")
        _check(
            self.shape is None or (self.shape in L.SHAPES and self.kind in L.SHAPEABLE),
            f"shape {self.shape!r} not allowed for {self.kind!r}",
        )
        _check(self.texture is None or self.texture in L.TEXTURES, f"unknown texture {self.texture!r}")
        _check(self.size is None or self.size in L.SIZE_WORDS, f"unknown size word {self.size!r}")


@dataclass(frozen=True)
class Relation:
    """`groups[subj]` stands in relation `rel` to `groups[obj]` (for every member of each group)."""

    subj: int
    rel: str
    obj: int

    def __post_init__(self):
        _check(self.rel in L.RELATIONS, f"unknown relation {self.rel!r}")
        _check(self.subj != self.obj, "a relation needs two different groups")


@dataclass(frozen=True)
class Obj:
    """One drawn object. `s` is the longer side of its box; `rgb` is its colour after a small jitter."""

    kind: str
    group: int
    color: str
    texture: str
    shape: str | None
    cx: float
    cy: float
    s: float
    rgb: tuple[int, int, int]
    flip: bool = False

    def __post_init__(self):
        _check(self.kind in L.KINDS, f"unknown kind {self.kind!r}")
        _check(self.color in L.COLORS, f"unknown color {self.color!r}")
        _check(self.texture in L.TEXTURES, f"unknown texture {self.texture!r}")
        _check(
            (self.shape in L.SHAPES) if self.kind in L.SHAPEABLE else self.shape is None,
            f"bad shape {self.shape!r} for {self.kind!r}",
        )
        _check(self.s > 0, f"object size must be > 0, got {self.s}")

    @property
    def wh(self) -> tuple[float, float]:
        a = L.KIND_ASPECT[self.kind]
        return (self.s, self.s / a) if a >= 1 else (self.s * a, self.s)

    @property
    def box(self) -> tuple[float, float, float, float]:
        """(x0, y0, x1, y1) in canvas units."""
        w, h = self.wh
        return (self.cx - w / 2, self.cy - h / 2, self.cx + w / 2, self.cy + h / 2)

    @property
    def size(self) -> str:
        return L.size_class(self.s)


@dataclass(frozen=True)
class Background:
    kind: str
    colors: tuple[tuple[int, int, int], ...]
    param: float = 0.0  # angle (gradient), horizon height (landscape/room), cell size (tiles)
    seed: int = 0  # noise and hill shapes are regenerated from it at any resolution

    def __post_init__(self):
        _check(self.kind in BACKGROUNDS or self.kind == PLAIN_BACKGROUND, f"unknown background {self.kind!r}")
        _check(len(self.colors) >= 2, "a background needs at least two colours")


@dataclass(frozen=True)
class Scene:
    category: str
    aspect: tuple[int, int]  # (width, height) ratio in lowest terms
    background: Background
    groups: tuple[Group, ...]
    relations: tuple[Relation, ...] = ()
    objects: tuple[Obj, ...] = field(default=())  # in drawing order: later objects occlude earlier ones

    def __post_init__(self):
        aw, ah = self.aspect
        _check(aw > 0 and ah > 0 and gcd(aw, ah) == 1, f"aspect must be a reduced ratio, got {self.aspect}")
        n = len(self.groups)
        _check(n > 0, "a scene needs at least one group")
        for r in self.relations:
            _check(0 <= r.subj < n and 0 <= r.obj < n, f"relation {r} refers to a missing group")
        for o in self.objects:
            _check(0 <= o.group < n, f"object refers to missing group {o.group}")

    @property
    def canvas(self) -> tuple[float, float]:
        """Canvas width and height in units of its shorter side."""
        aw, ah = self.aspect
        return (aw / ah, 1.0) if aw >= ah else (1.0, ah / aw)

    def members(self, group: int) -> list[Obj]:
        return [o for o in self.objects if o.group == group]

    def truth(self, res: tuple[int, int] | None = None) -> dict:
        """The caption-level ground truth: what `parse_caption(caption(scene, lang), lang)` returns."""
        return {
            "objects": [_group_dict(g) for g in self.groups],
            "relations": [{"subj": r.subj, "rel": r.rel, "obj": r.obj} for r in self.relations],
            "res": list(res) if res else None,
        }

    def to_dict(self) -> dict:
        b = self.background
        return {
            "category": self.category,
            "aspect": list(self.aspect),
            "background": {
                "kind": b.kind,
                "colors": [list(c) for c in b.colors],
                "param": b.param,
                "seed": b.seed,
            },
            "groups": [_group_dict(g) for g in self.groups],
            "relations": [{"subj": r.subj, "rel": r.rel, "obj": r.obj} for r in self.relations],
            "objects": [
                {
                    "kind": o.kind,
                    "group": o.group,
                    "color": o.color,
                    "texture": o.texture,
                    "shape": o.shape,
                    "cx": o.cx,
                    "cy": o.cy,
                    "s": o.s,
                    "rgb": list(o.rgb),
                    "flip": o.flip,
                }
                for o in self.objects
            ],
        }

    @classmethod
    def from_dict(cls, d: dict) -> Scene:
        try:
            b = d["background"]
            return cls(
                category=d["category"],
                aspect=(int(d["aspect"][0]), int(d["aspect"][1])),
                background=Background(
                    b["kind"],
                    tuple(tuple(int(v) for v in c) for c in b["colors"]),
                    float(b["param"]),
                    int(b["seed"]),
                ),
                groups=tuple(Group(**g) for g in d["groups"]),
                relations=tuple(Relation(**r) for r in d["relations"]),
                objects=tuple(Obj(**{**o, "rgb": tuple(o["rgb"])}) for o in d["objects"]),
            )
        except (KeyError, TypeError, IndexError, ValueError) as e:
            if isinstance(e, MarsRefError):
                raise
            raise MarsRefError(f"not a world scene dict: {type(e).__name__}: {e}") from None


# ---- geometry: when does a relation hold between two drawn objects? ----------------------------------------
# Box-level functions take (x0, y0, x1, y1) so a judge can apply them to detected boxes as well.
Box = tuple[float, float, float, float]
SIZE_RATIO = 1.5  # "bigger than" needs a clearly visible difference
MIN_OCCLUSION = 0.15  # "in front of" needs the boxes to overlap by this share of the smaller one


def box_overlap(a: Box, b: Box) -> float:
    return max(0.0, min(a[2], b[2]) - max(a[0], b[0])) * max(0.0, min(a[3], b[3]) - max(a[1], b[1]))


def box_area(a: Box) -> float:
    return (a[2] - a[0]) * (a[3] - a[1])


def spatial_holds(a: Box, b: Box, rel: str) -> bool:
    """`a rel b` for the 2D relations: the centre offset is dominated by the relation's axis, and along that
    axis the boxes may touch but not interpenetrate by more than a quarter of the smaller side."""
    dx = (b[0] + b[2] - a[0] - a[2]) / 2
    dy = (b[1] + b[3] - a[1] - a[3]) / 2
    tol = 0.25 * min(a[2] - a[0], a[3] - a[1], b[2] - b[0], b[3] - b[1])
    if rel == "left_of":
        return dx > abs(dy) and a[2] - b[0] <= tol
    if rel == "right_of":
        return -dx > abs(dy) and b[2] - a[0] <= tol
    if rel == "above":
        return dy > abs(dx) and a[3] - b[1] <= tol
    if rel == "below":
        return -dy > abs(dx) and b[3] - a[1] <= tol
    raise MarsRefError(f"not a spatial relation: {rel!r}")


def occludes(a: Box, b: Box) -> bool:
    """The boxes overlap enough for drawing order to be visible."""
    return box_overlap(a, b) >= MIN_OCCLUSION * min(box_area(a), box_area(b))


def relation_holds(a: Obj, b: Obj, rel: str, z_a: int = 0, z_b: int = 0) -> bool:
    """Whether `a rel b` is visible in the image; z_a/z_b are drawing positions (larger = in front)."""
    if rel in L.SPATIAL_RELATIONS:
        return spatial_holds(a.box, b.box, rel)
    if rel == "bigger_than":
        return a.s >= SIZE_RATIO * b.s
    if rel == "smaller_than":
        return b.s >= SIZE_RATIO * a.s
    if rel in ("in_front_of", "behind"):
        return occludes(a.box, b.box) and ((z_a > z_b) if rel == "in_front_of" else (z_a < z_b))
    if rel == "same_color_as":
        return a.color == b.color
    raise MarsRefError(f"unknown relation {rel!r}")


def scene_relations_hold(scene: Scene) -> bool:
    """Every stated relation holds for every pair of members (the sampler's contract; judges use it too)."""
    objs = scene.objects
    for r in scene.relations:
        for i in (k for k, o in enumerate(objs) if o.group == r.subj):
            for j in (k for k, o in enumerate(objs) if o.group == r.obj):
                if not relation_holds(objs[i], objs[j], r.rel, i, j):
                    return False
    return True


def _group_dict(g: Group) -> dict:
    return {
        "kind": g.kind,
        "count": g.count,
        "color": g.color,
        "shape": g.shape,
        "texture": g.texture,
        "size": g.size,
    }


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise MarsRefError(message)
