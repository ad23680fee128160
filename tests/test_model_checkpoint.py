"""Checkpoints: exact save/load round trip, and strict loading whose errors name the offending key or preset."""

import json

import pytest
import torch
import transformers
from safetensors.torch import load_file, save_file

from mars_ref.config import MarsConfig
from mars_ref.errors import MarsRefError
from mars_ref.model import MarsModel

torch.set_num_threads(1)


def _model(**kw):
    torch.manual_seed(0)
    m = MarsModel(MarsConfig.from_preset("tiny", **kw)).eval()
    with torch.no_grad():  # make every tensor distinct from its init so the round trip is meaningful
        for p in m.parameters():
            p.add_(0.01 * torch.randn_like(p))
    return m


@pytest.mark.parametrize("kw", [{}, {"visual_expert": False}, {"tie_word_embeddings": True}])
def test_save_load_round_trip_exact(tmp_path, kw):
    m = _model(**kw)
    m.save(tmp_path / "ckpt")
    back = MarsModel.load(tmp_path / "ckpt", m.config)
    assert back.config == m.config
    sd, sd2 = m.state_dict(), back.state_dict()
    assert sd.keys() == sd2.keys() and all(torch.equal(sd[k], sd2[k]) for k in sd)
    ids = torch.tensor([[1, 2, 3, m.config.boi_id, m.config.codebook_offset + 4]])
    with torch.no_grad():
        assert torch.equal(m(ids).logits, back(ids).logits)
    assert [p.requires_grad for p in back.parameters()] == [p.requires_grad for p in m.parameters()]
    assert not list((tmp_path / "ckpt").glob(".*tmp"))  # atomic writes leave no temporary files


def test_wrong_preset_and_field_mismatch(tmp_path):
    _model().save(tmp_path)
    with pytest.raises(MarsRefError, match="is preset 'tiny', config says 'small'"):
        MarsModel.load(tmp_path, MarsConfig.from_preset("small"))
    with pytest.raises(MarsRefError, match=r"codebook_size=64 \(config says 32\)"):
        MarsModel.load(tmp_path, MarsConfig.from_preset("tiny", codebook_size=32))


def test_wrong_shape_missing_and_unexpected_tensors(tmp_path):
    _model().save(tmp_path)
    path = tmp_path / "model.safetensors"
    good = load_file(path)
    bad = dict(good)
    bad["layers.1.mlp_vision.up_proj.weight"] = torch.zeros(3, 3)
    save_file(bad, path)
    with pytest.raises(MarsRefError, match=r"'layers.1.mlp_vision.up_proj.weight' has shape \(3, 3\), model expects"):
        MarsModel.load(tmp_path)
    bad = dict(good)
    del bad["vision_head.weight"]
    save_file(bad, path)
    with pytest.raises(MarsRefError, match="missing tensor 'vision_head.weight'"):
        MarsModel.load(tmp_path)
    save_file({**good, "extra.weight": torch.zeros(1)}, path)
    with pytest.raises(MarsRefError, match="unexpected tensor 'extra.weight'"):
        MarsModel.load(tmp_path)
    with pytest.raises(MarsRefError, match="no config.json"):
        MarsModel.load(tmp_path / "missing")


def _hf_tiny(tmp_path):
    cfg = transformers.Qwen2Config(vocab_size=50, hidden_size=32, intermediate_size=48, num_hidden_layers=1,
                                   num_attention_heads=4, num_key_value_heads=2)
    transformers.Qwen2ForCausalLM(cfg).save_pretrained(tmp_path)
    return load_file(tmp_path / "model.safetensors")


def test_from_qwen2_strict_errors_use_hf_names(tmp_path):
    good = _hf_tiny(tmp_path)
    path = tmp_path / "model.safetensors"
    bad = dict(good)
    bad["model.layers.0.self_attn.k_proj.bias"] = torch.zeros(7)
    save_file(bad, path)
    with pytest.raises(MarsRefError, match=r"'model.layers.0.self_attn.k_proj.bias' has shape \(7,\)"):
        MarsModel.from_qwen2(tmp_path, 16)
    bad = dict(good)
    del bad["model.norm.weight"]
    save_file(bad, path)
    with pytest.raises(MarsRefError, match="missing tensor 'model.norm.weight'"):
        MarsModel.from_qwen2(tmp_path, 16)
    path.unlink()
    with pytest.raises(MarsRefError, match="no model.safetensors"):
        MarsModel.from_qwen2(tmp_path, 16)


def test_from_qwen2_sharded_index(tmp_path):
    good = _hf_tiny(tmp_path)
    (tmp_path / "model.safetensors").unlink()
    keys = sorted(good)
    half = len(keys) // 2
    shards = {"a.safetensors": keys[:half], "b.safetensors": keys[half:]}
    for name, ks in shards.items():
        save_file({k: good[k] for k in ks}, tmp_path / name)
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps(
        {"weight_map": {k: n for n, ks in shards.items() for k in ks}}))
    m = MarsModel.from_qwen2(tmp_path, 16)
    assert torch.equal(m.layers[0].attn_text.q_proj.weight, good["model.layers.0.self_attn.q_proj.weight"])
