"""Stage I training step on a CUDA GPU at real scale (not run by `benchmarks.run`; needs a GPU).

    python -m benchmarks.gpu_train [--batch 8] [--caption 120] [--grid 16 16] [--steps 10] [--json F]

A Qwen2-0.5B-sized MARS model (gpu_decode.QWEN2_05B: vocabulary 151936, 24 layers, hidden 896; codebook 16384)
built from its config with random weights, text path frozen as in the paper, bf16 autocast with fp32 master
weights and AdamW (betas 0.9 / 0.95, wd 0.1, the paper's recipe), synthetic sequences `caption <boi> codes <eoi>`
(speed does not depend on the values). Reports tokens/s over --steps timed steps after 2 warm-up steps, MFU
against --peak-tflops (default 989: H100/H200 dense bf16) with the usual 6 N T training FLOPs plus attention
(12 L T^2 d per sequence, forward + backward) where only the trainable N needs weight gradients (frozen weights
still cost 4 N T: forward and the input gradients), and peak memory (torch.cuda.max_memory_allocated).
--smoke runs it on the CPU with a tiny model (a check of the script, not a benchmark).
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import torch

from benchmarks.gpu_decode import QWEN2_05B, TINY
from mars_ref.config import MarsConfig
from mars_ref.losses import ntp_loss, ntp_targets
from mars_ref.model import MarsModel


def flops_per_step(model: MarsModel, batch: int, seq: int) -> float:
    """Training FLOPs of one step: 2 N T forward, 2 N T input gradients, 2 N_trainable T weight gradients, and
    attention scores / values (4 T^2 d per layer forward, twice that backward)."""
    n_all = sum(p.numel() for p in model.parameters())
    n_train = sum(p.numel() for p in model.trainable_parameters())
    cfg, tokens = model.config, batch * seq
    attention = 12 * cfg.num_hidden_layers * seq * seq * cfg.hidden_size * batch
    return 4 * n_all * tokens + 2 * n_train * tokens + attention


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--caption", type=int, default=120, help="caption tokens per sequence")
    ap.add_argument("--grid", type=int, nargs=2, default=[16, 16], help="image token grid (256 px at f16)")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--peak-tflops", type=float, default=989.0, help="the GPU's dense bf16 peak, for MFU")
    ap.add_argument("--json", help="also write the results to this file")
    ap.add_argument("--smoke", action="store_true", help="tiny model on the CPU: checks the script, measures nothing")
    args = ap.parse_args(argv)
    if args.smoke:
        config, device = TINY | {"codebook_size": 64}, "cpu"
        args.batch, args.caption, args.grid, args.steps = 2, 5, [2, 2], 2
    elif torch.cuda.is_available():
        config, device = QWEN2_05B, "cuda"
    else:
        print("error: benchmarks/gpu_train.py needs a CUDA GPU and torch.cuda.is_available() is False here "
              "(bench_train.py is the CPU benchmark; --smoke checks this script on the CPU)", file=sys.stderr)
        return 1
    torch.manual_seed(0)
    model = MarsModel(MarsConfig(**config)).to(device)
    model.set_trainable()
    cfg = model.config
    opt = torch.optim.AdamW(model.trainable_parameters(), lr=1e-4, betas=(0.9, 0.95), weight_decay=0.1)
    n_img = args.grid[0] * args.grid[1]
    seq = args.caption + 2 + n_img
    g = torch.Generator().manual_seed(1)
    caption = torch.randint(0, cfg.text_vocab_size, (args.batch, args.caption), generator=g)
    codes = torch.randint(0, cfg.codebook_size, (args.batch, n_img), generator=g) + cfg.codebook_offset
    ids = torch.cat([caption, torch.full((args.batch, 1), cfg.boi_id), codes, torch.full((args.batch, 1), cfg.eoi_id)],
                    dim=1).to(device)  # (B, seq)
    targets, mask = ntp_targets(ids, cfg.pad_id)

    def step() -> float:
        with torch.autocast(device_type=device, dtype=torch.bfloat16):
            logits = model(ids).logits
        loss = ntp_loss(logits, targets, mask, cfg.text_vocab_size).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss.item()

    cuda = device == "cuda"
    for _ in range(2):
        step()
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    for _ in range(args.steps):
        loss = step()
    if cuda:
        torch.cuda.synchronize()
    secs = (time.perf_counter() - t0) / args.steps
    flops = flops_per_step(model, args.batch, seq)
    res = {"device": torch.cuda.get_device_name() if cuda else "cpu (smoke)", "dtype": "bf16 autocast",
           "model": config["name"], "params": sum(p.numel() for p in model.parameters()),
           "params_trainable": sum(p.numel() for p in model.trainable_parameters()), "batch": args.batch,
           "sequence_length": seq, "seconds_per_step": round(secs, 4), "tokens_per_s": round(args.batch * seq / secs, 1),
           "tflops_per_s": round(flops / secs / 1e12, 3),
           "mfu": round(flops / secs / (args.peak_tflops * 1e12), 4) if cuda else None,
           "peak_memory_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2) if cuda else None,
           "last_loss": round(loss, 4)}
    print(json.dumps(res), flush=True)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(res, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
