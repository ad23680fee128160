"""benchmarks/gpu_train.py cannot be run here (no GPU): it says so in one line, its --smoke mode runs the whole
script on the CPU, and its FLOP count is the documented formula."""

import json

import torch

from benchmarks import gpu_train
from mars_ref.config import MarsConfig
from mars_ref.model import MarsModel

torch.set_num_threads(1)


def test_without_cuda_it_fails_with_a_clear_message(monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert gpu_train.main([]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: benchmarks/gpu_train.py needs a CUDA GPU") and err.count("\n") == 1


def test_smoke_trains_on_the_cpu(tmp_path):
    out = tmp_path / "r.json"
    assert gpu_train.main(["--smoke", "--json", str(out)]) == 0
    res = json.loads(out.read_text())
    assert res["sequence_length"] == 5 + 2 + 4 and res["tokens_per_s"] > 0 and 0 < res["params_trainable"] < res["params"]


def test_flops_formula():
    m = MarsModel(MarsConfig(**gpu_train.TINY, codebook_size=64))
    m.set_trainable()
    n, nt = sum(p.numel() for p in m.parameters()), sum(p.numel() for p in m.trainable_parameters())
    L, d = m.config.num_hidden_layers, m.config.hidden_size
    assert gpu_train.flops_per_step(m, 3, 10) == 4 * n * 30 + 2 * nt * 30 + 12 * L * 100 * d * 3
