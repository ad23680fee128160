"""FID preprocessing protocols: how a decoded RGB image becomes the 299x299 Inception input.

Resizing alone moves FID by several points (clean-fid's finding), so the protocol is part of every score and
of every cache key. Each protocol calls the library's own resize function, so our features equal the
library's.

- `clean` (clean-fid `mode="clean"`): PIL bicubic resize to 299 of each channel as float32 (antialiased, no
  uint8 quantisation after resizing), values in [0, 255].
- `torch-fidelity` (torch-fidelity `inception-v3-compat`): the uint8 image as float, resized to 299 with
  torch-fidelity's TF1-compatible bilinear interpolation (`align_corners=False`, no antialiasing: downscaling
  aliases, upscaling is bilinear instead of bicubic). The two protocols agree exactly for 299x299 inputs.
- `coco` (COCO FID-30K as in GigaGAN's `evaluation.py`, which LlamaGen and others copy): centre crop to the
  short edge (`torchvision...center_crop`), PIL LANCZOS resize to `resolution` (default 256) in uint8, then
  `clean`. Like GigaGAN (which passes it as clean-fid's `custom_image_tranform`), it is applied to both
  folders.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from functools import partial

import numpy as np
import torch

from mars_eval.errors import MarsEvalError
from mars_eval.metrics.inception import INCEPTION_SIZE


class Protocol(StrEnum):
    CLEAN = "clean"
    TORCH_FIDELITY = "torch-fidelity"
    COCO = "coco"


COCO_DEFAULT_RESOLUTION = 256


@dataclass(frozen=True)
class PreprocessSpec:
    protocol: Protocol = Protocol.CLEAN
    resolution: int | None = None  # the `coco` pre-resize edge; None for the other protocols

    def __post_init__(self):
        try:
            object.__setattr__(self, "protocol", Protocol(self.protocol))
        except ValueError:
            raise MarsEvalError(f"unknown FID protocol {self.protocol!r}; "
                                f"known: {', '.join(p.value for p in Protocol)}") from None
        if self.protocol is Protocol.COCO:
            if self.resolution is None:
                object.__setattr__(self, "resolution", COCO_DEFAULT_RESOLUTION)
            if not isinstance(self.resolution, int) or not 16 <= self.resolution <= 4096:
                raise MarsEvalError(f"coco resolution must be an integer in [16, 4096], got {self.resolution!r}")
        elif self.resolution is not None:
            raise MarsEvalError(f"--resolution applies to the coco protocol only, not {self.protocol.value!r}")

    @property
    def identity(self) -> dict:
        """Everything about preprocessing that changes features (recorded with scores and in cache keys)."""
        d = {"protocol": self.protocol.value, "resolution": self.resolution, "pillow": _dist_version("pillow")}
        if self.protocol is Protocol.TORCH_FIDELITY:
            d["torch_fidelity"] = _dist_version("torch-fidelity")
        else:
            d["clean_fid"] = _dist_version("clean-fid")
        return d

    def describe(self) -> str:
        return {
            Protocol.CLEAN: "clean-fid clean: PIL bicubic to 299 on float32",
            Protocol.TORCH_FIDELITY: "torch-fidelity: TF1 bilinear to 299 on uint8->float",
            Protocol.COCO: f"coco: centre crop + PIL LANCZOS to {self.resolution}, then clean-fid clean",
        }[self.protocol]

    def build(self):
        """A function (H, W, 3) uint8 -> (3, 299, 299) float32 tensor in [0, 255]."""
        if self.protocol is Protocol.TORCH_FIDELITY:
            from torch_fidelity.interpolate_compat_tensorflow import interpolate_bilinear_2d_like_tensorflow1x

            return partial(_fidelity_resize, resize=interpolate_bilinear_2d_like_tensorflow1x)
        clean = _clean_resizer()
        if self.protocol is Protocol.CLEAN:
            return lambda rgb: _hwc_to_chw(clean(rgb))
        res = self.resolution
        return lambda rgb: _hwc_to_chw(clean(centre_crop_resize(rgb, res)))


def _dist_version(name: str) -> str:
    from importlib.metadata import version

    return version(name)


def _clean_resizer():
    from cleanfid.resize import build_resizer

    return build_resizer("clean")  # make_resizer("PIL", quantize_after=False, "bicubic", (299, 299))


def _hwc_to_chw(x: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1), dtype=np.float32))  # (3, 299, 299)


def _fidelity_resize(rgb: np.ndarray, resize) -> torch.Tensor:
    x = torch.from_numpy(np.ascontiguousarray(rgb.transpose(2, 0, 1), dtype=np.float32))[None]  # (1, 3, H, W)
    x = resize(x, size=(INCEPTION_SIZE, INCEPTION_SIZE), align_corners=False)  # (1, 3, 299, 299)
    return x[0].contiguous()  # (3, 299, 299)


def centre_crop_resize(rgb: np.ndarray, size: int) -> np.ndarray:
    """GigaGAN's COCO transform: centre crop to the short edge, then PIL LANCZOS to (size, size), uint8."""
    from PIL import Image
    from torchvision.transforms.functional import center_crop

    img = Image.fromarray(rgb)
    img = center_crop(img, min(img.size))
    img = img.resize((size, size), Image.LANCZOS)
    return np.asarray(img)
