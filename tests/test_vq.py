"""VQ tokenizer model: config validation, shapes, quantiser maths, straight-through gradients, save/load."""

from __future__ import annotations

import json
import math

import pytest
import torch

from mars_ref.errors import MarsRefError
from mars_ref.vq import VQ_PRESETS, VQConfig, VQModel, code_stats, vq_preset
from mars_ref.vq_formats import load_vq, save_vq

TINY = vq_preset("tiny")  # f2, 64 codes


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return VQModel(TINY).eval()


def test_presets_are_valid_and_have_the_documented_factors():
    assert vq_preset("world-f4").downsample_factor == 4
    assert vq_preset("world-f4").token_grid(32, 32) == (8, 8)
    assert vq_preset("world-f4").token_grid(64, 64) == (16, 16)
    paper = vq_preset("mars-f16-8192")
    assert paper.downsample_factor == 16 and paper.codebook_size == 8192 and paper.token_grid(256, 256) == (16, 16)
    for name, cfg in VQ_PRESETS.items():
        assert VQConfig.from_dict(cfg.to_dict()) == cfg, name
    with pytest.raises(MarsRefError, match="unknown VQ preset"):
        vq_preset("nope")


@pytest.mark.parametrize("bad, match", [
    ({"codebook_size": 1}, "codebook_size"),
    ({"ch_mult": ()}, "ch_mult"),
    ({"ch_mult": (1, 0)}, "ch_mult"),
    ({"ch": 24, "norm_groups": 32}, "norm_groups"),
    ({"embed_dim": 0}, "embed_dim"),
    ({"dropout": 1.5}, "dropout"),
    ({"num_res_blocks": True}, "num_res_blocks"),
])
def test_config_validation(bad, match):
    with pytest.raises(MarsRefError, match=match):
        VQConfig(**{**TINY.to_dict(), **bad})


def test_config_from_dict_rejects_unknown_keys():
    with pytest.raises(MarsRefError, match="unknown VQConfig keys"):
        VQConfig.from_dict({**TINY.to_dict(), "codebook": 3})


@pytest.mark.parametrize("hw", [(16, 16), (8, 24), (24, 8)])
def test_round_trip_shapes_including_non_square(model, hw):
    H, W = hw
    x = torch.rand(3, 3, H, W) * 2 - 1
    with torch.no_grad():
        codes = model.encode(x)
        assert codes.shape == (3, H // 2, W // 2) and codes.dtype == torch.int64
        assert int(codes.min()) >= 0 and int(codes.max()) < TINY.codebook_size
        y = model.decode_codes(codes)
        assert y.shape == x.shape and torch.isfinite(y).all()
        out = model(x)
    assert torch.equal(out.codes, codes)
    torch.testing.assert_close(out.recon, y)  # forward == decode(encode(x)) at inference


def test_bad_image_sizes_and_codes(model):
    with pytest.raises(MarsRefError, match="multiple of the VQ factor f=2"):
        model.encode(torch.zeros(1, 3, 15, 16))
    with pytest.raises(MarsRefError, match="shape"):
        model.encode(torch.zeros(1, 1, 16, 16))
    with pytest.raises(MarsRefError, match="out of range"):
        model.decode_codes(torch.full((1, 2, 2), TINY.codebook_size))
    with pytest.raises(MarsRefError, match=r"\(B, h, w\)"):
        model.decode_codes(torch.zeros(4, dtype=torch.long))


def test_quantizer_picks_the_nearest_code_by_brute_force(model):
    q = model.quantize
    z = torch.randn(2, TINY.embed_dim, 3, 5)
    out = q(z)
    zn = torch.nn.functional.normalize(z.permute(0, 2, 3, 1).reshape(-1, TINY.embed_dim), dim=-1)
    book = torch.nn.functional.normalize(q.embedding.weight, dim=-1)
    exact = "donot_use_mm_for_euclid_dist"
    expected = torch.cdist(zn.double(), book.double(), compute_mode=exact).argmin(dim=1).view(2, 3, 5)
    assert torch.equal(out.codes, expected)
    assert torch.equal(q.nearest(zn, chunk=7).view(2, 3, 5), expected)  # chunking does not change the answer
    torch.testing.assert_close(out.z_q, book[expected].permute(0, 3, 1, 2))
    # the losses are the squared distances between the normalised latents and their codes
    d2 = (zn - book[expected.reshape(-1)]).pow(2).mean()
    torch.testing.assert_close(out.codebook_loss, d2)
    torch.testing.assert_close(out.commit_loss, TINY.beta * d2)


def test_unnormalised_codebook_matches_plain_euclidean_distance():
    cfg = VQConfig(**{**TINY.to_dict(), "l2_norm": False})
    q = VQModel(cfg).quantize
    with torch.no_grad():
        q.embedding.weight.normal_()
    z = torch.randn(1, cfg.embed_dim, 4, 4)
    flat = z.permute(0, 2, 3, 1).reshape(-1, cfg.embed_dim)
    exact = "donot_use_mm_for_euclid_dist"
    expected = torch.cdist(flat.double(), q.embedding.weight.double(), compute_mode=exact).argmin(1)
    assert torch.equal(q(z).codes.reshape(-1), expected)


def test_straight_through_gradients_reach_the_encoder_and_the_codebook():
    torch.manual_seed(1)
    m = VQModel(TINY).train()
    x = torch.rand(2, 3, 8, 8) * 2 - 1
    out = m(x)
    (out.recon - x).pow(2).mean().backward()
    assert m.encoder.conv_in.weight.grad is not None and m.encoder.conv_in.weight.grad.abs().sum() > 0
    assert m.quantize.embedding.weight.grad is None  # pixels do not move the codes (straight-through) ...
    m.zero_grad()
    out = m(x)
    out.codebook_loss.backward()  # ... the codebook loss does, and only the rows that were picked
    g = m.quantize.embedding.weight.grad
    used = torch.unique(out.codes)
    assert g[used].abs().sum() > 0
    unused = torch.ones(TINY.codebook_size, dtype=torch.bool)
    unused[used] = False
    assert g[unused].abs().sum() == 0


def test_usage_ema_and_dead_code_restart():
    torch.manual_seed(2)
    m = VQModel(TINY).train()
    q = m.quantize
    z = torch.randn(2, TINY.embed_dim, 4, 4)
    out = q(z)
    used = torch.unique(out.codes)
    assert (q.usage_ema[used] > 0).all() and q.usage_ema.sum() == pytest.approx(32 * (1 - q.usage_decay))
    n_dead = int((q.usage_ema < 1e-3).sum())
    g = torch.Generator().manual_seed(0)
    assert q.restart_dead_codes(z, 1e-3, g) == n_dead > 0
    zn = torch.nn.functional.normalize(z.permute(0, 2, 3, 1).reshape(-1, TINY.embed_dim), dim=-1)
    # every restarted code now sits exactly on one of the batch's latents, so it will be picked
    dist = (q.codebook()[:, None, :] - zn[None]).norm(dim=-1).min(dim=1).values  # (K,)
    assert (dist < 1e-5).sum() >= n_dead
    assert q.restart_dead_codes(z, 1e-3, g) == 0  # grace period
    assert "quantize.usage_ema" not in m.state_dict()  # statistics, not weights


def test_code_stats_against_a_hand_computation():
    codes = torch.tensor([[0, 0], [1, 2]])  # p = (1/2, 1/4, 1/4)
    s = code_stats(codes, 8)
    assert s["codebook_usage"] == 3 / 8 and s["codes_used"] == 3
    assert s["perplexity"] == pytest.approx(math.exp(0.5 * math.log(2) + 2 * 0.25 * math.log(4)))
    assert code_stats(torch.arange(16), 16)["perplexity"] == pytest.approx(16)
    with pytest.raises(MarsRefError):
        code_stats(torch.tensor([9]), 8)


def test_save_load_exact(tmp_path, model):
    save_vq(model, tmp_path / "vq")
    assert sorted(p.name for p in (tmp_path / "vq").iterdir()) == ["config.json", "model.safetensors"]
    loaded = load_vq(tmp_path / "vq")
    assert loaded.cfg == TINY
    for k, v in model.state_dict().items():
        assert torch.equal(v, loaded.state_dict()[k]), k
    x = torch.rand(2, 3, 8, 8) * 2 - 1
    with torch.no_grad():
        assert torch.equal(model.encode(x), loaded.encode(x))
        assert torch.equal(model(x).recon, loaded(x).recon)


def test_load_errors_name_the_problem(tmp_path, model):
    d = tmp_path / "vq"
    save_vq(model, d)
    cfg = json.loads((d / "config.json").read_text())
    with pytest.raises(MarsRefError, match="not found"):
        load_vq(tmp_path / "missing")
    (d / "config.json").write_text(json.dumps({**cfg, "codebook_size": 128}))
    with pytest.raises(MarsRefError, match=r"shape mismatch for 'quantize.embedding.weight'"):
        load_vq(d)
    (d / "config.json").write_text(json.dumps({**cfg, "num_res_blocks": 2}))
    with pytest.raises(MarsRefError, match=r"missing key 'encoder.conv_blocks.0.res.1"):
        load_vq(d)
    (d / "config.json").write_text(json.dumps({**cfg, "attn": False}))
    with pytest.raises(MarsRefError, match=r"unexpected key '[a-z_.0-9]*\.attn\.0\."):
        load_vq(d)
    (d / "config.json").write_text(json.dumps({k: v for k, v in cfg.items() if k != "model_type"}))
    with pytest.raises(MarsRefError, match="model_type"):
        load_vq(d)
    (d / "config.json").write_text(json.dumps(cfg))
    (d / "model.safetensors").write_bytes(b"garbage")
    with pytest.raises(MarsRefError, match="model.safetensors"):
        load_vq(d)
