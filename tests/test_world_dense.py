"""Dense captions: every drawn object with its attributes and position, and the background, in both languages."""

from __future__ import annotations

import numpy as np
import pytest

from mars_ref.errors import MarsRefError
from mars_ref.world import CATEGORIES, sample_scene
from mars_ref.world import lexicon as L
from mars_ref.world.dense import (
    BACKGROUND_WORDS,
    POSITION_EN,
    POSITION_ZH,
    colour_name,
    dense_caption,
    position,
)


@pytest.fixture(scope="module")
def scenes():
    rng = np.random.default_rng(11)
    return [sample_scene(CATEGORIES[i % len(CATEGORIES)], rng) for i in range(70)]


SEPARATORS = {"en": ("; ", ", "), "zh": ("；", "，")}  # objects | background, object | object


def _objects_and_background(scene, lang: str) -> tuple[list[tuple[str, object]], str]:
    """The dense caption's object phrases paired with the drawn objects (same count, same order), and its tail."""
    objects, background = dense_caption(scene, lang).split(SEPARATORS[lang][0])
    parts = objects.split(SEPARATORS[lang][1])
    assert len(parts) == len(scene.objects)
    return list(zip(parts, scene.objects, strict=True)), background


def test_english_names_every_object_in_drawing_order(scenes):
    for s in scenes:
        pairs, background = _objects_and_background(s, "en")
        for part, o in pairs:
            words = part.split()
            assert o.kind in words and o.color in words
            assert (o.shape in words) == (o.shape is not None)
            assert (o.texture in words) == (o.texture != "plain")
            assert part.endswith(POSITION_EN[position(o, s.canvas)])
        assert background.endswith(f"{BACKGROUND_WORDS[s.background.kind][0]} background")


def test_chinese_names_every_object(scenes):
    for s in scenes:
        pairs, background = _objects_and_background(s, "zh")
        for part, o in pairs:
            assert part.startswith(POSITION_ZH[position(o, s.canvas)])
            assert L.noun_zh(o.kind) in part and L.COLOR_WORDS[o.color][1] in part
        assert background.endswith(BACKGROUND_WORDS[s.background.kind][1] + "背景")


def test_positions_and_colour_names():
    class Centre:
        cx, cy = 0.1, 0.9

    assert position(Centre, (1.0, 1.0)) == ("left", "bottom")
    assert POSITION_EN[("left", "bottom")] == "at the bottom left" and POSITION_ZH[("left", "bottom")] == "左下方"
    assert POSITION_EN[("centre", "middle")] == "in the centre"
    assert colour_name((128, 128, 128))[0] == "grey" and colour_name((250, 250, 250))[0] == "white"
    assert colour_name((60, 90, 200))[0] == "blue" and colour_name((200, 40, 40))[0] == "red"


def test_unrealised_scene_and_bad_language_are_errors(scenes):
    from dataclasses import replace

    with pytest.raises(MarsRefError, match="realised"):
        dense_caption(replace(scenes[0], objects=()), "en")
    with pytest.raises(MarsRefError, match="language"):
        dense_caption(scenes[0], "fr")
