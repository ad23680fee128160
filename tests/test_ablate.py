"""`mars-eval ablate` on the `ci` preset: the grid, its tables, text-skill preservation and resume."""

import json

import pytest

from mars_eval.errors import MarsEvalError
from mars_eval.io import read_jsonl
from mars_eval.recipe.pipeline import Preset
from mars_eval.suites.ablate import (
    NO_VE,
    TABLE1,
    TABLE3,
    TABLE_LANG,
    TABLE_PROMPT_USE,
    VE,
    Ablation,
    Model,
    budget,
)


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


def test_a_dense_caption_preset_adds_the_short_captions_ablation(tmp_path):
    """Stage I of a dense+short preset is ablated against the same Stage I on short captions only; its cache keys
    differ from the preset's own Stage I, and a short-caption preset has no such row."""
    from mars_eval.recipe.pipeline import Artifacts

    ci = Preset.load("ci")
    assert Ablation(Artifacts(ci, tmp_path), tmp_path, budget(ci))._short_captions_arts() is None
    dense = Preset("ci-dense", {**ci.tables, "data": {"captions": "dense+short", "p_dense": 0.5}})
    short = Ablation(Artifacts(dense, tmp_path), tmp_path, budget(dense))._short_captions_arts()
    assert short.preset.tables["data"] == {"captions": "short", "p_dense": 0.5}
    assert short.cache == tmp_path and {k: v for k, v in short.preset.tables.items() if k != "data"} == {
        k: v for k, v in dense.tables.items() if k != "data"}


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
    use = {(r["label"], r["metric"]) for r in rows if r.get("table") == TABLE_PROMPT_USE}
    for label in (f"{VE} (Stage I)", f"{NO_VE} (Stage I)"):  # prompt use, and which words: colours, kinds
        assert {(label, m) for m in ("prompt_gain", "color_word_gain", "kind_word_gain")} <= use
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
