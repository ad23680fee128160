"""World captions: each caption parses back to its scene's ground truth, in English and in Chinese."""

from dataclasses import replace

import numpy as np
import pytest

from mars_ref.errors import MarsRefError
from mars_ref.world import CATEGORIES, Group, Relation, caption, parse_caption, sample_scene
from mars_ref.world import lexicon as L
from mars_ref.world.captions import caption_parts
from mars_ref.world.qa import questions
from mars_ref.world.sequences import parse_step, sample_sequence, step_text

N_PER_CATEGORY = 60


@pytest.mark.parametrize("category", CATEGORIES)
@pytest.mark.parametrize("lang", ["en", "zh"])
def test_caption_parses_back_to_truth(category, lang):
    rng = np.random.default_rng([11, CATEGORIES.index(category)])
    for _ in range(N_PER_CATEGORY):
        scene = sample_scene(category, rng)
        text = caption(scene, lang)
        assert parse_caption(text, lang) == scene.truth(), text


@pytest.mark.parametrize("category", CATEGORIES)
def test_english_and_chinese_describe_the_same_scene(category):
    rng = np.random.default_rng([12, CATEGORIES.index(category)])
    for _ in range(N_PER_CATEGORY):
        scene = sample_scene(category, rng)
        en, zh = parse_caption(caption(scene, "en"), "en"), parse_caption(caption(scene, "zh"), "zh")
        assert en == zh
        # and the truth names what was drawn: kinds and counts of the drawn objects, every stated attribute
        for gi, g in enumerate(en["objects"]):
            members = scene.members(gi)
            assert len(members) == g["count"] and all(o.kind == g["kind"] for o in members)
            for attr in ("color", "texture", "shape"):
                if g[attr] is not None:
                    assert all(getattr(o, attr) == g[attr] for o in members)
            if g["size"] is not None:
                assert all(o.size == g["size"] for o in members)


def test_resolution_tag_round_trips():
    scene = sample_scene("complex", np.random.default_rng(3), aspect=(3, 2))
    for lang in ("en", "zh"):
        text = caption(scene, lang, res=(48, 32))
        assert text.startswith("<res 48x32> ")
        assert parse_caption(text, lang) == scene.truth((48, 32))


def test_known_sentences():
    groups = (Group("ball", color="red", texture="striped"), Group("box", color="blue", size="big"))
    rels = (Relation(0, "left_of", 1), Relation(0, "smaller_than", 1))
    assert caption_parts(groups, rels, "en") == (
        "a red striped ball on the left of a big blue box, and the ball is smaller than the box"
    )
    assert caption_parts(groups, rels, "zh") == "一个红色条纹的球在一个大的蓝色的盒子的左边，而且球比盒子小"
    three = (Group("fish", count=3, color="orange"), Group("umbrella", count=2))
    assert caption_parts(three, (), "en", numeral_one=True) == "three orange fish and two umbrellas"
    assert caption_parts(three, (), "zh") == "三条橙色的鱼和两把伞"


def test_parser_accepts_common_variants():
    truth = parse_caption("A red ball to the left of a blue box.", "en")
    assert truth == parse_caption("一个红色的球在一个蓝色的盒子的左侧。", "zh")
    assert truth["relations"] == [{"subj": 0, "rel": "left_of", "obj": 1}]


@pytest.mark.parametrize(
    "text,lang",
    [
        ("a purple elephant", "en"),  # unknown noun
        ("a red ball left", "en"),  # dangling word
        ("two ball", "en"),  # number disagreement
        ("a ball and a ball", "en"),  # same kind twice
        ("a round ball", "en"),  # balls have no shape attribute
        ("一个红色的象", "zh"),
        ("一个球在一个盒子的", "zh"),
        ("", "en"),
    ],
)
def test_parser_rejects_text_outside_the_grammar(text, lang):
    with pytest.raises(MarsRefError):
        parse_caption(text, lang)


def test_unknown_language_is_an_error():
    scene = sample_scene("color", np.random.default_rng(0))
    with pytest.raises(MarsRefError):
        caption(scene, "fr")
    with pytest.raises(MarsRefError):
        parse_caption("a red ball", "fr")


def test_sequence_steps_parse_back_in_both_languages():
    rng = np.random.default_rng(5)
    for _ in range(20):
        scene = sample_sequence(rng)
        for k in range(1, len(scene.groups) + 1):
            en, zh = parse_step(step_text(scene, k, "en"), "en"), parse_step(step_text(scene, k, "zh"), "zh")
            assert en == zh
            assert en["step"] == k and en["object"]["kind"] == scene.groups[k - 1].kind
            assert en["object"]["color"] == scene.groups[k - 1].color
            rel = next((r for r in scene.relations if r.subj == k - 1), None)
            if rel is None:
                assert en["relation"] is None
            else:
                assert en["relation"] == {"rel": rel.rel, "ref": scene.groups[rel.obj].kind}


def test_qa_answers_follow_the_caption():
    groups = (Group("star", count=3, color="yellow"), Group("car", shape=None, texture="dotted"))
    qs = {q["en"][0]: q for q in questions(groups, (Relation(0, "above", 1),))}
    assert qs["what color are the stars?"]["en"][1] == "yellow"
    assert qs["what color are the stars?"]["zh"] == ("星星是什么颜色的？", "黄色")
    assert qs["how many stars are there?"]["zh"][1] == "三颗"
    assert qs["are the stars above the car?"]["en"][1] == "yes"
    assert qs["are the stars below the car?"]["zh"][1] == "不是"
    assert qs["what pattern does the car have?"]["en"][1] == "dotted"
    assert L.NUM_ZH[2] == "两"


@pytest.mark.parametrize("lang", ["en", "zh"])
def test_one_word_counterfactual_changes_one_stated_word(lang):
    """The hard negative of the contrastive term: the caption parses back to the original truth but for exactly
    one attribute of one group (or that group's kind when nothing else is stated)."""
    from mars_ref.world.sampling import SWAPPABLE, one_word_counterfactual

    rng = np.random.default_rng(5)
    kinds_swapped = attrs_swapped = 0
    for i in range(300):
        scene = sample_scene(CATEGORIES[i % len(CATEGORIES)], rng)
        groups = one_word_counterfactual(scene.groups, rng)
        text = caption_parts(groups, scene.relations, lang, numeral_one=scene.category == "numeracy")
        assert text != caption(scene, lang)
        assert parse_caption(text, lang) == replace(scene, groups=groups).truth(), text
        diff = [(a, b) for a, b in zip(scene.groups, groups, strict=True) if a != b]
        assert len(diff) == 1
        old, new = diff[0]
        changed = [f for f in ("kind", *SWAPPABLE) if getattr(old, f) != getattr(new, f)]
        assert len(changed) == 1 and getattr(new, changed[0]) is not None and new.count == old.count
        if changed[0] == "kind":
            kinds_swapped += 1
            assert all(getattr(g, a) is None for g in scene.groups for a in SWAPPABLE)
            assert new.kind not in {g.kind for g in scene.groups}
        else:
            attrs_swapped += 1
    assert kinds_swapped > 20 and attrs_swapped > 100  # both branches are exercised
