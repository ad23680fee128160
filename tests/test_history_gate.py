"""The CI gate on the committed regression history (benchmarks/history_gate.py) and the history report's split
into deterministic metrics (flagged) and timings (charted, never flagged)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from benchmarks.history_gate import gate, main
from mars_eval.report.history import history_report, is_timing

REPO = Path(__file__).resolve().parents[1]
FIGURES = {"stageI_final_loss_image": 4.0878, "stage0_final_loss": 4.1229, "vq_psnr_held_out": 17.1068,
           "fid_stageI_vs_world_renders": 393.54, "generate_images_per_s": 28.78, "ci_benchmark_wall_s": 100.9}


def rows(commit: str, time: str = "2026-12-01T00:00:00", machine: str = "x86_64-2cpu", **changes: float) -> list[dict]:
    return [{"benchmark": "ci", "commit": commit, "machine": machine, "metric": m, "time": time,
             "value": changes.get(m, v)} for m, v in FIGURES.items()]


def failed(checks) -> list[str]:
    return [c.metric for c in checks if c.failed]


def test_a_deliberately_changed_loss_is_flagged():
    committed = rows("aaa")
    _, checks = gate(committed, rows("bbb", stageI_final_loss_image=4.0878 * 1.05), "bbb", "aaa", committed)
    assert failed(checks) == ["stageI_final_loss_image"]


def test_an_unchanged_loss_passes_and_float_noise_within_the_tolerance_too():
    committed = rows("aaa")
    _, checks = gate(committed, rows("bbb"), "bbb", "aaa", committed)
    assert failed(checks) == []
    _, checks = gate(committed, rows("bbb", stageI_final_loss_image=4.0878 * 1.01), "bbb", "aaa", committed)
    assert failed(checks) == []


def test_a_timing_change_never_fails():
    committed = rows("aaa")
    _, checks = gate(committed, rows("bbb", generate_images_per_s=9.0, ci_benchmark_wall_s=400.0), "bbb", "aaa",
                     committed)
    assert failed(checks) == []
    assert {c.metric for c in checks if c.timing} == {"generate_images_per_s", "ci_benchmark_wall_s"}


def test_a_change_the_commit_recorded_passes_and_is_the_baseline():
    old = rows("ooo", "2026-12-01T00:00:00")
    recorded = rows("aaa", "2026-12-02T00:00:00", stage0_final_loss=5.0)  # measured before committing: parent's sha
    committed = old + recorded
    source, checks = gate(committed, rows("bbb", stage0_final_loss=5.0), "bbb", "aaa", old)
    assert failed(checks) == [] and source.startswith("recorded by this commit")
    # the commit recorded 5.0 but CI measures the old value: the committed row is not this commit's figure
    _, checks = gate(committed, rows("bbb"), "bbb", "aaa", old)
    assert failed(checks) == ["stage0_final_loss"]


def test_an_old_commit_backfilled_later_is_not_the_baseline():
    committed = rows("aaa", "2026-12-02T00:00:00") + [
        {**r, "commit_time": "2026-11-01T00:00:00+00:00"} for r in rows("old", "2026-12-03T00:00:00",
                                                                          stage0_final_loss=3.0)]
    source, checks = gate(committed, rows("bbb"), "bbb", "aaa", committed)
    assert failed(checks) == [] and "commit aaa" in source


def test_the_newest_row_is_the_baseline_when_the_commit_recorded_nothing():
    committed = rows("aaa", "2026-12-01T00:00:00") + rows("ccc", "2026-12-02T00:00:00", stage0_final_loss=5.0)
    source, checks = gate(committed, rows("bbb", stage0_final_loss=5.0), "bbb", "ccc", committed)
    assert failed(checks) == [] and "newest committed row (commit ccc" in source
    _, checks = gate(committed, rows("bbb"), "bbb", "ccc", committed)  # back to the older value
    assert failed(checks) == ["stage0_final_loss"]


def test_rows_stamped_with_head_are_this_commits_record():
    committed = rows("aaa") + rows("bbb1234", "2026-12-02T00:00:00", stage0_final_loss=5.0)
    source, checks = gate(committed, rows("bbb1234", stage0_final_loss=5.0), "bbb1234ffff", "", None)
    assert failed(checks) == [] and source.startswith("recorded by this commit")


def test_only_rows_of_the_same_machine_kind_are_a_baseline():
    committed = rows("aaa") + rows("ccc", "2026-12-02T00:00:00", machine="x86_64-2cpu-avx512", stage0_final_loss=5.0)
    source, checks = gate(committed, rows("bbb", machine="x86_64-2cpu-avx2"), "bbb", "ccc", committed)
    assert failed(checks) == [] and source.startswith("none") and "x86_64-2cpu-avx2" in source
    _, checks = gate(committed, rows("bbb", machine="x86_64-2cpu-avx512"), "bbb", "ccc", committed)
    assert failed(checks) == ["stage0_final_loss"]  # against the avx512 row, not the newer-in-file other kind
    source, checks = gate(committed, rows("bbb", stage0_final_loss=5.0), "bbb", "ccc", committed)
    assert failed(checks) == ["stage0_final_loss"] and "commit aaa" in source


def test_new_and_dropped_metrics_do_not_fail():
    committed = [r for r in rows("aaa") if r["metric"] != "vq_psnr_held_out"]
    current = [r for r in rows("bbb") if r["metric"] != "stage0_final_loss"]
    _, checks = gate(committed, current, "bbb", "aaa", committed)
    assert failed(checks) == []


def _git(repo: Path, *args: str) -> str:
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@t"}
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True,
                          env=env).stdout.strip()


def _write(path: Path, rs: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, sort_keys=True) + "\n" for r in rs), encoding="utf-8")
    return path


LOSS = FIGURES["stageI_final_loss_image"]


@pytest.mark.parametrize("measured, recorded, code, baseline", [
    (LOSS, None, 0, "newest committed row (commit aaa"),
    (LOSS * 1.05, None, 1, "newest committed row (commit aaa"),
    (LOSS * 1.05, LOSS * 1.05, 0, "recorded by this commit"),  # the commit recorded its new figure
    (LOSS, LOSS * 1.05, 1, "recorded by this commit"),  # ... but CI does not reproduce it
])
def test_main_in_a_clone_compares_with_the_committed_file_and_leaves_it_alone(tmp_path, capsys, measured,
                                                                             recorded, code, baseline):
    repo = tmp_path / "repo"
    _git(tmp_path, "init", "-q", str(repo))
    committed = _write(repo / "reports" / "history.jsonl", rows("aaa"))
    _git(repo, "add", "reports/history.jsonl")
    _git(repo, "commit", "-q", "-m", "record")
    (repo / "code.py").write_text("x = 1\n")
    if recorded is not None:  # measured on the working tree before committing: stamped with the parent's sha
        parent = _git(repo, "rev-parse", "--short=12", "HEAD")
        _write(committed, rows("aaa") + rows(parent, "2026-12-02T00:00:00", stageI_final_loss_image=recorded))
    _git(repo, "add", "code.py", "reports/history.jsonl")
    _git(repo, "commit", "-q", "-m", "a change")
    before = committed.read_bytes()
    current = _write(tmp_path / "tmp" / "history.jsonl", _read(committed)
                     + rows(_git(repo, "rev-parse", "--short=12", "HEAD"), "2026-12-03T00:00:00",
                            stageI_final_loss_image=measured))
    assert main(["--committed", str(committed), "--current", str(current)]) == code
    out = capsys.readouterr().out
    assert baseline in out and "timing, not gated" in out
    assert ("MOVED beyond 2%" in out) == (code == 1)
    assert committed.read_bytes() == before


def _read(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines()]


def test_ci_run_appends_to_a_temporary_copy_and_gates():
    text = (REPO / ".ci" / "run").read_text()
    steps = ["bash scripts/install.sh", ".venv/bin/nox -s tests", '.venv/bin/nox -s history -- --history "$tmp/',
             ".venv/bin/python -m benchmarks.history_gate --committed reports/history.jsonl"]
    assert all(s in text for s in steps) and [text.index(s) for s in steps] == sorted(text.index(s) for s in steps)


def test_history_report_flags_deterministic_moves_and_never_timings(tmp_path):
    h = _write(tmp_path / "h.jsonl", rows("a", "2026-12-01") + rows("b", "2026-12-02", generate_images_per_s=10.0)
               + rows("c", "2026-12-03", stage0_final_loss=5.0))
    info = history_report(h, tmp_path / "out", rel_tol=0.02)
    assert info["moves"] == {"stage0_final_loss": ["c"]} and info["regressions"] == {"stage0_final_loss": ["c"]}
    assert info["timings"] == ["ci_benchmark_wall_s", "generate_images_per_s"]
    assert "| generate_images_per_s | timing (never flagged) |" in (tmp_path / "out" / "history.md").read_text()


def test_history_report_orders_commits_by_commit_time(tmp_path):
    late = [{**r, "commit_time": "2026-11-01T00:00:00+00:00"} for r in rows("old", "2026-12-09", stage0_final_loss=3.0)]
    h = _write(tmp_path / "h.jsonl", rows("a", "2026-12-01") + late)
    history_report(h, tmp_path / "out", rel_tol=0.02)
    md = (tmp_path / "out" / "history.md").read_text()
    assert "| 0 | old | 2026-11-01T00:00:00+00:00 |" in md and "| 1 | a | - |" in md
    assert "| stage0_final_loss | deterministic | 2 | 4.123 | a (+37.4%, worse) |" in md


def test_the_committed_history_splits_into_timings_and_deterministic_metrics():
    path = REPO / "reports" / "history.jsonl"
    if not path.is_file():
        pytest.skip("no committed history")
    metrics = {json.loads(x)["metric"] for x in path.read_text().splitlines() if x.strip()}
    timings = {m for m in metrics if is_timing(m)}
    assert timings == {"world_build_images_per_s", "generate_images_per_s", "ci_benchmark_wall_s"}
    assert {"stageI_final_loss_image", "vq_psnr_held_out", "fid_stageI_vs_world_renders"} <= metrics - timings
