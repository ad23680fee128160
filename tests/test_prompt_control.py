"""The shuffled-prompt control (suites/control.py): the derangement, what it says about prompt-blind and perfect
"models", its resumable scores, its rows in the report and in `ablate`.

The "models" are image folders in T2I-CompBench's naming scored with `compbench --images`: renders of the val
prompts' own ground-truth scenes (what a perfect model draws), and renders of scenes drawn at random from the
same category (a model that ignores its prompt). They are scored by the small world's trained judges
(examples/small-preset/judges, 98-99 % calibration on clean renders), a few seconds in all.
"""

import json
import re
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from mars_eval.compbench.files import official_name
from mars_eval.errors import MarsEvalError
from mars_eval.io import read_jsonl
from mars_eval.judges.world_judges import WorldJudges
from mars_eval.suites import run_compbench
from mars_eval.suites.ablate import TABLE3, VE, Ablation, Model
from mars_eval.suites.compbench import TABLE
from mars_eval.suites.control import CONTROL, control_label, derangement, why_not_derangeable
from mars_ref.world.build import build_world
from mars_ref.world.render import render
from mars_ref.world.scene import Scene

JUDGES = Path(__file__).resolve().parents[1] / "examples" / "small-preset" / "judges"
CATS = ("color", "shape", "texture", "spatial", "non_spatial", "numeracy", "complex")
SIZE = 32  # the judges' calibration size


# ---- the derangement --------------------------------------------------------------------------------------------
def _check(prompts: list[str]) -> list[int]:
    sigma = derangement(prompts)
    assert sorted(sigma) == list(range(len(prompts)))  # a permutation
    assert all(s != i for i, s in enumerate(sigma))  # no fixed point
    assert all(prompts[s] != prompts[i] for i, s in enumerate(sigma))  # identical prompts never paired
    assert derangement(list(prompts)) == sigma  # a function of the prompt list
    return sigma


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from("abcdefg"), min_size=2, max_size=30))
def test_derangement_is_a_fixed_point_free_permutation_that_keeps_identical_prompts_apart(prompts):
    if why_not_derangeable(prompts) is None:
        _check(prompts)
    else:  # possible exactly when no text is more than half of the list
        assert max(prompts.count(t) for t in prompts) * 2 > len(prompts)
        with pytest.raises(MarsEvalError, match="cannot derange"):
            derangement(prompts)


def test_derangement_edge_cases_and_seeding():
    assert _check(["a", "b"]) == [1, 0]
    sigma = _check(["x", "x", "y", "y"])
    assert {(i // 2, s // 2) for i, s in enumerate(sigma)} == {(0, 1), (1, 0)}
    for bad in ([], ["a"], ["a", "a"], ["a", "a", "b"]):
        with pytest.raises(MarsEvalError) as e:
            derangement(bad)
        assert "\n" not in str(e.value)
    distinct = [f"prompt {i}" for i in range(40)]
    sigma = _check(distinct)
    assert sigma != [(i + 1) % 40 for i in range(40)]  # a seeded order, not the neighbour in the file
    assert _check(distinct[::-1]) != [39 - sigma[39 - i] for i in range(40)]  # the seed follows the list


# ---- prompt-blind and perfect "models" --------------------------------------------------------------------------
@pytest.fixture(scope="module")
def world(tmp_path_factory):
    out = tmp_path_factory.mktemp("control") / "world"
    build_world(out, 30, 5, n_stage2=2, n_stage3=6, n_sequences=1, n_text=2, val_size=16, train_size=1)
    return out


def _val(world: Path, cat: str) -> list[dict]:
    return read_jsonl(world / "prompts" / f"{cat}_val.jsonl")


def _folder(root: Path, world: Path, cats, pick, ipp: int = 1) -> Path:
    """root/CAT/{prompt}_{counter}.png with image n of prompt i = render of the val scene pick(cat, i, n)."""
    for cat in cats:
        rows = _val(world, cat)
        (root / cat).mkdir(parents=True)
        for i, row in enumerate(rows):
            for n in range(ipp):
                scene = Scene.from_dict(rows[pick(cat, i, n, len(rows))]["scene"])
                render(scene, SIZE, SIZE).save(root / cat / official_name(row["prompt"], ipp * i + n))
    return root


def _run(world, images, out, **kw):
    kw = {"world": world, "world_judges": JUDGES, "progress": False, "calibration_n": 0, "images_per_prompt": 1, **kw}
    return run_compbench(None, out, images=images, **kw)


@pytest.fixture(scope="module")
def truth(world, tmp_path_factory):
    root = tmp_path_factory.mktemp("truth")
    images = _folder(root / "images", world, CATS, lambda cat, i, n, k: i)
    return _run(world, images, root / "out", label="true renders"), root


def test_true_renders_score_far_above_their_control(world, truth):
    res, root = truth
    ctrl = res["control"]
    assert ctrl["skipped"] == {} and ctrl["scored"] == sum(res["n_images"].values()) == 16 * len(CATS)
    for col, score in res["table_x100"].items():
        low, high = res["ci_x100"][col]
        c_low, c_high = ctrl["ci_x100"][col]
        assert score - ctrl["table_x100"][col] >= 30, col
        assert low > c_high, col  # the intervals are far apart

    # the control is the same scorer with another prompt: recompute it by hand from the judges and the derangement
    judges = WorldJudges.load(JUDGES)
    for cat in ("color", "spatial"):
        rows = _val(world, cat)
        sigma = derangement([r["prompt"] for r in rows])
        images = [Image.open(root / "images" / cat / official_name(r["prompt"], i)).convert("RGB")
                  for i, r in enumerate(rows)]
        direct = [s for s, _ in judges.score_batch(cat, images, [rows[s]["prompt"] for s in sigma])]
        col = {"color": "Color", "spatial": "Spatial"}[cat]
        assert ctrl["table_x100"][col] == pytest.approx(100 * np.mean(direct), rel=1e-5, abs=1e-6)

    results = read_jsonl(root / "out" / "results.jsonl")
    model = [r for r in results if r.get("table") == TABLE and "control" not in r]
    control = [r for r in results if r.get("table") == TABLE and "control" in r]
    assert [r["metric"] for r in control] == [r["metric"] for r in model] and len(model) == len(CATS)
    for m, c in zip(model, control, strict=True):
        assert c == {**m, "label": "true renders · shuffled-prompt control", "value": c["value"], "control": CONTROL,
                     "time": c["time"], "commit": c["commit"], "per_prompt": c["per_prompt"]}
        assert c["value"] == pytest.approx(ctrl["table_x100"][c["metric"]])
        # the per-prompt means the report's clustered interval uses: one per prompt (16 prompts x 1 image here)
        for r in (m, c):
            assert sorted(r["per_prompt"], key=int) == [str(i) for i in range(16)]
            assert np.mean(list(r["per_prompt"].values())) == pytest.approx(r["value"])


def test_a_prompt_blind_model_scores_within_noise_of_its_control(world, tmp_path):
    rng = np.random.default_rng(0)
    picks = {}

    def blind(cat, i, n, k):  # a scene of the category drawn at random, whatever the prompt
        return picks.setdefault((cat, i, n), int(rng.integers(k)))

    images = _folder(tmp_path / "blind", world, ("color", "spatial", "numeracy"), blind, ipp=3)
    res = _run(world, images, tmp_path / "out", images_per_prompt=3, label="blind")
    ctrl = res["control"]
    for col, score in res["table_x100"].items():
        (low, high), (c_low, c_high) = res["ci_x100"][col], ctrl["ci_x100"][col]
        assert abs(score - ctrl["table_x100"][col]) <= (high - low) / 2 + (c_high - c_low) / 2, col
        assert score < 30, col  # and both far below the true renders (test above)

    same = _folder(tmp_path / "same", world, ("shape",), lambda cat, i, n, k: 0)  # one image for every prompt
    res = _run(world, same, tmp_path / "out-same", label="one image")
    assert res["control"]["table_x100"]["Shape"] == pytest.approx(res["table_x100"]["Shape"], abs=1e-9)


# ---- resume, keys, the flag -------------------------------------------------------------------------------------
def test_control_scores_resume_with_their_own_keys_and_can_be_turned_off(world, truth, tmp_path):
    images = truth[1] / "images"
    out = tmp_path / "out"
    kw = {"categories": ["color", "spatial"], "label": "m"}
    off = _run(world, images, out, control=False, **kw)
    assert off["control"] is None and off["scored"] == 32
    assert not [r for r in read_jsonl(out / "results.jsonl") if "control" in r]
    on = _run(world, images, out, **kw)  # the model's scores are reused, only the control is scored
    assert on["scored"] == 0 and on["control"]["scored"] == 32 and on["table_x100"] == off["table_x100"]
    assert on["rows_appended"] == 2  # the two control rows
    scores = read_jsonl(out / "scores.jsonl")
    model = {(r["category"], r["file"]): r for r in scores if "control" not in r}
    control = [r for r in scores if "control" in r]
    assert len(model) == len(control) == 32
    for r in control:
        m = model[(r["category"], r["file"])]
        assert r["key"] != m["key"] and r["prompt"] == m["prompt"] != r["control_prompt"]
        assert r["control"] == CONTROL and r["prompt_index"] != r["control_prompt_index"]
    # a lost chunk of control scores is recomputed whole, to the same values; nothing else is
    kept = [r for r in scores if not ("control" in r and r["category"] == "spatial")]
    (out / "scores.jsonl").write_text("".join(json.dumps(r) + "\n" for r in kept))
    again = _run(world, images, out, **kw)
    assert (again["scored"], again["control"]["scored"], again["rows_appended"]) == (0, 16, 0)
    assert sorted(map(json.dumps, read_jsonl(out / "scores.jsonl"))) == sorted(map(json.dumps, scores))
    assert again["control"] == {**on["control"], "scored": 16}


def test_too_few_prompts_skip_the_control_with_a_reason(world, truth, tmp_path):
    res = _run(world, truth[1] / "images" / "color", tmp_path / "one", categories=["color"], limit=1)
    assert res["control"]["table_x100"] == {} and "at least 2 distinct prompts" in res["control"]["skipped"]["color"]
    assert not [r for r in read_jsonl(tmp_path / "one" / "results.jsonl") if "control" in r]


def test_cli_flag_and_table(world, truth, tmp_path, capsys):
    from mars_eval.cli.main import main

    args = ["compbench", "--images", str(truth[1] / "images"), "--out", str(tmp_path / "cli"), "--world", str(world),
            "--judges", str(JUDGES), "--categories", "color", "--images-per-prompt", "1", "--calibration", "0"]
    assert main(args) == 0
    text = capsys.readouterr().out
    assert "images · shuffled-prompt control" in text
    assert main([*args, "--no-control", "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["control"] is None and res["scored"] == 0


# ---- the report and ablate --------------------------------------------------------------------------------------
def test_report_shows_each_control_as_its_own_row_with_a_ci(world, tmp_path):
    from mars_eval.report.build import build_report

    runs = []
    for seed in (0, 1):  # two seeds of a prompt-blind model: a CI over seeds, as `ablate` reports
        images = _folder(tmp_path / f"m{seed}", world, ("color",),
                         lambda cat, i, n, k, rng=np.random.default_rng(seed): int(rng.integers(k)))
        _run(world, images, tmp_path / f"out{seed}", label="blind", seed=seed)
        runs.append(tmp_path / f"out{seed}")
    build_report(runs, tmp_path / "report")
    md = (tmp_path / "report" / "report.md").read_text()
    lines = [x for x in md.splitlines() if x.startswith("| blind")]
    assert [x.split(" |")[0] for x in lines] == ["| blind", "| blind · shuffled-prompt control"]
    # each row has its interval: the bootstrap over prompts, both seeds' images of a prompt pooled
    assert all(re.search(r"\d \[-?\d+\.\d\d, -?\d+\.\d\d\]", x) for x in lines), lines
    assert "bootstrap over prompts" in md and "shuffled-prompt control rows: the same images" in md
    assert "blind · shuffled-prompt control" in (tmp_path / "report" / "report.html").read_text()


def test_ablate_relabels_control_rows_with_their_suffix(tmp_path):
    row = {"kind": "metric", "table": TABLE3, "label": "ckpt", "metric": "CLIP score", "value": 0.3}
    rows = [{**row, "label": VE}, {**row, "label": control_label(VE), "control": CONTROL, "value": 0.1}]
    out = Ablation._table3(Model("I-expert-s0", VE, "I", True, 0, tmp_path), rows)
    assert [r["label"] for r in out] == [VE, control_label(VE), "Stage I", control_label("Stage I")]
    ev = tmp_path / "evals" / "x"
    ev.mkdir(parents=True)
    (ev / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    got = Ablation(None, tmp_path, {})._imported(ev, "English prompts", table="T")
    assert [r["label"] for r in got] == ["English prompts", "English prompts · shuffled-prompt control"]
    assert [r.get("control") for r in got] == [None, CONTROL] and {r["table"] for r in got} == {"T"}


def test_a_control_row_never_carries_the_models_per_prompt_means():
    from mars_eval.suites.control import control_row

    model = {"table": "T", "label": "m", "metric": "x", "value": 0.9, "per_prompt": {"p": 0.9}}
    assert "per_prompt" not in control_row(model, 0.1)
    row = control_row(model, 0.1, {"p": 0.1})
    assert row["per_prompt"] == {"p": 0.1} and row["value"] == 0.1 and row["control"] == CONTROL
    assert row["label"] != "m" and model["per_prompt"] == {"p": 0.9}
