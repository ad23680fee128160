"""Deterministic data order: the global batch at step s is a pure function of (seed, s).

That makes resume exact with no iterator state to save (the "data position" is just the step) and lets 1- and
N-process runs see the same examples: every process computes the same global batch and takes its own slice.
Examples are drawn epoch by epoch (a fresh permutation per epoch), so each one is seen once per epoch.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

_EPOCH, _SEEDS = 0, 1  # stream tags, so the permutation and the per-example seeds are independent streams


@lru_cache(maxsize=4)
def _permutation(seed: int, epoch: int, n: int) -> np.ndarray:
    return np.random.default_rng([seed, _EPOCH, epoch]).permutation(n)


def step_batch(seed: int, step: int, n_examples: int, global_batch: int) -> tuple[np.ndarray, np.ndarray]:
    """(indices, seeds), both (global_batch,) int64: the examples of step `step` and a seed for each."""
    if n_examples < 1:
        raise ValueError("the batch source has no examples")
    pos = step * global_batch + np.arange(global_batch, dtype=np.int64)  # positions in the endless example stream
    epochs, offsets = np.divmod(pos, n_examples)
    indices = np.empty(global_batch, dtype=np.int64)
    for e in np.unique(epochs):
        sel = epochs == e
        indices[sel] = _permutation(seed, int(e), n_examples)[offsets[sel]]
    seeds = np.random.default_rng([seed, _SEEDS, step]).integers(0, 2**62, size=global_batch, dtype=np.int64)
    return indices, seeds


def rank_slice(global_batch: int, rank: int, world: int) -> slice:
    """Rank r takes the r-th contiguous 1/world of the global batch."""
    per = global_batch // world
    return slice(rank * per, (rank + 1) * per)
