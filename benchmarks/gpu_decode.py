"""Decoding on a CUDA GPU: bench_decode.py's comparison at scale (not run by `benchmarks.run`; needs a GPU).

    python -m benchmarks.gpu_decode [--batches 64 128 256] [--new-tokens 64] [--grid 16 16] [--compile] [--json F]

A Qwen2-0.5B-sized MARS model (vocabulary 151936, 24 layers, hidden 896, 14 / 2 heads, tied embeddings; codebook
16384) with random weights in bf16 (speed does not depend on the values): transformers' Qwen2ForCausalLM is built
from the config and saved, and MarsModel.from_qwen2 loads the same weights.
- text: greedy decoding of --new-tokens after a 16-token prompt: ours (mars_ref.sampling.generate_text), previous
  (benchmarks/previous_decode.py) and transformers' generate; tokens/s and the greedy agreement with transformers
  (bf16 kernels differ, so agreement below 1 after a near-tie is expected).
- image: an --grid grid with CFG 3 and top-k 1000 (2 x batch rows per step): ours vs previous; tokens/s, images/s.
- memory: torch.cuda.max_memory_allocated during each run above the weights, and the static KV cache's bytes.
--compile adds ours with compile=True (torch.compile of the steps; the first call compiles and is not timed).
Timing: best of --repeats runs after a warm-up, CUDA-synchronised wall time.
--smoke runs the whole script on the CPU with a tiny model (a check of the script, not a benchmark).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time

import torch

from benchmarks import previous_decode as previous
from mars_ref.config import MarsConfig
from mars_ref.model import MarsModel
from mars_ref.sampling import generate_image_tokens, generate_text, image_seed, static_cache

QWEN2_05B = dict(name="qwen2-0.5b-random", text_vocab_size=151936, hidden_size=896, num_hidden_layers=24,
                 num_attention_heads=14, num_key_value_heads=2, intermediate_size=4864, rope_theta=1e6,
                 rms_norm_eps=1e-6, tie_word_embeddings=True, max_position_embeddings=32768, codebook_size=16384)
TINY = dict(name="tiny-random", text_vocab_size=256, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, intermediate_size=128, tie_word_embeddings=True)
PROMPT_LEN, IMAGE_KW = 16, dict(cfg_scale=3.0, top_k=1000)


def timed(fn, repeats: int) -> tuple[float, int, object]:
    """Best seconds of `repeats` calls after one warm-up, the peak CUDA bytes of a call (0 on the CPU), and the last
    result."""
    cuda = torch.cuda.is_available()
    out = fn()
    if cuda:
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        if cuda:
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t0)
    return best, torch.cuda.max_memory_allocated() - base if cuda else 0, out


def build(config: dict, device: str) -> tuple[MarsModel, torch.nn.Module]:
    """Our model and transformers' Qwen2 on the same random bf16 weights."""
    import transformers

    cfg = MarsConfig(**config)
    torch.manual_seed(0)
    hf = transformers.Qwen2ForCausalLM(cfg.to_hf_qwen2()).to(torch.bfloat16)
    with tempfile.TemporaryDirectory() as d:
        hf.save_pretrained(d)
        ours = MarsModel.from_qwen2(d, cfg.codebook_size, dtype=torch.bfloat16)
    return ours.to(device).eval(), hf.to(device).eval()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--batches", type=int, nargs="+", default=[64, 128, 256])
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--grid", type=int, nargs=2, default=[16, 16])
    ap.add_argument("--codebook", type=int, default=16384)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--compile", action="store_true", help="also time ours with compile=True")
    ap.add_argument("--no-previous", action="store_true", help="skip the previous loops (they are the slowest)")
    ap.add_argument("--json", help="also write the results to this file")
    ap.add_argument("--smoke", action="store_true", help="tiny model on the CPU: checks the script, measures nothing")
    args = ap.parse_args(argv)
    if args.smoke:
        config, device = TINY | {"codebook_size": 64}, "cpu"
        args.batches, args.new_tokens, args.grid, args.repeats = [2], 3, [2, 2], 1
    elif torch.cuda.is_available():
        config, device = QWEN2_05B | {"codebook_size": args.codebook}, "cuda"
    else:
        print("error: benchmarks/gpu_decode.py needs a CUDA GPU and torch.cuda.is_available() is False here "
              "(bench_decode.py is the CPU benchmark; --smoke checks this script on the CPU)", file=sys.stderr)
        return 1
    ours, hf = build(config, device)
    cfg, T, (h, w) = ours.config, args.new_tokens, args.grid
    res: dict = {"device": torch.cuda.get_device_name() if device == "cuda" else "cpu (smoke)", "dtype": "bfloat16",
                 "model": config, "params": sum(p.numel() for p in ours.parameters()), "prompt_len": PROMPT_LEN,
                 "new_tokens": T, "grid": [h, w], "image_sampling": IMAGE_KW}
    g = torch.Generator().manual_seed(1)
    for B in args.batches:
        prompts = torch.randint(0, cfg.text_vocab_size, (B, PROMPT_LEN), generator=g)
        p, pc = prompts.tolist(), prompts.to(device)
        runs = {"ours": lambda p=p: generate_text(ours, p, T)}
        if args.compile:
            runs["ours_compiled"] = lambda p=p: generate_text(ours, p, T, compile=True)
        if not args.no_previous:
            runs["previous"] = lambda p=p: previous.generate_text(ours, p, T)

        def hf_gen(pc=pc):
            with torch.inference_mode():
                return hf.generate(pc, attention_mask=torch.ones_like(pc), max_new_tokens=T, min_new_tokens=T,
                                   do_sample=False, use_cache=True, pad_token_id=0)

        runs["hf"] = hf_gen
        text, outs = {}, {}
        for name, fn in runs.items():
            t, mem, outs[name] = timed(fn, args.repeats)
            text[name] = {"tokens_per_s": round(B * T / t, 1), "peak_mib": round(mem / 2**20, 1)}
        agree = (torch.tensor(outs["ours"], device=device) == outs["hf"][:, PROMPT_LEN:]).float().mean().item()
        text["greedy_agreement_ours_hf"] = round(agree, 4)
        text["static_cache_mib"] = round(static_cache(ours, B, PROMPT_LEN + T - 1).nbytes / 2**20, 1)
        text["speedup_vs_hf"] = round(text["ours"]["tokens_per_s"] / text["hf"]["tokens_per_s"], 2)

        seeds, N = [image_seed(0, i) for i in range(B)], h * w
        runs = {"ours": lambda p=p, s=seeds: generate_image_tokens(ours, p, (h, w), seeds=s, **IMAGE_KW)}
        if args.compile:
            runs["ours_compiled"] = lambda p=p, s=seeds: generate_image_tokens(ours, p, (h, w), seeds=s,
                                                                               compile=True, **IMAGE_KW)
        if not args.no_previous:
            runs["previous"] = lambda p=p, s=seeds: previous.generate_image_tokens(ours, p, (h, w), seeds=s,
                                                                                   **IMAGE_KW)
        image = {}
        for name, fn in runs.items():
            t, mem, _ = timed(fn, args.repeats)
            image[name] = {"tokens_per_s": round(B * N / t, 1), "images_per_s": round(B / t, 2),
                           "peak_mib": round(mem / 2**20, 1)}
        image["static_cache_mib"] = round(static_cache(ours, 2 * B, PROMPT_LEN + 1 + N - 1).nbytes / 2**20, 1)
        if "previous" in image:
            image["speedup_vs_previous"] = round(image["ours"]["tokens_per_s"] / image["previous"]["tokens_per_s"], 2)
        res[f"batch{B}"] = {"text": text, "image": image}
        print(json.dumps({f"batch{B}": res[f"batch{B}"]}), flush=True)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(res, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
