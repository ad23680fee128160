"""Aggregation across seeds: mean and a Student-t 95 % confidence interval."""

from __future__ import annotations

import math
from dataclasses import dataclass

from scipy import stats


@dataclass(frozen=True)
class Estimate:
    mean: float
    half_width: float  # of the 95 % CI; nan with a single value
    n: int

    def fmt(self, scale: float = 1.0, digits: int = 2) -> str:
        if math.isnan(self.mean):
            return "-"
        m = self.mean * scale
        if self.n < 2 or math.isnan(self.half_width):
            return f"{m:.{digits}f}"
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
