"""The paper's optimiser (AdamW, beta2 0.95, weight decay 0.1) and schedule (warm-up ratio 0.01, then cosine).

Weight decay goes to matrices only (ndim >= 2: linear weights, embeddings, heads). Norm gains, biases and other
1-d parameters get none: decaying a norm's gain towards 0 fights the normalisation, which is why GPT-style
codebases (nanoGPT, litgpt, HF Trainer) exclude them; the paper does not say otherwise.

Only trainable parameters (requires_grad) reach the optimiser, so frozen text weights get neither updates nor decay.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.optim.lr_scheduler import LambdaLR
from transformers.optimization import (
    get_constant_schedule_with_warmup,
    get_cosine_with_min_lr_schedule_with_warmup,
)

from mars_eval.errors import MarsEvalError
from mars_eval.train.config import TrainConfig


def param_groups(named: list[tuple[str, nn.Parameter]], weight_decay: float) -> list[dict]:
    """Two AdamW groups: decayed matrices and undecayed vectors; frozen parameters are left out."""
    decay = [p for _, p in named if p.requires_grad and p.ndim >= 2]
    no_decay = [p for _, p in named if p.requires_grad and p.ndim < 2]
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    groups = [g for g in groups if g["params"]]
    if not groups:
        raise MarsEvalError("the model has no trainable parameters (every parameter has requires_grad=False)")
    return groups


def build_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.AdamW:
    # foreach=False keeps the update order fixed and needs no extra memory for the per-tensor lists.
    return torch.optim.AdamW(param_groups(list(model.named_parameters()), cfg.weight_decay), lr=cfg.lr,
                             betas=cfg.betas, eps=cfg.eps, weight_decay=cfg.weight_decay, foreach=False)


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: TrainConfig) -> LambdaLR:
    """transformers' warm-up + cosine-to-min-lr schedule. As in HF Trainer the lr at step 0 is 0 when there is warm-up."""
    if cfg.schedule == "constant":
        return get_constant_schedule_with_warmup(optimizer, cfg.warmup_steps)
    return get_cosine_with_min_lr_schedule_with_warmup(optimizer, cfg.warmup_steps, cfg.steps,
                                                       min_lr_rate=cfg.min_lr_ratio)

