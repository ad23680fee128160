"""VQ tokenizer throughput: encode / decode images per second for the world preset at 32 px and 64 px.

Random weights (speed does not depend on the values), batch 32, one CPU thread (this machine is shared), best of
3 runs; fp32 and bf16 autocast (this CPU has AVX-512 bf16). Also one training step (forward + backward + AdamW)
at 32 px, which sets how long `mars-eval train vq` takes.
"""

from __future__ import annotations

import time

import torch

from benchmarks.timing import best_of
from mars_ref.vq import VQModel, vq_preset
from mars_ref.vq_train import VQTrainConfig, train_vq

PRESET, BATCH, REPEATS = "world-f4", 32, 3


def run() -> dict:
    torch.set_num_threads(1)
    torch.manual_seed(0)
    cfg = vq_preset(PRESET)
    model = VQModel(cfg).eval()
    result = {"preset": PRESET, "threads": 1, "batch": BATCH, "codebook_size": cfg.codebook_size,
              "params": sum(p.numel() for p in model.parameters())}
    for size in (32, 64):
        x = torch.rand(BATCH, 3, size, size) * 2 - 1
        for dtype in ("fp32", "bf16"):
            with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == "bf16"):
                codes = model.encode(x)
                enc = best_of(lambda x=x: model.encode(x), REPEATS)[0]
                dec = best_of(lambda codes=codes: model.decode_codes(codes), REPEATS)[0]
            key = f"{size}px_{dtype}"
            result[f"encode_img_per_s_{key}"] = round(BATCH / enc, 1)
            result[f"decode_img_per_s_{key}"] = round(BATCH / dec, 1)
        result[f"tokens_per_image_{size}px"] = int(codes[0].numel())
    images = (torch.rand(256, 3, 32, 32) * 255).to(torch.uint8)
    steps = 10
    t0 = time.perf_counter()
    train_vq(images, cfg, VQTrainConfig(steps=steps, batch_size=BATCH, log_every=0, restart_every=0))
    result["train_img_per_s_32px_fp32"] = round(steps * BATCH / (time.perf_counter() - t0), 1)
    return result
