"""KV-cache decoding: ours vs transformers' `generate` on the same Qwen2 weights, and vs our previous loop.

- ours: mars_ref.sampling (a StaticKVCache written in place; logits, filters and sampling over the allowed id range
  only: the text head for text, the codebook rows of the vision head at image positions; CFG rows in one batch).
- previous: benchmarks/previous_decode.py (the cache grown by concatenation, logits over the whole joint vocabulary).
- hf: `Qwen2ForCausalLM.generate` (greedy, its default dynamic cache) on the weights ours loads.

Random weights at the `small` preset's dimensions (speed does not depend on the values); prompts of 16 tokens.
text: 64 greedy tokens at batch 1 and 16 (what `generate` can do too; tokens must agree). image: an 8x8 grid (64
tokens) with CFG 3 and top-k 100 at batch 1 and 16 (2 x batch rows per step), ours vs previous (same draws).
compile: the image decode at batch 16 with compile=True (torch.compile of the steps), measured once per run.
cache_memory: bytes of the KV cache at batch 16 and 64 for the text decode: the static cache's buffers, vs the
most bytes the growing cache holds at once (a step keeps the old cache while concatenating the new one).
gemm_floor: tokens/s if a text step at batch 16 were only its matrix multiplications (same shapes and weights).

Timing: ONE thread (torch.set_num_threads(1); run it as `OMP_NUM_THREADS=1 nice -n 19 python -m benchmarks.run
decode`) on a 2-core machine that other jobs share, so the figures are 1-thread figures measured beside other
load. The contenders run in turn within each of REPEATS rounds, so the load hits all alike; each figure is the best
round, by process CPU time (time.process_time: time this process ran, not time it waited for a core) and by wall
time. Speedups are ratios of the CPU-time figures.
"""

from __future__ import annotations

import tempfile
import time

import torch
import torch.nn.functional as F
import transformers

from benchmarks import previous_decode as previous
from mars_ref.config import MarsConfig
from mars_ref.model import MarsModel
from mars_ref.sampling import generate_image_tokens, generate_text, image_seed, static_cache

PROMPT_LEN, NEW_TOKENS, GRID, REPEATS = 16, 64, (8, 8), 5
IMAGE_KW = dict(cfg_scale=3.0, top_k=100)


def rounds(contenders: dict, repeats: int = REPEATS) -> tuple[dict, dict, dict]:
    """Best CPU and wall seconds per contender over `repeats` rounds (each round runs every contender once) and the
    last result of each."""
    cpu, wall, out = {k: float("inf") for k in contenders}, {k: float("inf") for k in contenders}, {}
    for _ in range(repeats):
        for name, fn in contenders.items():
            c0, w0 = time.process_time(), time.perf_counter()
            out[name] = fn()
            cpu[name] = min(cpu[name], time.process_time() - c0)
            wall[name] = min(wall[name], time.perf_counter() - w0)
    return cpu, wall, out


def figures(cpu: dict, wall: dict, n_tokens: int, base: str, per: str = "tokens") -> dict:
    res = {f"{k}_{per}_per_s": round(n_tokens / cpu[k], 1) for k in cpu}
    res |= {f"{k}_{per}_per_s_wall": round(n_tokens / wall[k], 1) for k in wall}
    res |= {f"speedup_vs_{k}": round(cpu[k] / cpu[base], 2) for k in cpu if k != base}
    return res


def gemm_floor(model: MarsModel, batch: int, repeats: int = 20) -> float:
    """CPU seconds of one text decoding step's matrix multiplications alone (best of `repeats`)."""
    x, best = torch.randn(batch, model.config.hidden_size), float("inf")
    for _ in range(repeats):
        t0 = time.process_time()
        for blk in model.layers:
            a, f = blk.attn_text, blk.mlp_text
            for lin in (a.q_proj, a.k_proj, a.v_proj, a.o_proj, f.gate_proj):
                F.linear(x, lin.weight, lin.bias)
            F.linear(F.linear(x, f.up_proj.weight), f.down_proj.weight)
        F.linear(x, model.text_head_weight)
        best = min(best, time.process_time() - t0)
    return best


def run() -> dict:
    torch.set_num_threads(1)
    torch.manual_seed(0)
    cfg = MarsConfig.from_preset("small")
    hf = transformers.Qwen2ForCausalLM(cfg.to_hf_qwen2()).eval()
    with tempfile.TemporaryDirectory() as d:
        hf.save_pretrained(d)
        ours = MarsModel.from_qwen2(d, cfg.codebook_size).eval()
    result = {"preset": "small", "threads": 1, "prompt_len": PROMPT_LEN, "new_tokens": NEW_TOKENS,
              "image_grid": list(GRID), "image_sampling": IMAGE_KW,
              "llm_params": sum(p.numel() for p in hf.parameters()),
              "timing": "1 thread, beside other load on a shared 2-core machine; best of 5 interleaved rounds, "
                        "tokens/s by process CPU time (and _wall by wall time)"}
    g = torch.Generator().manual_seed(1)
    for batch in (1, 16):
        prompts = torch.randint(0, cfg.text_vocab_size, (batch, PROMPT_LEN), generator=g)
        p = prompts.tolist()

        def hf_gen(p=prompts):
            with torch.inference_mode():
                return hf.generate(p, attention_mask=torch.ones_like(p), max_new_tokens=NEW_TOKENS,
                                   min_new_tokens=NEW_TOKENS, do_sample=False, use_cache=True, pad_token_id=0)

        cpu, wall, out = rounds({"ours": lambda p=p: generate_text(ours, p, NEW_TOKENS),
                                 "previous": lambda p=p: previous.generate_text(ours, p, NEW_TOKENS), "hf": hf_gen})
        agree = (torch.tensor(out["ours"]) == out["hf"][:, PROMPT_LEN:]).float().mean().item()
        result[f"text_batch{batch}"] = {**figures(cpu, wall, batch * NEW_TOKENS, "ours"),
                                        "greedy_token_agreement_with_hf": round(agree, 4),
                                        "same_tokens_as_previous": out["ours"] == out["previous"]}
        seeds = [image_seed(0, i) for i in range(batch)]
        cpu, wall, out = rounds({
            "ours": lambda p=p, s=seeds: generate_image_tokens(ours, p, GRID, seeds=s, **IMAGE_KW),
            "previous": lambda p=p, s=seeds: previous.generate_image_tokens(ours, p, GRID, seeds=s, **IMAGE_KW)})
        n = GRID[0] * GRID[1]
        result[f"image_batch{batch}"] = {**figures(cpu, wall, batch * n, "ours"),
                                         **figures(cpu, wall, batch, "ours", per="images"),
                                         "same_tokens_as_previous": bool(torch.equal(out["ours"], out["previous"]))}
    floor = gemm_floor(ours, 16)
    result["gemm_floor_batch16"] = {"tokens_per_s": round(16 / floor, 1), "note": "a text step's matmuls alone"}

    prompts = torch.randint(0, cfg.text_vocab_size, (16, PROMPT_LEN), generator=g).tolist()
    seeds = [image_seed(0, i) for i in range(16)]
    t0 = time.perf_counter()
    compiled = generate_image_tokens(ours, prompts, GRID, seeds=seeds, compile=True, **IMAGE_KW)
    compile_s = time.perf_counter() - t0
    cpu, wall, out = rounds({
        "eager": lambda: generate_image_tokens(ours, prompts, GRID, seeds=seeds, **IMAGE_KW),
        "compiled": lambda: generate_image_tokens(ours, prompts, GRID, seeds=seeds, compile=True, **IMAGE_KW)}, 3)
    result["compile_image_batch16"] = {**figures(cpu, wall, 16 * GRID[0] * GRID[1], "compiled"),
                                       "first_call_wall_s_incl_compile": round(compile_s, 1),
                                       "same_tokens_as_eager": bool(torch.equal(compiled, out["eager"]))}

    for batch in (16, 64):
        p = torch.randint(0, cfg.text_vocab_size, (batch, PROMPT_LEN), generator=g).tolist()
        stats: dict = {}
        previous.generate_text(ours, p, NEW_TOKENS, stats)
        static = static_cache(ours, batch, PROMPT_LEN + NEW_TOKENS - 1).nbytes  # what generate_text allocates
        result[f"cache_memory_batch{batch}"] = {"static_mib": round(static / 2**20, 2),
                                                "previous_peak_mib": round(stats["peak_cache_bytes"] / 2**20, 2),
                                                "ratio": round(stats["peak_cache_bytes"] / static, 2)}
    return result


if __name__ == "__main__":
    print(run())
