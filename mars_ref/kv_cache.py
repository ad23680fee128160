"""Key/value caches of MarsModel (mars_ref/model.py): KVCache, immutable and grown by concatenation (training-time
helpers, reuse of one prefix), and StaticKVCache, preallocated and written in place (decoding). With an image view
(MarsConfig.image_view) both hold two views: the keys/values text queries attend over and those image queries do.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import NamedTuple

import torch
from torch import Tensor

from mars_ref.config import MarsConfig
from mars_ref.errors import MarsRefError


class KVCache(NamedTuple):
    """Keys/values of every layer so far. Immutable: forward returns a new cache, so a prefix cache can be reused
    (Stage III re-runs the bidirectional suffix on top of one cached text prefix)."""

    keys: tuple[Tensor, ...]  # per layer (B, Hkv, T, hd), after RoPE
    values: tuple[Tensor, ...]  # per layer (B, Hkv, T, hd)
    valid: Tensor  # (B, T) bool, False at left padding
    next_pos: Tensor  # (B,) RoPE position of the next real token
    image_keys: tuple[Tensor, ...] = ()  # the image queries' view (caption_kv "expert"), else empty
    image_values: tuple[Tensor, ...] = ()

    @property
    def length(self) -> int:
        return self.valid.shape[1]

    def extend(self, layer: int, k: Tensor, v: Tensor, image_view: bool = False) -> tuple[Tensor, Tensor]:
        """Keys/values (B, Hkv, Tk, hd) to attend over: this layer's past followed by the new (B, Hkv, T, hd)."""
        keys, values = (self.image_keys, self.image_values) if image_view else (self.keys, self.values)
        return torch.cat([keys[layer], k], dim=2), torch.cat([values[layer], v], dim=2)


class StaticKVCache:
    """Keys/values in buffers preallocated for `capacity` positions, written in place (decoding).

    Mutable: forward writes the new positions after the filled part and advances `length`; `scratch()` discards
    what is written inside it (NKTP re-runs its suffix on one cached prefix). The buffers start as zeros, never
    garbage, and attention only ever sees the filled part.
    """

    def __init__(self, cfg: MarsConfig, batch: int, capacity: int, dtype: torch.dtype = torch.float32,
                 device: torch.device | str | None = None):
        shape = (batch, cfg.num_key_value_heads, capacity, cfg.head_dim)
        self.keys = tuple(torch.zeros(shape, dtype=dtype, device=device) for _ in range(cfg.num_hidden_layers))
        self.values = tuple(torch.zeros_like(k) for k in self.keys)  # per layer (B, Hkv, capacity, hd) each
        views = range(cfg.num_hidden_layers if cfg.image_view else 0)  # the image queries' view of the caption
        self.image_keys = tuple(torch.zeros_like(self.keys[i]) for i in views)
        self.image_values = tuple(torch.zeros_like(self.keys[i]) for i in views)
        self.valid_all = torch.zeros(batch, capacity, dtype=torch.bool, device=device)  # (B, capacity)
        self.next_pos = torch.zeros(batch, dtype=torch.long, device=device)  # (B,)
        self.length = 0  # filled positions

    @property
    def capacity(self) -> int:
        return self.valid_all.shape[1]

    @property
    def valid(self) -> Tensor:
        return self.valid_all[:, :self.length]  # (B, length)

    @property
    def nbytes(self) -> int:
        return sum(t.nbytes for t in (*self.keys, *self.values, *self.image_keys, *self.image_values, self.valid_all))

    def write_valid(self, valid: Tensor) -> Tensor:
        """Record the new positions' validity (B, T); returns the keys' validity (B, length + T)."""
        end = self.length + valid.shape[1]
        if end > self.capacity:
            raise MarsRefError(f"StaticKVCache holds {self.capacity} positions; {end} needed")
        self.valid_all[:, self.length:end] = valid
        return self.valid_all[:, :end]

    def extend(self, layer: int, k: Tensor, v: Tensor, image_view: bool = False) -> tuple[Tensor, Tensor]:
        """Write this layer's new keys/values (B, Hkv, T, hd) in place; returns views (B, Hkv, length + T, hd)."""
        keys, values = (self.image_keys, self.image_values) if image_view else (self.keys, self.values)
        end = self.length + k.shape[2]
        keys[layer][:, :, self.length:end] = k
        values[layer][:, :, self.length:end] = v
        return keys[layer][:, :, :end], values[layer][:, :, :end]

    @contextmanager
    def scratch(self) -> Iterator[StaticKVCache]:
        """Positions written inside the block are forgotten on exit (their buffer slots are reused)."""
        length, next_pos = self.length, self.next_pos
        try:
            yield self
        finally:
            self.length, self.next_pos = length, next_pos
