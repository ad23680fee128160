"""Backgrounds: sampled as a few numbers (kind, colours, one parameter, a seed) and painted at any resolution.

Everything is a function of canvas units, not pixels, so a scene painted at 32 px and at 64 px shows the same
background (the Stage III pairs need that). Colours are muted so the saturated object colours stay readable.
"""

from __future__ import annotations

import colorsys
import math

import numpy as np
from PIL import Image

from mars_ref.world.scene import BACKGROUNDS, PLAIN_BACKGROUND, Background


def _hsv(h: float, s: float, v: float) -> tuple[int, int, int]:
    r, g, b = colorsys.hsv_to_rgb(h % 1.0, min(max(s, 0.0), 1.0), min(max(v, 0.0), 1.0))
    return (round(r * 255), round(g * 255), round(b * 255))


PLAIN_GREY = (160, 160, 160)  # the plain style's backdrop: apart from white (246) and black (28) objects alike


def sample_background(rng: np.random.Generator, style: str = "varied") -> Background:
    """A background of the world style's `backgrounds`: "varied" draws one of BACKGROUNDS; "plain" is the same
    neutral grey for every scene (draws nothing)."""
    if style == "plain":
        return Background(PLAIN_BACKGROUND, (PLAIN_GREY, PLAIN_GREY))
    kind = BACKGROUNDS[int(rng.integers(len(BACKGROUNDS)))]
    h = float(rng.random())
    u = rng.uniform
    seed = int(rng.integers(2**31 - 1))
    if kind == "gradient":
        cols = (_hsv(h, u(0.08, 0.4), u(0.7, 0.97)), _hsv(h + u(-0.15, 0.15), u(0.1, 0.45), u(0.45, 0.8)))
        param = float(u(0, 2 * np.pi))
    elif kind == "radial":
        cols = (_hsv(h, u(0.05, 0.3), u(0.8, 0.98)), _hsv(h + u(-0.1, 0.1), u(0.15, 0.5), u(0.35, 0.7)))
        param = float(u(0.6, 1.4))  # falloff radius
    elif kind == "noise":
        cols = (_hsv(h, u(0.1, 0.4), u(0.55, 0.9)), _hsv(h + u(-0.2, 0.2), u(0.1, 0.4), u(0.6, 0.95)))
        param = float(u(2.5, 6.0))  # cells per unit
    elif kind == "landscape":
        sky = h if rng.random() < 0.3 else u(0.52, 0.64)  # mostly blue skies, sometimes dusk
        ground = u(0.08, 0.38)  # sand .. grass
        cols = (
            _hsv(sky, u(0.25, 0.55), u(0.75, 0.95)),
            _hsv(sky, u(0.05, 0.2), u(0.9, 1.0)),
            _hsv(ground, u(0.3, 0.6), u(0.55, 0.8)),
            _hsv(ground, u(0.35, 0.7), u(0.35, 0.6)),
        )
        param = float(u(0.4, 0.65))  # horizon, share of the canvas height
    elif kind == "room":
        cols = (
            _hsv(h, u(0.05, 0.3), u(0.75, 0.95)),
            _hsv(u(0.05, 0.11), u(0.35, 0.6), u(0.4, 0.7)),
            _hsv(h, u(0.05, 0.2), u(0.92, 1.0)),
        )
        param = float(u(0.55, 0.75))  # floor line
    else:  # tiles
        v = u(0.6, 0.9)
        cols = (_hsv(h, u(0.05, 0.3), v), _hsv(h, u(0.05, 0.3), v - u(0.04, 0.1)))
        param = float(u(0.1, 0.22))  # cell size in units
    return Background(kind, cols, round(param, 4), seed)


_GRID = 64  # noise lattice points per side; canvases are at most 4 units wide at <= 16 cells per unit


def _smooth_noise(seed: int, cells: float, uu: np.ndarray, vv: np.ndarray) -> np.ndarray:
    """Value noise on a grid of `cells` per unit, smoothstep-interpolated; same field at every resolution."""
    rng = np.random.default_rng(seed)
    gx, gy = uu * cells, vv * cells
    grid = rng.random(
        (_GRID, _GRID), dtype=np.float32
    )  # fixed size: the field never depends on the resolution
    x0 = np.minimum(np.floor(gx).astype(np.int64), _GRID - 2)
    y0 = np.minimum(np.floor(gy).astype(np.int64), _GRID - 2)
    fx, fy = gx - x0, gy - y0
    fx, fy = fx * fx * (3 - 2 * fx), fy * fy * (3 - 2 * fy)
    a, b = grid[y0[:, None], x0[None, :]], grid[y0[:, None], x0[None, :] + 1]
    c, d = grid[y0[:, None] + 1, x0[None, :]], grid[y0[:, None] + 1, x0[None, :] + 1]
    fx, fy = fx[None, :], fy[:, None]
    return (a * (1 - fx) + b * fx) * (1 - fy) + (c * (1 - fx) + d * fx) * fy


def _coarse_noise(bg: Background, uu: np.ndarray, vv: np.ndarray, scale: float) -> np.ndarray:
    """Two octaves of value noise, evaluated at ~48 samples per unit and resized up (the field is smooth)."""
    k = max(1, int(scale // 48))
    us, vs = uu[::k], vv[::k]
    n = 0.65 * _smooth_noise(bg.seed, bg.param, us, vs) + 0.35 * _smooth_noise(
        bg.seed + 1, bg.param * 2.7, us, vs
    )
    if k > 1:
        n = np.asarray(Image.fromarray(n.astype(np.float32), "F").resize((len(uu), len(vv)), Image.BILINEAR))
    return n


def paint_background(bg: Background, width: int, height: int, canvas: tuple[float, float]) -> np.ndarray:
    """(3, H, W) float32 in [0, 1] (channel-first: numpy is much faster with long inner loops)."""
    cw, ch = canvas
    scale = width / cw  # pixels per unit
    uu = (np.arange(width, dtype=np.float32) + 0.5) / scale  # (W,)
    vv = (np.arange(height, dtype=np.float32) + 0.5) / scale  # (H,)
    cols = [np.asarray(c, dtype=np.float32)[:, None, None] / 255.0 for c in bg.colors]  # (3, 1, 1) each

    def lerp(c0, c1, t):  # t broadcastable to (H, W) -> (3, H, W)
        return c0 + (c1 - c0) * np.broadcast_to(t, (height, width))[None]

    if bg.kind == PLAIN_BACKGROUND:
        img = np.broadcast_to(cols[0], (3, height, width)).copy()
    elif bg.kind == "gradient":
        ca, sa = math.cos(bg.param), math.sin(bg.param)
        t = ((uu[None, :] - cw / 2) * ca + (vv[:, None] - ch / 2) * sa) / (abs(ca) * cw + abs(sa) * ch) + 0.5
        img = lerp(cols[0], cols[1], np.clip(t, 0, 1))
    elif bg.kind == "radial":
        r = np.hypot(uu[None, :] - cw / 2, vv[:, None] - ch * 0.45) / bg.param
        img = lerp(cols[0], cols[1], np.clip(r, 0, 1) ** 1.3)
    elif bg.kind == "noise":
        n = _coarse_noise(bg, uu, vv, scale)
        img = lerp(cols[0], cols[1], np.clip((n - 0.5) * 1.6 + 0.5, 0, 1))
    elif bg.kind == "landscape":
        rng = np.random.default_rng(bg.seed)
        lo, hi = [0.6, 2.0, 0.0, 0.0, 0.03, 0.01], [1.6, 4.0, 6.3, 6.3, 0.1, 0.03]
        f1, f2, p1, p2, a1, a2 = (float(v) for v in rng.uniform(lo, hi))
        horizon = (
            bg.param * ch + a1 * np.sin(2 * np.pi * f1 * uu + p1) + a2 * np.sin(2 * np.pi * f2 * uu + p2)
        )
        sky = lerp(cols[0], cols[1], np.clip(vv / (bg.param * ch), 0, 1)[:, None])
        depth = np.clip((vv[:, None] - horizon[None, :]) / max(ch - bg.param * ch, 1e-3), 0, 1)
        ground = lerp(cols[2], cols[3], depth)
        # anti-aliased edge: coverage of each pixel by the ground, from its signed distance in pixels
        cover = np.clip((vv[:, None] - horizon[None, :]) * scale + 0.5, 0, 1)[None]
        img = sky + (ground - sky) * cover
    elif bg.kind == "room":
        floor = bg.param * ch
        wall = lerp(cols[0], cols[0] * 0.88, np.clip(vv / floor, 0, 1)[:, None])
        plank = (np.floor((vv - floor) / 0.09) % 2)[:, None]
        floor_img = lerp(cols[1], cols[1] * 0.9, plank)
        cover = np.clip((vv - floor) * scale + 0.5, 0, 1)[None, :, None]
        img = wall + (floor_img - wall) * cover
        board = ((vv > floor - 0.035) & (vv <= floor))[None, :, None]
        img = np.where(board, cols[2], img)
    else:  # tiles, rotated 45 degrees for odd seeds
        x, y = uu[None, :], vv[:, None]
        if bg.seed % 2:
            x, y = (x + y) / math.sqrt(2), (x - y) / math.sqrt(2)
        t = ((np.floor(x / bg.param) + np.floor(y / bg.param)) % 2).astype(np.float32)
        img = lerp(cols[0], cols[1], t)
    # a soft vignette everywhere
    r2 = ((uu[None, :] - cw / 2) / cw) ** 2 + ((vv[:, None] - ch / 2) / ch) ** 2
    img = img * (1.0 - 0.35 * r2)[None]
    return np.clip(img, 0, 1, out=img if img.dtype == np.float32 else None).astype(np.float32, copy=False)
