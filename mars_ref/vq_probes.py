"""What a small generator needs from its VQ tokenizer, measured on world renders: low-entropy, local codes that keep
every attribute a prompt can state.

- `constant_codes`: distinct codes of constant-colour images (1 is ideal: a flat region should be one token);
- `flip_rates`: share of codes that change under a +1 grey-level brightness shift and under +-1 pixel noise
  (invisible changes should not reword the image);
- `recolour_locality`: recolour every object of a scene; share of codes that change in patches with no changed
  pixel (should be ~0: a colour word then acts on a small set of tokens) and in the patches that changed;
- `object_fidelity`: mean absolute error on object vs background pixels, and the share of objects whose
  reconstructed mean colour still names the object's colour (nearest world palette colour), per object.

Renders are 32 px like Stage I images; every probe is deterministic given its seed.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import torch

from mars_ref.vq_train import to_model_range, to_uint8
from mars_ref.world import CATEGORIES, render, sample_scene
from mars_ref.world.lexicon import COLOR_RGB, COLORS

SIZE = 32


def _rgb_batch(images: list) -> torch.Tensor:  # PIL images or (H, W, 3) arrays -> (B, 3, H, W) uint8
    return torch.from_numpy(np.stack([np.asarray(i) for i in images])).permute(0, 3, 1, 2).contiguous()


@torch.no_grad()
def _codes(vq, x: torch.Tensor) -> torch.Tensor:  # uint8 (B, 3, H, W) -> (B, h, w)
    return vq.encode(to_model_range(x))


def constant_codes(vq, n: int = 64, seed: int = 0) -> dict:
    """Distinct codes per constant-colour 32 px image (random sRGB colours): mean and max over n images."""
    rng = np.random.default_rng(seed)
    colours = rng.integers(0, 256, size=(n, 3), dtype=np.uint8)
    x = torch.from_numpy(np.broadcast_to(colours[:, :, None, None], (n, 3, SIZE, SIZE)).copy())
    distinct = [int(c.unique().numel()) for c in _codes(vq, x)]
    return {"constant_codes_mean": float(np.mean(distinct)), "constant_codes_max": int(max(distinct))}


def _scenes(n: int, seed: int) -> list:
    rng = np.random.default_rng(seed)
    return [sample_scene(CATEGORIES[i % len(CATEGORIES)], rng) for i in range(n)]


def flip_rates(vq, images: torch.Tensor, seed: int = 0) -> dict:
    """Share of codes changed by +1 grey level and by uniform {-1, 0, +1} pixel noise; images uint8 (B, 3, H, W)."""
    gen = torch.Generator().manual_seed(seed)
    base = _codes(vq, images)
    brighter = (images.int() + 1).clamp(0, 255).to(torch.uint8)
    noisy = (images.int() + torch.randint(-1, 2, images.shape, generator=gen)).clamp(0, 255).to(torch.uint8)
    return {"flip_brightness_+1": float((_codes(vq, brighter) != base).float().mean()),
            "flip_noise_+-1": float((_codes(vq, noisy) != base).float().mean())}


def _recoloured(scene, rng: np.random.Generator):
    """The scene with every object in another palette colour (caption-level groups left as they are)."""
    objs = []
    for o in scene.objects:
        new = COLORS[(COLORS.index(o.color) + int(rng.integers(1, len(COLORS)))) % len(COLORS)]
        objs.append(replace(o, color=new, rgb=COLOR_RGB[new]))
    return replace(scene, objects=tuple(objs))


def recolour_locality(vq, scenes: list, seed: int = 0) -> dict:
    """Share of codes changed by recolouring every object, in untouched patches and in touched ones."""
    rng = np.random.default_rng(seed)
    a = _rgb_batch([render(s, SIZE, SIZE) for s in scenes])
    b = _rgb_batch([render(_recoloured(s, rng), SIZE, SIZE) for s in scenes])
    f = vq.cfg.downsample_factor
    changed = (a != b).any(1).float()  # (B, H, W) pixels the recolouring touched
    touched = torch.nn.functional.max_pool2d(changed[:, None], f)[:, 0] > 0  # (B, h, w)
    flipped = _codes(vq, a) != _codes(vq, b)
    return {"recolour_flip_untouched": float(flipped[~touched].float().mean()) if (~touched).any() else 0.0,
            "recolour_flip_touched": float(flipped[touched].float().mean()) if touched.any() else 0.0}


def _nearest_colour(rgb: np.ndarray) -> str:
    palette = np.array([COLOR_RGB[c] for c in COLORS], dtype=np.float64)
    return COLORS[int(np.argmin(((palette - rgb) ** 2).sum(1)))]


@torch.no_grad()
def object_fidelity(vq, scenes: list) -> dict:
    """Reconstruction error on object vs background pixels and the share of objects whose colour survives.

    An object's pixels are those that change when that object alone is drawn in another colour, minus those of
    objects drawn over it; its colour survives when the nearest palette colour of its mean reconstructed RGB
    equals that of its mean original RGB (lighting and textures shift both the same way)."""
    x = _rgb_batch([render(s, SIZE, SIZE) for s in scenes])
    recon = to_uint8(vq.decode_codes(_codes(vq, x)))
    err = (x.float() - recon.float()).abs().mean(1)  # (B, H, W)
    obj_mask = torch.zeros(err.shape, dtype=torch.bool)
    kept = total = 0
    for i, s in enumerate(scenes):
        masks = []
        for j, o in enumerate(s.objects):
            other = COLORS[(COLORS.index(o.color) + 5) % len(COLORS)]
            objs = list(s.objects)
            objs[j] = replace(o, color=other, rgb=COLOR_RGB[other])
            alt = _rgb_batch([render(replace(s, objects=tuple(objs)), SIZE, SIZE)])[0]
            masks.append((alt != x[i]).any(0))
        for j, m in enumerate(masks):
            own = m & ~torch.stack(masks[j + 1:]).any(0) if j + 1 < len(masks) else m
            obj_mask[i] |= m
            if int(own.sum()) < 4:
                continue
            orig_mean = x[i].float()[:, own].mean(1).numpy()
            rec_mean = recon[i].float()[:, own].mean(1).numpy()
            kept += _nearest_colour(rec_mean) == _nearest_colour(orig_mean)
            total += 1
    return {"mae_object_px": float(err[obj_mask].mean()), "mae_background_px": float(err[~obj_mask].mean()),
            "object_colour_kept": kept / max(total, 1), "objects_probed": total}


def tokenizer_properties(vq, n: int = 140, seed: int = 12345) -> dict:
    """Every probe above on n fresh world scenes (spread over the categories) that no corpus contains."""
    vq.eval()
    scenes = _scenes(n, seed)
    x = _rgb_batch([render(s, SIZE, SIZE) for s in scenes])
    return {**constant_codes(vq, seed=seed), **flip_rates(vq, x, seed=seed),
            **recolour_locality(vq, scenes, seed=seed), **object_fidelity(vq, scenes), "n_scenes": n}
