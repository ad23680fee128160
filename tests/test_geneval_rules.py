"""GenEval's per-image rules, metadata and summary (mars_eval/geneval/{rules,metadata,summary}.py) on hand-built
detections, with the expected values worked out by hand from the official evaluate_images.py / summary_scores.py."""

import json
from importlib import resources

import pytest

from mars_eval.errors import MarsEvalError
from mars_eval.geneval.metadata import TASKS, PromptSpec, builtin_metadata, metadata_jsonl, parse_lines
from mars_eval.geneval.rules import Detection, RuleSettings, iou, judge, kept, relative_position
from mars_eval.geneval.summary import ImageResult, summarize


def spec(line: dict) -> PromptSpec:
    return PromptSpec.from_dict(line, "test")


def det(label: str, score: float, box=(0, 0, 10, 10), color: str | None = None) -> Detection:
    return Detection(label, score, tuple(float(v) for v in box), color=color)


# ---- metadata -------------------------------------------------------------------------------------------------
def test_builtin_metadata_round_trips_the_shipped_file():
    specs = builtin_metadata()
    assert len(specs) == 553
    assert [sum(s.tag == t for s in specs) for t in TASKS] == [80, 99, 80, 94, 100, 100]
    raw = resources.files("mars_eval.data").joinpath("geneval/evaluation_metadata.jsonl").read_text("utf-8")
    assert [json.loads(x) for x in metadata_jsonl(specs).splitlines()] == [json.loads(x) for x in raw.splitlines()]
    pos = next(s for s in specs if s.prompt == "a photo of a dog right of a teddy bear")
    assert pos.include[1].position == ("right of", 0) and pos.include[0].cls == "teddy bear"
    count = next(s for s in specs if s.prompt == "a photo of four handbags")
    assert count.include[0].count == 4 and count.exclude[0].count == 5


@pytest.mark.parametrize("bad, message", [
    ({"tag": "shape", "include": [{"class": "cat", "count": 1}], "prompt": "x"}, "unknown GenEval tag 'shape'"),
    ({"tag": "colors", "include": [{"class": "cat", "count": 1, "color": "grey"}], "prompt": "x"}, "colour 'grey'"),
    ({"tag": "counting", "include": [{"class": "cat", "count": 0}], "prompt": "x"}, "integer 'count' >= 1"),
    ({"tag": "position", "include": [{"class": "cat", "count": 1, "position": ["left of", 0]}], "prompt": "x"},
     "earlier clause index"),
    ({"tag": "position", "include": [{"class": "a", "count": 1}, {"class": "b", "count": 1,
                                                                     "position": ["near", 0]}], "prompt": "x"},
     "relation in left of"),
    ({"tag": "single_object", "include": [], "prompt": "x"}, "non-empty list"),
    ({"tag": "single_object", "include": [{"class": "cat", "count": 1}]}, "'prompt' must be"),
])
def test_bad_metadata_is_a_one_line_error(bad, message):
    with pytest.raises(MarsEvalError, match=message) as e:
        parse_lines(json.dumps(bad) + "\n", "m.jsonl")
    assert str(e.value).startswith("m.jsonl:1: ") and "\n" not in str(e.value)


# ---- step 1: thresholds, the per-class cap, de-duplication ---------------------------------------------------
def test_thresholds_are_strict_and_counting_uses_0_9():
    dets = [det("cat", 0.3), det("cat", 0.3001), det("cat", 0.9), det("cat", 0.90001), det("dog", 0.5)]
    assert [d.score for d in kept(dets, "single_object")["cat"]] == [0.90001, 0.9, 0.3001]
    got = kept(dets, "counting")
    assert [d.score for d in got["cat"]] == [0.90001] and "dog" not in got


def test_at_most_16_per_class_most_confident_first():
    dets = [det("cup", 0.4 + 0.01 * i) for i in range(20)]
    got = kept(dets, "two_object")["cup"]
    assert len(got) == 16 and got[0].score == pytest.approx(0.59) and got[-1].score == pytest.approx(0.44)


def test_iou_counts_pixels_inclusively_and_overlap_removal_is_off_by_default():
    # (0,0)-(9,9) and (5,0)-(14,9): 10x10 px each, 5x10 shared -> 50 / 150
    assert iou((0, 0, 9, 9), (5, 0, 14, 9)) == pytest.approx(1 / 3)
    assert iou((0, 0, 9, 9), (20, 20, 29, 29)) == 0.0
    twins = [det("cat", 0.8, (0, 0, 9, 9)), det("cat", 0.7, (5, 0, 14, 9)), det("cat", 0.6, (50, 50, 60, 60))]
    assert len(kept(twins, "single_object")["cat"]) == 3  # official default max_overlap=1: no de-duplication
    dedup = kept(twins, "single_object", RuleSettings(max_overlap=1 / 3))
    assert [d.score for d in dedup["cat"]] == [0.8, 0.6]  # IoU 1/3 >= 1/3 removed
    assert len(kept(twins, "single_object", RuleSettings(max_overlap=0.34))["cat"]) == 3


# ---- relative position ---------------------------------------------------------------------------------------
def test_relative_position_hand_values():
    a = (0, 0, 10, 10)
    assert relative_position(a, (20, 0, 30, 10)) == {"left of"}  # offset -20, shrunk -18, dx = -0.9
    assert relative_position((20, 0, 30, 10), a) == {"right of"}
    assert relative_position(a, (0, 20, 10, 30)) == {"above"}
    assert relative_position((0, 20, 10, 30), a) == {"below"}
    assert relative_position(a, (30, 30, 40, 40)) == {"left of", "above"}  # dx = dy = -28 / 42.43 = -0.66
    assert relative_position(a, a) == frozenset()


def test_relative_position_margin_borderlines():
    a = (0, 0, 10, 10)  # margin 0.1 * (10 + 10) = 2 px per axis
    assert relative_position(a, (2, 0, 12, 10)) == frozenset()  # offset 2 shrinks to 0: no relation
    assert relative_position(a, (4, 0, 14, 10)) == frozenset()  # shrunk 2 / 4 = 0.5, not < -0.5
    assert relative_position(a, (4.1, 0, 14.1, 10)) == {"left of"}  # 2.1 / 4.1 = 0.512
    assert relative_position(a, (4, 0, 14, 10), margin=0.0) == {"left of"}
    # diagonal: offsets (-30, -10): shrunk (-28, -8) / 31.62 = (-0.885, -0.253): left only
    assert relative_position(a, (30, 10, 40, 20)) == {"left of"}


# ---- steps 2-3 for each task -----------------------------------------------------------------------------------
SINGLE = spec({"tag": "single_object", "include": [{"class": "bench", "count": 1}], "prompt": "a photo of a bench"})
TWO = spec({"tag": "two_object", "include": [{"class": "bench", "count": 1}, {"class": "sports ball", "count": 1}],
            "prompt": "a photo of a bench and a sports ball"})
COUNT = spec({"tag": "counting", "include": [{"class": "clock", "count": 2}],
              "exclude": [{"class": "clock", "count": 3}], "prompt": "a photo of two clocks"})
COLOR = spec({"tag": "colors", "include": [{"class": "car", "count": 1, "color": "pink"}],
              "prompt": "a photo of a pink car"})
POS = spec({"tag": "position", "include": [{"class": "teddy bear", "count": 1},
                                           {"class": "dog", "count": 1, "position": ["right of", 0]}],
            "prompt": "a photo of a dog right of a teddy bear"})
ATTR = spec({"tag": "color_attr", "include": [{"class": "bus", "count": 1, "color": "green"},
                                              {"class": "microwave", "count": 1, "color": "purple"}],
             "prompt": "a photo of a green bus and a purple microwave"})


def test_single_and_two_objects():
    assert judge([det("bench", 0.31)], SINGLE).correct
    v = judge([det("bench", 0.3), det("dog", 0.99)], SINGLE)
    assert not v.correct and v.reason == "expected bench>=1, found 0"
    assert judge([det("bench", 0.5), det("sports ball", 0.4)], TWO).correct
    v = judge([det("bench", 0.5), det("bench", 0.9)], TWO)
    assert not v.correct and v.reason == "expected sports ball>=1, found 0"


def test_counting_is_exact_at_the_counting_threshold():
    assert judge([det("clock", 0.95), det("clock", 0.91)], COUNT).correct
    assert judge([det("clock", 0.95), det("clock", 0.91), det("clock", 0.9)], COUNT).correct  # 0.9 not > 0.9
    v = judge([det("clock", 0.95), det("clock", 0.91), det("clock", 0.92)], COUNT)
    assert not v.correct and v.reason == "expected clock<3, found 3"
    v = judge([det("clock", 0.95), det("clock", 0.8)], COUNT)
    assert not v.correct and v.reason == "expected clock>=2, found 1"


def test_colour_is_checked_on_the_most_confident_objects_only():
    assert judge([det("car", 0.9, color="pink")], COLOR).correct
    v = judge([det("car", 0.9, color="red"), det("car", 0.8, color="pink")], COLOR)
    assert not v.correct and v.reason == "expected pink car>=1, found 0 pink; and 1 red"
    # with a classifier (the official CLIP path) the detection's own colour is ignored
    asked = []

    def classify(objs, cls):
        asked.append((cls, [o.score for o in objs]))
        return ["pink"] * len(objs)

    assert judge([det("car", 0.9, color="red"), det("car", 0.8)], COLOR, classify=classify).correct
    assert asked == [("car", [0.9])]
    with pytest.raises(ValueError, match="no colour"):
        judge([det("car", 0.9)], COLOR)


def test_colour_attribution_needs_both_colours():
    good = [det("bus", 0.9, color="green"), det("microwave", 0.5, color="purple")]
    assert judge(good, ATTR).correct
    v = judge([det("bus", 0.9, color="purple"), det("microwave", 0.5, color="green")], ATTR)
    assert not v.correct
    assert v.reason == ("expected green bus>=1, found 0 green; and 1 purple; "
                        "expected purple microwave>=1, found 0 purple; and 1 green")


def test_position_against_its_target_clause():
    bear = det("teddy bear", 0.8, (0, 0, 10, 10))
    assert judge([bear, det("dog", 0.7, (20, 0, 30, 10))], POS).correct
    v = judge([bear, det("dog", 0.7, (4, 0, 14, 10))], POS)  # at the margin: no relation
    assert not v.correct and v.reason == "expected dog right of target, found no relation"
    v = judge([bear, det("dog", 0.7, (0, 20, 10, 30))], POS)
    assert not v.correct and v.reason == "expected dog right of target, found below"
    v = judge([det("dog", 0.7, (20, 0, 30, 10))], POS)  # the target clause did not match
    assert not v.correct and v.reason == "expected teddy bear>=1, found 0; no target for dog to be right of"
    # only the most confident dog is checked (count 1): a second, wrongly placed dog does not matter
    assert judge([bear, det("dog", 0.7, (20, 0, 30, 10)), det("dog", 0.6, (-30, 0, -20, 10))], POS).correct


def test_rule_settings_are_checked():
    with pytest.raises(MarsEvalError, match="threshold"):
        RuleSettings(threshold=1.0)
    with pytest.raises(MarsEvalError, match="max_overlap"):
        RuleSettings(max_overlap=0.0)
    assert RuleSettings().lowest == 0.3 and RuleSettings().threshold_for("counting") == 0.9


# ---- summary ---------------------------------------------------------------------------------------------------
def _res(p: int, i: int, tag: str, ok: bool) -> ImageResult:
    return ImageResult(p, i, tag, f"prompt {p}", f"{p:05d}/samples/{i:04d}.png", ok, "" if ok else "no")


def test_summary_is_the_mean_of_task_means():
    rows = ([_res(0, i, "single_object", True) for i in range(4)]  # 4 / 4
            + [_res(1, i, "counting", i == 0) for i in range(4)] + [_res(2, i, "counting", False) for i in range(4)]
            + [_res(3, 0, "position", True), _res(3, 1, "position", False)])  # 1 / 2
    s = summarize(rows)
    assert [(t.tag, t.correct, t.n) for t in s.tasks] == [("single_object", 4, 4), ("counting", 1, 8),
                                                         ("position", 1, 2)]
    assert s.overall == pytest.approx((1 + 1 / 8 + 1 / 2) / 3)  # not the image mean 6 / 14
    assert s.image_accuracy == pytest.approx(6 / 14)
    assert s.prompt_accuracy == pytest.approx(3 / 4) and s.n_prompts == 4 and s.n_images == 14
    with pytest.raises(MarsEvalError):
        summarize([])
