"""Image folders in GenEval's layout, as its README and `evaluate_images.py` define them:

    FOLDER/00000/metadata.jsonl      the prompt's line of evaluation_metadata.jsonl (one JSON object)
    FOLDER/00000/samples/0000.png    its images (0001.png, ...); FOLDER/00000/grid.png is optional
    FOLDER/00001/...

The official scorer silently skips what does not match (a folder name that is not a number, an image that is
not `NNNN.png`) and scores whatever it finds; here the folder must hold prompts 0 .. n-1, each with exactly
`images_per_prompt` images 0 .. k-1 (zero padding free, as the official), and anything else in `samples/` is a
one-line error showing an expected and a found name, so a partial copy cannot pass for a result.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from mars_eval.errors import MarsEvalError
from mars_eval.geneval.metadata import PromptSpec

SAMPLE = re.compile(r"^(\d+)\.png$")


@dataclass(frozen=True)
class FolderImage:
    prompt_index: int
    image_index: int
    path: Path
    spec: PromptSpec


def prompt_dirs(root: Path) -> list[Path]:
    """The numbered prompt folders 0 .. n-1 of `root`, in order."""
    root = Path(root)
    if not root.is_dir():
        raise MarsEvalError(f"image folder not found: {root}")
    found: dict[int, Path] = {}
    others = []
    for p in sorted(root.iterdir()):
        if p.is_dir() and p.name.isdigit():
            i = int(p.name)
            if i in found:
                raise MarsEvalError(f"{root}: two folders for prompt {i}: {found[i].name} and {p.name}")
            found[i] = p
        elif not p.name.startswith("."):
            others.append(p.name)
    if not found:
        seen = f"; found {', '.join(repr(n) for n in others[:3])}" if others else " (the folder is empty)"
        raise MarsEvalError(f"{root}: no GenEval prompt folders (expected 00000/metadata.jsonl and "
                            f"00000/samples/0000.png{seen})")
    n = max(found) + 1
    missing = [i for i in range(n) if i not in found]
    if missing:
        near = found[min(found, key=lambda k: abs(k - missing[0]))].name
        raise MarsEvalError(f"{root}: no folder for prompt {missing[0]} (expected {missing[0]:05d}, found e.g. "
                            f"{near}; {len(missing)} of prompts 0..{n - 1} missing)")
    return [found[i] for i in range(n)]


def read_prompt_metadata(folder: Path) -> PromptSpec:
    path = folder / "metadata.jsonl"
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise MarsEvalError(f"{folder}: no metadata.jsonl (the prompt's line of evaluation_metadata.jsonl)") from None
    except (OSError, UnicodeDecodeError) as e:
        raise MarsEvalError(f"cannot read {path}: {getattr(e, 'strerror', None) or e}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        raise MarsEvalError(f"{path}: not one JSON object (GenEval writes the prompt's metadata line)") from None
    return PromptSpec.from_dict(data, str(path))


def sample_files(folder: Path, images_per_prompt: int) -> list[Path]:
    """`samples/` images 0 .. images_per_prompt - 1 of one prompt folder, in order."""
    samples = folder / "samples"
    if not samples.is_dir():
        raise MarsEvalError(f"{folder}: no samples/ folder (expected {samples / '0000.png'})")
    by_index: dict[int, Path] = {}
    for p in sorted(samples.iterdir()):
        if p.name.startswith("."):
            continue
        m = SAMPLE.match(p.name)
        if m is None or not p.is_file():
            raise MarsEvalError(f"{samples}: unexpected entry {p.name!r} (expected images named 0000.png, "
                                "0001.png, ...)")
        i = int(m.group(1))
        if i in by_index:
            raise MarsEvalError(f"{samples}: two images for sample {i}: {by_index[i].name} and {p.name}")
        by_index[i] = p
    missing = [i for i in range(images_per_prompt) if i not in by_index]
    if missing:
        found = f"found {', '.join(sorted(q.name for q in by_index.values())[:3])}" if by_index else "it is empty"
        raise MarsEvalError(f"{samples}: no image {missing[0]} (expected {missing[0]:04d}.png; {found}; "
                            f"{images_per_prompt} images per prompt)")
    extra = sorted(i for i in by_index if i >= images_per_prompt)
    if extra:
        raise MarsEvalError(f"{samples}: {by_index[extra[0]].name} is beyond the {images_per_prompt} images per "
                            f"prompt (expected {images_per_prompt - 1:04d}.png at most; give --images-per-prompt "
                            f"{max(extra) + 1})")
    return [by_index[i] for i in range(images_per_prompt)]


def read_folder(root: Path, images_per_prompt: int, limit: int | None = None) -> list[FolderImage]:
    """Every image of the first `limit` prompts (all by default), prompt by prompt, with its metadata."""
    dirs = prompt_dirs(root)
    if limit is not None:
        dirs = dirs[:limit]
    out = []
    for i, d in enumerate(dirs):
        spec = read_prompt_metadata(d)
        out += [FolderImage(i, n, p, spec) for n, p in enumerate(sample_files(d, images_per_prompt))]
    return out


def load_image(path: str | Path) -> Image.Image:
    """An image as GenEval's models read it: EXIF orientation applied, RGB."""
    from PIL import ImageOps, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            return ImageOps.exif_transpose(im).convert("RGB")
    except (OSError, UnidentifiedImageError) as e:
        raise MarsEvalError(f"cannot read image {path}: {e}") from None
