"""Joint-vocabulary sequences for each training task (ids are MarsConfig ids: text | codebook | specials).

    text-to-image (Stage I, II):  caption <boi> grid <eoi>           targets: grid tokens and <eoi>
    captioning (Stage I):         <boi> grid <eoi> caption <eos>     targets: caption tokens and <eos>
    super-resolution (Stage III): caption | <boi> low <eoi> <boh> high (masked)   (see mars_ref.nktp)

With the visual expert, text positions run on frozen weights, so the T2I caption carries no trainable loss;
captioning trains the expert through attention from text positions to image keys. Classifier-free guidance
needs the unconditional model: a caption is dropped (replaced by the empty caption) with probability `p_uncond`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from mars_ref.config import MarsConfig


def t2i(cfg: MarsConfig, caption: Sequence[int], codes: Sequence[int]) -> tuple[list[int], list[bool]]:
    grid = [int(c) + cfg.codebook_offset for c in codes]
    ids = list(caption) + [cfg.boi_id] + grid + [cfg.eoi_id]
    target = [False] * (len(caption) + 1) + [True] * (len(grid) + 1)
    return ids, target


def captioning(cfg: MarsConfig, codes: Sequence[int], caption: Sequence[int], eos_id: int) -> tuple[list[int], list[bool]]:
    grid = [int(c) + cfg.codebook_offset for c in codes]
    ids = [cfg.boi_id] + grid + [cfg.eoi_id] + list(caption) + [eos_id]
    target = [False] * (len(grid) + 2) + [True] * (len(caption) + 1)
    return ids, target


def pad_right(rows: Sequence[tuple[list[int], list[bool]]], pad_id: int) -> tuple[Tensor, Tensor]:
    """Right-pad training rows: ids (B, T) and target mask (B, T); <pad> is never attended to nor a target."""
    T = max(len(ids) for ids, _ in rows)
    ids = torch.full((len(rows), T), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), T), dtype=torch.bool)
    for i, (r, m) in enumerate(rows):
        ids[i, : len(r)] = torch.tensor(r, dtype=torch.long)
        mask[i, : len(m)] = torch.tensor(m, dtype=torch.bool)
    return ids, mask
