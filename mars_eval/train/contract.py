"""What the engine needs from a training stage: a model builder, a loss function and a batch source.

The engine is generic: a MARS stage plugs in by providing these three objects (see `mars_eval.train.toy` for a
complete small example). Everything here is plain data so that it can be pickled into spawned processes.

Loss normalisation: a loss function returns the SUM of its per-token losses and the number of tokens. The engine
divides by the token count of the whole GLOBAL batch (all micro-batches on all processes, known before the forward
pass from `count_tokens`), so the summed gradients equal the gradient of the global per-token mean however the batch
is split over processes and accumulation steps.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Protocol, runtime_checkable

import numpy as np
import torch
from torch import nn


@dataclass
class LossOutput:
    loss_sum: torch.Tensor  # () sum of per-token losses of this micro-batch; carries the autograd graph
    n_tokens: int  # tokens in loss_sum; must equal count_tokens(batch)
    n_input_tokens: int | None = None  # tokens the model processed (tokens/s, MFU); default n_tokens
    # mean-type diagnostics: name -> (sum, count); logged as sum/count over the global batch
    # (e.g. "loss/t2i", "loss/text", "logit_norm/vision")
    sums: dict[str, tuple[Any, Any]] = field(default_factory=dict)
    # max-type diagnostics: name -> value; logged as the max over the global batch (e.g. "logit_max/vision")
    maxes: dict[str, Any] = field(default_factory=dict)


@runtime_checkable
class LossFn(Protocol):
    def __call__(self, model: nn.Module, batch: Any) -> LossOutput:
        """Forward `batch` through `model` (the engine's module; under DeepSpeed its wrapper) and return the loss.
        Compute the loss in fp32 (`logits.float()`): under DeepSpeed bf16 the model's outputs are bf16."""

    def count_tokens(self, batch: Any) -> int:
        """Number of loss tokens in `batch`, without running the model (needed before the first backward)."""

    def param_group(self, name: str) -> str:
        """Gradient-norm group of a parameter name, e.g. "text" or "vision" (logged as grad_norm/<group>)."""


@runtime_checkable
class BatchSource(Protocol):
    def __len__(self) -> int:
        """Number of examples; the sampler draws indices in [0, len)."""

    def collate(self, indices: np.ndarray, seeds: np.ndarray) -> Any:
        """The micro-batch of examples `indices` (int64, (B,)). `seeds` (B,) gives one seed per example for any
        per-example randomness (masks, crops): it depends on (run seed, step, position in the global batch) only,
        so the batch does not depend on how it is split over processes."""


class Job(NamedTuple):
    """The three things a stage supplies; `build_model` must be deterministic given the torch seed."""

    build_model: Callable[[], nn.Module]
    loss_fn: LossFn
    data: BatchSource
