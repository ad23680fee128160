"""Render a scene to an RGB image: paint at `supersample` x the size, then box-filter down (anti-aliasing).

Objects are composited in drawing order, each with a soft drop shadow, top lighting, its texture and a dark
outline, so that colours stay readable on any background and occlusion is visible. The result depends only on
the scene and the output size, never on a random state.
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image

from mars_ref.errors import MarsRefError
from mars_ref.world.backgrounds import paint_background
from mars_ref.world.scene import Obj, Scene
from mars_ref.world.shapes import DRAW, Pen

SUPERSAMPLE = 4
SHADOW = (0.018, 0.028, 0.3)  # offset x, y in canvas units; opacity
OUTLINE_PX = 0.45  # outline width in output pixels
MIN_TEXTURE_PERIOD_PX = 3.0  # at the 32 px base resolution: finer patterns alias away and cannot be judged


def render(scene: Scene, width: int, height: int, supersample: int = SUPERSAMPLE) -> Image.Image:
    """RGB image of `scene` at width x height px; the size must have the scene's aspect ratio."""
    aw, ah = scene.aspect
    if width <= 0 or height <= 0 or width * ah != height * aw:
        raise MarsRefError(f"size {width}x{height} does not match the scene's aspect {aw}:{ah}")
    if supersample < 1:
        raise MarsRefError(f"supersample must be >= 1, got {supersample}")
    W, H = width * supersample, height * supersample
    canvas = scene.canvas
    scale = W / canvas[0]  # supersampled pixels per canvas unit
    # Objects go into a premultiplied layer plus the share of background still visible (transmittance), both
    # supersampled; the smooth background itself only needs 2x, and is blended in at the output size.
    rgb = np.zeros((3, H, W), dtype=np.float32)
    trans = np.ones((H, W), dtype=np.float32)
    outline = max(1, round(OUTLINE_PX * supersample))
    # the texture floor is fixed in scene units (MIN_TEXTURE_PERIOD_PX at the 32 px base resolution), so a scene
    # rendered at 32 and at 64 px shows the same pattern (Stage III pairs)
    min_period = MIN_TEXTURE_PERIOD_PX * scale * min(canvas) / 32
    for obj in scene.objects:
        _draw(rgb, trans, obj, scale, outline, min_period)
    bg = _reduce(paint_background(scene.background, 2 * width, 2 * height, canvas), 2)  # (3, h, w)
    img = _reduce(rgb, supersample) + _reduce(trans[None], supersample) * bg
    return Image.fromarray(np.ascontiguousarray((img * 255.0 + 0.5).astype(np.uint8).transpose(1, 2, 0)), "RGB")


def _reduce(a: np.ndarray, k: int) -> np.ndarray:
    """Box-filter (C, H, W) by k in both directions (PIL's C implementation, one channel at a time)."""
    if k == 1:
        return a
    return np.stack([np.asarray(Image.fromarray(c, "F").reduce(k)) for c in a])


def _texture(kind: str, x: np.ndarray, y: np.ndarray, period: float) -> np.ndarray | None:
    """Pattern coverage (h, w) in {0, 1} on pixel coordinates relative to the object; None for plain."""
    if kind == "plain":
        return None
    if kind == "striped":
        return (((x[None, :] + y[:, None]) / period) % 1.0 < 0.5).astype(np.float32)
    if kind == "checkered":
        c = period * 0.62
        return ((np.floor(x[None, :] / c) + np.floor(y[:, None] / c)) % 2).astype(np.float32)
    # dotted: offset rows of round dots
    row = np.floor(y / period)
    dy = (y % period) - period / 2
    dx = ((x[None, :] + (row[:, None] % 2) * period / 2) % period) - period / 2
    return (dx * dx + dy[:, None] ** 2 < (0.3 * period) ** 2).astype(np.float32)


def _erode(a: np.ndarray, r: int) -> np.ndarray:
    """Minimum over a (2r+1) x (2r+1) square, separably; outside the array counts as 0."""
    out = a.copy()
    for k in range(1, r + 1):
        out[:, k:] = np.minimum(out[:, k:], a[:, :-k])
        out[:, :-k] = np.minimum(out[:, :-k], a[:, k:])
        out[:, :k] = 0
        out[:, -k:] = 0
    tmp = out.copy()
    for k in range(1, r + 1):
        out[k:, :] = np.minimum(out[k:, :], tmp[:-k, :])
        out[:-k, :] = np.minimum(out[:-k, :], tmp[k:, :])
        out[:k, :] = 0
        out[-k:, :] = 0
    return out


def _contrast_tone(rgb: np.ndarray) -> np.ndarray:
    """The colour of a texture's pattern: a dark version of light colours, a pale version of dark ones."""
    lum = float(0.299 * rgb[0, 0, 0] + 0.587 * rgb[1, 0, 0] + 0.114 * rgb[2, 0, 0])
    return rgb * 0.32 if lum > 0.5 else rgb * 0.3 + 0.7 * 0.92


def _pen(obj: Obj, scale: float, W: int, H: int, outline: int = 0) -> tuple[Pen, int, int] | None:
    """The object's layers drawn in a window of the W x H canvas (`scale` px per canvas unit) with room for the
    outline and the shadow; (pen, window corner x, y), or None when the object lies outside the canvas."""
    w, h = obj.wh
    bw, bh = w * scale, h * scale
    x0, y0 = (obj.cx - w / 2) * scale, (obj.cy - h / 2) * scale
    pad = 0.12 * max(bw, bh) + outline + 2  # room for parts that overhang the box (flames, moon horns)
    ix0, iy0 = max(0, math.floor(x0 - pad)), max(0, math.floor(y0 - pad))
    ix1, iy1 = min(W, math.ceil(x0 + bw + pad + SHADOW[0] * scale)), min(H, math.ceil(y0 + bh + pad + SHADOW[1] * scale))
    if ix1 <= ix0 or iy1 <= iy0:
        return None
    pen = Pen((ix1 - ix0, iy1 - iy0), x0 - ix0, y0 - iy0, bw, bh, obj.flip)
    DRAW[obj.kind](pen, obj)
    return pen, ix0, iy0


def _opacity(paint, layer: Image.Image) -> np.ndarray:
    """A layer's coverage (h, w) in [0, 1], times a detail colour's opacity."""
    m = np.asarray(layer, dtype=np.float32) * (1.0 / 255.0)
    return m if paint == "body" or paint[0] == "mul" else m * paint[2]


def silhouette(obj: Obj, canvas: tuple[float, float], px_per_unit: float) -> np.ndarray:
    """The object's coverage (H, W) in [0, 1] on the whole canvas at `px_per_unit` pixels per canvas unit (what
    the renderer composites, without outline and shadow): the layout measures how much of an object another hides."""
    W, H = round(canvas[0] * px_per_unit), round(canvas[1] * px_per_unit)
    out = np.zeros((H, W), dtype=np.float32)
    drawn = _pen(obj, px_per_unit, W, H)
    if drawn is not None:
        pen, ix0, iy0 = drawn
        alpha = out[iy0:iy0 + pen.size[1], ix0:ix0 + pen.size[0]]
        for paint, layer in pen.layers:
            alpha += _opacity(paint, layer) * (1 - alpha)
    return out


def _draw(acc: np.ndarray, trans: np.ndarray, obj: Obj, scale: float, outline: int, min_period: float) -> None:
    """Composite one object over `acc` (3, H, W, premultiplied) and update the transmittance `trans` (H, W)."""
    _, H, W = acc.shape
    drawn = _pen(obj, scale, W, H, outline)
    if drawn is None:
        return
    pen, ix0, iy0 = drawn
    (cw, ch), bh = pen.size, pen.bh
    ix1, iy1 = ix0 + cw, iy0 + ch
    sdx, sdy = SHADOW[0] * scale, SHADOW[1] * scale

    base = np.asarray(obj.rgb, dtype=np.float32)[:, None, None] / 255.0  # (3, 1, 1)
    xs = np.arange(cw, dtype=np.float32) + 0.5 - pen.ox  # pixel coords relative to the box corner
    ys = np.arange(ch, dtype=np.float32) + 0.5 - pen.oy
    light = (1.1 - 0.24 * np.clip(ys / bh, 0, 1))[None, :, None]  # (1, h, 1): lit from above
    period = max(obj.s * scale / 4.2, min_period)
    pattern = _texture(obj.texture, xs, ys, period)  # (h, w) or None
    tone = _contrast_tone(base)

    rgb = np.zeros((3, ch, cw), dtype=np.float32)  # premultiplied colour
    alpha = np.zeros((ch, cw), dtype=np.float32)
    for paint, layer in pen.layers:
        m = _opacity(paint, layer)  # (h, w)
        if paint == "body" or paint[0] == "mul":
            f = 1.0 if paint == "body" else paint[1]
            col = base * f if f <= 1 else base + (1 - base) * (f - 1)
            col = np.minimum(col * light, 1.0)  # (3, h, 1)
            if pattern is not None:
                col = col + (tone - col) * pattern
        else:
            col = np.asarray(paint[1], dtype=np.float32)[:, None, None] / 255.0
        rgb += (col - rgb) * m
        alpha += m * (1 - alpha)

    # outline: the band between the silhouette and its erosion
    ring = np.clip(alpha - _erode(alpha, outline), 0, 1) * 0.85
    rgb += (base * 0.35 - rgb) * ring

    # shadow, then the object (premultiplied "over"); both also dim the background still to come
    sx, sy = round(sdx), round(sdy)
    region, t_region = acc[:, iy0:iy1, ix0:ix1], trans[iy0:iy1, ix0:ix1]
    if sx < cw and sy < ch:
        shade = 1 - SHADOW[2] * alpha[: ch - sy, : cw - sx]
        region[:, sy:, sx:] *= shade
        t_region[sy:, sx:] *= shade
    region *= 1 - alpha
    region += rgb
    t_region *= 1 - alpha
