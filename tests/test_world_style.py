"""World styles: the slots layout puts objects where the caption's order and relation say, keeps every relation
true, and plain backgrounds are one colour; the style is recorded by a build and read back by its consumers."""

import json

import numpy as np
import pytest

from mars_eval.cli.main import main
from mars_ref.errors import MarsRefError
from mars_ref.world import (
    CATEGORIES,
    DEFAULT_STYLE,
    Group,
    Relation,
    WorldStyle,
    build_world,
    realize,
    render,
    sample_scene,
    scene_relations_hold,
    world_style,
)
from mars_ref.world.layout import SLOT_JITTER, slot_centres

SLOTS = WorldStyle("slots", "plain")


def _scenes(category, n, style=SLOTS, seed=0):
    rng = np.random.default_rng([seed, CATEGORIES.index(category)])
    return [sample_scene(category, rng, style=style) for _ in range(n)]


@pytest.mark.parametrize("category", CATEGORIES)
def test_slot_scenes_keep_every_relation(category):
    assert all(scene_relations_hold(s) for s in _scenes(category, 40))


def test_two_objects_sit_in_the_left_and_right_halves_in_caption_order():
    for s in _scenes("color", 60):
        if len(s.objects) != 2:
            continue
        by_group = {o.group: o for o in s.objects}
        assert abs(by_group[0].cx - 0.25) <= SLOT_JITTER + 1e-9 and abs(by_group[1].cx - 0.75) <= SLOT_JITTER + 1e-9
        assert all(abs(o.cy - 0.5) <= SLOT_JITTER + 1e-9 for o in s.objects)


@pytest.mark.parametrize(("rel", "subject_at"), [("left_of", (0.25, 0.5)), ("right_of", (0.75, 0.5)),
                                                 ("above", (0.5, 0.25)), ("below", (0.5, 0.75))])
def test_a_spatial_relation_picks_the_axis_and_the_order(rel, subject_at):
    groups, rels = (Group("ball", color="red"), Group("box", color="blue")), (Relation(0, rel, 1),)
    slots = slot_centres(groups, rels, (1.0, 1.0))
    assert slots[0, 0] == pytest.approx(subject_at)
    assert slots[1, 0] == pytest.approx((1 - subject_at[0], 1 - subject_at[1]))
    s = realize("spatial", groups, rels, np.random.default_rng(3), style=SLOTS)
    subj = next(o for o in s.objects if o.group == 0)
    assert scene_relations_hold(s) and abs(subj.cx - subject_at[0]) <= 0.2 and abs(subj.cy - subject_at[1]) <= 0.2


def test_counts_fill_a_two_row_grid():
    slots = slot_centres((Group("star", count=4), Group("cup", count=2)), (), (1.0, 1.0))
    assert sorted({round(y, 3) for _, y in slots.values()}) == [0.25, 0.75]
    assert len(set(slots.values())) == 6


def test_relations_on_both_axes_have_no_slots():
    groups = (Group("ball"), Group("box"))
    assert slot_centres(groups, (Relation(0, "left_of", 1), Relation(0, "above", 1)), (1.0, 1.0)) is None


def test_plain_backgrounds_are_one_colour_under_the_vignette():
    scenes = _scenes("color", 20)
    assert len({s.background for s in scenes}) == 1
    s = scenes[0]
    bg = np.asarray(render(type(s)(s.category, s.aspect, s.background, s.groups[:1], (), ()), 32, 32), float)
    assert s.background.kind == "plain"
    centre = bg[12:20, 12:20].reshape(-1, 3)
    assert np.ptp(centre, axis=0).max() <= 3  # the vignette's slope only


def test_the_default_style_draws_what_it_always_drew():
    a = _scenes("complex", 5, style=DEFAULT_STYLE, seed=4)
    rng = np.random.default_rng([4, CATEGORIES.index("complex")])
    assert a == [sample_scene("complex", rng) for _ in range(5)]
    assert {s.background.kind for s in _scenes("color", 30, style=DEFAULT_STYLE)} != {"plain"}


def test_bad_styles_are_rejected():
    with pytest.raises(MarsRefError, match="layout"):
        WorldStyle("grid")
    with pytest.raises(MarsRefError, match="backgrounds"):
        WorldStyle.from_table({"n": 3, "backgrounds": "busy"})
    assert WorldStyle.from_table({"n": 3, "seed": 0}) == DEFAULT_STYLE


def test_a_build_records_its_style_and_draws_in_it(tmp_path):
    small = dict(n_stage2=1, n_stage3=1, n_sequences=1, n_text=2, val_size=3, train_size=1)
    build_world(tmp_path / "w", 4, seed=2, style=SLOTS, **small)
    assert world_style(tmp_path / "w") == SLOTS
    rows = [json.loads(x) for x in (tmp_path / "w" / "stage1" / "manifest.jsonl").read_text().splitlines()]
    assert {r["scene"]["background"]["kind"] for r in rows} == {"plain"}
    assert world_style(tmp_path / "nothing") == DEFAULT_STYLE


def test_cli_rejects_a_bad_layout_in_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main(["world", "build", "--out", str(tmp_path / "w"), "--n", "2", "--layout", "grid"])
    assert e.value.code == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "layout" in err
    assert not (tmp_path / "w").exists()


def test_the_vq_can_train_on_the_default_style_world(tmp_path):
    import copy

    from mars_eval.errors import MarsEvalError
    from mars_eval.recipe.pipeline import Artifacts, Preset

    base = Preset.load("ci")
    tables = copy.deepcopy(base.tables)
    tables["world"].update(layout="slots", backgrounds="plain")
    tables["vq"]["images"] = "default-style"
    arts = Artifacts(Preset("ci", tables), tmp_path, progress=False)
    vq = arts.vq_dir()
    default = Artifacts(base, tmp_path, progress=False)  # the same n and seed in the default style, VQ on it
    assert world_style(default.world()) == DEFAULT_STYLE and world_style(arts.world()) == SLOTS
    assert vq == default.vq_dir()  # one cached VQ: trained on the default-style world's images, found again
    tables["vq"]["images"] = "coco"
    with pytest.raises(MarsEvalError, match="images must be one of world, default-style"):
        Artifacts(Preset("ci", tables), tmp_path, progress=False).vq_dir()
