"""The world detector: a small CenterNet-style CNN that finds world objects, and a reader that names them.

It is the world's analogue of T2I-CompBench's detector and VQA model in one network, in two stages:

    finder  for every pixel: is an object's centre here (a class-agnostic CenterNet heatmap), its box size and
            sub-pixel offset; at full resolution, so that the centres of an overlapping pair (3 px apart at
            32 px) are two separate peaks
    reader  for every found object, two views: a square crop around its box resampled to CROP x CROP pixels,
            so every object is seen at the same scale whatever its size (silhouettes: kind, shape), and the
            CROP x CROP window of original pixels around it with the box as a fourth channel (textures have a
            period of about 3 pixels, which any resampling would blur or alias); from both the object's kind,
            colour, texture and shape
    order   for every pair of overlapping objects, which one is drawn on top (the world's depth order, what
            "in front of" / "behind" are judged from), from a crop around both with a mask per box; see
            `OrderReader` and world_order.py for its training data

Judges (world_judges.py) read only these predictions, i.e. only pixels.

    finder input  (B, 3, H, W) float, H and W multiples of 4 (32 x 32 for Stage I images)
           output dict of (B, C, H, W) maps, channels as in `HEADS`
    reader input  (B, 3, H, W) float images, (N,) image index and (N, 4) boxes (cx, cy, w, h) in pixels
           output dict of (N, C) logits, classes as in `READ_HEADS`
    order  input  the same images and index, boxes a and b (N, 4)
           output (N,) logits of P(a drawn over b)
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn
from torch.nn import functional as F

from mars_eval.errors import MarsEvalError
from mars_ref.world import lexicon as L

HEADS: dict[str, int] = {
    "center": 1,
    "size": 2,  # log width, log height in canvas units (the image's shorter side = 1)
    "offset": 2,  # centre position inside its cell, in cells (0..1)
}
READ_HEADS: dict[str, int] = {
    "kind": len(L.KINDS),
    "color": len(L.COLORS),
    "texture": len(L.TEXTURES),
    "shape": len(L.SHAPES),  # kinds without a shape attribute are ignored by the shape loss
}
STRIDE = 1  # input pixels per grid cell of the finder's maps
MEAN = (0.5, 0.5, 0.5)
STD = (0.25, 0.25, 0.25)
CROP_SCALE = 1.25  # crop side = CROP_SCALE * the box's longer side + CROP_PAD pixels: the object plus a margin
CROP_PAD = 2.0


@dataclass(frozen=True)
class DetectorConfig:
    width: int = 32  # finder channels at 1/2 resolution; 1/4 has twice as many, full resolution half
    blocks: int = 1  # residual blocks per stage
    reader_width: int = 32  # reader channels per view at full crop resolution (x2, x4 at 1/2, 1/4)
    crop: int = 16  # reader input side in pixels
    order_width: int = 32  # occlusion-order reader channels at full crop resolution
    order_crop: int = 24  # its input side: the pair's union box, resampled

    def __post_init__(self):
        if (self.width < 4 or self.blocks < 1 or self.reader_width < 4 or self.order_width < 4
                or any(c < 8 or c % 4 for c in (self.crop, self.order_crop))):
            raise MarsEvalError(f"invalid world detector config: width {self.width}, reader_width {self.reader_width} "
                                f"and order_width {self.order_width} >= 4, blocks {self.blocks} >= 1, crop {self.crop} "
                                f"and order_crop {self.order_crop} >= 8 and multiples of 4")

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


def crop_boxes(images: torch.Tensor, index: torch.Tensor, boxes: torch.Tensor, size: int) -> torch.Tensor:
    """(N, 3, size, size) bilinear crops of `images` (B, 3, H, W): square windows of side
    CROP_SCALE * max(w, h) + CROP_PAD centred on `boxes` (N, 4) = (cx, cy, w, h) pixels (pixel i spans [i, i+1));
    outside the image reads as 0 (the normalised mid-grey)."""
    _, _, h, w = images.shape
    side = CROP_SCALE * boxes[:, 2:].amax(dim=1) + CROP_PAD  # (N,)
    theta = torch.zeros(len(boxes), 2, 3, dtype=images.dtype)
    theta[:, 0, 0], theta[:, 1, 1] = side / w, side / h
    theta[:, 0, 2], theta[:, 1, 2] = 2 * boxes[:, 0] / w - 1, 2 * boxes[:, 1] / h - 1
    grid = F.affine_grid(theta, [len(boxes), 3, size, size], align_corners=False)  # (N, size, size, 2)
    return F.grid_sample(images[index], grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def _windows(images: torch.Tensor, index: torch.Tensor, cx: torch.Tensor, cy: torch.Tensor,
             size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(windows (N, 3, size, size) of original pixels of images[index] (B, 3, H, W) nearest to centred on
    (cx, cy) px, outside the image 0; their corners x0, y0 (N,) in image pixels)."""
    pad = size
    padded = F.pad(images, (pad,) * 4)  # (B, 3, H + 2p, W + 2p), zeros = mid-grey
    x0 = torch.round(cx - size / 2).long()  # (N,)
    y0 = torch.round(cy - size / 2).long()
    ar = torch.arange(size)
    ys = (y0[:, None] + ar + pad).clamp(0, padded.shape[-2] - 1)  # (N, size)
    xs = (x0[:, None] + ar + pad).clamp(0, padded.shape[-1] - 1)
    win = padded[index[:, None, None], :, ys[:, :, None], xs[:, None, :]]  # (N, size, size, 3)
    return win.permute(0, 3, 1, 2), x0, y0


def _box_mask(x0: torch.Tensor, y0: torch.Tensor, boxes: torch.Tensor, size: int) -> torch.Tensor:
    """(N, 1, size, size): 1 where a window pixel's centre lies inside `boxes` (N, 4) = (cx, cy, w, h) px."""
    ar = torch.arange(size)
    u = x0[:, None].float() + ar + 0.5  # (N, size) pixel centres in image coordinates
    v = y0[:, None].float() + ar + 0.5
    inx = ((u - boxes[:, :1]).abs() <= boxes[:, 2:3] / 2).float()  # (N, size)
    iny = ((v - boxes[:, 1:2]).abs() <= boxes[:, 3:4] / 2).float()
    return (iny[:, :, None] * inx[:, None, :])[:, None]


def pixel_windows(images: torch.Tensor, index: torch.Tensor, boxes: torch.Tensor, size: int) -> torch.Tensor:
    """(N, 4, size, size): the size x size windows of original pixels of `images` (B, 3, H, W) nearest to centred
    on `boxes` (N, 4) = (cx, cy, w, h) px (outside the image: 0), plus a channel that is 1 inside the box."""
    win, x0, y0 = _windows(images, index, boxes[:, 0], boxes[:, 1], size)
    return torch.cat([win, _box_mask(x0, y0, boxes, size)], dim=1)


def _branch(cin: int, c: int) -> nn.Sequential:
    """Full, 1/2 and 1/4 crop resolution."""
    return nn.Sequential(_conv(cin, c), _conv(c, c), _conv(c, 2 * c, stride=2), _Res(2 * c),
                         _conv(2 * c, 4 * c, stride=2), _Res(4 * c))


class AttributeReader(nn.Module):
    """Two small CNNs, one per view (scale-normalised crop, original-pixel window + box), then a flattened
    (layout-aware, the views are centred on the object) linear head over both."""

    def __init__(self, c: int, crop: int):
        super().__init__()
        self.scaled = _branch(3, c)
        self.pixels = _branch(4, c)
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(2 * 4 * c * (crop // 4) ** 2, 8 * c), nn.ReLU(inplace=True),
                                  nn.Linear(8 * c, sum(READ_HEADS.values())))

    def forward(self, crops: torch.Tensor, windows: torch.Tensor) -> dict[str, torch.Tensor]:
        f = torch.cat([self.scaled(crops), self.pixels(windows)], dim=1)  # (N, 8c, crop/4, crop/4)
        out = self.head(f)  # (N, sum(READ_HEADS))
        return dict(zip(READ_HEADS, out.split(list(READ_HEADS.values()), dim=1), strict=True))


def box_coverage(boxes: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """(N, 1, h, w): the share of each pixel inside `boxes` (N, 4) = (cx, cy, w, h) px (pixel i spans [i, i+1))."""
    def cover(c, size, n):  # (N, n) overlap of [c - size/2, c + size/2] with each pixel
        ar = torch.arange(n, dtype=boxes.dtype)
        lo, hi = (c - size / 2)[:, None], (c + size / 2)[:, None]
        return (torch.minimum(ar + 1, hi) - torch.maximum(ar, lo)).clamp(0, 1)

    cx, cy = cover(boxes[:, 0], boxes[:, 2], w), cover(boxes[:, 1], boxes[:, 3], h)
    return (cy[:, :, None] * cx[:, None, :])[:, None]


def union_boxes(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(N, 4) (cx, cy, w, h) of the smallest box holding both boxes (N, 4) (cx, cy, w, h)."""
    lo = torch.minimum(a[:, :2] - a[:, 2:] / 2, b[:, :2] - b[:, 2:] / 2)  # (N, 2)
    hi = torch.maximum(a[:, :2] + a[:, 2:] / 2, b[:, :2] + b[:, 2:] / 2)
    return torch.cat([(lo + hi) / 2, hi - lo], dim=1)


class OrderReader(nn.Module):
    """A small CNN on the pair's crop; `forward` gives the antisymmetric logit P(a drawn over b)."""

    def __init__(self, c: int, crop: int):
        super().__init__()
        self.crop = crop
        self.body = nn.Sequential(_conv(5, c), _conv(c, c), _conv(c, 2 * c, stride=2), _Res(2 * c),
                                  _conv(2 * c, 4 * c, stride=2), _Res(4 * c))
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(4 * c * (crop // 4) ** 2, 8 * c), nn.ReLU(inplace=True),
                                  nn.Linear(8 * c, 1))

    def forward(self, x: torch.Tensor, index: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """x (B, 3, H, W) normalised images, index (N,), boxes a, b (N, 4) = (cx, cy, w, h) px -> (N,) logits."""
        n, (h, w) = len(a), x.shape[-2:]
        first, second = torch.cat([a, b]), torch.cat([b, a])  # (2N, 4): both readings in one pass
        inp = torch.cat([x[index].repeat(2, 1, 1, 1), box_coverage(first, h, w), box_coverage(second, h, w)],
                        dim=1)  # (2N, 5, H, W)
        crops = crop_boxes(inp, torch.arange(2 * n), union_boxes(first, second), self.crop)  # (2N, 5, crop, crop)
        f = self.head(self.body(crops))[:, 0]  # (2N,)
        return f[:n] - f[n:]


class WorldDetector(nn.Module):
    """Finder: a stem at full resolution, stages at 1/2 and 1/4 for context, merged back to full resolution
    U-Net style. Reader: `AttributeReader` on crops at the found boxes. Order: `OrderReader` on pairs of them."""

    def __init__(self, cfg: DetectorConfig = DetectorConfig()):
        super().__init__()
        self.cfg = cfg
        c = cfg.width
        self.stem = nn.Sequential(_conv(3, c // 2), _conv(c // 2, c // 2))  # full resolution
        self.down1 = _conv(c // 2, c, stride=2)
        self.stage1 = nn.Sequential(*[_Res(c) for _ in range(cfg.blocks)])
        self.down2 = _conv(c, 2 * c, stride=2)
        self.stage2 = nn.Sequential(*[_Res(2 * c) for _ in range(cfg.blocks + 1)])
        self.lateral = nn.Conv2d(2 * c, c, 1)
        self.merge = nn.Sequential(*[_Res(c) for _ in range(cfg.blocks)])
        self.lateral_full = nn.Conv2d(c, c // 2, 1)
        self.merge_full = _Res(c // 2)
        self.head = nn.Conv2d(c // 2, sum(HEADS.values()), 1)
        self.reader = AttributeReader(cfg.reader_width, cfg.crop)
        self.order_reader = OrderReader(cfg.order_width, cfg.order_crop)
        with torch.no_grad():  # CenterNet's prior: few cells hold a centre
            self.head.bias[0] = -2.19

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        if x.shape[-1] % 4 or x.shape[-2] % 4:
            raise MarsEvalError(f"world detector input must be a multiple of 4 px, got {tuple(x.shape[-2:])}")
        f0 = self.stem(x)  # (B, c/2, H, W)
        f1 = self.stage1(self.down1(f0))  # (B, c, H/2, W/2)
        f2 = self.stage2(self.down2(f1))  # (B, 2c, H/4, W/4)
        up = F.interpolate(self.lateral(f2), scale_factor=2.0, mode="nearest")  # (B, c, H/2, W/2)
        m1 = self.merge(f1 + up)  # (B, c, H/2, W/2)
        up = F.interpolate(self.lateral_full(m1), scale_factor=2.0, mode="bilinear")  # (B, c/2, H, W)
        out = self.head(self.merge_full(f0 + up))  # (B, sum(HEADS), H, W)
        return dict(zip(HEADS, out.split(list(HEADS.values()), dim=1), strict=True))

    def read(self, x: torch.Tensor, index: torch.Tensor, boxes: torch.Tensor) -> dict[str, torch.Tensor]:
        """Attribute logits (N, C) of the objects in boxes (N, 4) = (cx, cy, w, h) px of images x[index]."""
        size = self.cfg.crop
        return self.reader(crop_boxes(x, index, boxes, size), pixel_windows(x, index, boxes, size))

    def order(self, x: torch.Tensor, index: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """Logits (N,) of P(box a's object is drawn over box b's) in images x[index]; boxes (N, 4) (cx, cy, w, h) px."""
        return self.order_reader(x, index, a, b)


def normalise(images: torch.Tensor) -> torch.Tensor:
    """uint8 (B, 3, H, W) -> the detector's float input."""
    m = torch.tensor(MEAN).view(1, 3, 1, 1)
    s = torch.tensor(STD).view(1, 3, 1, 1)
    return (images.float() / 255.0 - m) / s
