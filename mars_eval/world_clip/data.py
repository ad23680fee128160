"""World image-caption pairs for CLIP: Stage I images with their English and Chinese captions, as tensors.

Images are decoded once into one uint8 tensor (a 5,000-image world is 15 MB), captions are tokenised once with
the same open_clip `HFTokenizer` the saved model will use, so training and scoring see identical token ids.
The last `held_out` rows of the manifest are the retrieval test set and are never trained on.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from mars_eval.errors import MarsEvalError
from mars_eval.io import read_jsonl

LANGS = ("en", "zh")


@dataclass
class PairSet:
    images: torch.Tensor  # (N, 3, H, W) uint8
    tokens: dict[str, torch.Tensor]  # lang -> (N, context) int64
    captions: dict[str, list[str]]  # lang -> N strings

    def __len__(self) -> int:
        return self.images.shape[0]


def read_pairs(world: str | Path, corpus: str = "stage1") -> tuple[list[Path], dict[str, list[str]]]:
    """Image paths and captions of a world corpus: `stage1` (rows with image, caption_en, caption_zh) or
    `stage3` (its `low` images, the same 32 px scenes as Stage I; an absent stage3 gives no pairs)."""
    world = Path(world)
    manifest = world / corpus / "manifest.jsonl"
    key = {"stage1": "image", "stage3": "low"}[corpus]
    if not manifest.is_file():
        if corpus != "stage1":
            return [], {lang: [] for lang in LANGS}
        raise MarsEvalError(f"no stage1/manifest.jsonl in {world} (build one with `mars-eval world build`)")
    paths, caps = [], {lang: [] for lang in LANGS}
    for i, row in enumerate(read_jsonl(manifest), 1):
        if not all(isinstance(row.get(k), str) for k in (key, "caption_en", "caption_zh")):
            raise MarsEvalError(f"{manifest}:{i}: a row needs {key!r}, 'caption_en' and 'caption_zh' strings")
        paths.append(manifest.parent / row[key])
        for lang in LANGS:
            caps[lang].append(row[f"caption_{lang}"])
    if corpus == "stage1" and not paths:
        raise MarsEvalError(f"{manifest} lists no images")
    return paths, caps


def to_model_size(image, image_size: int) -> np.ndarray:
    """PIL image -> (S, S, 3) uint8 at the model's input size, resized as open_clip's eval transform does for a
    square image (PIL bicubic), so training tensors equal what `preprocess` gives at scoring time."""
    from PIL import Image

    image = image.convert("RGB")
    if image.size != (image_size, image_size):
        if image.size[0] != image.size[1]:
            raise MarsEvalError(f"world CLIP training images must be square, got {image.size}")
        image = image.resize((image_size, image_size), Image.BICUBIC)
    return np.asarray(image)


def load_images(paths: list[Path], image_size: int) -> torch.Tensor:
    """(N, 3, S, S) uint8 at the model's input size."""
    from PIL import Image, UnidentifiedImageError

    out = np.empty((len(paths), image_size, image_size, 3), dtype=np.uint8)
    for i, p in enumerate(paths):
        try:
            with Image.open(p) as im:
                out[i] = to_model_size(im, image_size)
        except (OSError, UnidentifiedImageError) as e:
            raise MarsEvalError(f"cannot read world image {p}: {e}") from None
    return torch.from_numpy(out).permute(0, 3, 1, 2).contiguous()


def shift(images: torch.Tensor, max_shift: int, gen: torch.Generator) -> torch.Tensor:
    """Translate each image by up to `max_shift` px in x and y (edges replicated): a caption-preserving
    augmentation (relations, colours and counts are unchanged by a small translation)."""
    if max_shift <= 0:
        return images
    b, _, h, w = images.shape
    padded = torch.nn.functional.pad(images.float(), (max_shift,) * 4, mode="replicate")  # (B, 3, H+2m, W+2m)
    off = torch.randint(0, 2 * max_shift + 1, (b, 2), generator=gen).tolist()
    return torch.stack([padded[i, :, y:y + h, x:x + w] for i, (y, x) in enumerate(off)]).to(images.dtype)


def normalise(images: torch.Tensor, mean: tuple, std: tuple) -> torch.Tensor:
    """uint8 (B, 3, H, W) -> float (B, 3, H, W) as open_clip's eval transform produces for same-size inputs."""
    m = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1)
    s = torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1)
    return (images.float() / 255.0 - m) / s
