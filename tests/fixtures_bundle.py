"""A tiny random checkpoint bundle for tests of `generate`, `coco` and `compbench` (no downloads, ~2 s).

    from fixtures_bundle import build_tiny_bundle   # pytest puts tests/ on sys.path (no tests/__init__.py)
    ckpt = build_tiny_bundle(tmp_path / "ckpt", hires=True)

The model is the `tiny` MarsModel preset with a BPE tokenizer trained on a few lines, the VQ the `tiny` preset
(f = 2, 64 codes). The vision path's weights are re-drawn with a larger scale so that image tokens depend on
the prompt and the seed (a freshly initialised vision head gives nearly uniform logits).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch

from mars_eval.bundle import Bundle, BundleInfo
from mars_ref.config import MarsConfig
from mars_ref.model import MarsModel
from mars_ref.text_tokenizer import train_bpe
from mars_ref.vq import VQModel, vq_preset

TOKENIZER_TEXT = [
    "a red cube to the left of a blue sphere",
    "two green cones and a yellow cylinder",
    "一个红色的立方体在蓝色球体的左边",
    "a small purple torus on top of an orange box",
] * 4


def tiny_model(text_vocab_size: int, codebook_size: int, seed: int) -> MarsModel:
    torch.manual_seed(seed)
    cfg = MarsConfig.from_preset("tiny", text_vocab_size=text_vocab_size, codebook_size=codebook_size)
    m = MarsModel(cfg)
    with torch.no_grad():
        m.embed_visual.weight.normal_(0, 0.5)
        m.vision_head.weight.normal_(0, 0.5)
        for b in m.layers:
            b.mlp_vision.up_proj.weight.normal_(0, 0.1)
    return m.eval()


def build_tiny_bundle(path: Path, *, hires: bool = False, seed: int = 0, image_px: tuple[int, int] = (8, 8),
                      cfg_scale: float = 2.0, top_k: int | None = 32, nktp_steps: int = 4) -> Path:
    """Write a complete bundle to `path`: 8x8 px = 4x4 tokens; with hires, 16x16 px = 8x8 tokens by NKTP."""
    path = Path(path)
    with tempfile.TemporaryDirectory() as tmp:
        tok = train_bpe(TOKENIZER_TEXT, 300, Path(tmp) / "tok", min_frequency=1)
        torch.manual_seed(seed + 1)
        vq = VQModel(vq_preset("tiny")).eval()
        with torch.no_grad():  # spread the codes so that different tokens decode to visibly different pixels
            vq.quantize.embedding.weight.normal_(0, 1.0)
        n_codes = vq.cfg.codebook_size
        model = tiny_model(len(tok), n_codes, seed)
        hi = tiny_model(len(tok), n_codes, seed + 2) if hires else None
        info = BundleInfo(stage="III" if hires else "I", image_px=image_px,
                          hires_px=(image_px[0] * 2, image_px[1] * 2) if hires else None,
                          cfg_scale=cfg_scale, temperature=1.0, top_k=top_k, top_p=None,
                          nktp_steps=nktp_steps)
        return Bundle.write(path, info, model, vq, Path(tmp) / "tok", hires=hi)
