"""The patch-local VQ tokenizer and the tokenizer probes (`mars_ref.vq_probes`).

The probes are checked against tokenizers whose answers are known without the probe: a patch tokenizer (codes
depend on their own patch only, so locality is exact by construction) and a global one (every code depends on the
image mean, so recolouring any object moves codes everywhere).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from mars_ref.errors import MarsRefError
from mars_ref.vq import VQConfig, VQModel, vq_preset
from mars_ref.vq_formats import load_vq, save_vq
from mars_ref.vq_probes import constant_codes, flip_rates, object_fidelity, recolour_locality
from mars_ref.world import CATEGORIES, render, sample_scene

LOCAL = vq_preset("world-f4-local")


@pytest.fixture(scope="module")
def local():
    torch.manual_seed(0)
    return VQModel(LOCAL).eval()


@pytest.fixture(scope="module")
def scenes():
    rng = np.random.default_rng(3)
    return [sample_scene(CATEGORIES[i % len(CATEGORIES)], rng) for i in range(14)]


def test_patch_encoder_code_depends_on_its_own_patch_only(local):
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    y = x.clone()
    y[:, :, 8:12, 20:24] = torch.rand(2, 3, 4, 4) * 2 - 1  # patch (2, 5) only
    zx, zy = local.encode_latents(x), local.encode_latents(y)
    changed = (zx - zy).abs().amax(dim=(0, 1)) > 0  # (8, 8)
    expected = torch.zeros(8, 8, dtype=torch.bool)
    expected[2, 5] = True
    assert torch.equal(changed, expected)


def test_conv_encoder_with_group_norm_is_not_local():
    torch.manual_seed(0)
    m = VQModel(vq_preset("world-f4")).eval()
    x = torch.rand(1, 3, 32, 32) * 2 - 1
    y = x.clone()
    y[:, :, 8:12, 20:24] = -x[:, :, 8:12, 20:24]
    changed = (m.encode_latents(x) - m.encode_latents(y)).abs().amax(dim=(0, 1)) > 1e-6
    assert changed.sum() > 32  # attention + GroupNorm spread one patch's change over most of the grid


def test_local_config_round_trips_and_validates(tmp_path, local):
    assert VQConfig.from_dict(LOCAL.to_dict()) == LOCAL
    save_vq(local, tmp_path / "vq")
    again = load_vq(tmp_path / "vq")
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    assert torch.equal(again.encode(x), local.encode(x))
    with pytest.raises(MarsRefError, match="encoder"):
        dataclasses.replace(LOCAL, encoder="mlp")
    with pytest.raises(MarsRefError, match="norm"):
        dataclasses.replace(LOCAL, norm="batch")


def test_constant_images_are_one_code_with_a_patch_encoder(local):
    r = constant_codes(local, n=16)
    assert r["constant_codes_max"] == 1 and r["constant_codes_mean"] == 1.0


class _MeanVQ:
    """A tokenizer whose every code is the quantised mean brightness of the whole image (maximally non-local)."""

    class cfg:  # noqa: N801 - mimics VQModel.cfg
        downsample_factor = 4

    def encode(self, x):  # (B, 3, H, W) in [-1, 1] -> (B, H/4, W/4)
        level = ((x.mean(dim=(1, 2, 3)) + 1) * 200).long()  # (B,)
        return level[:, None, None].expand(-1, x.shape[2] // 4, x.shape[3] // 4) + torch.arange(
            x.shape[3] // 4)[None, None, :]

    def decode_codes(self, codes):
        return torch.zeros(codes.shape[0], 3, codes.shape[1] * 4, codes.shape[2] * 4)


def test_recolour_locality_separates_local_from_global_codes(local, scenes):
    loc = recolour_locality(local, scenes)
    assert loc["recolour_flip_untouched"] == 0.0  # by construction
    assert loc["recolour_flip_touched"] > 0.3
    glob = recolour_locality(_MeanVQ(), scenes)
    assert glob["recolour_flip_untouched"] > 0.5  # the mean moves, so every code moves


def test_flip_rates_and_fidelity_of_an_exact_codebook():
    """A 'tokenizer' that keeps every pixel: no code flips unless pixels change; reconstruction error 0."""

    class Exact:
        class cfg:  # noqa: N801
            downsample_factor = 1

        def encode(self, x):  # codes = the pixels themselves, (B, H, W) (one channel suffices for flips)
            return ((x + 1) * 127.5).round().long().sum(1) * 1000 + ((x[:, 0] + 1) * 127.5).round().long()

        def decode_codes(self, codes):
            raise AssertionError("not used")

    imgs = torch.full((2, 3, 8, 8), 100, dtype=torch.uint8)
    r = flip_rates(Exact(), imgs)
    assert r["flip_brightness_+1"] == 1.0  # every pixel moved, so every code
    assert 0.4 < r["flip_noise_+-1"] < 1.0  # {-1, 0, +1} on three channels leaves ~1/27 of pixels unchanged


def test_object_fidelity_measures_object_and_background_error(local, scenes):
    r = object_fidelity(local, scenes[:4])
    assert r["objects_probed"] >= 4
    assert 0 <= r["object_colour_kept"] <= 1
    assert r["mae_object_px"] > 0 and r["mae_background_px"] > 0  # an untrained decoder is far from the image


def test_fidelity_of_a_perfect_reconstruction_is_exact(scenes):
    """With decode(encode(x)) = x, every object's colour survives and both errors are 0."""
    store = {}

    class Identity:
        class cfg:  # noqa: N801
            downsample_factor = 1

        def encode(self, x):
            key = len(store)
            store[key] = x
            return torch.full((x.shape[0], 1, 1), key)

        def decode_codes(self, codes):
            return store[int(codes[0, 0, 0])]

    r = object_fidelity(Identity(), scenes[:6])
    assert r["mae_object_px"] < 0.51 and r["mae_background_px"] < 0.51  # uint8 rounding only
    assert r["object_colour_kept"] == 1.0
    assert render(scenes[0], 32, 32).size == (32, 32)
