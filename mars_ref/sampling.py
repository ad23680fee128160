"""Sampling engine: logit filters as pure functions, per-image seeded sampling, and KV-cache generation of image
tokens (with classifier-free guidance), text, and joint text+image sequences.

Reproducibility: every generated sequence owns a `torch.Generator` seeded by `image_seed(base, prompt, image)`
and draws exactly one uniform number per sampled token from it, so a sequence's tokens depend only on its prompt,
its seed and the settings - not on the batch it shares or on the number of processes.
Filter order per step: CFG on raw logits -> restrict to the allowed ids -> temperature -> top-k -> top-p -> sample.

Decoding (decisions):
- The KV cache is a StaticKVCache sized for the whole generation, written in place (mars_ref/model.py).
- CFG's conditional and null rows run as one batch (rows B..2B-1 are the null captions) in every forward.
- Logits are computed only over the contiguous id range that covers what a row may emit (the codebook at image
  positions, text (+ <boi>) in text mode, <eoi> after a full grid) and filtered and sampled over that range.
  This draws the same tokens as the full joint vocabulary with the rest at -inf: an id at -inf has probability 0
  and adds exactly 0 to the softmax sum and the CDF (tests/test_sampling.py checks tokens and probabilities bit
  for bit against the full-vocabulary path).
- compile=True runs the decoding steps through `torch.compile(model, dynamic=True)` (made once per model). Off by
  default: on one CPU thread it made image decoding at batch 16 only ~1.15x faster, after a compile of 20 s to
  2.5 min on the shared machine (benchmarks/results/decode.json). Its logits match the eager ones only to float rounding, so byte-identity
  across batch sizes and process counts is a property of the eager path.
"""

from __future__ import annotations

import hashlib
import weakref
from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from mars_ref.config import MarsConfig
from mars_ref.errors import MarsRefError
from mars_ref.kv_cache import StaticKVCache
from mars_ref.model import MarsModel, MarsOutput

NEG_INF = float("-inf")


# ---- pure logit functions ------------------------------------------------------------------------------------
def apply_temperature(logits: Tensor, temperature: float) -> Tensor:
    if temperature <= 0:
        raise MarsRefError(f"temperature must be > 0 to sample (use greedy for 0), got {temperature}")
    return logits / temperature


def top_k_filter(logits: Tensor, k: int | None) -> Tensor:
    """Keep the k largest logits per row (ties with the k-th are kept too); None or 0 keeps all."""
    if not k or k >= logits.shape[-1]:
        return logits
    kth = torch.topk(logits, k, dim=-1).values[..., -1:]  # (..., 1)
    return logits.masked_fill(logits < kth, NEG_INF)


def top_p_filter(logits: Tensor, p: float | None) -> Tensor:
    """Nucleus filter: keep the smallest set of most likely ids whose probability sums to >= p (always the top one)."""
    if p is None or p >= 1.0:
        return logits
    if p <= 0:
        raise MarsRefError(f"top_p must be in (0, 1], got {p}")
    sorted_logits, order = torch.sort(logits, dim=-1, descending=True)  # (..., V)
    probs = torch.softmax(sorted_logits.float(), dim=-1)
    drop_sorted = probs.cumsum(-1) - probs >= p  # mass strictly before this id already reaches p
    drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
    return logits.masked_fill(drop, NEG_INF)


def cfg_combine(cond: Tensor, uncond: Tensor, scale: float) -> Tensor:
    """Classifier-free guidance on logits: uncond + scale * (cond - uncond); scale 1 gives cond."""
    return uncond + scale * (cond - uncond)


def restrict_to(logits: Tensor, allowed: Tensor) -> Tensor:
    """Set logits of ids not in `allowed` ((V,) or (B, V) bool) to -inf."""
    return logits.masked_fill(~allowed, NEG_INF)


def codebook_mask(cfg: MarsConfig, device=None) -> Tensor:
    allowed = torch.zeros(cfg.vocab_size, dtype=torch.bool, device=device)
    allowed[cfg.codebook_offset:cfg.codebook_offset + cfg.codebook_size] = True
    return allowed


def text_mask(cfg: MarsConfig, device=None, extra: Sequence[int] = ()) -> Tensor:
    allowed = torch.zeros(cfg.vocab_size, dtype=torch.bool, device=device)
    allowed[:cfg.text_vocab_size] = True
    allowed[list(extra)] = True
    return allowed


def codebook_ids(cfg: MarsConfig) -> slice:
    """The joint ids of the codebook entries: what an image position may emit."""
    return slice(cfg.codebook_offset, cfg.codebook_offset + cfg.codebook_size)


def restrict_to_codebook(logits: Tensor, cfg: MarsConfig) -> Tensor:
    """Image positions may only emit codebook entries."""
    return restrict_to(logits, codebook_mask(cfg, logits.device))


def filter_logits(logits: Tensor, temperature: float, top_k: int | None, top_p: float | None) -> Tensor:
    return top_p_filter(top_k_filter(apply_temperature(logits.float(), temperature), top_k), top_p)


# ---- seeded sampling -----------------------------------------------------------------------------------------
def image_seed(base_seed: int, prompt_index: int, image_index: int = 0) -> int:
    """A 63-bit seed from (base seed, prompt index, image index), stable across machines and Python versions."""
    digest = hashlib.sha256(f"mars:{base_seed}:{prompt_index}:{image_index}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


def make_generators(seeds: Sequence[int], device: torch.device | str = "cpu") -> list[torch.Generator]:
    return [torch.Generator(device=device).manual_seed(int(s)) for s in seeds]


def sample_rows(logits: Tensor, generators: Sequence[torch.Generator] | None, n: int = 1,
                probs: Tensor | None = None) -> Tensor:
    """Sample n ids per row of logits (B, n, V) or (B, V) by inverse CDF with n uniforms from that row's generator.

    generators=None means greedy (argmax). Ids with probability 0 (filtered to -inf) are never drawn.
    probs: softmax(logits.float()) if the caller has computed it already (same shape as logits).
    """
    squeeze = logits.dim() == 2
    lg = logits[:, None] if squeeze else logits  # (B, n, V)
    if generators is None:
        out = lg.argmax(-1)
    else:
        if len(generators) != lg.shape[0]:
            raise MarsRefError(f"{len(generators)} generators for {lg.shape[0]} rows")
        u = torch.stack([torch.rand(lg.shape[1], generator=g, device=g.device) for g in generators]).to(lg.device)
        p = torch.softmax(lg.float(), dim=-1) if probs is None else (probs[:, None] if squeeze else probs)
        cdf = p.cumsum(-1)  # (B, n, V)
        out = torch.searchsorted(cdf, (u * cdf[..., -1])[..., None], right=True)[..., 0]
        out = out.clamp(max=lg.shape[-1] - 1)
    return out[:, 0] if squeeze else out


def pad_left(seqs: Sequence[Sequence[int]], pad_id: int, device=None) -> Tensor:
    """Batch of variable-length prompts (B, L), padded on the left so every row's last token is at the end."""
    L = max((len(s) for s in seqs), default=0)
    out = torch.full((len(seqs), max(L, 1)), pad_id, dtype=torch.long, device=device)
    for i, s in enumerate(seqs):
        if len(s):
            out[i, L - len(s):] = torch.as_tensor(list(s), dtype=torch.long)
    return out


def _device(model: MarsModel) -> torch.device:
    return model.embed_text.weight.device


def static_cache(model: MarsModel, batch: int, capacity: int) -> StaticKVCache:
    """A KV cache for `capacity` positions in the model's dtype and device."""
    w = model.embed_text.weight
    return StaticKVCache(model.config, batch, capacity, w.dtype, w.device)


_COMPILED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def decode_forward(model: MarsModel, compile: bool = False) -> Callable[..., MarsOutput]:
    """The forward that decoding steps call: the model, or with compile=True its torch.compile (made once per model,
    dynamic shapes since the attended length grows every step)."""
    if not compile:
        return model
    if model not in _COMPILED:
        _COMPILED[model] = torch.compile(model, dynamic=True)
    return _COMPILED[model]


# ---- image generation (Stage I/II: next-token prediction) ------------------------------------------------------
@torch.inference_mode()
def generate_image_tokens(model: MarsModel, prompt_ids_list: Sequence[Sequence[int]], grid_hw: tuple[int, int], *,
                          seeds: Sequence[int] | None, cfg_scale: float | None = None, temperature: float = 1.0,
                          top_k: int | None = None, top_p: float | None = None,
                          null_ids: Sequence[int] = (), compile: bool = False) -> Tensor:
    """Sample an image grid for each prompt (caption ids, without <boi>); returns codebook indices (B, h*w).

    Each sequence is `prompt <boi>` followed by h*w codebook tokens. cfg_scale: None = no guidance; otherwise a
    null-caption batch (`null_ids <boi>`, default the empty caption) runs alongside and logits are combined.
    seeds: one per prompt (see image_seed); None or temperature 0 = greedy. Logits are the codebook's only.
    """
    cfg, dev = model.config, _device(model)
    B, N = len(prompt_ids_list), grid_hw[0] * grid_hw[1]
    greedy = seeds is None or temperature == 0
    gens = None if greedy else make_generators(seeds, dev)
    rows = [list(p) + [cfg.boi_id] for p in prompt_ids_list]
    if cfg_scale is not None:
        rows += [list(null_ids) + [cfg.boi_id]] * B
    model.eval()
    prompt = pad_left(rows, cfg.pad_id, dev)  # (R, L)
    cache = static_cache(model, len(rows), prompt.shape[1] + max(N - 1, 0))  # the last token is never fed
    codes, step = codebook_ids(cfg), decode_forward(model, compile)
    logits = model(prompt, cache=cache, keep_last=1, vocab=codes).logits[:, -1]  # (R, C)
    tokens = []
    for i in range(N):
        logits = logits.float()
        if cfg_scale is not None:
            logits = cfg_combine(logits[:B], logits[B:], cfg_scale)  # (B, C)
        tok = sample_rows(logits if greedy else filter_logits(logits, temperature, top_k, top_p), gens)  # (B,)
        tokens.append(tok)
        if i + 1 < N:
            feed = tok + cfg.codebook_offset
            feed = feed.repeat(2) if cfg_scale is not None else feed  # (R,)
            logits = step(feed[:, None], is_image=True, cache=cache, keep_last=1, vocab=codes).logits[:, -1]  # (R, C)
    return torch.stack(tokens, dim=1)  # (B, N)


# ---- text and joint generation ---------------------------------------------------------------------------------
def split_segments(ids: Sequence[int], cfg: MarsConfig) -> list[tuple[str, list[int]]]:
    """Parse generated ids into ("text", ids) and ("image", codebook indices) segments; an image needs <eoi>."""
    segs: list[tuple[str, list[int]]] = []
    text: list[int] = []
    i = 0
    while i < len(ids):
        if ids[i] == cfg.boi_id and cfg.eoi_id in ids[i + 1:]:
            j = list(ids).index(cfg.eoi_id, i + 1)
            if text:
                segs.append(("text", text))
                text = []
            segs.append(("image", [t - cfg.codebook_offset for t in ids[i + 1:j]]))
            i = j + 1
        else:
            text.append(int(ids[i]))
            i += 1
    if text:
        segs.append(("text", text))
    return segs


def _open_image_length(ids: Sequence[int], cfg: MarsConfig) -> int:
    """Image tokens after an unclosed <boi> at the end of a prompt (so a prompt may end inside an image), else -1."""
    ids = list(ids)
    if cfg.boi_id not in ids:
        return -1
    last = len(ids) - 1 - ids[::-1].index(cfg.boi_id)
    return -1 if cfg.eoi_id in ids[last:] else len(ids) - last - 1


def _emit_range(n_img: Tensor, N: int, cfg: MarsConfig, grid: bool) -> slice:
    """The smallest id range covering what the rows may emit next: text (+ <boi> with a grid), codebook entries
    (0 <= n_img < N), <eoi> (n_img == N). Reads which modes occur (a host sync) only when images are possible."""
    if not grid:
        return slice(0, cfg.text_vocab_size)
    spans = [(0, cfg.boi_id + 1)] if bool((n_img < 0).any()) else []
    if bool(((n_img >= 0) & (n_img < N)).any()):
        spans.append((cfg.codebook_offset, cfg.codebook_offset + cfg.codebook_size))
    if bool((n_img >= N).any()):
        spans.append((cfg.eoi_id, cfg.eoi_id + 1))
    return slice(min(a for a, _ in spans), max(b for _, b in spans))


@torch.inference_mode()
def generate_joint(model: MarsModel, prompt_ids_list: Sequence[Sequence[int]], max_new_tokens: int, *,
                   grid_hw: tuple[int, int] | None, seeds: Sequence[int] | None = None, temperature: float = 1.0,
                   top_k: int | None = None, top_p: float | None = None,
                   eos_id: int | None = None, compile: bool = False) -> list[list[int]]:
    """Generate sequences that may carry text and image blocks; returns the new ids per prompt (stop at eos_id).

    A per-row state machine: in text mode a row may emit text ids or <boi> (only if grid_hw is given); after <boi>
    it emits exactly h*w codebook ids, then <eoi> is forced and text resumes (a prompt ending in an unclosed image
    block, e.g. `caption <boi>`, starts in image mode). Parse the result with
    split_segments(). Without grid_hw, text steps sample the base LLM's own distribution exactly (the vision
    head's ids are excluded, and text logits are the LLM's for text-only input).
    """
    cfg, dev = model.config, _device(model)
    B = len(prompt_ids_list)
    N = grid_hw[0] * grid_hw[1] if grid_hw else 0
    greedy = seeds is None or temperature == 0
    gens = None if greedy else make_generators(seeds, dev)
    text_allowed = text_mask(cfg, dev, [cfg.boi_id] if grid_hw else [])
    image_allowed = codebook_mask(cfg, dev)
    eoi_allowed = torch.zeros_like(image_allowed)
    eoi_allowed[cfg.eoi_id] = True
    model.eval()
    prompt = pad_left([list(p) for p in prompt_ids_list], cfg.pad_id, dev)  # (B, L)
    cache = static_cache(model, B, prompt.shape[1] + max(max_new_tokens - 1, 0))
    n_img = torch.tensor([_open_image_length(p, cfg) for p in prompt_ids_list], device=dev)  # -1: text mode
    vocab, step = _emit_range(n_img, N, cfg, bool(grid_hw)), decode_forward(model, compile)
    logits = model(prompt, cache=cache, keep_last=1, vocab=vocab).logits[:, -1]  # (B, hi - lo)
    done = torch.zeros(B, dtype=torch.bool, device=dev)
    generated: list[Tensor] = []
    for _ in range(max_new_tokens):
        logits = logits.float()
        if grid_hw:  # without a grid every row is in text mode and the range is exactly the text ids
            allowed = torch.where((n_img < 0)[:, None], text_allowed,
                                  torch.where((n_img < N)[:, None], image_allowed, eoi_allowed))  # (B, V)
            logits = restrict_to(logits, allowed[:, vocab])
        tok = sample_rows(logits if greedy else filter_logits(logits, temperature, top_k, top_p), gens)  # (B,)
        tok = tok + vocab.start
        tok = torch.where(done, torch.full_like(tok, eos_id if eos_id is not None else cfg.pad_id), tok)
        generated.append(tok)
        n_img = torch.where(tok == cfg.boi_id, 0, torch.where(tok == cfg.eoi_id, -1, n_img + (n_img >= 0).long()))
        if eos_id is not None:
            done |= tok == eos_id
        if bool(done.all()) or len(generated) == max_new_tokens:
            break
        vocab = _emit_range(n_img, N, cfg, bool(grid_hw))
        logits = step(tok[:, None], is_image=None if grid_hw else False, cache=cache, keep_last=1,
                      vocab=vocab).logits[:, -1]
    if not generated:
        return [[] for _ in range(B)]
    gen = torch.stack(generated, dim=1).tolist()  # (B, T)
    return [row[:row.index(eos_id) + 1] if eos_id in row else row for row in gen]


def generate_text(model: MarsModel, prompt_ids_list: Sequence[Sequence[int]], max_new_tokens: int, *,
                  seeds: Sequence[int] | None = None, temperature: float = 0.0, top_k: int | None = None,
                  top_p: float | None = None, eos_id: int | None = None, compile: bool = False) -> list[list[int]]:
    """Text continuation (greedy by default) over the text vocabulary: the base LLM's distribution exactly."""
    return generate_joint(model, prompt_ids_list, max_new_tokens, grid_hw=None, seeds=seeds, temperature=temperature,
                          top_k=top_k, top_p=top_p, eos_id=eos_id, compile=compile)
