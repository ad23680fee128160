"""Public VQ checkpoint formats: LlamaGen VQ-16 and taming-transformers f16 VQGAN.

The checkpoints here are built from key names and shapes written out from the public model definitions
(LlamaGen `tokenizer/tokenizer_image/vq_model.py` VQModel, taming `taming/modules/diffusionmodules/model.py`
Encoder/Decoder + `taming/models/vqgan.py` VQModel), independently of our module, and a functional forward pass
written from the public `forward` methods (plain F.conv2d / F.group_norm over the raw state dict) checks that
every weight lands where it is used.
"""

from __future__ import annotations

import argparse

import pytest
import torch
import torch.nn.functional as F

from mars_ref.errors import MarsRefError
from mars_ref.vq import VQModel, vq_preset
from mars_ref.vq_formats import load_any_vq, load_llamagen_vq, load_taming_vq

# ------------------------------------------------------------------------------------------------------------
# key names and shapes, following the public constructors


def _conv(p, cin, cout, k):
    return {f"{p}.weight": (cout, cin, k, k), f"{p}.bias": (cout,)}


def _gn(p, c):
    return {f"{p}.weight": (c,), f"{p}.bias": (c,)}


def _res(p, cin, cout):
    d = {**_gn(f"{p}.norm1", cin), **_conv(f"{p}.conv1", cin, cout, 3), **_gn(f"{p}.norm2", cout),
         **_conv(f"{p}.conv2", cout, cout, 3)}
    if cin != cout:
        d.update(_conv(f"{p}.nin_shortcut", cin, cout, 1))
    return d


def _attn(p, c):
    return {**_gn(f"{p}.norm", c), **{k: v for n in ("q", "k", "v", "proj_out") for k, v in _conv(f"{p}.{n}", c, c, 1).items()}}


def llamagen_shapes(ch=128, ch_mult=(1, 1, 2, 2, 4), num_res_blocks=2, z_channels=256, embed_dim=8,
                    codebook_size=16384, show_usage=True):
    """LlamaGen VQModel(ModelArgs(...)).state_dict() key -> shape, as its __init__ builds it."""
    n = len(ch_mult)
    s = {**_conv("encoder.conv_in", 3, ch, 3)}
    in_ch_mult = (1,) + tuple(ch_mult)
    for i in range(n):
        block_in, block_out = ch * in_ch_mult[i], ch * ch_mult[i]
        for j in range(num_res_blocks):
            s.update(_res(f"encoder.conv_blocks.{i}.res.{j}", block_in, block_out))
            block_in = block_out
            if i == n - 1:
                s.update(_attn(f"encoder.conv_blocks.{i}.attn.{j}", block_in))
        if i != n - 1:
            s.update(_conv(f"encoder.conv_blocks.{i}.downsample.conv", block_in, block_in, 3))
    s.update({**_res("encoder.mid.0", block_in, block_in), **_attn("encoder.mid.1", block_in),
              **_res("encoder.mid.2", block_in, block_in)})
    s.update({**_gn("encoder.norm_out", block_in), **_conv("encoder.conv_out", block_in, z_channels, 3)})
    block_in = ch * ch_mult[-1]
    s.update(_conv("decoder.conv_in", z_channels, block_in, 3))
    s.update({**_res("decoder.mid.0", block_in, block_in), **_attn("decoder.mid.1", block_in),
              **_res("decoder.mid.2", block_in, block_in)})
    for k, i in enumerate(reversed(range(n))):  # conv_blocks appended from the lowest resolution
        block_out = ch * ch_mult[i]
        for j in range(num_res_blocks + 1):
            s.update(_res(f"decoder.conv_blocks.{k}.res.{j}", block_in, block_out))
            block_in = block_out
            if i == n - 1:
                s.update(_attn(f"decoder.conv_blocks.{k}.attn.{j}", block_in))
        if i != 0:
            s.update(_conv(f"decoder.conv_blocks.{k}.upsample.conv", block_in, block_in, 3))
    s.update({**_gn("decoder.norm_out", block_in), **_conv("decoder.conv_out", block_in, 3, 3)})
    s["quantize.embedding.weight"] = (codebook_size, embed_dim)
    if show_usage:
        s["quantize.codebook_used"] = (65536,)
    s.update({**_conv("quant_conv", z_channels, embed_dim, 1), **_conv("post_quant_conv", embed_dim, z_channels, 1)})
    return s


def taming_shapes(ch=128, ch_mult=(1, 1, 2, 2, 4), num_res_blocks=2, z_channels=256, embed_dim=256, n_embed=1024,
                  resolution=256, attn_resolutions=(16,)):
    """taming VQModel (VectorQuantizer2, double_z False) state_dict key -> shape, loss modules excluded."""
    n = len(ch_mult)
    s = {**_conv("encoder.conv_in", 3, ch, 3)}
    in_ch_mult = (1,) + tuple(ch_mult)
    curr = resolution
    for i in range(n):
        block_in, block_out = ch * in_ch_mult[i], ch * ch_mult[i]
        for j in range(num_res_blocks):
            s.update(_res(f"encoder.down.{i}.block.{j}", block_in, block_out))
            block_in = block_out
            if curr in attn_resolutions:
                s.update(_attn(f"encoder.down.{i}.attn.{j}", block_in))
        if i != n - 1:
            s.update(_conv(f"encoder.down.{i}.downsample.conv", block_in, block_in, 3))
            curr //= 2
    s.update({**_res("encoder.mid.block_1", block_in, block_in), **_attn("encoder.mid.attn_1", block_in),
              **_res("encoder.mid.block_2", block_in, block_in)})
    s.update({**_gn("encoder.norm_out", block_in), **_conv("encoder.conv_out", block_in, z_channels, 3)})
    block_in = ch * ch_mult[-1]
    curr = resolution // 2 ** (n - 1)
    s.update(_conv("decoder.conv_in", z_channels, block_in, 3))
    s.update({**_res("decoder.mid.block_1", block_in, block_in), **_attn("decoder.mid.attn_1", block_in),
              **_res("decoder.mid.block_2", block_in, block_in)})
    for i in reversed(range(n)):  # self.up.insert(0, up): up[i] is level i
        block_out = ch * ch_mult[i]
        for j in range(num_res_blocks + 1):
            s.update(_res(f"decoder.up.{i}.block.{j}", block_in, block_out))
            block_in = block_out
            if curr in attn_resolutions:
                s.update(_attn(f"decoder.up.{i}.attn.{j}", block_in))
        if i != 0:
            s.update(_conv(f"decoder.up.{i}.upsample.conv", block_in, block_in, 3))
            curr *= 2
    s.update({**_gn("decoder.norm_out", block_in), **_conv("decoder.conv_out", block_in, 3, 3)})
    s["quantize.embedding.weight"] = (n_embed, embed_dim)
    s.update({**_conv("quant_conv", z_channels, embed_dim, 1), **_conv("post_quant_conv", embed_dim, z_channels, 1)})
    return s


def random_state(shapes, seed=0):
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for k, shape in shapes.items():
        if k == "quantize.codebook_used":
            sd[k] = torch.randint(0, 10, shape, generator=g).float()
        elif ".norm" in k and k.endswith(".weight"):
            sd[k] = 1 + 0.1 * torch.randn(shape, generator=g)
        else:
            fan_in = max(1, int(torch.tensor(shape[1:]).prod())) if len(shape) > 1 else 1
            sd[k] = torch.randn(shape, generator=g) / fan_in ** 0.5
    return sd


# ------------------------------------------------------------------------------------------------------------
# a functional forward pass written from the public `forward` methods, over the raw state dict


def _f_conv(sd, p, h, stride=1, pad=None):
    w = sd[f"{p}.weight"]
    return F.conv2d(h, w, sd[f"{p}.bias"], stride=stride, padding=w.shape[-1] // 2 if pad is None else pad)


def _f_gn(sd, p, h):
    return F.group_norm(h, 32, sd[f"{p}.weight"], sd[f"{p}.bias"], eps=1e-6)


def _f_res(sd, p, x):
    h = _f_conv(sd, f"{p}.conv1", F.silu(_f_gn(sd, f"{p}.norm1", x)))
    h = _f_conv(sd, f"{p}.conv2", F.silu(_f_gn(sd, f"{p}.norm2", h)))
    if f"{p}.nin_shortcut.weight" in sd:
        x = _f_conv(sd, f"{p}.nin_shortcut", x)
    return x + h


def _f_attn(sd, p, x):
    h = _f_gn(sd, f"{p}.norm", x)
    q, k, v = (_f_conv(sd, f"{p}.{n}", h) for n in ("q", "k", "v"))
    b, c, hh, ww = q.shape
    w_ = torch.bmm(q.reshape(b, c, hh * ww).permute(0, 2, 1), k.reshape(b, c, hh * ww)) * c ** -0.5
    w_ = F.softmax(w_, dim=2)
    h = torch.bmm(v.reshape(b, c, hh * ww), w_.permute(0, 2, 1)).reshape(b, c, hh, ww)
    return x + _f_conv(sd, f"{p}.proj_out", h)


def _count(sd, prefix):
    n = 0
    while any(k.startswith(prefix.format(n)) for k in sd):
        n += 1
    return n


def public_encode(sd, x, layout, l2_norm):
    """Encoder -> quant_conv -> nearest code, as in the public code. Returns codes (B, h, w)."""
    lv, rs, mid = layout["enc_level"], layout["res"], layout["mid"]
    n = _count(sd, "encoder." + lv + ".")
    h = _f_conv(sd, "encoder.conv_in", x)
    for i in range(n):
        p = f"encoder.{lv.format(i)}"
        for j in range(_count(sd, f"{p}.{rs}.{{}}.")):
            h = _f_res(sd, f"{p}.{rs}.{j}", h)
            if f"{p}.attn.{j}.q.weight" in sd:
                h = _f_attn(sd, f"{p}.attn.{j}", h)
        if f"{p}.downsample.conv.weight" in sd:
            h = _f_conv(sd, f"{p}.downsample.conv", F.pad(h, (0, 1, 0, 1)), stride=2, pad=0)
    h = _f_res(sd, f"encoder.mid.{mid[0]}", h)
    h = _f_attn(sd, f"encoder.mid.{mid[1]}", h)
    h = _f_res(sd, f"encoder.mid.{mid[2]}", h)
    h = _f_conv(sd, "encoder.conv_out", F.silu(_f_gn(sd, "encoder.norm_out", h)))
    z = _f_conv(sd, "quant_conv", h).permute(0, 2, 3, 1)  # (B, h, w, D)
    e = sd["quantize.embedding.weight"]
    if l2_norm:
        z, e = F.normalize(z, dim=-1), F.normalize(e, dim=-1)
    d = (z.reshape(-1, z.shape[-1])[:, None, :].double() - e[None].double()).pow(2).sum(-1)
    return d.argmin(1).view(z.shape[:3])


def public_decode(sd, codes, layout, l2_norm):
    lv, rs, mid = layout["dec_level"], layout["res"], layout["mid"]
    e = sd["quantize.embedding.weight"]
    e = F.normalize(e, dim=-1) if l2_norm else e
    h = _f_conv(sd, "post_quant_conv", e[codes].permute(0, 3, 1, 2))
    h = _f_conv(sd, "decoder.conv_in", h)
    h = _f_res(sd, f"decoder.mid.{mid[0]}", h)
    h = _f_attn(sd, f"decoder.mid.{mid[1]}", h)
    h = _f_res(sd, f"decoder.mid.{mid[2]}", h)
    n = _count(sd, "decoder." + lv + ".")
    for step in range(n):  # execution order: lowest resolution first
        p = f"decoder.{lv.format(layout['dec_index'](step, n))}"
        for j in range(_count(sd, f"{p}.{rs}.{{}}.")):
            h = _f_res(sd, f"{p}.{rs}.{j}", h)
            if f"{p}.attn.{j}.q.weight" in sd:
                h = _f_attn(sd, f"{p}.attn.{j}", h)
        if f"{p}.upsample.conv.weight" in sd:
            h = _f_conv(sd, f"{p}.upsample.conv", F.interpolate(h, scale_factor=2.0, mode="nearest"))
    return _f_conv(sd, "decoder.conv_out", F.silu(_f_gn(sd, "decoder.norm_out", h)))


LLAMAGEN = {"enc_level": "conv_blocks.{}", "dec_level": "conv_blocks.{}", "res": "res", "mid": ("0", "1", "2"),
            "dec_index": lambda step, n: step}
TAMING = {"enc_level": "down.{}", "dec_level": "up.{}", "res": "block", "mid": ("block_1", "attn_1", "block_2"),
          "dec_index": lambda step, n: n - 1 - step}

SMALL = {"ch": 32, "ch_mult": (1, 2), "num_res_blocks": 1, "z_channels": 32}


# ------------------------------------------------------------------------------------------------------------


def test_llamagen_vq16_key_set_matches_ours():
    """Our VQ-16 preset has exactly the public VQ-16 keys and shapes (72M parameters, as LlamaGen reports)."""
    public = llamagen_shapes()
    with torch.device("meta"):
        ours = VQModel(vq_preset("llamagen-vq16"))
    mine = {k: tuple(v.shape) for k, v in ours.state_dict().items()}
    public.pop("quantize.codebook_used")
    assert mine == public
    assert 71e6 < sum(p.numel() for p in ours.parameters()) < 73e6


def test_taming_f16_key_set_matches_ours_after_renaming():
    from mars_ref.vq_formats import taming_to_ours

    public = {taming_to_ours(k, 5): v for k, v in taming_shapes().items()}
    with torch.device("meta"):
        ours = VQModel(vq_preset("taming-f16-1024"))
    assert {k: tuple(v.shape) for k, v in ours.state_dict().items()} == public


def test_llamagen_checkpoint_loads_and_matches_the_public_forward(tmp_path):
    shapes = llamagen_shapes(embed_dim=8, codebook_size=96, **SMALL)
    sd = random_state(shapes)
    path = tmp_path / "vq_ds16_c2i.pt"
    # a training checkpoint as LlamaGen's vq_train.py writes it (the argparse Namespace included)
    torch.save({"model": sd, "optimizer": {"state": {}, "param_groups": []}, "steps": 10,
                "args": argparse.Namespace(vq_model="VQ-16", codebook_size=96)}, path)
    model = load_llamagen_vq(path)
    cfg = model.cfg
    assert (cfg.ch, cfg.ch_mult, cfg.num_res_blocks, cfg.z_channels) == (32, (1, 2), 1, 32)
    assert (cfg.codebook_size, cfg.embed_dim, cfg.l2_norm, cfg.attn) == (96, 8, True, True)
    for k, v in model.state_dict().items():  # every weight landed under its own name
        assert torch.equal(v, sd[k]), k
    x = torch.rand(2, 3, 16, 24) * 2 - 1
    with torch.no_grad():
        codes = model.encode(x)
        assert torch.equal(codes, public_encode(sd, x, LLAMAGEN, l2_norm=True))
        torch.testing.assert_close(model.decode_codes(codes), public_decode(sd, codes, LLAMAGEN, True),
                                   rtol=1e-4, atol=1e-4)
    assert torch.equal(load_any_vq(path).encode(x), codes)


def test_llamagen_ema_weights_are_preferred_like_the_public_demo(tmp_path):
    shapes = llamagen_shapes(embed_dim=4, codebook_size=16, show_usage=False, **SMALL)
    model_sd, ema_sd = random_state(shapes, 0), random_state(shapes, 1)
    torch.save({"model": model_sd, "ema": ema_sd}, tmp_path / "ckpt.pt")
    loaded = load_llamagen_vq(tmp_path / "ckpt.pt")
    assert torch.equal(loaded.quantize.embedding.weight, ema_sd["quantize.embedding.weight"])


def test_llamagen_safetensors_and_bare_state_dict(tmp_path):
    from safetensors.torch import save_file

    sd = random_state(llamagen_shapes(embed_dim=4, codebook_size=16, show_usage=False, **SMALL))
    save_file(sd, str(tmp_path / "vq.safetensors"))
    torch.save(sd, tmp_path / "bare.pt")
    a, b = load_llamagen_vq(tmp_path / "vq.safetensors"), load_llamagen_vq(tmp_path / "bare.pt")
    x = torch.rand(1, 3, 8, 8) * 2 - 1
    assert torch.equal(a.encode(x), b.encode(x))


def test_taming_checkpoint_loads_and_matches_the_public_forward(tmp_path):
    # attention at resolution 8 for 16 px inputs with two levels: the lowest level, as in the f16 configs at 256 px
    shapes = taming_shapes(embed_dim=16, n_embed=48, resolution=16, attn_resolutions=(8,), **SMALL)
    sd = random_state(shapes, 3)
    loss = {"loss.discriminator.main.0.weight": torch.randn(8, 3, 4, 4), "loss.logvar": torch.zeros(())}
    torch.save({"state_dict": {**sd, **loss}, "epoch": 3, "global_step": 1000,
                "pytorch-lightning_version": "1.0.8"}, tmp_path / "last.ckpt")
    model = load_taming_vq(tmp_path / "last.ckpt")
    assert model.cfg.l2_norm is False and model.cfg.codebook_size == 48 and model.cfg.embed_dim == 16
    assert torch.equal(model.decoder.conv_blocks[0].res[0].conv1.weight, sd["decoder.up.1.block.0.conv1.weight"])
    assert torch.equal(model.decoder.conv_blocks[0].upsample.conv.weight, sd["decoder.up.1.upsample.conv.weight"])
    x = torch.rand(2, 3, 16, 16) * 2 - 1
    with torch.no_grad():
        codes = model.encode(x)
        assert torch.equal(codes, public_encode(sd, x, TAMING, l2_norm=False))
        torch.testing.assert_close(model.decode_codes(codes), public_decode(sd, codes, TAMING, False),
                                   rtol=1e-4, atol=1e-4)
    assert torch.equal(load_any_vq(tmp_path / "last.ckpt").encode(x), codes)


# ------------------------------------------------------------------------------------------------------------
# strictness


@pytest.fixture
def small_llamagen(tmp_path):
    return random_state(llamagen_shapes(embed_dim=4, codebook_size=16, **SMALL)), tmp_path


def _save_and_load(sd, tmp_path, **kwargs):
    torch.save({"model": sd}, tmp_path / "c.pt")
    return load_llamagen_vq(tmp_path / "c.pt", **kwargs)


def test_missing_key_is_named(small_llamagen):
    sd, tmp = small_llamagen
    del sd["decoder.conv_blocks.0.attn.1.proj_out.bias"]
    with pytest.raises(MarsRefError, match=r"c\.pt: missing key 'decoder\.conv_blocks\.0\.attn\.1\.proj_out\.bias'"):
        _save_and_load(sd, tmp)


def test_unexpected_key_is_named(small_llamagen):
    sd, tmp = small_llamagen
    sd["encoder.extra.weight"] = torch.zeros(1)
    with pytest.raises(MarsRefError, match=r"unexpected key 'encoder\.extra\.weight'"):
        _save_and_load(sd, tmp)


def test_shape_mismatch_is_named(small_llamagen):
    sd, tmp = small_llamagen
    sd["decoder.conv_blocks.1.res.0.conv2.weight"] = torch.zeros(32, 32, 1, 1)
    with pytest.raises(MarsRefError, match=r"shape mismatch for 'decoder\.conv_blocks\.1\.res\.0\.conv2\.weight'"):
        _save_and_load(sd, tmp)


def test_expected_architecture_is_enforced(small_llamagen):
    sd, tmp = small_llamagen
    with pytest.raises(MarsRefError, match="codebook_size=16, expected 16384"):
        _save_and_load(sd, tmp, expected=vq_preset("llamagen-vq16"))


def test_wrong_format_and_unsafe_files(small_llamagen, tmp_path):
    sd, tmp = small_llamagen
    torch.save({"model": sd}, tmp / "llamagen.pt")
    with pytest.raises(MarsRefError, match="LlamaGen checkpoint"):
        load_taming_vq(tmp / "llamagen.pt")
    taming = random_state(taming_shapes(embed_dim=4, n_embed=16, resolution=16, attn_resolutions=(8,), **SMALL))
    torch.save({"state_dict": taming}, tmp / "taming.ckpt")
    with pytest.raises(MarsRefError, match="taming-transformers checkpoint"):
        load_llamagen_vq(tmp / "taming.ckpt")
    # arbitrary Python objects are never unpickled
    torch.save({"model": sd, "hook": print}, tmp / "evil.pt")
    with pytest.raises(MarsRefError, match="safely"):
        load_llamagen_vq(tmp / "evil.pt")
    with pytest.raises(MarsRefError, match="no state_dict found"):
        torch.save({"weights": {}}, tmp / "empty.pt")
        load_llamagen_vq(tmp / "empty.pt")
    with pytest.raises(MarsRefError, match="not found"):
        load_llamagen_vq(tmp / "missing.pt")


def test_taming_attention_above_the_lowest_level_is_refused(tmp_path):
    shapes = taming_shapes(embed_dim=4, n_embed=16, resolution=16, attn_resolutions=(8, 16), **SMALL)
    torch.save({"state_dict": random_state(shapes)}, tmp_path / "t.ckpt")
    with pytest.raises(MarsRefError, match="attention at level 0"):
        load_taming_vq(tmp_path / "t.ckpt")
