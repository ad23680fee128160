"""T2I-CompBench image folders: the official `{prompt}_{counter:06}.png` naming, parsed robustly.

The official generator (`GORS_finetune/inference_eval.py`) writes `f"{prompt}_{base_count:06}.png"` with one
counter running over the whole folder (prompt i, image n -> counter 10*i + n for a fresh folder), and its
scorers recover the prompt with `file_name.split('_')[0]`, which truncates any prompt that contains '_'.
Here the prompt is everything before the *last* `_<digits>.<ext>`, and it is matched against the prompt list
(exactly, then after light normalisation), so underscores, repeated prompts and CRLF prompt files are handled.
"""

from __future__ import annotations

import re
import unicodedata
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from mars_eval.errors import MarsEvalError
from mars_eval.prompts import PromptSet

IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".webp")
_NAME = re.compile(r"^(?P<prompt>.*)_(?P<counter>\d+)\.(?P<ext>png|jpe?g|webp)$", re.IGNORECASE | re.DOTALL)


@dataclass(frozen=True)
class ImageItem:
    """One image to score, tied to its prompt by position in the prompt set (never by text alone)."""

    path: Path
    prompt_index: int
    image_index: int  # 0..images_per_prompt-1 within its prompt (seed 42 + image_index in the official protocol)
    prompt: str
    counter: int | None = None  # the number in the file name, when the folder uses the official naming


def official_name(prompt: str, counter: int, ext: str = "png") -> str:
    """The official file name. Raises for prompts that cannot be file names (a '/' or NUL)."""
    if "/" in prompt or "\0" in prompt:
        raise MarsEvalError(f"prompt cannot be used in an official file name (contains '/' or NUL): {prompt!r}")
    return f"{prompt}_{counter:06d}.{ext}"


def parse_name(name: str) -> tuple[str, int]:
    """`'a_b c_000012.png'` -> `('a_b c', 12)`: the prompt is everything before the last `_<digits>`."""
    m = _NAME.match(name)
    if m is None:
        raise MarsEvalError(f"not an official T2I-CompBench image name ('{{prompt}}_{{000000}}.png'): {name!r}")
    return m.group("prompt"), int(m.group("counter"))


def _norm(text: str) -> str:
    """Lenient key: NFC, case-folded, whitespace collapsed, trailing period dropped (file systems and tools
    often alter exactly these)."""
    t = unicodedata.normalize("NFC", text).casefold()
    return " ".join(t.split()).rstrip(".").rstrip()


def match_folder(
    folder: str | Path, prompts: PromptSet, images_per_prompt: int = 10, *, strict: bool = True
) -> list[ImageItem]:
    """Map every image in `folder` (official naming) to (prompt index, image index).

    Repeated prompts: the files whose text matches a prompt that occurs several times are ordered by their
    counter and dealt to the occurrences in order, `images_per_prompt` each; when the counters follow the
    official layout (counter // images_per_prompt == prompt index) that layout is used directly.
    Counters that restart for every prompt (some generators number 0..9 per prompt) are handled the same way.
    With `strict`, every prompt must have exactly `images_per_prompt` images.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise MarsEvalError(f"image folder not found: {folder}")
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTS)
    if not files:
        raise MarsEvalError(f"{folder}: no images ({', '.join(IMAGE_EXTS)})")
    return match_paths(files, prompts, images_per_prompt, strict=strict, where=str(folder))


def match_paths(
    paths: Iterable[str | Path],
    prompts: PromptSet,
    images_per_prompt: int = 10,
    *,
    strict: bool = True,
    where: str = "images",
) -> list[ImageItem]:
    if images_per_prompt < 1:
        raise MarsEvalError(f"images_per_prompt must be >= 1, got {images_per_prompt}")
    exact: dict[str, list[int]] = defaultdict(list)
    loose: dict[str, list[int]] = defaultdict(list)
    for p in prompts:
        exact[p.text].append(p.index)
        loose[_norm(p.text)].append(p.index)

    groups: dict[tuple[int, ...], list[tuple[int, Path]]] = defaultdict(list)
    for path in map(Path, paths):
        text, counter = parse_name(path.name)
        owners = exact.get(text) or loose.get(_norm(text))
        if not owners:
            raise MarsEvalError(f"{where}: image {path.name!r} matches no prompt of {prompts.name}")
        groups[tuple(owners)].append((counter, path))

    items: list[ImageItem] = []
    for owners, files in groups.items():
        files.sort()
        items.extend(_deal(owners, files, prompts, images_per_prompt, where))
    items.sort(key=lambda it: (it.prompt_index, it.image_index))
    if strict:
        _check_complete(items, prompts, images_per_prompt, where)
    return items


def _deal(
    owners: Sequence[int], files: list[tuple[int, Path]], prompts: PromptSet, n: int, where: str
) -> list[ImageItem]:
    """Assign one prompt text's files (sorted by counter) to its occurrences in the prompt list."""
    if all(c // n in owners for c, _ in files):
        by_prompt: dict[int, list[tuple[int, Path]]] = defaultdict(list)
        for c, p in files:
            by_prompt[c // n].append((c, p))
    else:  # counters do not follow the official layout: deal in counter order
        if len(owners) > 1 and len(files) > n * len(owners):
            raise MarsEvalError(f"{where}: {len(files)} images for prompt {prompts[owners[0]].text!r} "
                                f"which occurs {len(owners)} times ({n} images each)")
        by_prompt = defaultdict(list)
        for k, cp in enumerate(files):
            by_prompt[owners[min(k // n, len(owners) - 1)]].append(cp)
    out = []
    for idx, cps in by_prompt.items():
        for image_index, (c, p) in enumerate(cps):
            out.append(ImageItem(p, idx, image_index, prompts[idx].text, c))
    return out


def _check_complete(items: list[ImageItem], prompts: PromptSet, n: int, where: str) -> None:
    count: dict[int, int] = defaultdict(int)
    for it in items:
        count[it.prompt_index] += 1
    bad = [(i, count.get(i, 0)) for i in range(len(prompts)) if count.get(i, 0) != n]
    if bad:
        i, c = bad[0]
        raise MarsEvalError(f"{where}: prompt {i} ({prompts[i].text!r}) has {c} images, expected {n} "
                            f"({len(bad)} prompts incomplete)")
