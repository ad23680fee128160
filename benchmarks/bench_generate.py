"""`generate` end to end (prompt -> tokens -> VQ decode -> PNG -> manifest): images/s at batch 1 vs 16.

World-scale shapes with random weights (speed does not depend on the values): the `small` SemVIE preset (text
vocabulary 4096, codebook 512), the `world-f4` VQ, 32x32 px images = 8x8 tokens, CFG 3 (so every step runs 2 x
batch rows). Stage III adds a second `small` model that fills a 16x16 grid (64 px) with 8 NKTP passes. One
torch thread per process. `seconds` excludes loading the bundle in the calling process but includes starting
the workers when nproc > 1 (about 10 s on this machine).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch

from mars_eval.bundle import Bundle, BundleInfo
from mars_eval.generate.runner import RunOptions, generate_folder
from mars_eval.prompts import PromptSet
from mars_ref.config import MarsConfig
from mars_ref.model import MarsModel
from mars_ref.text_tokenizer import train_bpe
from mars_ref.vq import VQModel, vq_preset

TEXTS = ["a red cube to the left of a blue sphere", "two green cones and a yellow cylinder",
         "a small purple torus on top of an orange box", "三个绿色的圆锥在一个黄色圆柱的右边"]


def _bundle(root: Path, hires: bool) -> Path:
    torch.manual_seed(0)
    tok_dir = root / "tok"
    if not tok_dir.exists():
        train_bpe(TEXTS * 8, 400, tok_dir, min_frequency=1)
    vq = VQModel(vq_preset("world-f4")).eval()
    cfg = MarsConfig.from_preset("small", codebook_size=vq.cfg.codebook_size)
    model = MarsModel(cfg).eval()
    hi = MarsModel(cfg).eval() if hires else None
    info = BundleInfo(stage="III" if hires else "I", image_px=(32, 32), hires_px=(64, 64) if hires else None,
                      cfg_scale=3.0, top_k=None, nktp_steps=8)
    return Bundle.write(root / ("ckpt3" if hires else "ckpt1"), info, model, vq, tok_dir, hires=hi)


def _prompts(n: int) -> PromptSet:
    text = "\n".join(f"{TEXTS[i % len(TEXTS)]} number {i}" for i in range(n))
    return PromptSet.from_text(text, "bench", "bench")


def run() -> dict:
    torch.set_num_threads(1)
    result = {"model": "small (text vocab 4096, codebook 512)", "vq": "world-f4", "image_px": 32,
              "cfg_scale": 3.0, "threads_per_process": 1}
    configs = [  # (name, hires, images, batch, nproc)
        ("stage1_batch1", False, 16, 1, 1),
        ("stage1_batch16", False, 32, 16, 1),
        ("stage1_batch16_nproc2", False, 64, 16, 2),
        ("stage3_batch1", True, 4, 1, 1),
        ("stage3_batch16", True, 16, 16, 1),
    ]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        ckpts = {h: _bundle(root, h) for h in (False, True)}
        for name, hires, n, bs, nproc in configs:
            s = generate_folder(ckpts[hires], _prompts(n), root / name,
                                run=RunOptions(batch_size=bs, nproc=nproc))
            result[name] = {"images": n, "batch_size": bs, "nproc": nproc, "seconds": s["seconds"],
                            "images_per_s": s["images_per_s"], "px": s["image_px"]}
    result["speedup_batch16_vs_1_stage1"] = round(result["stage1_batch16"]["images_per_s"]
                                                  / result["stage1_batch1"]["images_per_s"], 2)
    result["speedup_batch16_vs_1_stage3"] = round(result["stage3_batch16"]["images_per_s"]
                                                  / result["stage3_batch1"]["images_per_s"], 2)
    return result
