"""The decoding loops as they were before the static cache (mars_ref at e130ac2), kept as the benchmarks' "before".

Each step grows the KV cache by concatenation (the immutable KVCache path that the model still offers), computes
the logits of the whole joint vocabulary and picks the allowed ids out with a -inf mask; NKTP concatenates the
caption's cache with the suffix on every pass and softmaxes the joint vocabulary twice. Same draws as mars_ref's
samplers (tests/test_sampling.py and tests/test_sampling_nktp.py check that against copies of these loops).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from mars_ref.kv_cache import KVCache
from mars_ref.model import MarsModel
from mars_ref.nktp import NktpResult, nktp_schedule, stage3_suffix
from mars_ref.sampling import (
    cfg_combine,
    codebook_mask,
    filter_logits,
    make_generators,
    pad_left,
    restrict_to,
    sample_rows,
    text_mask,
)


def cache_bytes(cache: KVCache) -> int:
    return sum(t.nbytes for t in (*cache.keys, *cache.values, cache.valid))


@torch.inference_mode()
def generate_text(model: MarsModel, prompts: Sequence[Sequence[int]], max_new_tokens: int,
                  stats: dict | None = None) -> list[list[int]]:
    """Greedy text (generate_joint without a grid, no eos). stats: if given, gets "peak_cache_bytes", the most cache
    bytes alive at once (a step holds the old cache and the new one it concatenates from it)."""
    cfg, dev = model.config, model.embed_text.weight.device
    allowed = text_mask(cfg, dev)
    out = model(pad_left([list(p) for p in prompts], cfg.pad_id, dev), use_cache=True, keep_last=1)
    generated = []
    for _ in range(max_new_tokens):
        tok = sample_rows(restrict_to(out.logits[:, -1].float(), allowed), None)
        generated.append(tok)
        old, out = out.cache, model(tok[:, None], cache=out.cache, keep_last=1)
        if stats is not None:
            stats["peak_cache_bytes"] = max(stats.get("peak_cache_bytes", 0), cache_bytes(old) + cache_bytes(out.cache))
    return torch.stack(generated, 1).tolist()


@torch.inference_mode()
def generate_image_tokens(model: MarsModel, prompts: Sequence[Sequence[int]], grid_hw: tuple[int, int], *,
                          seeds: Sequence[int] | None, cfg_scale: float | None = None, temperature: float = 1.0,
                          top_k: int | None = None, top_p: float | None = None) -> Tensor:
    cfg, dev = model.config, model.embed_text.weight.device
    B, N = len(prompts), grid_hw[0] * grid_hw[1]
    greedy = seeds is None or temperature == 0
    gens = None if greedy else make_generators(seeds, dev)
    rows = [list(p) + [cfg.boi_id] for p in prompts] + ([[cfg.boi_id]] * B if cfg_scale is not None else [])
    out = model(pad_left(rows, cfg.pad_id, dev), use_cache=True, keep_last=1)
    allowed = codebook_mask(cfg, dev)
    tokens = []
    for step in range(N):
        logits = out.logits[:, -1].float()  # (R, V)
        if cfg_scale is not None:
            logits = cfg_combine(logits[:B], logits[B:], cfg_scale)
        logits = restrict_to(logits, allowed)
        tok = sample_rows(logits if greedy else filter_logits(logits, temperature, top_k, top_p), gens)
        tokens.append(tok)
        if step + 1 < N:
            feed = tok.repeat(2) if cfg_scale is not None else tok
            out = model(feed[:, None], cache=out.cache, keep_last=1)
    return torch.stack(tokens, dim=1) - cfg.codebook_offset


@torch.inference_mode()
def nktp_generate(model: MarsModel, prompts: Sequence[Sequence[int]], lowres: Tensor, hi_grid: tuple[int, int], *,
                  seeds: Sequence[int] | None, k: int | None = None, steps: int | None = None,
                  schedule: str = "cosine", temperature: float = 1.0, top_k: int | None = None,
                  cfg_scale: float | None = None) -> NktpResult:
    """Sequential positions only (the `small` preset's), no top-p, no choice noise."""
    cfg, dev = model.config, model.embed_text.weight.device
    B, N = len(prompts), hi_grid[0] * hi_grid[1]
    counts = nktp_schedule(N, k=k, steps=steps, schedule=schedule)
    greedy = seeds is None or temperature == 0
    gens = None if greedy else make_generators(seeds, dev)
    rows = [list(p) for p in prompts] + ([[]] * B if cfg_scale is not None else [])
    lowres = lowres.to(dev).repeat(2 if cfg_scale is not None else 1, 1)
    prefix = model(pad_left(rows, cfg.pad_id, dev), use_cache=True, keep_last=1).cache
    suffix = stage3_suffix(cfg, lowres, None, N)
    allowed = codebook_mask(cfg, dev)
    tokens = torch.full((B, N), -1, dtype=torch.long, device=dev)
    for n_fill in counts:
        logits = model(suffix, cache=prefix, suffix_start=prefix.length, keep_last=N).logits.float()  # (R, N, V)
        if cfg_scale is not None:
            logits = cfg_combine(logits[:B], logits[B:], cfg_scale)
        logits = restrict_to(logits, allowed)
        if not greedy:
            logits = filter_logits(logits, temperature, top_k, None)
        probs = torch.softmax(logits, -1)
        sampled = sample_rows(logits, gens)
        conf = probs.gather(-1, sampled[..., None])[..., 0].clamp_min(1e-30).log()
        conf = conf.masked_fill(tokens >= 0, float("-inf"))
        pick = conf.topk(n_fill, dim=-1).indices
        tokens.scatter_(1, pick, sampled.gather(1, pick) - cfg.codebook_offset)
        hi = torch.where(tokens >= 0, tokens.clamp(min=0) + cfg.codebook_offset, torch.full_like(tokens, cfg.mask_id))
        suffix[:, -N:] = hi.repeat(2, 1) if cfg_scale is not None else hi
    return NktpResult(tokens, 1 + len(counts), counts)
