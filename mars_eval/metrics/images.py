"""Reading image folders for the metrics: a sorted, explicit file list and strict, documented decoding.

Listing: files directly in the folder (not sub-folders, unless `recursive`) whose extension is one of
`IMAGE_EXTENSIONS` (case-insensitive), sorted by relative path; hidden files (".name") are skipped; other
files (a `manifest.jsonl`, notes) are ignored and counted. A folder with fewer than 2 images is an error.

Decoding: any file that is empty, truncated, not an image, or too large to decode is an error that names it; a
metric is never computed over a silently shortened folder. Pixel formats become 8-bit RGB:
- RGB: as is. Grayscale (L, 1), palette (P), CMYK, YCbCr: `PIL.Image.convert("RGB")`.
- With alpha (RGBA, LA, PA, palette transparency): alpha is dropped by `convert("RGB")`, exactly as clean-fid
  and torch-fidelity do, so scores stay comparable with theirs. Composite onto a background yourself if that
  matters.
- 16-bit grayscale (I;16*): scaled to 8 bits (round(v / 257)), then grey -> RGB. (PIL's `convert("RGB")`,
  which clean-fid and torch-fidelity use, would saturate every value above 255 to white.)
- 16-bit RGB PNG: PIL itself reduces it to 8-bit RGB on open.
- 32-bit integer (I) and float (F) images: refused, because their value range is not defined.
- Multi-frame files (animated WebP, multi-page TIFF): the first frame. EXIF orientation is not applied
  (neither library applies it).
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from mars_eval.errors import MarsEvalError

IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff", ".ppm", ".pgm"})
MIN_IMAGES = 2


@dataclass(frozen=True)
class ImageFolder:
    root: Path
    files: tuple[Path, ...]  # absolute paths, sorted by path relative to root
    ignored: int = 0  # non-image files that were skipped

    def __len__(self) -> int:
        return len(self.files)

    def relative(self) -> list[str]:
        return [f.relative_to(self.root).as_posix() for f in self.files]


def list_images(folder: str | os.PathLike, recursive: bool = False, min_images: int = MIN_IMAGES) -> ImageFolder:
    root = Path(folder)
    if not root.exists():
        raise MarsEvalError(f"image folder not found: {root}")
    if not root.is_dir():
        raise MarsEvalError(f"not a directory: {root}")
    files, ignored = [], 0
    try:
        walker = os.walk(root) if recursive else [(str(root), [], os.listdir(root))]
        for dirpath, dirnames, names in walker:
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            for name in names:
                p = Path(dirpath) / name
                if name.startswith(".") or not p.is_file():
                    continue
                if p.suffix.lower() in IMAGE_EXTENSIONS:
                    files.append(p)
                else:
                    ignored += 1
    except OSError as e:
        raise MarsEvalError(f"cannot list {root}: {e.strerror or e}") from None
    files.sort(key=lambda p: p.relative_to(root).as_posix())
    if len(files) < min_images:
        raise MarsEvalError(f"{root}: found {len(files)} image(s), need at least {min_images} "
                            f"(extensions: {', '.join(sorted(IMAGE_EXTENSIONS))})")
    return ImageFolder(root, tuple(files), ignored)


def load_rgb(path: str | os.PathLike) -> np.ndarray:
    """Decode one image to (H, W, 3) uint8 RGB, or raise MarsEvalError naming the file."""
    path = Path(path)
    try:
        if path.stat().st_size == 0:
            raise MarsEvalError(f"{path}: empty file (0 bytes)")
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                img.seek(0)
                img.load()
                return to_rgb_array(img, path)
    except MarsEvalError:
        raise
    except UnidentifiedImageError:
        raise MarsEvalError(f"{path}: not a readable image file") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise MarsEvalError(f"{path}: image too large to decode safely") from None
    except FileNotFoundError:
        raise MarsEvalError(f"{path}: file disappeared while reading") from None
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        raise MarsEvalError(f"{path}: corrupt or truncated image ({' '.join(str(e).split())})") from None


def to_rgb_array(img: Image.Image, path: str | os.PathLike = "<image>") -> np.ndarray:
    """The documented pixel-format conversion (see the module docstring)."""
    mode = img.mode
    if mode.startswith("I;16"):
        a = np.asarray(img, dtype=np.float64)  # (H, W) in [0, 65535]
        g = np.clip(np.rint(a / 257.0), 0, 255).astype(np.uint8)
        return np.repeat(g[:, :, None], 3, axis=2)
    if mode in ("I", "F"):
        raise MarsEvalError(f"{path}: {'32-bit integer' if mode == 'I' else 'floating-point'} pixels ({mode}) "
                            "have no defined range; convert to 8- or 16-bit first")
    rgb = img if mode == "RGB" else img.convert("RGB")
    arr = np.asarray(rgb, dtype=np.uint8)
    if arr.ndim != 3 or arr.shape[2] != 3 or arr.shape[0] == 0 or arr.shape[1] == 0:
        raise MarsEvalError(f"{path}: unexpected decoded shape {arr.shape}")
    return arr
