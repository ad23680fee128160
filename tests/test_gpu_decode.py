"""benchmarks/gpu_decode.py cannot be run here (no GPU): it must say so in one line, and its --smoke mode runs the
whole script on the CPU with a tiny model, so a broken script shows up before someone spends GPU time on it."""

import json

import torch

from benchmarks import gpu_decode

torch.set_num_threads(1)


def test_without_cuda_it_fails_with_a_clear_message(monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert gpu_decode.main([]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: benchmarks/gpu_decode.py needs a CUDA GPU") and err.count("\n") == 1


def test_smoke_runs_every_comparison_on_the_cpu(tmp_path):
    out = tmp_path / "r.json"
    assert gpu_decode.main(["--smoke", "--json", str(out)]) == 0
    res = json.loads(out.read_text())["batch2"]
    assert set(res["text"]) >= {"ours", "previous", "hf", "greedy_agreement_ours_hf", "speedup_vs_hf"}
    assert 0.0 <= res["text"]["greedy_agreement_ours_hf"] <= 1.0  # bf16: a near-tie may go either way
    assert set(res["image"]) >= {"ours", "previous", "static_cache_mib", "speedup_vs_previous"}
    assert res["image"]["ours"]["images_per_s"] > 0
