"""Paired comparison: the per-prompt paired t-test against scipy's ttest_rel, pairing rules, and the CLI on a real
scored run (its own shuffled-prompt control)."""

import json

import numpy as np
import pytest
from scipy import stats

from mars_eval.cli.main import main
from mars_eval.errors import MarsEvalError
from mars_eval.report.compare import paired_compare


def _rows(scores, prompts=None, control=False, category="color"):
    """scores[p][i]: image i of prompt p."""
    return [{"category": category, "lang": "en", "prompt_index": p, "image_index": i, "score": float(s),
             "prompt": (prompts or {}).get(p, f"prompt {p}"), **({"control": "shuffled"} if control else {})}
            for p, per in enumerate(scores) for i, s in enumerate(per)]


def test_matches_a_paired_t_test_on_per_prompt_means():
    rng = np.random.default_rng(0)
    a = rng.random((12, 3))
    b = a - 0.2 + rng.normal(0, 0.1, (12, 3))
    (r,) = paired_compare(_rows(a), _rows(b))
    ref = stats.ttest_rel(a.mean(1), b.mean(1))
    ci = ref.confidence_interval(0.95)
    assert r.n_prompts == 12 and r.n_images == 36
    assert r.diff == pytest.approx((a.mean(1) - b.mean(1)).mean())
    assert r.p_value == pytest.approx(ref.pvalue) and r.p_value < 0.01
    assert r.ci == pytest.approx((ci.low, ci.high))


def test_the_same_images_scored_alike_do_not_differ_and_mismatched_prompts_do_not_pair():
    a = [[0.1, 0.5], [0.3, 0.3], [0.9, 0.2]]
    (r,) = paired_compare(_rows(a), _rows(a))
    assert r.diff == 0 and r.p_value == 1.0
    (r,) = paired_compare(_rows(a), _rows(a, prompts={0: "another prompt"}))
    assert r.n_prompts == 2
    with pytest.raises(MarsEvalError, match="share no scored image"):
        paired_compare(_rows(a), _rows(a, category="shape"))


def test_control_mode_pairs_a_run_with_its_own_control_rows():
    a, ctrl = [[0.9], [0.8], [0.95], [0.85]], [[0.1], [0.2], [0.15], [0.05]]
    (r,) = paired_compare(_rows(a) + _rows(ctrl, control=True))
    assert r.mean_a == pytest.approx(0.875) and r.mean_b == pytest.approx(0.125) and r.p_value < 0.001


def test_cli_json_and_missing_scores(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    rows = _rows([[0.9], [0.8], [0.7]]) + _rows([[0.1], [0.3], [0.2]], control=True)
    (run / "scores.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert main(["compare", str(run), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["b"] == "control" and out["results"][0]["significant"] is True
    with pytest.raises(SystemExit) as e:
        main(["compare", str(tmp_path / "nothing")])
    assert e.value.code == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "no per-image scores" in err
