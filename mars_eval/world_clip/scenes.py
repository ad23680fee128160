"""Fresh world scenes rendered on the fly: the same generator as the world's corpora, never a val prompt.

A built world holds a few thousand images; a model trained for a thousand steps of 64 sees each of them many
times and starts to memorise instances. Sampling and rendering a new scene costs about 2 ms at 32 px, so the
trainers mix them into every batch (through a `ScenePool`, which re-shows each a few times). Scenes come from a
stream seeded apart from the world build's streams, and
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
from mars_ref.world.style import DEFAULT_STYLE, WorldStyle

STREAM = 9001  # distinct from mars_ref.world.build.STREAMS and the prompt stream


def val_prompts(world: str | Path) -> set[str]:
    """English val prompts of a built world (empty when it has no prompt sets)."""
    out: set[str] = set()
    for p in sorted((Path(world) / "prompts").glob("*_val*.txt")):
        out.update(line for line in p.read_text(encoding="utf-8").splitlines() if line)
    return out


class SceneStream:
    """Random world scenes (1:1 aspect) with renders and both captions; categories uniform, or drawn with
    `weights` (category -> relative weight, missing ones 1): the world's priors leave most objects plain and
    alone, so a trainer that must read textures or crowded scenes asks for more of those categories."""

    def __init__(self, seed: int, exclude: set[str], size: int = 32, out_size: int | None = None,
                 weights: dict[str, float] | None = None, style: WorldStyle = DEFAULT_STYLE):
        self.rng = np.random.default_rng([seed, STREAM])
        self.style = style  # the world's (mars_ref.world.style)
        self.exclude = exclude
        w = np.array([float((weights or {}).get(c, 1.0)) for c in CATEGORIES])
        if weights and (set(weights) - set(CATEGORIES) or (w < 0).any() or w.sum() <= 0):
            raise ValueError(f"bad category weights {weights} (categories: {', '.join(CATEGORIES)})")
        self.weights, self.p = weights or None, w / w.sum()
        self.size = size  # render size (the world's Stage I resolution)
        self.out_size = out_size or size  # returned size (bicubic, as `data.to_model_size`)

    def scene(self) -> Scene:
        while True:
            k = self.rng.integers(len(CATEGORIES)) if self.weights is None else self.rng.choice(len(CATEGORIES), p=self.p)
            cat = CATEGORIES[int(k)]
            s = sample_scene(cat, self.rng, style=self.style)
            if caption(s, "en") not in self.exclude:
                return s

    def batch(self, n: int) -> tuple[torch.Tensor, list[Scene]]:
        """(images (n, 3, S, S) uint8, scenes)."""
        from mars_eval.world_clip.data import to_model_size

        scenes = [self.scene() for _ in range(n)]
        arr = np.stack([to_model_size(render(s, self.size, self.size), self.out_size) for s in scenes])  # (n, S, S, 3)
        return torch.from_numpy(arr).permute(0, 3, 1, 2).contiguous(), scenes


class ScenePool:
    """A pool of rendered fresh scenes from a `SceneStream`, `refresh` of them replaced by new ones per batch.

    Rendering is the dominant cost of fresh data (about half a training step of the world detector on one
    core); a pool shows each new scene a few times, with a different augmentation each time, at a fraction
    of that cost, while the stream of new scenes still never runs dry."""

    def __init__(self, stream: SceneStream, size: int, refresh: int):
        self.stream, self.refresh = stream, refresh
        self.images, self.scenes = stream.batch(size)  # (size, 3, S, S) uint8, scenes
        self.next = 0  # the oldest entry: replaced first

    def batch(self, n: int, gen: torch.Generator) -> tuple[torch.Tensor, list[Scene]]:
        """(images (n, 3, S, S) uint8, scenes): `refresh` oldest entries renewed, then n drawn without
        replacement."""
        size = len(self.scenes)
        if self.refresh:
            k = min(self.refresh, size)
            images, scenes = self.stream.batch(k)
            for j in range(k):
                slot = (self.next + j) % size
                self.images[slot], self.scenes[slot] = images[j], scenes[j]
            self.next = (self.next + k) % size
        idx = torch.randperm(size, generator=gen)[:n].tolist()
        return self.images[idx], [self.scenes[i] for i in idx]
