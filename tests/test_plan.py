"""`train stage --llm --vq --dry-run`: the real-scale plan from a Qwen2 config saved by transformers and a VQ in
LlamaGen's checkpoint layout; parameter groups, tokens per step and ZeRO-3 memory against direct computations."""

import json

import pytest
import torch
from transformers import Qwen2Config, Qwen2ForCausalLM

from mars_eval.cli.main import main
from mars_eval.recipe.plan import training_plan
from mars_ref.config import MarsConfig
from mars_ref.model import MarsModel, is_visual_param
from mars_ref.vq import VQModel, vq_preset
from mars_ref.vq_formats import save_vq


@pytest.fixture(scope="module")
def real(tmp_path_factory):
    root = tmp_path_factory.mktemp("real")
    cfg = Qwen2Config(vocab_size=500, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=300)
    torch.manual_seed(0)
    Qwen2ForCausalLM(cfg).save_pretrained(root / "qwen2")
    vq = VQModel(vq_preset("tiny"))
    save_vq(vq, root / "vq")
    (root / "data").mkdir()
    return root, vq.cfg


def test_plan_counts_match_the_model_and_deepspeeds_formula(real):
    root, vq_cfg = real
    plan = training_plan(root / "qwen2", root / "vq", image_px=32, caption_tokens=40, global_batch=8,
                         gpus_per_node=4, nodes=2)
    m = MarsModel(MarsConfig.from_hf_qwen2(root / "qwen2", vq_cfg.codebook_size))
    named = dict(m.named_parameters())
    assert plan["params_total"] == sum(p.numel() for p in named.values())
    assert plan["params_trainable"] == sum(p.numel() for n, p in named.items() if is_visual_param(n))
    assert plan["params"]["text (frozen)"] == sum(p.numel() for n, p in named.items() if not is_visual_param(n))
    n_img = (32 // vq_cfg.downsample_factor) ** 2
    assert plan["sequence_length"] == 40 + 2 + n_img and plan["tokens_per_step"] == 8 * (42 + n_img)
    largest = max(sum(p.numel() for p in mod.parameters(recurse=False)) for mod in m.modules())
    none = next(r for r in plan["zero3_model_states"] if r["offload"] == "none")
    assert none["per_gpu_gib"] == round((4 * largest + int(18 * plan["params_total"] / 8)) / 2**30, 2)


def test_dry_run_cli_and_its_errors(real, tmp_path, capsys):
    root, _ = real
    args = ["train", "stage", "I", "--llm", str(root / "qwen2"), "--vq", str(root / "vq"), "--px", "16"]
    assert main([*args, "--dry-run", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["params_trainable"] > 0
    (tmp_path / "llama").mkdir()
    (tmp_path / "llama" / "config.json").write_text(json.dumps({"model_type": "llama"}))
    for argv, needle in (([*args], "complete encode folder"),
                         (["train", "stage", "I", "--llm", str(root / "qwen2"), "--dry-run"], "needs both --llm"),
                         ([*args[:4], str(tmp_path / "llama"), *args[5:], "--dry-run"], "expected 'qwen2'"),
                         ([*args, "--dry-run", "--data", str(tmp_path / "none.jsonl")], "manifest not found"),
                         ([*args, "--dry-run", "--caption-tokens", "250"], "exceeds the LLM's 300 positions")):
        with pytest.raises(SystemExit) as e:
            main(argv)
        assert e.value.code == 1
        err = capsys.readouterr().err
        assert err.startswith("error: ") and err.count("\n") == 1 and needle in err, err
