"""Score two image folders: list -> (cached) features + statistics -> registered metrics -> one results dict.

This is the chain behind `mars-eval fid`; every stage is a function of the previous stage's output, and the
cache wraps the feature stage only.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from mars_eval.errors import MarsEvalError
from mars_eval.metrics import cache as feature_cache
from mars_eval.metrics.features import FolderFeatures, LoaderConfig, extract
from mars_eval.metrics.fid_infinity import BootstrapConfig, FidInfConfig
from mars_eval.metrics.images import ImageFolder, list_images
from mars_eval.metrics.inception import ExtractorConfig, InceptionExtractor
from mars_eval.metrics.metric_kid import KidConfig
from mars_eval.metrics.preprocess import PreprocessSpec
from mars_eval.metrics.registry import get_metric

# Bootstrap by default only for "small" sets, where plain FID is most uncertain and resampling is cheap.
AUTO_BOOTSTRAP_MAX_IMAGES = 5000


@dataclass(frozen=True)
class FidRunConfig:
    preprocess: PreprocessSpec = field(default_factory=PreprocessSpec)
    loader: LoaderConfig = field(default_factory=LoaderConfig)
    extractor: ExtractorConfig = field(default_factory=ExtractorConfig)
    kid: KidConfig = field(default_factory=KidConfig)
    bootstrap: BootstrapConfig = field(default_factory=BootstrapConfig)
    auto_bootstrap: bool = True  # skip the bootstrap when the smaller set exceeds AUTO_BOOTSTRAP_MAX_IMAGES
    fid_inf: FidInfConfig = field(default_factory=FidInfConfig)
    metrics: tuple[str, ...] = ("fid", "kid", "fid_ci", "fid_inf")
    cache_dir: Path | None = None  # None: no cache
    content_hash: bool = False
    recursive: bool = False

    def __post_init__(self):
        if "fid" not in self.metrics:
            raise MarsEvalError("the metric list must include 'fid'")
        for m in self.metrics:
            get_metric(m)


def folder_features(folder: ImageFolder, config: FidRunConfig, extractor, keep: bool,
                    on_batch: Callable[[int], None] | None = None) -> tuple[FolderFeatures, bool]:
    """Features of one folder, from the cache when an entry with the same key exists. Returns (value, hit)."""
    if config.cache_dir is None:
        return extract(folder.files, config.preprocess, extractor, config.loader, keep, on_batch), False
    key = feature_cache.cache_key(feature_cache.folder_fingerprint(folder, config.content_hash),
                                  config.preprocess.identity, extractor.identity)
    path = feature_cache.cache_path(config.cache_dir, key)
    hit = feature_cache.load(path, key)
    if hit is not None and (hit.features is not None or not keep):
        if on_batch is not None:
            on_batch(hit.n)
        return hit, True
    value = extract(folder.files, config.preprocess, extractor, config.loader, keep, on_batch)
    info = {"folder": str(folder.root), "n": value.n, "preprocess": config.preprocess.identity,
            "extractor": extractor.identity}
    feature_cache.store(path, key, value, info)
    return value, False


def score_folders(dir_a: str | Path, dir_b: str | Path, config: FidRunConfig = FidRunConfig(),
                  extractor: InceptionExtractor | None = None,
                  on_batch: Callable[[int], None] | None = None,
                  on_folders: Callable[[ImageFolder, ImageFolder], None] | None = None) -> dict:
    """FID (+ KID, bootstrap CI, FID-inf, precision/recall as configured) of A (generated) against B."""
    fa, fb = list_images(dir_a, config.recursive), list_images(dir_b, config.recursive)
    if on_folders is not None:
        on_folders(fa, fb)
    metrics = list(config.metrics)
    if "fid_ci" in metrics and (config.bootstrap.resamples == 0 or (
            config.auto_bootstrap and min(len(fa), len(fb)) > AUTO_BOOTSTRAP_MAX_IMAGES)):
        metrics.remove("fid_ci")
    keep = any(get_metric(m).needs_features for m in metrics)
    if extractor is None:
        extractor = InceptionExtractor(config.extractor)
    a, hit_a = folder_features(fa, config, extractor, keep, on_batch)
    b, hit_b = folder_features(fb, config, extractor, keep, on_batch)
    results: dict = {}
    for name in metrics:
        results.update(get_metric(name).fn(a, b, config, results))
    spec = config.preprocess
    results.update({
        "protocol": spec.protocol.value,
        "resolution": spec.resolution,
        "preprocessing": spec.describe(),
        "n_a": a.n, "n_b": b.n,
        "dir_a": str(fa.root), "dir_b": str(fb.root),
        "ignored_files_a": fa.ignored, "ignored_files_b": fb.ignored,
        "cache_hit_a": hit_a, "cache_hit_b": hit_b,
        **{f"extractor_{k}" if k != "extractor" else k: v for k, v in extractor.identity.items()},
        "versions": spec.identity,
    })
    return results
