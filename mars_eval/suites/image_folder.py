"""Another model's images in COCO-30k naming: one image per caption, named by the caption's index.

Accepted names (any image extension, any zero padding): `00042.png` (the usual COCO-30k layout: the image of
caption 42) and `00042_000.png` (what `mars-eval generate` writes; the image index must be 0, FID-30K uses one
image per caption). The folder must hold exactly the images of captions 0 .. n-1, so that FID is computed on the
same images whatever else a generator wrote; a wrong folder is a one-line error that shows an expected name and a
found one.
"""

from __future__ import annotations

import re
from pathlib import Path

from mars_eval.errors import MarsEvalError
from mars_eval.metrics.images import list_images
from mars_eval.prompts import PromptSet

NAME = re.compile(r"^(\d+)(?:_(\d+))?$")


def caption_index(name: str) -> int | None:
    """The caption index an image file name gives, or None when it is not in COCO-30k naming."""
    m = NAME.match(Path(name).stem)
    if m is None or (m.group(2) is not None and int(m.group(2)) != 0):
        return None
    return int(m.group(1))


def coco_folder_manifest(folder: Path, prompts: PromptSet) -> list[dict]:
    """Manifest rows (file, prompt, prompt_index, sha256) of a folder holding one image per caption of `prompts`,
    in caption order."""
    from mars_eval.suites.common import sha256_file

    folder = Path(folder)
    files = list_images(folder, min_images=1).files
    by_index: dict[int, Path] = {}
    for p in files:
        i = caption_index(p.name)
        if i is None:
            raise MarsEvalError(f"{folder}: image name {p.name!r} is not a caption index (expected names like "
                                f"00000.png or 00000_000.png, one image per caption)")
        if i in by_index:
            raise MarsEvalError(f"{folder}: two images for caption {i}: {by_index[i].name} and {p.name}")
        by_index[i] = p
    n = len(prompts)
    missing = [i for i in range(n) if i not in by_index]
    if missing:
        raise MarsEvalError(f"{folder}: no image for caption {missing[0]} (expected {missing[0]:05d}.png; "
                            f"{len(missing)} of {n} missing; found e.g. {files[0].name})")
    extra = sorted(i for i in by_index if i >= n)
    if extra:
        raise MarsEvalError(f"{folder}: {len(extra)} images beyond the {n} captions scored (e.g. "
                            f"{by_index[extra[0]].name}); give --n {max(extra) + 1} or a folder of the first {n}")
    return [{"file": by_index[p.index].name, "prompt": p.text, "prompt_index": p.index,
             "sha256": sha256_file(by_index[p.index])} for p in prompts]


def image_size(folder: Path) -> tuple[int, int]:
    """(height, width) of a folder's images; a folder of mixed sizes is an error (FID compares like with like)."""
    from PIL import Image

    sizes = set()
    for p in list_images(folder, min_images=1).files:
        with Image.open(p) as im:
            sizes.add((im.height, im.width))
    if len(sizes) != 1:
        raise MarsEvalError(f"{folder}: images of {len(sizes)} sizes {sorted(sizes)[:3]}; expected one size")
    return sizes.pop()
