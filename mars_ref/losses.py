"""Training losses with a per-modality breakdown: the paper's "logit drift" (Fig. 5) shows up as diverging text vs
image losses, gradient norms, logit norms and max logits, so every loss reports them split by target modality."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor


@dataclass
class LossStats:
    """`loss`, `loss_text`, `loss_image` are differentiable (per-modality gradient norms need them); the rest are
    detached diagnostics. A modality with no targets has loss 0 (still differentiable) and NaN statistics."""

    loss: Tensor  # mean cross-entropy over all counted targets
    loss_text: Tensor  # mean over targets that are text tokens
    loss_image: Tensor  # mean over targets that are not text tokens (codebook entries and specials)
    n_text: int
    n_image: int
    logit_norm_text: float  # mean L2 norm of the joint logit vector at positions with a text target
    logit_norm_image: float
    max_logit_text: float  # largest logit at positions with a text target
    max_logit_image: float

    def as_dict(self) -> dict[str, float]:
        return {k: (float(v.detach()) if isinstance(v, Tensor) else v) for k, v in self.__dict__.items()}


def ntp_targets(ids: Tensor, pad_id: int, loss_mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Next-token targets aligned with the logits of `ids` (B, T): targets[:, t] = ids[:, t+1].

    The returned mask is False at the last position, at padding targets, and where `loss_mask` (over target
    positions, i.e. loss_mask[:, t] says whether ids[:, t] is a target) is False.
    """
    targets = torch.cat([ids[:, 1:], torch.full_like(ids[:, :1], pad_id)], dim=1)  # (B, T)
    mask = targets != pad_id
    if loss_mask is not None:
        mask &= torch.cat([loss_mask[:, 1:], torch.zeros_like(loss_mask[:, :1])], dim=1).bool()
    return targets, mask


def ntp_loss(logits: Tensor, targets: Tensor, loss_mask: Tensor | None, text_vocab_size: int) -> LossStats:
    """Cross-entropy over the joint vocabulary at the positions of `loss_mask` (B, T); logits (B, T, V) are aligned
    with targets (B, T) (targets[:, t] is what logits[:, t] should predict; see ntp_targets)."""
    mask = torch.ones_like(targets, dtype=torch.bool) if loss_mask is None else loss_mask.bool()
    ce = F.cross_entropy(logits.float().flatten(0, 1), targets.flatten(), reduction="none").view_as(targets)  # (B, T)
    is_text = targets < text_vocab_size
    parts, stats = {}, {}
    for name, sel in (("text", mask & is_text), ("image", mask & ~is_text)):
        n = int(sel.sum())
        parts[name] = (ce * sel).sum() / max(n, 1)
        stats[f"n_{name}"] = n
        with torch.no_grad():
            sl = logits[sel].float()  # (n, V)
            stats[f"logit_norm_{name}"] = float(sl.norm(dim=-1).mean()) if n else float("nan")
            stats[f"max_logit_{name}"] = float(sl.max()) if n else float("nan")
    n_all = stats["n_text"] + stats["n_image"]
    loss = (ce * mask).sum() / max(n_all, 1)
    return LossStats(loss=loss, loss_text=parts["text"], loss_image=parts["image"], **stats)
