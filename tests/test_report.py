"""Reports: CI arithmetic against pinned values, tables from rows, user text escaped in the HTML."""

import json
import math

import numpy as np
import pytest
from PIL import Image
from scipy import stats

from mars_eval.io import atomic_write_jsonl
from mars_eval.report.build import build_report, load_rows, tables
from mars_eval.report.stats import cluster_bootstrap, mean_ci


def test_mean_ci_pinned():
    est = mean_ci([1.0, 2.0, 3.0])
    assert est.mean == 2.0 and est.n == 3
    # t_{0.975, 2} = 4.302652729911275 (statistical tables); sd = 1
    assert math.isclose(est.half_width, 4.302652729911275 / math.sqrt(3), rel_tol=1e-9)
    one = mean_ci([5.0])
    assert one.mean == 5.0 and math.isnan(one.half_width) and one.fmt() == "5.00"
    assert mean_ci([]).fmt() == "-"


def test_cluster_bootstrap_matches_scipy_on_the_cluster_means():
    rng = np.random.default_rng(3)
    clusters = [list(rng.normal(mu, 1.0, size=4)) for mu in rng.normal(0.0, 2.0, size=60)]  # 60 prompts x 4 images
    est = cluster_bootstrap(clusters, resamples=20000)
    means = np.array([np.mean(c) for c in clusters])
    ref = stats.bootstrap((means,), np.mean, confidence_level=0.95, n_resamples=20000, method="percentile",
                          random_state=np.random.default_rng(7)).confidence_interval
    assert est.mean == pytest.approx(means.mean(), abs=1e-12) and est.n == 60
    assert est.low == pytest.approx(ref.low, abs=0.03) and est.high == pytest.approx(ref.high, abs=0.03)
    # the normal approximation of the same interval: mean ± 1.96 standard errors of the cluster means
    se = means.std(ddof=1) / np.sqrt(60)
    assert (est.high - est.low) / 2 == pytest.approx(1.96 * se, rel=0.06)


def test_cluster_bootstrap_degenerate_cases():
    same = cluster_bootstrap([[0.5, 0.5], [0.25, 0.75], [1.0, 0.0]])  # every prompt mean is 0.5
    assert (same.mean, same.low, same.high) == (0.5, 0.5, 0.5) and same.fmt() == "0.50 [0.50, 0.50]"
    assert math.isnan(cluster_bootstrap([[1.0, 2.0]]).half_width) and cluster_bootstrap([]).fmt() == "-"


def test_cells_with_per_prompt_means_pool_seeds_into_prompt_clusters(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    pp = {0: {"0": 100.0, "1": 0.0, "2": 50.0}, 1: {"0": 50.0, "1": 0.0, "2": 100.0}}  # seed -> prompt -> mean
    rows = [{"kind": "metric", "table": "T", "label": "m", "metric": "Color", "value": sum(p.values()) / 3, "seed": s,
             "per_prompt": p} for s, p in pp.items()]
    rows += [{"kind": "metric", "table": "T", "label": "m", "metric": "Shape", "value": v, "seed": s}
             for s, v in enumerate([1.0, 3.0])]
    atomic_write_jsonl(run / "results.jsonl", rows)
    (t,) = tables(load_rows([run]))
    color, shape = t.cells[("m", "Color")], t.cells[("m", "Shape")]
    assert color.n == 3 and color.mean == pytest.approx(50.0)  # prompt means over seeds: 75, 0, 75
    assert 0.0 <= color.low < 50.0 < color.high <= 75.0
    assert shape.n == 2 and shape.low is None  # no per-prompt means: Student t over seeds
    md = t.markdown()
    assert "50.00 [" in md and "2.00 ± " in md and "bootstrap over prompts" in md and "Student t" in md


def test_a_bad_per_prompt_field_is_a_one_line_error(tmp_path):
    from mars_eval.errors import MarsEvalError

    run = tmp_path / "run"
    run.mkdir()
    atomic_write_jsonl(run / "results.jsonl", [{"kind": "metric", "metric": "m", "value": 1.0,
                                               "per_prompt": {"0": "high"}}])
    with pytest.raises(MarsEvalError, match="per_prompt"):
        load_rows([run])


def _run(tmp_path):
    run = tmp_path / "run"
    (run / "imgs").mkdir(parents=True)
    evil = "<script>alert('x')</script> a red ball"
    Image.new("RGB", (8, 8), (255, 0, 0)).save(run / "imgs" / "00000_000.png")
    atomic_write_jsonl(run / "imgs" / "manifest.jsonl", [{"file": "00000_000.png", "prompt": evil}])
    atomic_write_jsonl(run / "imgs" / "scores.jsonl", [{"file": "00000_000.png", "score": 0.75}])
    atomic_write_jsonl(run / "diag.jsonl", [{"step": s, "loss": 3.0 / (s + 1), "grad_norm/text": 1.0,
                                             "grad_norm/vision": 2.0} for s in range(5)])
    rows = [{"kind": "metric", "table": "Table 3", "label": "w/ VE", "metric": "fid", "value": v, "seed": s}
            for s, v in enumerate([10.0, 12.0, 14.0])]
    rows += [{"kind": "metric", "table": "Table 3", "label": "<b>w/o VE</b>", "metric": "fid", "value": 20.0, "seed": 0}]
    rows += [{"kind": "diagnostics", "label": "w/ VE", "path": "diag.jsonl"},
             {"kind": "samples", "label": "grid", "images_dir": "imgs"}]
    atomic_write_jsonl(run / "results.jsonl", rows)
    return run, evil


def test_tables_aggregate_over_seeds(tmp_path):
    run, _ = _run(tmp_path)
    (t,) = tables(load_rows([run]))
    assert t.labels == ["w/ VE", "<b>w/o VE</b>"] and t.metrics == ["fid"]
    assert t.cells[("w/ VE", "fid")].mean == 12.0 and t.cells[("w/ VE", "fid")].n == 3
    assert "12.00 ± " in t.markdown()


def test_html_escapes_user_text(tmp_path):
    run, evil = _run(tmp_path)
    info = build_report([run], tmp_path / "out")
    page = (tmp_path / "out" / "report.html").read_text()
    assert "<script>" not in page and "&lt;script&gt;" in page
    assert "<b>w/o VE</b>" not in page
    assert info["charts"] >= 2 and info["grids"] == 1
    assert json.dumps(info)


def test_markdown_shows_each_sample_grid_as_a_png(tmp_path):
    run, _ = _run(tmp_path)
    build_report([run], tmp_path / "out")
    assert "![grid](grid_00.png)" in (tmp_path / "out" / "report.md").read_text()
    with Image.open(tmp_path / "out" / "grid_00.png") as im:
        px = list(im.convert("RGB").getdata())
    assert sum(p == (255, 0, 0) for p in px) > 1000  # the 8x8 red sample, drawn large with nearest upscaling


def test_history_flags_regressions(tmp_path):
    from mars_eval.report.history import history_report, regressions
    from mars_eval.results import append_rows

    assert regressions([10.0, 9.0, 9.2, 12.0], "fid", 0.05) == [3]  # 12 > 9 * 1.05; 9.2 within 5 %
    assert regressions([0.5, 0.6, 0.4], "clip", 0.05) == [2]
    h = tmp_path / "history.jsonl"
    for i, v in enumerate([10.0, 9.0, 12.0]):
        append_rows(h, [{"commit": f"c{i}", "time": f"2026-01-0{i + 1}", "metric": "world_fid", "value": v}])
    info = history_report(h, tmp_path / "hist")
    assert info["regressions"] == {"world_fid": ["c2"]}
    assert (tmp_path / "hist" / "history_00.png").stat().st_size > 1000


def test_report_cli_errors_are_one_line(tmp_path, capsys):
    import pytest

    from mars_eval.cli.main import main

    with pytest.raises(SystemExit) as e:
        main(["report", str(tmp_path / "missing"), "--out", str(tmp_path / "o")])
    assert e.value.code == 1
    assert capsys.readouterr().err.count("\n") == 1
    assert not (tmp_path / "o").exists()
