"""How each object kind is drawn: a few layers of PIL masks in the object's own unit box.

A kind's function receives a `Pen` whose coordinates run over the object's box (u right, v down, both 0..1;
mirrored when the object is flipped) and adds layers, each with a paint:
  "body"              the object's colour, lit from above, with its texture
  ("mul", f)          the body colour times f (roofs, lids, shading), textured too
  ("rgb", (r,g,b), a) a fixed detail colour (wheels, windows, trunks) at opacity a
The renderer composites the layers in order, outlines the union and drops a shadow.
"""

from __future__ import annotations

import math

from PIL import Image, ImageDraw

Paint = str | tuple


class Pen:
    def __init__(self, size: tuple[int, int], ox: float, oy: float, bw: float, bh: float, flip: bool):
        self.size, self.ox, self.oy, self.bw, self.bh, self.flip = size, ox, oy, bw, bh, flip
        self.layers: list[tuple[Paint, Image.Image]] = []

    def layer(self, paint: Paint = "body") -> _Layer:
        img = Image.new("L", self.size, 0)
        self.layers.append((paint, img))
        return _Layer(self, ImageDraw.Draw(img))

    def xy(self, u: float, v: float) -> tuple[float, float]:
        return (self.ox + ((1.0 - u) if self.flip else u) * self.bw, self.oy + v * self.bh)


class _Layer:
    def __init__(self, pen: Pen, draw: ImageDraw.ImageDraw):
        self.pen, self.d = pen, draw

    def _box(self, u0, v0, u1, v1):
        (x0, y0), (x1, y1) = self.pen.xy(u0, v0), self.pen.xy(u1, v1)
        return [min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1)]

    def ellipse(self, u0, v0, u1, v1, fill=255):
        self.d.ellipse(self._box(u0, v0, u1, v1), fill=fill)
        return self

    def circle(self, cu, cv, r, fill=255):
        """Round whatever the box's aspect: `r` is in units of the box width."""
        x, y = self.pen.xy(cu, cv)
        rp = r * self.pen.bw
        self.d.ellipse([x - rp, y - rp, x + rp, y + rp], fill=fill)
        return self

    def rect(self, u0, v0, u1, v1, fill=255, radius: float = 0.0):
        box = self._box(u0, v0, u1, v1)
        if radius > 0:
            self.d.rounded_rectangle(box, radius=radius * self.pen.bw, fill=fill)
        else:
            self.d.rectangle(box, fill=fill)
        return self

    def poly(self, pts, fill=255):
        self.d.polygon([self.pen.xy(u, v) for u, v in pts], fill=fill)
        return self

    def line(self, pts, width: float, fill=255):
        self.d.line(
            [self.pen.xy(u, v) for u, v in pts],
            fill=fill,
            width=max(1, round(width * self.pen.bw)),
            joint="curve",
        )
        return self

    def arc(self, u0, v0, u1, v1, start, end, width: float, fill=255):
        if self.pen.flip:  # mirror: angle a -> 180 - a, and the sweep keeps its clockwise direction
            start, end = 180 - end, 180 - start
        end = end if end > start else end + 360
        self.d.arc(self._box(u0, v0, u1, v1), start, end, fill=fill, width=max(1, round(width * self.pen.bw)))
        return self

    def shape(self, shape: str, u0, v0, u1, v1, fill=255):
        """One of lexicon.SHAPES inscribed in the rectangle."""
        if shape == "round":
            return self.ellipse(u0, v0, u1, v1, fill)
        return self.poly([(u0 + (u1 - u0) * a, v0 + (v1 - v0) * b) for a, b in SHAPE_POLYS[shape]], fill)


SHAPE_POLYS = {
    "square": [(0.06, 0.06), (0.94, 0.06), (0.94, 0.94), (0.06, 0.94)],
    "triangular": [(0.5, 0.0), (1.0, 0.95), (0.0, 0.95)],
    "diamond": [(0.5, 0.0), (1.0, 0.5), (0.5, 1.0), (0.0, 0.5)],
    "hexagonal": [(0.25, 0.04), (0.75, 0.04), (1.0, 0.5), (0.75, 0.96), (0.25, 0.96), (0.0, 0.5)],
}

DARK = ("rgb", (38, 36, 40), 1.0)
WHITE = ("rgb", (248, 248, 244), 1.0)


def _star(cu, cv, r_out, r_in, n=5):
    pts = []
    for i in range(2 * n):
        r = r_out if i % 2 == 0 else r_in
        a = -math.pi / 2 + i * math.pi / n
        pts.append((cu + r * math.cos(a), cv + r * math.sin(a)))
    return pts


_HEART = [
    (16 * math.sin(t) ** 3, -(13 * math.cos(t) - 5 * math.cos(2 * t) - 2 * math.cos(3 * t) - math.cos(4 * t)))
    for t in (2 * math.pi * i / 48 for i in range(48))
]
_HX = (min(p[0] for p in _HEART), max(p[0] for p in _HEART))
_HY = (min(p[1] for p in _HEART), max(p[1] for p in _HEART))
HEART = [((x - _HX[0]) / (_HX[1] - _HX[0]), (y - _HY[0]) / (_HY[1] - _HY[0])) for x, y in _HEART]
STAR = _star(0.5, 0.54, 0.5, 0.21)


def ball(p: Pen, o):
    p.layer().ellipse(0, 0, 1, 1)
    p.layer(("rgb", (255, 255, 255), 0.45)).ellipse(0.2, 0.13, 0.47, 0.38)


def box(p: Pen, o):
    p.layer().rect(0, 0.28, 0.72, 1)
    p.layer(("mul", 1.25)).poly([(0, 0.28), (0.28, 0), (1, 0), (0.72, 0.28)])
    p.layer(("mul", 0.7)).poly([(0.72, 0.28), (1, 0), (1, 0.72), (0.72, 1)])


def cup(p: Pen, o):
    p.layer().arc(0.5, 0.28, 0.98, 0.78, 270, 90, width=0.09)
    p.layer().poly([(0.04, 0.1), (0.76, 0.1), (0.68, 1), (0.12, 1)])
    p.layer(("mul", 0.55)).ellipse(0.06, 0.03, 0.74, 0.2)


def tree(p: Pen, o):
    p.layer(("rgb", (104, 68, 38), 1.0)).rect(0.41, 0.55, 0.59, 1)
    crown = p.layer()
    crown.ellipse(0.02, 0.22, 0.62, 0.74).ellipse(0.38, 0.22, 0.98, 0.74).ellipse(0.18, 0, 0.82, 0.56)


def house(p: Pen, o):
    p.layer().rect(0.12, 0.44, 0.88, 1)
    p.layer(("mul", 0.6)).poly([(0, 0.5), (0.5, 0.02), (1, 0.5)])
    p.layer(("rgb", (92, 60, 40), 1.0)).rect(0.42, 0.68, 0.58, 1)
    p.layer(("rgb", (252, 238, 160), 1.0)).rect(0.19, 0.56, 0.34, 0.71).rect(0.66, 0.56, 0.81, 0.71)


def star(p: Pen, o):
    p.layer().poly(STAR)


def car(p: Pen, o):
    body = p.layer()
    body.rect(0, 0.36, 1, 0.82, radius=0.06)
    body.poly([(0.18, 0.4), (0.32, 0.04), (0.7, 0.04), (0.84, 0.4)])
    p.layer(("rgb", (196, 226, 244), 1.0)).poly(
        [(0.26, 0.38), (0.36, 0.12), (0.49, 0.12), (0.49, 0.38)]
    ).poly([(0.53, 0.38), (0.53, 0.12), (0.66, 0.12), (0.76, 0.38)])
    p.layer(("rgb", (252, 226, 110), 1.0)).rect(0.93, 0.46, 1.0, 0.56)
    p.layer(DARK).circle(0.24, 0.8, 0.12).circle(0.76, 0.8, 0.12)
    p.layer(("rgb", (172, 172, 176), 1.0)).circle(0.24, 0.8, 0.05).circle(0.76, 0.8, 0.05)


def fish(p: Pen, o):
    body = p.layer()
    body.ellipse(0, 0.12, 0.76, 0.88)
    body.poly([(0.62, 0.5), (1, 0.08), (0.9, 0.5), (1, 0.92)])
    p.layer(("mul", 0.72)).poly([(0.28, 0.2), (0.46, 0.0), (0.52, 0.22)])
    p.layer(WHITE).circle(0.17, 0.42, 0.06)
    p.layer(DARK).circle(0.16, 0.42, 0.03)


def flower(p: Pen, o):
    green = ("rgb", (58, 138, 62), 1.0)
    p.layer(green).line([(0.5, 0.5), (0.5, 1)], width=0.08)
    p.layer(green).ellipse(0.5, 0.66, 0.9, 0.8)
    petals = p.layer()
    for i in range(5):
        a = -math.pi / 2 + i * 2 * math.pi / 5
        petals.circle(0.5 + 0.26 * math.cos(a), 0.33 + 0.2 * math.sin(a), 0.2)
    centre = (150, 96, 40) if o.color in ("yellow", "orange") else (250, 206, 54)
    p.layer(("rgb", centre, 1.0)).circle(0.5, 0.33, 0.15)


def heart(p: Pen, o):
    p.layer().poly(HEART)
    p.layer(("rgb", (255, 255, 255), 0.4)).ellipse(0.16, 0.1, 0.34, 0.3)


def moon(p: Pen, o):
    lay = p.layer()
    lay.ellipse(0, 0, 1, 1)
    lay.ellipse(0.34, -0.1, 1.2, 0.8, fill=0)


def hat(p: Pen, o):
    p.layer(("mul", 0.82)).ellipse(0, 0.7, 1, 1)
    p.layer().rect(0.2, 0.04, 0.8, 0.86, radius=0.08)
    p.layer(("mul", 0.5)).rect(0.2, 0.58, 0.8, 0.72)


def bottle(p: Pen, o):
    body = p.layer()
    body.rect(0, 0.38, 1, 1, radius=0.2)
    body.poly([(0, 0.5), (0.28, 0.22), (0.72, 0.22), (1, 0.5)])
    body.rect(0.3, 0.06, 0.7, 0.3)
    p.layer(("rgb", (70, 70, 74), 1.0)).rect(0.25, 0, 0.75, 0.1)
    p.layer(("mul", 0.78)).rect(0, 0.56, 1, 0.78)
    p.layer(("rgb", (255, 255, 255), 0.35)).rect(0.14, 0.42, 0.26, 0.92)


def umbrella(p: Pen, o):
    handle = ("rgb", (66, 62, 60), 1.0)
    p.layer(handle).line([(0.5, 0.4), (0.5, 0.86)], width=0.05)
    p.layer(handle).arc(0.5, 0.72, 0.74, 0.98, 0, 180, width=0.05)
    canopy = p.layer()
    canopy.d.pieslice(canopy._box(0, 0.04, 1, 0.96), 180, 360, fill=255)
    for i in range(4):
        canopy.ellipse(0.125 + 0.25 * i - 0.125, 0.44, 0.125 + 0.25 * i + 0.125, 0.56, fill=0)
    p.layer(("mul", 0.7)).line([(0.5, 0.06), (0.5, 0.48)], width=0.03)
    p.layer(handle).line([(0.5, 0.0), (0.5, 0.06)], width=0.04)


def kite(p: Pen, o):
    tail = ("rgb", (70, 66, 64), 1.0)
    p.layer(tail).line([(0.5, 0.7), (0.42, 0.84), (0.56, 0.92), (0.45, 1.0)], width=0.03)
    p.layer().shape(o.shape, 0, 0, 1, 0.75)
    p.layer(("mul", 0.5)).line([(0.5, 0.02), (0.5, 0.73)], width=0.035).line(
        [(0.02, 0.375), (0.98, 0.375)], width=0.035
    )
    bows = p.layer(("mul", 1.3))
    bows.poly([(0.38, 0.8), (0.48, 0.85), (0.38, 0.9)]).poly([(0.6, 0.88), (0.5, 0.93), (0.6, 0.98)])


def sign(p: Pen, o):
    p.layer(("rgb", (150, 150, 156), 1.0)).rect(0.44, 0.6, 0.56, 1)
    p.layer().shape(o.shape, 0, 0, 1, 0.7)
    p.layer(("rgb", (255, 255, 255), 0.85)).shape(o.shape, 0.3, 0.21, 0.7, 0.49)


def clock(p: Pen, o):
    p.layer().shape(o.shape, 0, 0, 1, 1)
    p.layer(("rgb", (250, 248, 240), 1.0)).shape(o.shape, 0.2, 0.2, 0.8, 0.8)
    p.layer(DARK).line([(0.5, 0.5), (0.5, 0.3)], width=0.06).line([(0.5, 0.5), (0.64, 0.56)], width=0.06)


def cake(p: Pen, o):
    p.layer().shape(o.shape, 0, 0.15, 1, 1)
    icing = p.layer(("rgb", (252, 246, 236), 1.0))
    icing.shape(o.shape, 0, 0.15, 1, 1)
    icing.rect(-0.1, 0.46, 1.1, 1.1, fill=0)
    p.layer(("rgb", (240, 236, 250), 1.0)).rect(0.45, 0.02, 0.55, 0.2)
    p.layer(("rgb", (252, 168, 40), 1.0)).ellipse(0.44, -0.06, 0.56, 0.06)


def button(p: Pen, o):
    p.layer().shape(o.shape, 0, 0, 1, 1)
    p.layer(("mul", 0.72)).shape(o.shape, 0.12, 0.12, 0.88, 0.88).shape(
        o.shape, 0.19, 0.19, 0.81, 0.81, fill=0
    )
    holes = p.layer(("mul", 0.35))
    for cu, cv in ((0.4, 0.42), (0.6, 0.42), (0.4, 0.62), (0.6, 0.62)):
        holes.circle(cu, cv, 0.055)


DRAW = {
    "ball": ball,
    "box": box,
    "cup": cup,
    "tree": tree,
    "house": house,
    "star": star,
    "car": car,
    "fish": fish,
    "flower": flower,
    "heart": heart,
    "moon": moon,
    "hat": hat,
    "bottle": bottle,
    "umbrella": umbrella,
    "kite": kite,
    "sign": sign,
    "clock": clock,
    "cake": cake,
    "button": button,
}
