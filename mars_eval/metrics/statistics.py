"""Feature statistics: mean and covariance, accumulated batch by batch so memory does not grow with the
folder.

`RunningMoments` merges per-batch means and centred second moments (Chan et al.'s parallel update) in float64,
so the result equals `np.mean` / `np.cov(rowvar=False)` of all features (tested) without keeping them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mars_eval.errors import MarsEvalError


@dataclass(frozen=True, eq=False)
class GaussianStats:
    mu: np.ndarray  # (D,) float64
    sigma: np.ndarray  # (D, D) float64, unbiased (n - 1) normalisation, as np.cov
    n: int

    def __post_init__(self):
        if self.mu.ndim != 1 or self.sigma.shape != (self.mu.shape[0],) * 2:
            raise MarsEvalError(f"bad statistics shapes: mu {self.mu.shape}, sigma {self.sigma.shape}")
        if self.n < 2:
            raise MarsEvalError(f"statistics need at least 2 samples, got {self.n}")

    @property
    def dim(self) -> int:
        return self.mu.shape[0]

    @classmethod
    def from_features(cls, feats: np.ndarray) -> GaussianStats:
        feats = np.asarray(feats)
        if feats.ndim != 2 or feats.shape[0] < 2:
            raise MarsEvalError(f"need a (N >= 2, D) feature matrix, got shape {feats.shape}")
        return cls(feats.mean(axis=0, dtype=np.float64), np.cov(feats, rowvar=False), feats.shape[0])


class RunningMoments:
    """Streaming mean / covariance of row vectors."""

    def __init__(self, dim: int):
        self.dim = dim
        self.n = 0
        self.mean = np.zeros(dim, dtype=np.float64)  # (D,)
        self.m2 = np.zeros((dim, dim), dtype=np.float64)  # (D, D) sum of centred outer products

    def update(self, batch: np.ndarray) -> None:
        x = np.asarray(batch, dtype=np.float64)  # (B, D)
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ValueError(f"expected (B, {self.dim}), got {x.shape}")
        nb = x.shape[0]
        if nb == 0:
            return
        mb = x.mean(axis=0)  # (D,)
        xc = x - mb  # (B, D)
        m2b = xc.T @ xc  # (D, D)
        na = self.n
        n = na + nb
        delta = mb - self.mean  # (D,)
        self.mean += delta * (nb / n)
        self.m2 += m2b
        self.m2 += np.outer(delta, delta) * (na * nb / n)
        self.n = n

    def finalize(self) -> GaussianStats:
        if self.n < 2:
            raise MarsEvalError(f"statistics need at least 2 samples, got {self.n}")
        return GaussianStats(self.mean.copy(), self.m2 / (self.n - 1), self.n)
