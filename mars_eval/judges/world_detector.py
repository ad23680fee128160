"""The world detector: a small CenterNet-style CNN that finds world objects and reads their attributes.

It is the world's analogue of T2I-CompBench's detector and VQA model in one network: for every cell of a grid
at half the input resolution it predicts whether an object's centre lies there (a class-agnostic CenterNet
heatmap, which trains faster than one map per kind) and, at object centres, the object's kind, colour, texture
and shape, its box size and sub-cell offset, and whether a later object occludes it (what "in front of" /
"behind" are judged from). Judges (world_judges.py) read only these
predictions, i.e. only pixels.

    input  (B, 3, H, W) float, H and W multiples of 4 (32 x 32 for Stage I images)
    output dict of (B, C, H/2, W/2) maps, channels as in `HEADS`
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

from mars_eval.errors import MarsEvalError
from mars_ref.world import lexicon as L

N_SHAPES = len(L.SHAPES)  # shape classes; kinds without a shape attribute are ignored by the shape loss
HEADS: dict[str, int] = {
    "center": 1,
    "kind": len(L.KINDS),
    "color": len(L.COLORS),
    "texture": len(L.TEXTURES),
    "shape": N_SHAPES,
    "size": 2,  # log width, log height in canvas units (the image's shorter side = 1)
    "offset": 2,  # centre position inside its cell, in cells (0..1)
    "occluded": 1,
}
STRIDE = 2  # input pixels per grid cell
MEAN = (0.5, 0.5, 0.5)
STD = (0.25, 0.25, 0.25)


@dataclass(frozen=True)
class DetectorConfig:
    width: int = 32  # channels at the grid resolution; the 1/2-grid stage has twice as many
    blocks: int = 1  # residual blocks per stage

    def __post_init__(self):
        if self.width < 4 or self.blocks < 1:
            raise MarsEvalError(f"invalid world detector config: width {self.width} >= 4, blocks {self.blocks} >= 1")

    def to_dict(self) -> dict:
        return asdict(self)


def _conv(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class _Res(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        self.body = nn.Sequential(_conv(c, c), nn.Conv2d(c, c, 3, 1, 1, bias=False), nn.BatchNorm2d(c))

    def forward(self, x):
        return torch.relu(x + self.body(x))


class WorldDetector(nn.Module):
    """Stem at full resolution, a stage at the grid (1/2) and one at 1/4 for context, merged back U-Net style."""

    def __init__(self, cfg: DetectorConfig = DetectorConfig()):
        super().__init__()
        self.cfg = cfg
        c = cfg.width
        self.stem = nn.Sequential(_conv(3, c // 2), _conv(c // 2, c // 2))  # full resolution: fine textures
        self.down1 = _conv(c // 2, c, stride=2)
        self.stage1 = nn.Sequential(*[_Res(c) for _ in range(cfg.blocks)])
        self.down2 = _conv(c, 2 * c, stride=2)
        self.stage2 = nn.Sequential(*[_Res(2 * c) for _ in range(cfg.blocks + 1)])
        self.lateral = nn.Conv2d(2 * c, c, 1)
        self.merge = nn.Sequential(*[_Res(c) for _ in range(cfg.blocks)])
        self.head = nn.Conv2d(c, sum(HEADS.values()), 1)
        with torch.no_grad():  # CenterNet's prior: few cells hold a centre
            self.head.bias[0] = -2.19

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        if x.shape[-1] % 4 or x.shape[-2] % 4:
            raise MarsEvalError(f"world detector input must be a multiple of 4 px, got {tuple(x.shape[-2:])}")
        f1 = self.stage1(self.down1(self.stem(x)))  # (B, c, H/2, W/2)
        f2 = self.stage2(self.down2(f1))  # (B, 2c, H/4, W/4)
        up = nn.functional.interpolate(self.lateral(f2), scale_factor=2.0, mode="nearest")  # (B, c, H/2, W/2)
        out = self.head(self.merge(f1 + up))  # (B, sum(HEADS), H/2, W/2)
        return dict(zip(HEADS, out.split(list(HEADS.values()), dim=1), strict=True))


def normalise(images: torch.Tensor) -> torch.Tensor:
    """uint8 (B, 3, H, W) -> the detector's float input."""
    m = torch.tensor(MEAN).view(1, 3, 1, 1)
    s = torch.tensor(STD).view(1, 3, 1, 1)
    return (images.float() / 255.0 - m) / s
