"""Interval estimates for report cells.

- `mean_ci`: mean and Student-t 95 % CI over independent values (one per training seed).
- `cluster_bootstrap`: for per-image benchmarks, whose images of one prompt are correlated: the mean of per-prompt
  means with a percentile bootstrap CI that resamples prompts (the clusters), every seed's images of a prompt
  pooled into its cluster. It measures prompt-sampling uncertainty of the models at hand, not the variance of
  training another seed - which `mean_ci` over seeds measures, with 2 seeds almost uselessly wide.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

BOOTSTRAP_RESAMPLES = 2000
BOOTSTRAP_SEED = 0  # a fixed resampling seed: the same rows give the same interval


@dataclass(frozen=True)
class Estimate:
    mean: float
    half_width: float  # of the 95 % CI (half its length when asymmetric); nan with a single value
    n: int
    low: float | None = None  # an asymmetric (bootstrap) interval's ends; None for mean ± half_width
    high: float | None = None

    def distances(self, scale: float = 1.0) -> tuple[float, float]:
        """(mean - low, high - mean) of the CI, scaled; nan without one."""
        if self.low is not None and self.high is not None:
            return scale * (self.mean - self.low), scale * (self.high - self.mean)
        return scale * self.half_width, scale * self.half_width

    def fmt(self, scale: float = 1.0, digits: int = 2) -> str:
        if math.isnan(self.mean):
            return "-"
        m = self.mean * scale
        if self.n < 2 or math.isnan(self.half_width):
            return f"{m:.{digits}f}"
        if self.low is not None and self.high is not None:
            return f"{m:.{digits}f} [{self.low * scale:.{digits}f}, {self.high * scale:.{digits}f}]"
        return f"{m:.{digits}f} ± {self.half_width * scale:.{digits}f}"


def mean_ci(values: list[float], level: float = 0.95) -> Estimate:
    vals = [float(v) for v in values if v is not None and not math.isnan(float(v))]
    n = len(vals)
    if n == 0:
        return Estimate(float("nan"), float("nan"), 0)
    m = sum(vals) / n
    if n < 2:
        return Estimate(m, float("nan"), 1)
    sd = math.sqrt(sum((v - m) ** 2 for v in vals) / (n - 1))
    t = stats.t.ppf(0.5 + level / 2, df=n - 1)
    return Estimate(m, t * sd / math.sqrt(n), n)


def cluster_bootstrap(clusters: Sequence[Sequence[float]], level: float = 0.95,
                      resamples: int = BOOTSTRAP_RESAMPLES, seed: int = BOOTSTRAP_SEED) -> Estimate:
    """Mean of cluster means and its percentile bootstrap CI over clusters (n = number of clusters)."""
    means = np.array([float(np.mean(c)) for c in clusters if len(c)], dtype=np.float64)  # (P,)
    if means.size == 0:
        return Estimate(float("nan"), float("nan"), 0)
    m = float(means.mean())
    if means.size < 2:
        return Estimate(m, float("nan"), 1)
    rng = np.random.default_rng(seed)
    boot = means[rng.integers(0, means.size, size=(resamples, means.size))].mean(axis=1)  # (R,)
    low, high = (float(q) for q in np.quantile(boot, [(1 - level) / 2, (1 + level) / 2]))
    return Estimate(m, (high - low) / 2, int(means.size), low, high)
