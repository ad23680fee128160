"""World prompt sets in T2I-CompBench's layout: `{category}_val.txt` (300 prompts) and `{category}_train.txt`,
plus `complex_{val,train}_{spatial,action,spatialaction}.txt`, the split that says which judges apply.

Files: one English prompt per line, LF, final newline (`prompts/`); the parallel Chinese prompts with the same
names in `prompts/zh/`; and beside each `.txt` a `.jsonl` with, per line, the prompt in both languages, its
caption-level truth, the judges that apply and one scene that realises it. Prompts are unique within a set,
and train prompts never repeat a val prompt (of any category), so val stays held out.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mars_ref.errors import MarsRefError
from mars_ref.world.captions import caption
from mars_ref.world.layout import LayoutError
from mars_ref.world.sampling import (
    CATEGORIES,
    COMPLEX_KINDS,
    complex_kind,
    complex_spec,
    realize,
    sample_spec,
)
from mars_ref.world.scene import Scene
from mars_ref.world.style import DEFAULT_STYLE, WorldStyle

VAL_SIZE = 300
TRAIN_SIZE = 700
# stream ids for numpy SeedSequence([seed, stream, ...]); other modules use other ids
PROMPT_STREAM = 7

# world judges per category (the analogues of BLIP-VQA, the detector and CLIP in T2I-CompBench)
JUDGES = {
    "color": ["attribute"],
    "shape": ["attribute"],
    "texture": ["attribute"],
    "spatial": ["spatial"],
    "non_spatial": ["non_spatial"],
    "numeracy": ["count"],
}
COMPLEX_JUDGES = {
    "spatial": ["attribute", "spatial"],
    "action": ["attribute", "non_spatial"],
    "spatialaction": ["attribute", "spatial", "non_spatial"],
}


@dataclass(frozen=True)
class PromptItem:
    en: str
    zh: str
    scene: Scene

    @property
    def judges(self) -> list[str]:
        if self.scene.category == "complex":
            return COMPLEX_JUDGES[complex_kind(self.scene.relations)]
        return JUDGES[self.scene.category]

    def row(self, index: int) -> dict:
        row = {
            "index": index,
            "prompt": self.en,
            "prompt_zh": self.zh,
            "category": self.scene.category,
            "judges": self.judges,
            "truth": self.scene.truth(),
            "scene": self.scene.to_dict(),
        }
        if self.scene.category == "complex":
            row["complex_kind"] = complex_kind(self.scene.relations)
        return row


def _draw(category: str, rng: np.random.Generator, sub: str | None, style: WorldStyle) -> PromptItem | None:
    groups, rels = complex_spec(rng, sub) if sub else sample_spec(category, rng)
    try:
        scene = realize(category, groups, rels, rng, style=style)
    except LayoutError:
        return None  # a spec no canvas can hold: draw another
    return PromptItem(caption(scene, "en"), caption(scene, "zh"), scene)


def _unique(category: str, rng, n: int, taken: set[str], sub: str | None = None,
            style: WorldStyle = DEFAULT_STYLE) -> list[PromptItem]:
    out: list[PromptItem] = []
    tries = 0
    while len(out) < n:
        tries += 1
        if tries > 50 * n + 1000:
            raise MarsRefError(
                f"cannot find {n} distinct {category} prompts (the world's vocabulary is too small)"
            )
        item = _draw(category, rng, sub, style)
        if item is not None and item.en not in taken:
            taken.add(item.en)
            out.append(item)
    return out


def prompt_sets(
    seed: int, val_size: int = VAL_SIZE, train_size: int = TRAIN_SIZE, style: WorldStyle = DEFAULT_STYLE
) -> dict[str, list[PromptItem]]:
    """name -> prompts, e.g. 'color_val', 'complex_val_spatial', their scenes drawn in `style`. Pure: no files."""
    if val_size < 1 or train_size < 0:
        raise MarsRefError(f"prompt set sizes must be val >= 1, train >= 0, got {val_size}, {train_size}")
    sets: dict[str, list[PromptItem]] = {}
    taken: set[str] = set()
    for ci, cat in enumerate(
        CATEGORIES
    ):  # all val sets first, so no train prompt can take a val prompt's place
        rng = np.random.default_rng([seed, PROMPT_STREAM, ci, 0])
        if cat == "complex":
            parts = _split(val_size, len(COMPLEX_KINDS))
            for sub, k in zip(COMPLEX_KINDS, parts, strict=True):
                sets[f"complex_val_{sub}"] = _unique(cat, rng, k, taken, sub, style)
            sets["complex_val"] = [p for sub in COMPLEX_KINDS for p in sets[f"complex_val_{sub}"]]
        else:
            sets[f"{cat}_val"] = _unique(cat, rng, val_size, taken, style=style)
    for ci, cat in enumerate(CATEGORIES):
        rng = np.random.default_rng([seed, PROMPT_STREAM, ci, 1])
        sets[f"{cat}_train"] = _unique(cat, rng, train_size, taken, style=style)
        if cat == "complex":
            for sub in COMPLEX_KINDS:
                sets[f"complex_train_{sub}"] = [
                    p for p in sets["complex_train"] if complex_kind(p.scene.relations) == sub
                ]
    return sets


def _split(n: int, k: int) -> list[int]:
    return [n // k + (1 if i < n % k else 0) for i in range(k)]


def held_out_prompts(sets: dict[str, list[PromptItem]]) -> set[str]:
    """English texts of every val prompt: the corpora never show these."""
    return {p.en for name, items in sets.items() if "_val" in name for p in items}


def write_prompt_sets(out_dir: Path, sets: dict[str, list[PromptItem]]) -> list[str]:
    """Write the files (into a directory being staged by the caller); returns the relative paths written."""
    out_dir = Path(out_dir)
    (out_dir / "zh").mkdir(parents=True, exist_ok=True)
    written = []
    for name, items in sets.items():
        (out_dir / f"{name}.txt").write_text(
            "".join(p.en + "\n" for p in items), encoding="utf-8", newline="\n"
        )
        (out_dir / "zh" / f"{name}.txt").write_text(
            "".join(p.zh + "\n" for p in items), encoding="utf-8", newline="\n"
        )
        (out_dir / f"{name}.jsonl").write_text(
            "".join(
                json.dumps(p.row(i), ensure_ascii=False, sort_keys=True) + "\n" for i, p in enumerate(items)
            ),
            encoding="utf-8",
            newline="\n",
        )
        written += [f"{name}.txt", f"zh/{name}.txt", f"{name}.jsonl"]
    return written
