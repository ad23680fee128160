"""Metric registry: name -> function of the two folders' features (the last, pure stage of the chain).

Each function takes (a, b, config, so_far) where a, b are `FolderFeatures` (A = generated, B = reference),
`config` the run's `FidRunConfig` and `so_far` the results already computed (the bootstrap needs plain FID),
and returns a dict of result keys. `needs_features` says whether the metric reads the full feature matrices.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from mars_eval.errors import MarsEvalError
from mars_eval.metrics.features import FolderFeatures
from mars_eval.metrics.fid_infinity import bootstrap_ci, fid_infinity
from mars_eval.metrics.metric_fid import frechet_distance, frechet_distance_features
from mars_eval.metrics.metric_kid import kid
from mars_eval.metrics.metric_prc import precision_recall

MetricFn = Callable[[FolderFeatures, FolderFeatures, object, dict], dict]


@dataclass(frozen=True)
class Metric:
    name: str
    fn: MetricFn
    needs_features: bool
    help: str


METRICS: dict[str, Metric] = {}


def register_metric(name: str, fn: MetricFn, needs_features: bool, help: str) -> None:
    if name in METRICS:
        raise ValueError(f"metric {name!r} is already registered")
    METRICS[name] = Metric(name, fn, needs_features, help)


def get_metric(name: str) -> Metric:
    if name not in METRICS:
        raise MarsEvalError(f"unknown metric {name!r}; known: {', '.join(METRICS)}")
    return METRICS[name]


def _fid(a: FolderFeatures, b: FolderFeatures, cfg, so_far: dict) -> dict:
    """From the statistics, or from the features (same value, faster) when at hand and a set is small."""
    if a.features is not None and b.features is not None and min(a.n, b.n) <= a.stats.dim:
        return {"fid": frechet_distance_features(a.features, b.features)}
    return {"fid": frechet_distance(a.stats, b.stats)}


register_metric("fid", _fid, False, "Frechet Inception Distance")
register_metric("kid", lambda a, b, cfg, r: kid(a.features, b.features, cfg.kid), True,
                "Kernel Inception Distance (mean and std over subsets)")
register_metric("fid_ci", lambda a, b, cfg, r: bootstrap_ci(a.features, b.features, r["fid"], cfg.bootstrap), True,
                "bootstrap confidence interval of FID")
register_metric("fid_inf", lambda a, b, cfg, r: fid_infinity(a.features, b.features, cfg.fid_inf), True,
                "FID-infinity extrapolation (bias-corrected FID)")
register_metric("prc", lambda a, b, cfg, r: precision_recall(a.features, b.features), True,
                "precision / recall (k-NN manifolds, k = 3)")
