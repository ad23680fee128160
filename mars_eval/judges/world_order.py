"""Training data for the occlusion-order reader (`world_detector.OrderReader`): which of two overlapping objects
is drawn on top, the world's depth order.

It is the world's analogue of the depth estimator T2I-CompBench++ uses for 3D-spatial prompts ("in front of",
"behind"): in the world, depth is drawing order, and the only cue is occlusion, i.e. which silhouette is cut
where the two overlap. A per-object "am I covered?" flag cannot say by whom, and an object's centre can itself
be covered, so the reader looks at the pair:

    input   a square crop around the union of the two boxes, resampled to CROP x CROP, with one box-coverage
            channel per object (RGB + mask a + mask b)
    output  logit P(a drawn over b) = f(x, a, b) - f(x, b, a): antisymmetric by construction, so swapping the
            pair flips the answer and the two readings can never disagree

Training data are minimal pairs: a fresh world scene with an occlusion relation, rendered once in its drawing
order and once with the pair swapped. The two images differ only where the silhouettes overlap, so the loss can
only fall by reading that region (a reader trained on a fixed set of 1,000 single images memorised them and
stayed at chance on held-out ones).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import torch

from mars_eval.world_clip.scenes import STREAM
from mars_ref.world.captions import caption
from mars_ref.world.render import render
from mars_ref.world.sampling import OCCLUSION_RELATIONS, sample_scene
from mars_ref.world.scene import Obj, Scene
from mars_ref.world.style import DEFAULT_STYLE, WorldStyle

SOURCES = (("non_spatial", 0.7), ("complex", 0.3))  # the categories whose prompts state occlusion relations


def occlusion_pair(scene: Scene) -> tuple[Obj, Obj] | None:
    """The (subject, object) of the scene's first stated occlusion relation (the first member of each group)."""
    r = next((r for r in scene.relations if r.rel in OCCLUSION_RELATIONS), None)
    if r is None:
        return None
    first = {}
    for o in scene.objects:
        first.setdefault(o.group, o)
    return first[r.subj], first[r.obj]


def swap_order(scene: Scene, a: Obj, b: Obj) -> Scene:
    """The scene with objects a and b exchanged in the drawing order (relations left as they are)."""
    objs = list(scene.objects)
    ia, ib = objs.index(a), objs.index(b)
    objs[ia], objs[ib] = b, a
    return replace(scene, objects=tuple(objs))


def is_over(scene: Scene, a: Obj, b: Obj) -> bool:
    """Whether a is drawn after (over) b."""
    return scene.objects.index(a) > scene.objects.index(b)


def pixel_box(o: Obj, px_per_unit: float) -> list[float]:
    x0, y0, x1, y1 = o.box
    return [(x0 + x1) / 2 * px_per_unit, (y0 + y1) / 2 * px_per_unit, (x1 - x0) * px_per_unit, (y1 - y0) * px_per_unit]


class MinimalPairs:
    """Fresh scenes with an occlusion relation, each rendered in both drawing orders; like `SceneStream`, a
    scene whose caption is a val prompt of the world is skipped."""

    def __init__(self, seed: int, exclude: set[str], size: int = 32, style: WorldStyle = DEFAULT_STYLE):
        self.rng = np.random.default_rng([seed, STREAM, 1])
        self.exclude, self.size, self.style = exclude, size, style

    def scene(self) -> tuple[Scene, Obj, Obj]:
        cats, p = zip(*SOURCES, strict=True)
        while True:
            s = sample_scene(cats[int(self.rng.choice(len(cats), p=p))], self.rng, style=self.style)
            pair = occlusion_pair(s)
            if pair is not None and caption(s, "en") not in self.exclude:
                return s, *pair

    def batch(self, n_pairs: int) -> tuple[torch.Tensor, list[Scene], torch.Tensor, torch.Tensor, torch.Tensor]:
        """(images (2n, 3, S, S) uint8, scenes, boxes a and b (2n, 4) px, labels (2n,) 1. where a is over b);
        images 2k and 2k + 1 are the two orders of one scene."""
        images, scenes, ba, bb, y = [], [], [], [], []
        for _ in range(n_pairs):
            s, a, b = self.scene()
            for sc in (s, swap_order(s, a, b)):
                images.append(np.asarray(render(sc, self.size, self.size)))
                scenes.append(sc)
                ba.append(pixel_box(a, self.size))
                bb.append(pixel_box(b, self.size))
                y.append(float(is_over(sc, a, b)))
        x = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous()
        return x, scenes, torch.tensor(ba), torch.tensor(bb), torch.tensor(y)
