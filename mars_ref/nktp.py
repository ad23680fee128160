"""Stage III (paper, Fig. 3): masked-token prediction of the high-resolution grid given text + low-resolution tokens,
with suffix attention, and Next-K-Token Prediction (NKTP) sampling that fills K tokens per forward pass.

Sequence layout (one row):  caption ids (left-padded) | <boi> low-res codes <eoi> <boh> high-res slots
The suffix (from <boi> on) attends bidirectionally; the caption is causal and cached once. A high-res slot holds a
codebook token or <mask>, and its logits predict ITS OWN token (no shift, as in MaskGIT/Muse).
Decoding is MaskGIT-style: at each step every masked slot is sampled, and the `counts[step]` most confident
masked slots are kept; a schedule (cosine, linear, or a constant K) sets the counts.
Each pass writes the suffix's keys into a StaticKVCache after the cached caption (in place, discarded after the
pass) and computes, filters and softmaxes only the codebook's logits (the ids a high-res slot may hold); the
softmax is shared by the sampler and the confidences.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import NamedTuple

import torch
from torch import Tensor

from mars_ref.config import MarsConfig
from mars_ref.errors import MarsRefError
from mars_ref.losses import LossStats, ntp_loss
from mars_ref.model import MarsModel, token_positions
from mars_ref.sampling import (
    cfg_combine,
    codebook_ids,
    decode_forward,
    filter_logits,
    make_generators,
    pad_left,
    sample_rows,
    static_cache,
)

SCHEDULES: dict[str, Callable[[float], float]] = {
    "cosine": lambda r: math.cos(math.pi / 2 * r),  # fraction still masked after progress r (MaskGIT)
    "linear": lambda r: 1.0 - r,
    "square": lambda r: 1.0 - r * r,
}


def nktp_schedule(n_tokens: int, *, k: int | None = None, steps: int | None = None,
                  schedule: str = "cosine") -> list[int]:
    """Tokens filled per forward pass; sums to n_tokens. Either a constant k per pass, or `steps` passes following
    `schedule` (each pass fills at least one token)."""
    if n_tokens <= 0:
        raise MarsRefError(f"NKTP needs a positive number of tokens, got {n_tokens}")
    if k is not None:
        if k <= 0:
            raise MarsRefError(f"NKTP k must be positive, got {k}")
        return [k] * (n_tokens // k) + ([n_tokens % k] if n_tokens % k else [])
    if schedule not in SCHEDULES:
        raise MarsRefError(f"unknown NKTP schedule {schedule!r}; known: {sorted(SCHEDULES)}")
    if steps is None or not 1 <= steps <= n_tokens:
        raise MarsRefError(f"NKTP steps must be in [1, {n_tokens}], got {steps}")
    gamma, remaining, counts = SCHEDULES[schedule], n_tokens, []
    for t in range(steps):
        left = math.floor(n_tokens * gamma((t + 1) / steps))  # still masked after this pass
        left = max(min(left, remaining - 1), steps - t - 1)  # fill >= 1 now, keep >= 1 for every later pass
        counts.append(remaining - left)
        remaining = left
    return counts


def stage3_suffix(cfg: MarsConfig, lowres: Tensor, hires: Tensor | None, n_hi: int) -> Tensor:
    """Suffix ids (B, N0 + 3 + n_hi): <boi> low-res <eoi> <boh> then high-res codes, or <mask> where hires is None."""
    B = lowres.shape[0]
    col = lambda tid: torch.full((B, 1), tid, dtype=torch.long, device=lowres.device)  # noqa: E731
    hi = torch.full((B, n_hi), cfg.mask_id, dtype=torch.long, device=lowres.device) if hires is None \
        else hires.long() + cfg.codebook_offset
    return torch.cat([col(cfg.boi_id), lowres.long() + cfg.codebook_offset, col(cfg.eoi_id), col(cfg.boh_id), hi], 1)


def suffix_positions(cfg: MarsConfig, n_low: int, hi_grid: tuple[int, int]) -> Tensor | None:
    """RoPE positions (S,) of the suffix relative to its start, or None for the default sequential count.

    "aligned" (cfg.stage3_positions): <boi> 0, low-res token j at 1 + j, <eoi> N0 + 1, <boh> N0 + 2, and the
    high-res slot (r, c) at N0 + 3 + j(r // 2, c // 2) + (2 (r % 2) + c % 2) / 4: every slot sits a fixed N0 + 2
    (+ its quarter) after the low-res token it refines. Needs a low-res grid of half the high-res sides."""
    if cfg.stage3_positions == "sequential":
        return None
    h, w = hi_grid
    if h % 2 or w % 2 or n_low != (h // 2) * (w // 2):
        raise MarsRefError(f"aligned Stage III positions need a low-res grid of half the high-res sides: "
                           f"{n_low} low-res tokens for a {h}x{w} grid")
    r, c = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")  # (h, w)
    hi = n_low + 3 + (r // 2) * (w // 2) + c // 2 + (2 * (r % 2) + c % 2) / 4  # (h, w)
    return torch.cat([torch.arange(n_low + 3, dtype=torch.float), hi.flatten().float()])  # (N0 + 3 + h*w,)


class NktpResult(NamedTuple):
    tokens: Tensor  # (B, h*w) codebook indices of the high-res grid
    forward_passes: int  # model calls for the whole batch (caption prefill + one per step)
    counts: list[int]  # tokens filled per step


@torch.inference_mode()
def nktp_generate(model: MarsModel, prefix_ids_list: Sequence[Sequence[int]], lowres_tokens: Tensor,
                  hi_grid: tuple[int, int], *, seeds: Sequence[int] | None, k: int | None = None,
                  steps: int | None = None, schedule: str = "cosine", temperature: float = 1.0,
                  top_k: int | None = None, top_p: float | None = None, cfg_scale: float | None = None,
                  null_ids: Sequence[int] = (), choice_temperature: float = 0.0,
                  compile: bool = False) -> NktpResult:
    """Fill the h*w high-res grid for each (caption, low-res codes (B, N0)) pair, K tokens per forward pass.

    seeds: one per row (None or temperature 0 = greedy). cfg_scale: None = no guidance; otherwise null captions
    (`null_ids`, default empty) with the same low-res tokens run alongside. choice_temperature > 0 adds annealed
    Gumbel noise to the confidences (MaskGIT); 0 keeps the most probable samples. compile: see
    mars_ref.sampling (the passes have one shape, so it compiles once).
    """
    cfg, dev = model.config, model.embed_text.weight.device
    B, N = len(prefix_ids_list), hi_grid[0] * hi_grid[1]
    if lowres_tokens.shape[0] != B:
        raise MarsRefError(f"{lowres_tokens.shape[0]} low-res grids for {B} prompts")
    counts = nktp_schedule(N, k=k, steps=steps, schedule=schedule)
    greedy = seeds is None or temperature == 0
    gens = None if greedy else make_generators(seeds, dev)
    rows = [list(p) for p in prefix_ids_list] + ([list(null_ids)] * B if cfg_scale is not None else [])
    lowres = lowres_tokens.to(dev)
    if cfg_scale is not None:
        lowres = lowres.repeat(2, 1)
    model.eval()
    prompt = pad_left(rows, cfg.pad_id, dev)  # (R, P)
    suffix = stage3_suffix(cfg, lowres, None, N)  # (R, S)
    cache = static_cache(model, len(rows), prompt.shape[1] + suffix.shape[1])
    codes, fwd = codebook_ids(cfg), decode_forward(model, compile)
    model(prompt, cache=cache, keep_last=1, vocab=slice(cfg.boi_id, cfg.boi_id + 1))  # the caption's keys only
    rel = suffix_positions(cfg, lowres.shape[1], hi_grid)
    positions = None if rel is None else cache.next_pos[:, None] + rel.to(dev)  # (R, S)
    tokens = torch.full((B, N), -1, dtype=torch.long, device=dev)
    for step, n_fill in enumerate(counts):
        with cache.scratch():  # the suffix's keys go after the caption's and are forgotten after the pass
            logits = fwd(suffix, is_image=True, cache=cache, positions=positions, suffix_start=cache.length,
                         keep_last=N, vocab=codes).logits.float()  # (R, N, C)
        if cfg_scale is not None:
            logits = cfg_combine(logits[:B], logits[B:], cfg_scale)  # (B, N, C)
        if not greedy:
            logits = filter_logits(logits, temperature, top_k, top_p)
        probs = torch.softmax(logits, -1)  # (B, N, C)
        sampled = sample_rows(logits, gens, probs=probs)  # (B, N): one uniform per slot from each row's generator
        conf = probs.gather(-1, sampled[..., None])[..., 0].clamp_min(1e-30).log()  # (B, N)
        if choice_temperature > 0 and gens is not None:
            g = torch.stack([torch.rand(N, generator=g, device=g.device) for g in gens]).to(dev)
            conf = conf + choice_temperature * (1 - (step + 1) / len(counts)) * -torch.log(-torch.log(g.clamp(1e-20, 1)))
        conf = conf.masked_fill(tokens >= 0, float("-inf"))  # only masked slots compete
        pick = conf.topk(n_fill, dim=-1).indices  # (B, n_fill)
        tokens.scatter_(1, pick, sampled.gather(1, pick))
        filled = tokens.clamp(min=0) + cfg.codebook_offset
        hi = torch.where(tokens >= 0, filled, torch.full_like(tokens, cfg.mask_id))  # (B, N)
        suffix[:, -N:] = hi.repeat(2, 1) if cfg_scale is not None else hi
    return NktpResult(tokens, 1 + len(counts), counts)


def mask_ratio_cosine(n: int, generator: torch.Generator | None = None) -> Tensor:
    """Training mask ratios (n,) = cos(pi/2 * u), u ~ U(0, 1): the cosine schedule's distribution (MaskGIT)."""
    return torch.cos(math.pi / 2 * torch.rand(n, generator=generator))


def random_mask(B: int, N: int, generator: torch.Generator | None = None,
                mask_ratio: Callable[[int, torch.Generator | None], Tensor] = mask_ratio_cosine) -> Tensor:
    """(B, N) bool: a random fraction (from `mask_ratio`, at least one slot) of each row is masked."""
    n_mask = (mask_ratio(B, generator) * N).ceil().long().clamp(1, N)  # (B,)
    rank = torch.rand(B, N, generator=generator).argsort(-1).argsort(-1)  # (B, N) random rank of each slot
    return rank < n_mask[:, None]


def nktp_loss(model: MarsModel, prefix_ids: Tensor, lowres: Tensor, hires: Tensor, *,
              generator: torch.Generator | None = None,
              mask_ratio: Callable[[int, torch.Generator | None], Tensor] = mask_ratio_cosine,
              masked: Tensor | None = None, hi_grid: tuple[int, int] | None = None) -> LossStats:
    """Stage III training loss: mask a random fraction (>= 1 token) of each high-res grid, predict the masked tokens.

    prefix_ids (B, P) left-padded caption ids; lowres (B, N0) and hires (B, N1) codebook indices (CPU generator).
    masked (B, N1) bool: a mask chosen by the caller (e.g. per example, see `random_mask`) instead of the generator.
    hi_grid: (h, w) of the high-res grid, for aligned positions (default: square).
    """
    cfg = model.config
    B, N = hires.shape
    if masked is None:
        masked = random_mask(B, N, generator, mask_ratio)
    masked = masked.to(hires.device)
    suffix = stage3_suffix(cfg, lowres, hires, N)
    suffix[:, -N:] = torch.where(masked, cfg.mask_id, suffix[:, -N:])
    ids = torch.cat([prefix_ids.to(suffix.device), suffix], dim=1)
    side = math.isqrt(N)
    rel = suffix_positions(cfg, lowres.shape[1], hi_grid or (side, side))
    positions = None
    if rel is not None:  # the prefix counts its non-padding tokens (as the model's default); the suffix follows
        valid = (prefix_ids != cfg.pad_id).to(suffix.device)  # (B, P)
        pre = token_positions(valid).float()  # (B, P)
        positions = torch.cat([pre, valid.sum(1, keepdim=True).float() + rel.to(suffix.device)], dim=1)  # (B, T)
    logits = model(ids, positions=positions, suffix_start=prefix_ids.shape[1], keep_last=N).logits  # (B, N, V)
    return ntp_loss(logits, hires.long() + cfg.codebook_offset, masked, cfg.text_vocab_size)
