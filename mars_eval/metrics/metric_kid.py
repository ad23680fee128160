"""Kernel Inception Distance: the unbiased MMD^2 with the cubic polynomial kernel k(x, y) = (x.y / D + 1)^3,
averaged over random subsets (Binkowski et al.), computed by torch-fidelity's `kid_features_to_metric`.

Subset size defaults to min(1000, n_a, n_b) (torch-fidelity requires it to be at most both set sizes;
clean-fid makes the same choice); subsets are drawn with a seeded RandomState, so the value is reproducible.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from mars_eval.errors import MarsEvalError

DEFAULT_SUBSET_SIZE = 1000


@dataclass(frozen=True)
class KidConfig:
    subsets: int = 100
    subset_size: int | None = None  # None: min(1000, n_a, n_b)
    seed: int = 2020  # torch-fidelity's default rng_seed

    def __post_init__(self):
        if not isinstance(self.subsets, int) or self.subsets < 1:
            raise MarsEvalError(f"KID subsets must be a positive integer, got {self.subsets!r}")
        if self.subset_size is not None and (not isinstance(self.subset_size, int) or self.subset_size < 2):
            raise MarsEvalError(f"KID subset size must be an integer >= 2, got {self.subset_size!r}")


def kid(xa: np.ndarray, xb: np.ndarray, config: KidConfig = KidConfig()) -> dict:
    """{'kid', 'kid_std', 'kid_subsets', 'kid_subset_size'} for features (n_a, D) and (n_b, D)."""
    from torch_fidelity.metric_kid import KEY_METRIC_KID_MEAN, KEY_METRIC_KID_STD, kid_features_to_metric

    na, nb = len(xa), len(xb)
    size = config.subset_size if config.subset_size is not None else min(DEFAULT_SUBSET_SIZE, na, nb)
    if size > min(na, nb):
        raise MarsEvalError(f"KID subset size {size} is larger than a set ({na} and {nb} images)")
    out = kid_features_to_metric(torch.from_numpy(np.ascontiguousarray(xa, dtype=np.float32)),
                                 torch.from_numpy(np.ascontiguousarray(xb, dtype=np.float32)),
                                 kid_subsets=config.subsets, kid_subset_size=size, rng_seed=config.seed,
                                 verbose=False)
    return {"kid": out[KEY_METRIC_KID_MEAN], "kid_std": out[KEY_METRIC_KID_STD],
            "kid_subsets": config.subsets, "kid_subset_size": size}
