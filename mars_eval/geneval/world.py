"""The world analogue of GenEval: its six tasks written with the embedded world's lexicon, scored by the world
judges under the official rules (rules.py).

Prompts are world captions (the grammar the world's models learn; English, or the parallel Chinese), with
GenEval metadata of the world's kinds and colours (the world's 10 colours are GenEval's 10):

    single_object   "a ball"                          every kind once (19)
    two_object      "a ball and a box"                99 pairs of different kinds
    counting        "three balls"                     every kind x 2, 3, 4 (57); exclude count + 1
    colors          "a red ball"                      94 (kind, colour) pairs
    position        "a ball on the left of a box"     100; include [box, ball with position ["left of", 0]]
    color_attr      "a red ball and a blue box"       100; different kinds, different colours

The list is a function of `seed` alone (the same for every built world), and every prompt is drawable in both
world layouts; each line also carries one scene that realises it in the requested style (`scene`, what a
perfect model draws). These captions are ordinary world captions, so a world model may have trained on them.

Scoring: the world detector's detections become GenEval detections, one per (detection, kind) with confidence
P(object) x P(kind) (as Mask2Former scores each (query, class) pair), the box in pixels of the image, and the
reader's most likely colour in place of CLIP's.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from mars_eval.geneval.metadata import COLORS, TASKS, Exclude, PromptSpec, Require
from mars_eval.geneval.rules import Detection, RuleSettings, Verdict, judge
from mars_ref.world import lexicon as L
from mars_ref.world.captions import caption_parts
from mars_ref.world.layout import LayoutError
from mars_ref.world.sampling import realize
from mars_ref.world.scene import Group, Relation, Scene
from mars_ref.world.style import DEFAULT_STYLE, LAYOUTS, WorldStyle

SEED = 0
STREAM = 9201  # numpy SeedSequence stream, apart from the world build's (1-7) and the suites' (9001, 9101)
SIZES = {"two_object": 99, "colors": 94, "position": 100, "color_attr": 100}  # GenEval's; the rest: all
COUNTS = (2, 3, 4)  # GenEval's counting prompts ask for 2-4 objects
RELATION_WORDS = {"left_of": "left of", "right_of": "right of", "above": "above", "below": "below"}
# the world sampler whose layout rules fit each task (sizes, overlap allowance)
LAYOUT_CATEGORY = {"single_object": "color", "two_object": "color", "colors": "color", "color_attr": "color",
                   "counting": "numeracy", "position": "spatial"}
MAX_TRIES = 20_000

assert set(COLORS) == set(L.COLORS), "the world's colours must be GenEval's"


@dataclass(frozen=True)
class WorldPrompt:
    spec: PromptSpec  # English prompt
    zh: str
    scene: Scene

    def line(self, lang: str = "en") -> tuple[PromptSpec, dict]:
        """(spec with the prompt in `lang`, extra keys) for a metadata line."""
        s = self.spec
        spec = s if lang == "en" else PromptSpec(s.tag, self.zh, s.include, s.exclude)
        return spec, {"prompt_en": self.spec.prompt, "prompt_zh": self.zh, "scene": self.scene.to_dict()}


def task_spec(tag: str, groups: tuple[Group, ...], relations: tuple[Relation, ...] = ()) -> PromptSpec:
    """GenEval metadata of a world caption spec (English prompt)."""
    text = caption_parts(groups, relations, "en")
    if tag == "position":
        (a, b), r = groups, relations[0]  # caption "a REL b" = group 0 REL group 1; GenEval lists the target first
        inc = (Require(b.kind, 1), Require(a.kind, 1, position=(RELATION_WORDS[r.rel], 0)))
        return PromptSpec(tag, text, inc)
    inc = tuple(Require(g.kind, g.count, g.color) for g in groups)
    exc = (Exclude(groups[0].kind, groups[0].count + 1),) if tag == "counting" else ()
    return PromptSpec(tag, text, inc, exc)


def _candidates(tag: str, rng: np.random.Generator):
    """Endless (groups, relations) draws for a sampled task; the enumerated tasks are listed in `_enumerated`."""
    kinds, colors = L.KINDS, L.COLORS
    while True:
        a, b = (kinds[int(i)] for i in rng.choice(len(kinds), 2, replace=False))
        if tag == "two_object":
            yield (Group(a), Group(b)), ()
        elif tag == "colors":
            yield (Group(a, color=colors[int(rng.integers(len(colors)))]),), ()
        elif tag == "position":
            yield (Group(a), Group(b)), (Relation(0, L.SPATIAL_RELATIONS[int(rng.integers(4))], 1),)
        else:  # color_attr
            ca, cb = (colors[int(i)] for i in rng.choice(len(colors), 2, replace=False))
            yield (Group(a, color=ca), Group(b, color=cb)), ()


def _enumerated(tag: str):
    if tag == "single_object":
        return [((Group(k),), ()) for k in L.KINDS]
    return [((Group(k, count=c),), ()) for k in L.KINDS for c in COUNTS]


def _drawable(tag: str, groups, relations, seed: int, k: int) -> bool:
    """Realisable in every world layout (so the list does not depend on the world's style)."""
    for i, layout in enumerate(LAYOUTS):
        try:
            realize(LAYOUT_CATEGORY[tag], groups, relations, np.random.default_rng([seed, STREAM, 1, k, i]),
                    style=WorldStyle(layout=layout))
        except LayoutError:
            return False
    return True


def _scene(tag: str, groups, relations, seed: int, t: int, i: int, style: WorldStyle) -> Scene:
    for attempt in range(50):
        try:
            return realize(LAYOUT_CATEGORY[tag], groups, relations,
                           np.random.default_rng([seed, STREAM, 2, t, i, attempt]), style=style)
        except LayoutError:
            continue
    raise LayoutError(f"no scene for {caption_parts(groups, relations, 'en')!r} in style {style}")


def world_prompts(style: WorldStyle = DEFAULT_STYLE, seed: int = SEED) -> list[WorldPrompt]:
    """The world GenEval prompts, task by task in GenEval's order (module docstring)."""
    out: list[WorldPrompt] = []
    for t, tag in enumerate(TASKS):
        specs: list[tuple] = []
        if tag in SIZES:
            seen: set[str] = set()
            draws = _candidates(tag, np.random.default_rng([seed, STREAM, 0, t]))
            for k in range(MAX_TRIES):
                groups, rels = next(draws)
                text = caption_parts(groups, rels, "en")
                if text not in seen and _drawable(tag, groups, rels, seed, t * MAX_TRIES + k):
                    seen.add(text)
                    specs.append((groups, rels))
                if len(specs) == SIZES[tag]:
                    break
        else:
            specs = [s for k, s in enumerate(_enumerated(tag)) if _drawable(tag, *s, seed, t * MAX_TRIES + k)]
        for i, (groups, rels) in enumerate(specs):
            out.append(WorldPrompt(task_spec(tag, groups, rels), caption_parts(groups, rels, "zh"),
                                   _scene(tag, groups, rels, seed, t, i, style)))
    return out


# ---- scoring ---------------------------------------------------------------------------------------------------
def geneval_detections(world_dets, width: int, height: int) -> list[Detection]:
    """World detector output (judges/world_decode.Detection, boxes in canvas units) -> GenEval detections."""
    s = min(width, height)  # pixels per canvas unit
    out = []
    for d in world_dets:
        box = tuple(float(v) * s for v in d.box)
        color = L.COLORS[int(np.argmax(d.color))]
        for k, p in enumerate(np.asarray(d.kind, dtype=float)):
            if p > 0:
                out.append(Detection(L.KINDS[k], float(d.score) * float(p), box, color=color))
    return out


class WorldScorer:
    """GenEval verdicts from the world judges' detector (a judge directory, judges/world_judges.py)."""

    def __init__(self, judges_dir: str | Path, settings: RuleSettings | None = None):
        from mars_eval.judges.world_judges import WorldJudges

        self.judges = WorldJudges.load(judges_dir)
        self.settings = settings or RuleSettings()

    def score(self, images: Sequence[Image.Image], specs: Sequence[PromptSpec]) -> list[Verdict]:
        dets = self.judges.detect(list(images))
        return [judge(geneval_detections(d, im.width, im.height), spec, self.settings)
                for d, im, spec in zip(dets, images, specs, strict=True)]


def unknown_classes(specs: Sequence[PromptSpec]) -> list[str]:
    """Classes the world cannot draw (a world GenEval prompt names only world kinds)."""
    return [c for c in dict.fromkeys(c for s in specs for c in s.classes) if c not in L.KINDS]
