"""SemVIE (MARS, "Methodology"): a Qwen2 decoder whose Q/K/V/O projections and FFN are routed per token to frozen
text weights (from the LLM) or trainable visual-expert weights; RMSNorms and one joint attention are shared.

Decisions (see also mars_ref/config.py for the token-id layout):
- Routing: a position is "image" iff its INPUT token is not a text token (a codebook entry or one of the six
  specials). This is a pure function of the token, so training, prefill and cached decoding route identically
  (the decoding step knows its input, not what it will emit). HF CogVLM instead sends the last image position
  through the language path; here the last image token (which predicts <eoi>) stays on the expert path, and
  text after <eoi> is text again. A text-only sequence never touches expert weights.
- Heads: following the paper, every position gets l_t = text_head(h) over the text vocabulary and
  l_v = vision_head(h) over codebook + specials, concatenated into one joint distribution. Both heads see every
  position: the last caption token (text path) must be able to emit <boi>, which lives in the vision head.
  For text-only input l_t equals the base LLM's logits exactly (text weights, norms and text head are frozen).
- Init (paper): visual embeddings = mean text embedding; experts = copies of the text weights; the vision head's
  rows = mean of the text head's rows, so image-token logits start uniform and at the scale of text logits.
- Ablation visual_expert=False: no expert weights exist; every token uses the (now trainable) text weights.
- caption_kv (our variants; "text", the paper's, is the default). The paper leaves the keys/values of every
  caption token frozen, and with the small frozen world LLM image queries learn kinds from them but not colour
  words (reports/experiments). "expert": image queries read the caption through the expert's own K/V projections
  of the frozen caption states. "stream": a second, vision stream runs the expert over every position, the caption
  included (from the same embeddings), and image queries read its keys/values; the text stream (frozen weights)
  reads image positions from it. Either way text queries read the text path, so text-only outputs are the LLM's
  exactly, and at the paper init (expert = copy of the text weights) both equal the paper model. Caches then
  hold two views: the text queries' and the image queries'.
- Caches (mars_ref/kv_cache.py): KVCache is immutable and grows by concatenation (training-time helpers, reuse of
  one prefix); StaticKVCache is preallocated and written in place (decoding: a step copies only its own keys, and
  the attended keys are a view of the filled part, so attention sees exactly the keys a growing cache would hold).
- `vocab` (a slice of joint ids) computes only those logits: the text head's and vision head's rows in it, as
  views of the weights (a contiguous range, so no weight copy). Decoding asks for the ids it may sample.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mars_ref.config import MarsConfig
from mars_ref.kv_cache import KVCache, StaticKVCache


class MarsOutput(NamedTuple):
    logits: Tensor  # (B, T, V) joint-vocabulary logits (the last keep_last positions only; the ids in vocab only)
    cache: KVCache | StaticKVCache | None


def causal_mask(valid_k: Tensor, q_len: int, suffix_start: Tensor | int | None = None) -> Tensor:
    """Boolean attention mask (B, 1, Tq, Tk), True = may attend; queries are the last `q_len` of the Tk keys.

    Causal over valid (non-padding) keys. With `suffix_start` (key index, per row or scalar) it is the Stage III
    suffix attention: causal over the text prefix, bidirectional among all positions >= suffix_start.
    Every query may see itself, so a padding query never softmaxes over nothing (which would give NaN).
    """
    B, Tk = valid_k.shape
    qi = torch.arange(Tk - q_len, Tk, device=valid_k.device)[:, None]  # (Tq, 1) key index of each query
    kj = torch.arange(Tk, device=valid_k.device)[None, :]  # (1, Tk)
    allowed = (kj <= qi)[None] & valid_k[:, None, :]  # (B, Tq, Tk)
    if suffix_start is not None:
        s = torch.as_tensor(suffix_start, device=valid_k.device).reshape(-1, 1, 1)  # (B or 1, 1, 1)
        allowed = allowed | ((qi[None] >= s) & (kj[None] >= s) & valid_k[:, None, :])
    allowed = allowed | (kj == qi)[None]
    return allowed[:, None]  # (B, 1, Tq, Tk)


class RMSNorm(nn.Module):
    """Qwen2RMSNorm: normalise in fp32, scale in the input dtype."""

    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        h = x.float()
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * h.to(x.dtype)


class Rotary(nn.Module):
    """Qwen2 RoPE (default type): cos/sin of cat(freqs, freqs), rotate-half convention.

    inv_freq is recomputed in fp32 on the CPU each call (hd/2 numbers), as transformers computes it, rather than
    kept as a buffer that `.to(bfloat16)` would round or that a meta-device construction would leave empty.
    """

    def __init__(self, head_dim: int, theta: float):
        super().__init__()
        self.head_dim, self.theta = head_dim, theta

    def forward(self, positions: Tensor) -> tuple[Tensor, Tensor]:
        hd = self.head_dim
        inv_freq = 1.0 / (self.theta ** (torch.arange(0, hd, 2, dtype=torch.float, device="cpu") / hd))
        freqs = positions[..., None].float() * inv_freq.to(positions.device)  # (B, T, hd/2)
        emb = torch.cat((freqs, freqs), dim=-1)  # (B, T, hd)
        return emb.cos()[:, None], emb.sin()[:, None]  # (B, 1, T, hd) each


def token_positions(valid: Tensor) -> Tensor:
    """(B, T) RoPE positions counting only the non-padding tokens of `valid` (B, T), so left padding does not
    shift them (a padding slot gets its neighbour's position; it is never attended to)."""
    return (valid.long().cumsum(1) - 1).clamp(min=0)


def _rotate_half(x: Tensor) -> Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def _rope(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    return x * cos.to(x.dtype) + _rotate_half(x) * sin.to(x.dtype)


class AttnProj(nn.Module):
    """One expert's attention projections (Qwen2 names: q/k/v with bias, o without)."""

    def __init__(self, cfg: MarsConfig):
        super().__init__()
        d, hd = cfg.hidden_size, cfg.head_dim
        self.q_proj = nn.Linear(d, cfg.num_attention_heads * hd, bias=cfg.attention_bias)
        self.k_proj = nn.Linear(d, cfg.num_key_value_heads * hd, bias=cfg.attention_bias)
        self.v_proj = nn.Linear(d, cfg.num_key_value_heads * hd, bias=cfg.attention_bias)
        self.o_proj = nn.Linear(cfg.num_attention_heads * hd, d, bias=False)

    def qkv(self, x: Tensor) -> Tensor:
        return torch.cat([self.q_proj(x), self.k_proj(x), self.v_proj(x)], dim=-1)


class SwiGLU(nn.Module):
    """One expert's FFN (Qwen2MLP)."""

    def __init__(self, cfg: MarsConfig):
        super().__init__()
        self.gate_proj = nn.Linear(cfg.hidden_size, cfg.intermediate_size, bias=False)
        self.up_proj = nn.Linear(cfg.hidden_size, cfg.intermediate_size, bias=False)
        self.down_proj = nn.Linear(cfg.intermediate_size, cfg.hidden_size, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class Routing(NamedTuple):
    """The per-token modality mask, with its all/any summary computed once per forward (not once per layer)."""

    is_image: Tensor  # (B, T) bool
    all_image: bool
    any_image: bool


def route(x: Tensor, r: Routing, text_fn, vision_fn) -> Tensor:
    """Apply text_fn to text tokens and vision_fn to image tokens of x (B, T, C); tokens never mix (per-token MoE)."""
    if vision_fn is None or not r.any_image:
        return text_fn(x)
    if r.all_image:
        return vision_fn(x)
    yt, yv = text_fn(x[~r.is_image]), vision_fn(x[r.is_image])  # (Nt, C'), (Nv, C')
    out = yt.new_empty(*x.shape[:-1], yt.shape[-1])  # (B, T, C')
    out[~r.is_image] = yt
    out[r.is_image] = yv.to(yt.dtype)
    return out


class SemVIEBlock(nn.Module):
    """Shared RMSNorms and joint attention; Attention-MoE (eq. 1, incl. O) and FFN-MoE (eq. 2) routed by modality."""

    def __init__(self, cfg: MarsConfig):
        super().__init__()
        self.cfg = cfg
        self.input_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.post_attention_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.attn_text, self.mlp_text = AttnProj(cfg), SwiGLU(cfg)
        self.attn_vision = AttnProj(cfg) if cfg.visual_expert else None
        self.mlp_vision = SwiGLU(cfg) if cfg.visual_expert else None

    def forward(self, x: Tensor, r: Routing, cos: Tensor, sin: Tensor, mask: Tensor,
                past: Callable[..., tuple[Tensor, Tensor]] | None, xv: Tensor | None = None
                ) -> tuple[Tensor, Tensor | None, tuple[Tensor, ...]]:
        """past(k, v, image_view=False): the cache's keys/values to attend over, the new ones included (a cache's
        `extend`). xv: caption_kv "stream"'s vision stream (B, T, D), else None. Returns the new x, the new xv and
        the keys/values attended over: (k, v), plus the image queries' (k, v) with an image view."""
        if self.cfg.caption_kv == "stream" and self.attn_vision is not None:
            return self._forward_stream(x, xv, r, cos, sin, mask, past)
        B, T, _ = x.shape
        av, mv = self.attn_vision, self.mlp_vision
        xn = self.input_layernorm(x)
        q, k, v = self._heads(route(xn, r, self.attn_text.qkv, av.qkv if av else None), cos, sin)
        if not self.cfg.image_view:
            if past is not None:
                k, v = past(k, v)  # (B, Hkv, Tk, hd)
            y = _attend(q, k, v, mask)  # (B, H, T, hd)
            kv = (k, v)
        else:
            ki, vi = self._image_view(xn, r, k, v, cos, sin)
            if past is not None:
                k, v = past(k, v)
                ki, vi = past(ki, vi, image_view=True)
            y = _attend(q, ki, vi, mask) if r.any_image else None
            if not r.all_image:
                yt = _attend(q, k, v, mask)
                y = yt if y is None else torch.where(r.is_image[:, None, :, None], y, yt)
            kv = (k, v, ki, vi)
        y = y.transpose(1, 2).reshape(B, T, -1)  # (B, T, H*hd)
        x = x + route(y, r, self.attn_text.o_proj, av.o_proj if av else None)
        x = x + route(self.post_attention_layernorm(x), r, self.mlp_text, mv)
        return x, None, kv

    def _heads(self, qkv: Tensor, cos: Tensor, sin: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Projected (B, T, (H+2Hkv)hd) -> q (B, H, T, hd), k and v (B, Hkv, T, hd), RoPE applied to q and k."""
        B, T, _ = qkv.shape
        H, Hkv, hd = self.cfg.num_attention_heads, self.cfg.num_key_value_heads, self.cfg.head_dim
        q, k, v = qkv.split([H * hd, Hkv * hd, Hkv * hd], dim=-1)
        return (_rope(q.view(B, T, H, hd).transpose(1, 2), cos, sin),
                _rope(k.view(B, T, Hkv, hd).transpose(1, 2), cos, sin), v.view(B, T, Hkv, hd).transpose(1, 2))

    def _forward_stream(self, x: Tensor, xv: Tensor, r: Routing, cos: Tensor, sin: Tensor, mask: Tensor, past):
        """caption_kv "stream": the vision stream xv runs the expert over every position (the caption too, from the
        same embeddings), attending within itself; the text stream x runs the frozen text weights over the text
        positions and reads image positions from the vision stream. Image positions of x are the vision stream."""
        av, img = self.attn_vision, r.is_image[:, :, None]  # (B, T, 1)
        B, T, _ = x.shape
        xv = x if r.all_image else torch.where(img, x, xv)  # (B, T, D)
        qv, kv_, vv = self._heads(av.qkv(self.input_layernorm(xv)), cos, sin)
        kt, vt = kv_, vv
        if not r.all_image:
            qt, kt, vt = self._heads(self.attn_text.qkv(self.input_layernorm(x)), cos, sin)  # text rows are used
            kt, vt = torch.where(img[:, None], kv_, kt), torch.where(img[:, None], vv, vt)
        if past is not None:
            kt, vt = past(kt, vt)
            kv_, vv = past(kv_, vv, image_view=True)
        yv = _attend(qv, kv_, vv, mask).transpose(1, 2).reshape(B, T, -1)
        xv = xv + av.o_proj(yv)
        xv = xv + self.mlp_vision(self.post_attention_layernorm(xv))
        if r.all_image:
            return xv, xv, (kt, vt, kv_, vv)
        yt = _attend(qt, kt, vt, mask).transpose(1, 2).reshape(B, T, -1)
        xt = x + route(yt, r, self.attn_text.o_proj, None)
        xt = xt + route(self.post_attention_layernorm(xt), r, self.mlp_text, None)
        return torch.where(img, xv, xt), xv, (kt, vt, kv_, vv)

    def _image_view(self, xn: Tensor, r: Routing, k: Tensor, v: Tensor, cos: Tensor, sin: Tensor
                    ) -> tuple[Tensor, Tensor]:
        """Keys/values (B, Hkv, T, hd) image queries read: the expert's projections at every position (at image
        positions these are k, v themselves)."""
        if r.all_image:
            return k, v
        B, T, _ = xn.shape
        Hkv, hd = self.cfg.num_key_value_heads, self.cfg.head_dim
        av = self.attn_vision
        ki = _rope(av.k_proj(xn).view(B, T, Hkv, hd).transpose(1, 2), cos, sin)  # (B, Hkv, T, hd)
        vi = av.v_proj(xn).view(B, T, Hkv, hd).transpose(1, 2)
        img = r.is_image[:, None, :, None]  # (B, 1, T, 1)
        return torch.where(img, k, ki.to(k.dtype)), torch.where(img, v, vi.to(v.dtype))


def _attend(q: Tensor, k: Tensor, v: Tensor, mask: Tensor) -> Tensor:
    """Joint attention (B, H, T, hd) of queries q over keys/values (B, Hkv, Tk, hd) (grouped-query heads)."""
    return F.scaled_dot_product_attention(q, k.to(q.dtype), v.to(q.dtype), attn_mask=mask,
                                          enable_gqa=q.shape[1] != k.shape[1])


def is_visual_param(name: str) -> bool:
    """Vision-path parameters: the experts, the visual embeddings and the vision head (the rest is the text path)."""
    return name.startswith(("embed_visual.", "vision_head.")) or ".attn_vision." in name or ".mlp_vision." in name


class MarsModel(nn.Module):
    """The MARS SemVIE model over the joint vocabulary. No I/O here: see mars_ref/checkpoint.py."""

    def __init__(self, cfg: MarsConfig):
        super().__init__()
        self.config = cfg
        self.embed_text = nn.Embedding(cfg.text_vocab_size, cfg.hidden_size)
        self.embed_visual = nn.Embedding(cfg.visual_vocab_size, cfg.hidden_size)
        self.layers = nn.ModuleList(SemVIEBlock(cfg) for _ in range(cfg.num_hidden_layers))
        self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.lm_head = None if cfg.tie_word_embeddings else nn.Linear(cfg.hidden_size, cfg.text_vocab_size, bias=False)
        self.vision_head = nn.Linear(cfg.hidden_size, cfg.visual_vocab_size, bias=False)
        self.rotary = Rotary(cfg.head_dim, cfg.rope_theta)
        self.apply(self._init_weights)
        self.init_visual_from_text()
        self.set_trainable()

    def _init_weights(self, m: nn.Module):
        if isinstance(m, nn.Linear | nn.Embedding):  # transformers' Qwen2 init
            nn.init.normal_(m.weight, std=self.config.initializer_range)
            if getattr(m, "bias", None) is not None:
                nn.init.zeros_(m.bias)

    @property
    def text_head_weight(self) -> Tensor:
        return self.embed_text.weight if self.lm_head is None else self.lm_head.weight

    @torch.no_grad()
    def init_visual_from_text(self):
        """Paper init: experts copy the text weights; visual embeddings and vision-head rows are their text means."""
        for block in self.layers:
            if block.attn_vision is not None:
                block.attn_vision.load_state_dict(block.attn_text.state_dict())
                block.mlp_vision.load_state_dict(block.mlp_text.state_dict())
        for rows, text in ((self.embed_visual.weight, self.embed_text.weight), (self.vision_head.weight,
                                                                                self.text_head_weight)):
            rows.copy_(text.float().mean(0, keepdim=True).expand_as(rows))  # mean in fp32, also for bf16 weights

    def is_trainable_name(self, name: str) -> bool:
        """Paper: text weights (incl. shared norms and text head) frozen; experts, visual embeddings and the vision
        head train. The no-expert ablation trains everything."""
        return is_visual_param(name) or not self.config.visual_expert

    def set_trainable(self):
        for name, p in self.named_parameters():
            p.requires_grad_(self.is_trainable_name(name))

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for n, p in self.named_parameters() if self.is_trainable_name(n)]

    def embed(self, ids: Tensor) -> Tensor:
        V = self.config.text_vocab_size
        is_text = (ids < V)[..., None]  # (B, T, 1)
        x_text = self.embed_text(ids.clamp(max=V - 1))  # (B, T, D)
        x_vis = self.embed_visual((ids - V).clamp(min=0))  # (B, T, D)
        return torch.where(is_text, x_text, x_vis)

    def logits(self, h: Tensor, vocab: slice | None = None) -> Tensor:
        """Joint logits (..., V_text + C + 6) = cat(text head, vision head) at every position (paper); with `vocab`
        (a non-empty slice of joint ids, step 1) only those columns, from the head rows in it."""
        if vocab is None:
            return torch.cat([F.linear(h, self.text_head_weight), self.vision_head(h)], dim=-1)
        V = self.config.text_vocab_size
        lo, hi, _ = vocab.indices(self.config.vocab_size)
        parts = [F.linear(h, self.text_head_weight[lo:hi])] if lo < V else []
        if hi > V:
            parts.append(F.linear(h, self.vision_head.weight[max(lo - V, 0):hi - V]))
        return parts[0] if len(parts) == 1 else torch.cat(parts, dim=-1)

    def forward(self, ids: Tensor, is_image: Tensor | bool | None = None, cache: KVCache | StaticKVCache | None = None,
                positions: Tensor | None = None, attn_mask: Tensor | None = None,
                suffix_start: Tensor | int | None = None, use_cache: bool = False,
                keep_last: int | None = None, vocab: slice | None = None) -> MarsOutput:
        """ids (B, T) joint-vocabulary ids; <pad> tokens are masked out as keys (left padding).

        is_image: (B, T) routing mask; default = input token is not text (the documented rule); True / False says
        every token is image / text (decoding knows what it feeds: no host sync, nothing for torch.compile to break on).
        cache: keys/values of earlier positions; the new tokens follow them. positions: RoPE positions (B, T),
        default = continue from the cache counting only non-padding tokens (so left padding does not shift them).
        attn_mask: (B, 1, T, Tk) bool to override; otherwise causal, or suffix attention from key index
        `suffix_start` (Stage III). Returns joint logits (B, T, V), or (B, keep_last, V) for the last positions
        only (decoding needs one), over the ids in `vocab` only if given, and, if use_cache or a cache was given,
        the extended cache: a new KVCache, or the StaticKVCache given, written in place.
        """
        cfg = self.config
        B, T = ids.shape
        expert = cfg.visual_expert  # without experts there is nothing to route (and no host sync)
        if isinstance(is_image, bool):
            r = Routing(torch.full_like(ids, is_image, dtype=torch.bool), expert and is_image, expert and is_image)
        else:
            is_image = ids >= cfg.text_vocab_size if is_image is None else is_image
            r = Routing(is_image, expert and bool(is_image.all()), expert and bool(is_image.any()))
        valid = ids != cfg.pad_id  # (B, T)
        base = cache.next_pos if cache is not None else torch.zeros(B, dtype=torch.long, device=ids.device)
        if positions is None:
            positions = base[:, None] + token_positions(valid)  # (B, T)
        static = isinstance(cache, StaticKVCache)
        if static:
            valid_k = cache.write_valid(valid)  # (B, Tk)
        else:
            valid_k = valid if cache is None else torch.cat([cache.valid, valid], dim=1)  # (B, Tk)
        mask = attn_mask if attn_mask is not None else causal_mask(valid_k, T, suffix_start)
        cos, sin = self.rotary(positions)
        x = self.embed(ids)  # (B, T, D)
        new_kv, xv = [], x  # xv: the vision stream of caption_kv "stream" (unused otherwise)
        for i, block in enumerate(self.layers):
            x, xv, kv = block(x, r, cos, sin, mask, None if cache is None else partial(cache.extend, i), xv)
            new_kv.append(kv)
        h = self.norm(x if keep_last is None else x[:, T - keep_last:])  # (B, T or keep_last, D)
        new_cache = None
        if static:
            cache.length, cache.next_pos = cache.length + T, base + valid.sum(1)
            new_cache = cache
        elif use_cache or cache is not None:
            keys, values, *image = zip(*new_kv, strict=True)  # per layer; image: the image queries' view, if any
            new_cache = KVCache(keys, values, valid_k, base + valid.sum(1), *image)
        return MarsOutput(self.logits(h, vocab), new_cache)

    # ---- construction and checkpoints (I/O lives in mars_ref/checkpoint.py) -----------------------------------
    @classmethod
    def from_qwen2(cls, directory, codebook_size: int, visual_expert: bool = True,
                   dtype: torch.dtype = torch.float32, caption_kv: str = "text") -> MarsModel:
        """Build from a local Hugging Face Qwen2ForCausalLM directory (safetensors), strictly."""
        from mars_ref.checkpoint import load_qwen2

        return load_qwen2(directory, codebook_size, visual_expert, dtype, caption_kv)

    def save(self, directory) -> None:
        from mars_ref.checkpoint import save_model

        save_model(self, directory)

    @classmethod
    def load(cls, directory, config: MarsConfig | None = None, dtype: torch.dtype = torch.float32) -> MarsModel:
        """Load a `save()`d directory; with `config`, the checkpoint must have been saved with exactly it."""
        from mars_ref.checkpoint import load_model

        return load_model(directory, config, dtype)
