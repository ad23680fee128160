"""`mars-eval ablate` on the `ci` preset: the grid, its tables, text-skill preservation and resume."""

import json

import pytest

from mars_eval.errors import MarsEvalError
from mars_eval.io import read_jsonl
from mars_eval.recipe.pipeline import Preset
from mars_eval.suites.ablate import NO_VE, TABLE1, TABLE3, TABLE_LANG, VE, Ablation, Model, budget


def test_budget_overrides_and_validation():
    p = Preset.load("ci")
    assert budget(p)["seeds"] == 2 and budget(p, seeds=3)["seeds"] == 3
    with pytest.raises(MarsEvalError, match="seeds"):
        budget(p, seeds=0)


def test_table3_lists_the_stage_one_expert_model_twice(tmp_path):
    rows = [{"kind": "metric", "table": TABLE3, "label": VE, "metric": "FID", "value": 1.0},
            {"kind": "samples", "label": VE, "images_dir": "x"}]
    m = Model("I-expert-s0", VE, "I", True, 0, tmp_path)
    out = Ablation._table3(m, rows)
    assert [r["label"] for r in out] == [VE, VE, "Stage I"] and out[2]["kind"] == "metric"
    other = Model("I-noexpert-s0", NO_VE, "I", False, 0, tmp_path)
    assert Ablation._table3(other, rows) == rows


@pytest.mark.slow
def test_ablate_ci_preset_end_to_end_and_resume(tmp_path):
    from mars_eval.cli.main import main

    out, cache = tmp_path / "abl", tmp_path / "cache"
    argv = ["ablate", "--preset", "ci", "--out", str(out), "--cache", str(cache), "--json"]
    assert main(argv) == 0
    rows = read_jsonl(out / "results.jsonl")
    tables = {r.get("table") for r in rows if r.get("kind", "metric") == "metric"}
    assert {TABLE1, TABLE3, TABLE_LANG} <= tables
    by = {}
    for r in rows:
        if r.get("table", "").startswith("Text skill"):
            by.setdefault((r["label"], r["metric"]), []).append(r["value"])
    llm = by[("Stage 0 LLM (frozen in MARS)", "translation_nll")][0]
    # SemVIE freezes the text path: the expert model's text predictions are the LLM's, for every seed
    assert by[(f"{VE} (Stage I)", "translation_nll")] == pytest.approx([llm, llm], rel=1e-5)
    # the no-expert ablation trains the shared weights on image tasks: its text predictions moved
    assert all(abs(v - llm) > 1e-3 for v in by[(f"{NO_VE} (Stage I)", "translation_nll")])
    seeds = {r["seed"] for r in rows if r.get("table") == TABLE3}
    assert seeds == {0, 1}
    assert (out / "report" / "report.md").is_file() and (out / "report" / "report.html").is_file()
    assert "95 % CI" in (out / "report" / "report.md").read_text()
    # a second run finds every step done: same results file, nothing recomputed
    before = (out / "results.jsonl").read_bytes()
    assert main(argv) == 0
    assert (out / "results.jsonl").read_bytes() == before
    spec = json.loads((out / "ablate.json").read_text())
    assert spec["budget"]["seeds"] == 2
    # other settings in the same folder are refused
    with pytest.raises(SystemExit) as e:
        main(argv + ["--seeds", "3"])
    assert e.value.code == 1
