"""Training throughput and model FLOP utilisation (MFU) of the training engine on a small Qwen2-like transformer.

Runs the engine's toy job (transformers Qwen2ForCausalLM, everything trainable, fixed-length sequences) in bf16
and fp32 with: the single engine in 1 process, the single engine in 2 gloo processes (DDP-style all-reduce), and
DeepSpeed ZeRO-3 in 1 and 2 processes. Every process runs ONE thread: on a small shared machine multi-threaded
OpenMP regions stall whenever one of their threads is descheduled (we saw 10x swings), while one thread per process
measures stably; "2 proc" therefore also means "2 cores". Throughput = tokens per step / median step time.

Model FLOPs per token (PaLM's convention): 6 * N + 12 * L * T * d, where N = parameters of the Linear layers
(attention, MLP and the LM head; the embedding table is a lookup and is left out), L layers, T sequence length,
d hidden size; 2N forward + 4N backward (input and weight gradients) since every parameter trains here, and the
attention score/value matmuls counted over the full T x T square. MFU = model FLOP/s / (nproc x peak), where the
peak is a big square matmul (2048^3) timed in this run on one thread, in the same dtype (best of before/after).
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from pathlib import Path

import torch

from mars_eval.train.config import TrainConfig
from mars_eval.train.diagnostics import read_rows
from mars_eval.train.launch import run_training
from mars_eval.train.toy import toy_job

MODEL = dict(vocab=4096, hidden=256, layers=4, heads=8, kv_heads=4, intermediate=688, n=512, freeze_text=False)
SEQ = 256
STEPS, SKIP = 14, 4  # the first SKIP steps are warm-up and are not timed


def matmul_peak(dtype: torch.dtype, n: int = 2048, reps: int = 5) -> float:
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    a @ b
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best


def flops_per_token() -> tuple[float, int]:
    model = toy_job(**MODEL, fixed_len=SEQ).build_model()
    n_linear = sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear))
    cfg = model.config
    return 6 * n_linear + 12 * cfg.num_hidden_layers * SEQ * cfg.hidden_size, n_linear


def _one(engine: str, nproc: int, dtype: str, out: Path) -> dict:
    cfg = TrainConfig(steps=STEPS, global_batch=8, micro_batch=2, lr=3e-4, dtype=dtype, engine=engine,
                      ckpt_every=0, keep_last_ckpts=1, warmup_ratio=0.0)
    run_training(cfg, *toy_job(**MODEL, fixed_len=SEQ), out, nproc=nproc, progress=False)
    rows = read_rows(out / "train_log.jsonl")[SKIP:]
    step_s = statistics.median(r["step_s"] for r in rows)
    return {"tokens_per_s": rows[0]["tokens"] / step_s, "median_s_per_step": step_s,
            "max_s_per_step": max(r["step_s"] for r in rows), "final_loss": rows[-1]["loss"]}


def _peaks() -> dict[str, float]:
    return {"bf16": matmul_peak(torch.bfloat16), "fp32": matmul_peak(torch.float32)}


def run() -> dict:
    threads, omp = torch.get_num_threads(), os.environ.get("OMP_NUM_THREADS")
    torch.set_num_threads(1)
    os.environ["OMP_NUM_THREADS"] = "1"  # read by the spawned training processes
    try:
        before = _peaks()
        fpt, n_linear = flops_per_token()
        runs = {}
        with tempfile.TemporaryDirectory() as tmp:
            for dtype in ("bf16", "fp32"):
                for engine, nproc in (("single", 1), ("single", 2), ("deepspeed", 1), ("deepspeed", 2)):
                    runs[f"{dtype}/{engine}/{nproc}proc"] = _one(engine, nproc, dtype, Path(tmp) / f"{engine}{nproc}{dtype}")
        after = _peaks()
    finally:
        torch.set_num_threads(threads)
        if omp is None:
            os.environ.pop("OMP_NUM_THREADS", None)
        else:
            os.environ["OMP_NUM_THREADS"] = omp
    peak = {d: max(before[d], after[d]) for d in before}
    for key, r in runs.items():
        dtype, nproc = key.split("/")[0], int(key.split("/")[2][0])
        r["model_gflops"] = r["tokens_per_s"] * fpt / 1e9
        r["mfu"] = r["tokens_per_s"] * fpt / (nproc * peak[dtype])
    return {"model": {**MODEL, "seq_len": SEQ, "linear_params": n_linear, "flops_per_token": fpt},
            "threads_per_process": 1, "steps_timed": STEPS - SKIP, "global_batch_tokens": 8 * SEQ,
            "matmul_peak_gflops_1thread": {d: {"before": before[d] / 1e9, "after": after[d] / 1e9} for d in peak},
            "runs": runs}


if __name__ == "__main__":
    import json

    print(json.dumps(run(), indent=1))
