"""Fresh world scenes rendered on the fly: the same generator as the world's corpora, never a val prompt.

A built world holds a few thousand images; a model trained for a thousand steps of 64 sees each of them many
times and starts to memorise instances. Sampling new scenes costs under a millisecond per 32 px image, so the
trainers mix them into every batch. Scenes come from a stream seeded apart from the world build's streams, and
a scene whose English caption is a val prompt of the world (`WORLD/prompts/*_val.txt`) is skipped, exactly as
the world build does, so held-out prompts stay held out.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from mars_ref.world.captions import caption
from mars_ref.world.render import render
from mars_ref.world.sampling import CATEGORIES, sample_scene
from mars_ref.world.scene import Scene

STREAM = 9001  # distinct from mars_ref.world.build.STREAMS and the prompt stream


def val_prompts(world: str | Path) -> set[str]:
    """English val prompts of a built world (empty when it has no prompt sets)."""
    out: set[str] = set()
    for p in sorted((Path(world) / "prompts").glob("*_val*.txt")):
        out.update(line for line in p.read_text(encoding="utf-8").splitlines() if line)
    return out


class SceneStream:
    """Random world scenes (uniform over categories, 1:1 aspect) with renders and both captions."""

    def __init__(self, seed: int, exclude: set[str], size: int = 32, out_size: int | None = None):
        self.rng = np.random.default_rng([seed, STREAM])
        self.exclude = exclude
        self.size = size  # render size (the world's Stage I resolution)
        self.out_size = out_size or size  # returned size (bicubic, as `data.to_model_size`)

    def scene(self) -> Scene:
        while True:
            cat = CATEGORIES[int(self.rng.integers(len(CATEGORIES)))]
            s = sample_scene(cat, self.rng)
            if caption(s, "en") not in self.exclude:
                return s

    def batch(self, n: int) -> tuple[torch.Tensor, list[Scene]]:
        """(images (n, 3, S, S) uint8, scenes)."""
        from mars_eval.world_clip.data import to_model_size

        scenes = [self.scene() for _ in range(n)]
        arr = np.stack([to_model_size(render(s, self.size, self.size), self.out_size) for s in scenes])  # (n, S, S, 3)
        return torch.from_numpy(arr).permute(0, 3, 1, 2).contiguous(), scenes
