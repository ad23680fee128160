"""Scoring rules of T2I-CompBench checked against hand computations (no models)."""

import math

import numpy as np
import pytest

from mars_eval.compbench import complex3in1
from mars_eval.compbench.blip_vqa import pre_question
from mars_eval.compbench.detector import Detection
from mars_eval.compbench.detector_spatial import (
    SpatialRule,
    find_relation,
    objects_complex,
    objects_simple,
    official_frame_scale,
    relation_score,
    spatial_score,
)
from mars_eval.compbench.noun_phrases import (
    PromptParser,
    agreement_with_table,
    noun_phrases,
    rules_parse,
    table_producer,
)
from mars_eval.compbench.numeracy import numeracy_score, numeracy_targets
from mars_eval.compbench.score import ImageScore, category_score, table_x100
from mars_eval.errors import MarsEvalError
from mars_eval.prompts import PromptSet

P = PromptParser()


# ---------------------------------------------------------------- relation rule (official determine_position)


@pytest.mark.parametrize(
    "relation, b1, b2, expected",
    [
        ("on the left of", (0, 0, 10, 10), (100, 0, 110, 10), 1.0),  # dx=100 > |dy|=0, IoU 0
        ("on the right of", (0, 0, 10, 10), (100, 0, 110, 10), 0.0),  # wrong side
        ("on the right of", (100, 0, 110, 10), (0, 0, 10, 10), 1.0),
        ("on the left of", (0, 0, 10, 10), (5, 0, 15, 10), 0.1 / (50 / 150)),  # IoU 1/3 >= 0.1 -> 0.1/IoU
        ("on the left of", (0, 0, 10, 10), (20, 30, 30, 40), 0.0),  # |dy| > |dx|: not a horizontal relation
        ("on the top of", (0, 0, 10, 10), (0, 50, 10, 60), 1.0),  # object 1 above: dy > 0
        ("on the bottom of", (0, 0, 10, 10), (0, 50, 10, 60), 0.0),
        ("on the bottom of", (0, 50, 10, 60), (0, 0, 10, 10), 1.0),
        ("near", (0, 0, 10, 10), (300, 100, 310, 110), 1.0),  # |dy| = 100 < 150: either axis suffices
        ("next to", (0, 0, 10, 10), (300, 200, 310, 210), 150 / 300),
        ("on side of", (0, 0, 10, 10), (0, 600, 10, 610), 1.0),  # |dx| = 0
        (None, (0, 0, 10, 10), (100, 0, 110, 10), 0.0),
        ("on top of", (0, 0, 10, 10), (0, 50, 10, 60), 1.0),  # fixed official bug (see below)
    ],
)
def test_relation_score_hand_values(relation, b1, b2, expected):
    assert relation_score(relation, b1, b2) == pytest.approx(expected)


def test_on_top_of_bug_is_reproducible_when_asked():
    assert relation_score("on top of", (0, 0, 10, 10), (0, 50, 10, 60), SpatialRule(fix_on_top_of=False)) == 0.0


def test_official_frame_matches_torchvision_resize_479_max_480():
    assert official_frame_scale(512, 512) == (479 / 512, 479 / 512)
    # wide image: long side capped at 480, short side int(480 * 512 / 1024) = 240
    assert official_frame_scale(1024, 512) == (480 / 1024, 240 / 512)
    assert official_frame_scale(512, 1024) == (240 / 512, 480 / 1024)
    import torch
    from torchvision.transforms import Resize

    for w, h in [(512, 512), (1024, 512), (300, 200), (640, 480)]:
        out = Resize(479, max_size=480, antialias=True)(torch.zeros(3, h, w))
        sx, sy = official_frame_scale(w, h)
        assert (round(sx * w), round(sy * h)) == (out.shape[2], out.shape[1])


def _det(label, score, box):
    return Detection(label, score, box)


def test_spatial_score_combination_and_floor():
    prompt = "a dog on the left of a cat"
    o1, o2 = objects_simple(P(prompt))
    assert (o1, o2) == ("dog", "cat")
    dog, cat = _det("dog", 0.9, (0, 0, 100, 100)), _det("cat", 0.8, (300, 0, 400, 100))
    r = spatial_score(prompt, o1, o2, [cat, dog], (512, 512))
    assert r.position == 1.0 and r.score == pytest.approx(0.25 * 0.9 + 0.25 * 0.8 + 0.5)
    # one object only: 0.25 * conf < 0.5 -> 0
    assert spatial_score(prompt, o1, o2, [dog], (512, 512)).score == 0.0
    assert spatial_score(prompt, o1, o2, [], (512, 512)).score == 0.0
    # exactly at the floor is kept, below is zeroed: overlapping boxes give position 0.1/IoU
    a, b = (0, 0, 100, 100), (60, 0, 160, 100)  # IoU = 40/160 = 0.25 -> position 0.4
    r = spatial_score(prompt, o1, o2, [_det("dog", 0.6, a), _det("cat", 0.6, b)], (512, 512))
    assert r.position == pytest.approx(0.4) and r.score == pytest.approx(0.5)
    r = spatial_score(prompt, o1, o2, [_det("dog", 0.5, a), _det("cat", 0.5, b)], (512, 512))
    assert r.score == 0.0
    # without the floor the raw value shows
    r = spatial_score(prompt, o1, o2, [_det("dog", 0.5, a), _det("cat", 0.5, b)], (512, 512), SpatialRule(score_floor=0))
    assert r.score == pytest.approx(0.45)


def test_spatial_uses_best_detection_person_alias_and_official_frame():
    prompt = "a girl near a horse"
    o1, o2 = objects_simple(P(prompt))
    dets = [_det("person", 0.6, (900, 0, 1000, 100)), _det("person", 0.9, (0, 0, 100, 100)),
            _det("horse", 0.7, (640, 640, 740, 740))]
    # 1024 px image: centre offsets 640 px -> 640 * 479/1024 = 299.4 px in the official frame; "near" needs
    # one of them below 150 px
    r = spatial_score(prompt, o1, o2, dets, (1024, 1024))
    assert r.conf1 == 0.9 and r.position == pytest.approx(150 / (640 * 479 / 1024))
    assert r.score == pytest.approx(0.25 * 0.9 + 0.25 * 0.7 + 0.5 * r.position)
    # the same offset in a 2048 px image is 149.7 px: within the threshold
    dets2 = [_det("person", 0.9, (0, 0, 100, 100)), _det("horse", 0.7, (640, 640, 740, 740))]
    assert spatial_score(prompt, o1, o2, dets2, (2048, 2048)).position == 1.0


def test_same_label_pair_uses_two_boxes():
    prompt = "a girl on the left of a man"
    o1, o2 = objects_simple(P(prompt))
    left, right = _det("person", 0.9, (0, 0, 50, 50)), _det("person", 0.8, (200, 0, 250, 50))
    r = spatial_score(prompt, o1, o2, [left, right], (512, 512))
    assert (r.conf1, r.conf2, r.position) == (0.9, 0.8, 1.0)
    official = spatial_score(prompt, o1, o2, [left, right], (512, 512), SpatialRule(distinct_boxes=False))
    assert official.position == 0.0 and official.conf2 == 0.9  # the box compared with itself


def test_complex_objects_follow_the_official_preposition_rule():
    # official: nearest NOUN/PROPN before the preposition, first NOUN after it ("coat", not "rack")
    assert objects_complex(P("The red hat was on top of the brown coat rack.")) == ("hat", "coat")
    assert objects_complex(P("The fluffy cat is on the left of the soft pillow.")) == ("cat", "pillow")
    assert find_relation("The red hat was on top of the brown coat rack.") == "on top of"
    # no preposition: no objects
    assert objects_complex(P("The black phone was resting on the brown charger.")) == (None, None)


# ---------------------------------------------------------------- numeracy


def test_numeracy_targets():
    assert numeracy_targets(P("two boys")) == [("boy", 2)]
    assert numeracy_targets(P("three fish")) == [("fish", 3)]
    assert numeracy_targets(P("one fish")) == [("fish", 1)]
    assert numeracy_targets(P("one pear and three knives")) == [("pear", 1), ("knife", 3)]
    assert numeracy_targets(P("six people gathered for a picnic")) == [("person", 6)]
    assert numeracy_targets(rules_parse("two apple")) == [("apple", 2)]  # official crashed here
    with pytest.raises(MarsEvalError, match="no '<number> <object>'"):
        numeracy_targets(rules_parse("many clouds"))
    for t in PromptSet.builtin("numeracy_val").texts:  # every val prompt has a target
        assert numeracy_targets(P(t))


def test_numeracy_score_hand_computed():
    targets = [("dog", 2), ("cat", 1)]
    dets = [_det("dog", 0.9, (0, 0, 100, 100)), _det("dog", 0.8, (2, 1, 100, 100)),  # duplicate (IoU > 0.9)
            _det("dog", 0.7, (200, 200, 300, 300))]
    r = numeracy_score(targets, dets, (512, 512))
    assert r.detected == (2, 0) and r.score == pytest.approx(0.5 * 0.5 + 0.5 * 0.5)
    dets.append(_det("cat", 0.6, (300, 0, 400, 60)))
    assert numeracy_score(targets, dets, (512, 512)).score == pytest.approx(1.0)
    # a box mostly inside another of the same label is merged (containment > 0.9)
    r = numeracy_score([("dog", 2)], [_det("dog", 0.9, (0, 0, 100, 100)), _det("dog", 0.8, (10, 10, 90, 90))], (512, 512))
    assert r.detected == (1,) and r.score == pytest.approx(0.5)
    # wrong count: half credit; substring rename ("wine glass" counts as "glass")
    r = numeracy_score([("glass", 3)], [_det("wine glass", 0.9, (0, 0, 10, 10))], (512, 512))
    assert r.detected == (1,) and r.score == pytest.approx(0.5)


# ---------------------------------------------------------------- noun phrases and BLIP questions


def test_noun_phrases_from_the_spacy_table():
    p = P("a green bench and a blue bowl")
    assert p.source.startswith("table:") and noun_phrases(p) == ["a green bench", "a blue bowl"]
    complex_p = P("The red hat was on top of the brown coat rack.")
    assert complex_p.noun_chunks == ("The red hat", "top", "the brown coat rack")
    assert noun_phrases(complex_p) == ["The red hat", "the brown coat rack"]  # 'top' excluded officially
    assert table_producer()["pipeline_version"] == "3.8.0"


def test_noun_phrase_limit_and_rules_fallback():
    p = rules_parse("a red cup, a blue cup, a red box, a tall vase, a cat, a dog, a hat, a pen and a mug")
    assert len(p.noun_chunks) == 9 and len(noun_phrases(p)) == 8
    q = P("a purple giraffe and a striped zebra")  # not a val prompt
    assert q.source == "rules" and q.noun_chunks == ("a purple giraffe", "a striped zebra")
    with pytest.raises(MarsEvalError, match="not in the shipped spaCy table"):
        PromptParser("table")("a purple giraffe and a striped zebra")


def test_rules_parser_agreement_with_spacy_is_measured():
    # the fallback is not spaCy; this pins how close it is on the val prompts (see noun_phrases docstring)
    assert agreement_with_table(PromptSet.builtin("color_val").texts) >= 0.80
    assert agreement_with_table(PromptSet.builtin("complex_val").texts) >= 0.60


def test_pre_question_is_the_official_cleaning():
    assert pre_question('A "Red" apple: (big)!?') == "a red apple big?"
    assert pre_question(" ".join(["w"] * 60)) == " ".join(["w"] * 50)


# ---------------------------------------------------------------- complex 3-in-1


def test_complex_kinds_cover_the_val_split():
    kinds = [complex3in1.prompt_kind(t) for t in PromptSet.builtin("complex_val").texts]
    assert (kinds.count("action"), kinds.count("spatial"), kinds.count("spatialaction")) == (212, 58, 30)
    assert complex3in1.prompt_kind("A prompt in no list.") == "unlisted"


def test_complex_combination():
    parts = {"blip": 0.8, "detector": 0.5, "clip": 0.3}
    assert complex3in1.combine("spatial", parts) == pytest.approx((0.8 + 0.5) / 2)
    assert complex3in1.combine("action", parts) == pytest.approx((0.8 + 0.3) / 2)
    assert complex3in1.combine("spatialaction", parts) == pytest.approx(1.6 / 3)
    with pytest.raises(MarsEvalError, match="detector"):
        complex3in1.combine("spatial", {"blip": 1.0})


# ---------------------------------------------------------------- tables


def test_category_mean_is_over_images_and_table_is_x100():
    rows = [ImageScore("color", 0, k, "p", "x", s, {}) for k, s in enumerate([0.2, 0.4])]
    rows += [ImageScore("color", 1, 0, "q", "y", 0.9, {})]
    rows += [ImageScore("spatial", 0, 0, "r", "z", 0.5, {})]
    assert category_score(rows[:3]) == pytest.approx(1.5 / 3)  # not the mean of prompt means (0.6)
    assert table_x100(rows) == {"color": pytest.approx(50.0), "spatial": pytest.approx(50.0)}
    assert list(table_x100(rows[::-1])) == ["color", "spatial"]
    assert math.isclose(ImageScore("color", 0, 0, "p", "x", 0.25, {"a": 1}).as_row()["score"], 0.25)


# ---------------------------------------------------------------- 3D spatial


def test_3d_position_rule_and_row_column_order():
    from mars_eval.compbench.depth3d import position_3d

    near = np.zeros((100, 200))  # (H, W): a wide image, so x and y index different things
    near[0:50, 0:100] = 1.0  # top-left quarter is near
    front, back = (0, 0, 100, 50), (50, 0, 150, 50)  # IoU = 50*50 / (2*5000 - 2500) = 1/3
    # object 1 (top-left, mean 1.0) is nearer than object 2 (mean 0.5)
    assert position_3d("in front of", front, back, near) == pytest.approx((1 / 3) / 0.5)
    assert position_3d("behind", front, back, near) == 0.0
    assert position_3d("hidden", back, front, near) == pytest.approx((1 / 3) / 0.5)
    assert position_3d("in front of", front, (0, 5, 100, 55), near) == 1.0  # IoU 0.82 > 0.5, mean 0.9 < 1
    assert position_3d("in front of", front, (150, 60, 200, 100), near) == 0.0  # no overlap
    assert position_3d("next to", front, back, near) == 0.0
    # the official read map[x0:x1, y0:y1]: on this map that region would be wrong; ours reads rows as y
    assert near[0:100, 0:50].mean() != near[0:50, 0:100].mean()


def test_3d_score_combination_no_floor():
    from mars_eval.compbench.depth3d import normalise, spatial3d_score

    near = normalise(np.linspace(0, 10, 100 * 100).reshape(100, 100)[::-1].copy())  # top rows nearer
    assert near.max() == 1.0 and near.min() == 0.0 and np.allclose(near * 255, np.round(near * 255))
    prompt = "a dog in front of a desk"
    dets = [Detection("dog", 0.6, (0, 0, 60, 60)), Detection("desk", 0.4, (0, 30, 60, 90))]  # IoU 1/3
    r = spatial3d_score(prompt, "dog", "desk", dets, near)
    assert r.position == pytest.approx((1 / 3) / 0.5)
    assert r.score == pytest.approx(0.25 * 0.6 + 0.25 * 0.4 + 0.5 * r.position)
    one = spatial3d_score(prompt, "dog", "desk", dets[:1], near)
    assert one.score == pytest.approx(0.25 * 0.6)  # kept: 3D has no 0.5 floor
    # substring label match (official 3D): "hot dog" counts for "dog"
    assert spatial3d_score(prompt, "dog", "desk", [Detection("hot dog", 0.5, (0, 0, 5, 5))], near).conf1 == 0.5
