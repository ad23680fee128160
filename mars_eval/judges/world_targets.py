"""Training targets of the world detector, computed from a scene's drawn objects (ground truth, training only).

Per object: the grid cell holding its centre, its kind / colour / texture / shape indices, log box size and the
centre's offset inside the cell (the occlusion order has its own, pairwise data: world_order.py). The centre
heatmap is CenterNet's: a Gaussian per object whose width follows the object's size, exactly 1 at the centre cell.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from mars_eval.judges.world_detector import STRIDE
from mars_ref.world import lexicon as L
from mars_ref.world.scene import Scene

KIND_INDEX = {k: i for i, k in enumerate(L.KINDS)}
COLOR_INDEX = {c: i for i, c in enumerate(L.COLORS)}
TEXTURE_INDEX = {t: i for i, t in enumerate(L.TEXTURES)}
SHAPE_INDEX = {s: i for i, s in enumerate(L.SHAPES)}
IGNORE = -100  # torch's cross-entropy ignore index: no shape for this kind


@dataclass(frozen=True)
class ObjectTarget:
    cy: int  # grid cell row / column of the centre
    cx: int
    kind: int
    color: int
    texture: int
    shape: int
    log_wh: tuple[float, float]
    offset: tuple[float, float]  # x, y inside the cell


def scene_objects(scene: Scene, flip: bool = False, shift_px: tuple[float, float] = (0.0, 0.0),
                  px_per_unit: float = 32.0) -> list[tuple[str, str, str, str | None, tuple]]:
    """(kind, colour, texture, shape, box) per drawn object, after an optional horizontal flip and a
    translation by `shift_px` (x, y) pixels; boxes in canvas units."""
    cw, _ = scene.canvas
    dx, dy = shift_px[0] / px_per_unit, shift_px[1] / px_per_unit
    out = []
    for o in scene.objects:
        x0, y0, x1, y1 = o.box
        if flip:
            x0, x1 = cw - x1, cw - x0
        out.append((o.kind, o.color, o.texture, o.shape, (x0 + dx, y0 + dy, x1 + dx, y1 + dy)))
    return out


def targets(objects, grid_h: int, grid_w: int, px_per_unit: float) -> tuple[np.ndarray, list[ObjectTarget]]:
    """(heatmap (grid_h, grid_w) float32, per-object targets) for objects from `scene_objects`."""
    cells = px_per_unit / STRIDE  # grid cells per canvas unit
    heat = np.zeros((grid_h, grid_w), dtype=np.float32)
    ys = np.arange(grid_h, dtype=np.float32)[:, None] + 0.5
    xs = np.arange(grid_w, dtype=np.float32)[None, :] + 0.5
    out = []
    for kind, color, texture, shape, (x0, y0, x1, y1) in objects:
        gx, gy = (x0 + x1) / 2 * cells, (y0 + y1) / 2 * cells
        ix, iy = math.floor(gx), math.floor(gy)
        if not (0 <= ix < grid_w and 0 <= iy < grid_h):
            continue  # shifted out of the image
        sigma = max(0.5, (max(x1 - x0, y1 - y0) * cells) / 6)
        g = np.exp(-((xs - gx) ** 2 + (ys - gy) ** 2) / (2 * sigma * sigma))
        np.maximum(heat, g, out=heat)
        heat[iy, ix] = 1.0
        out.append(ObjectTarget(
            iy, ix, KIND_INDEX[kind], COLOR_INDEX[color], TEXTURE_INDEX[texture],
            SHAPE_INDEX[shape] if shape is not None else IGNORE,
            (math.log(x1 - x0), math.log(y1 - y0)), (gx - ix, gy - iy),
        ))
    return heat, out
