"""Batched, streaming Inception features of an image list.

Images are decoded and resized by a DataLoader (`num_workers` processes, 0 = in this process) and go through
the network one batch at a time; statistics are accumulated on the fly. Memory is flat in the number of
images: one batch of 299x299 inputs plus the (D, D) moments, and, only when `keep=True` (KID,
precision/recall, bootstrap), the feature matrix itself at 8 KiB per image.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from mars_eval.errors import MarsEvalError
from mars_eval.metrics.images import load_rgb
from mars_eval.metrics.inception import INCEPTION_SIZE
from mars_eval.metrics.preprocess import PreprocessSpec
from mars_eval.metrics.statistics import GaussianStats, RunningMoments


@dataclass(frozen=True)
class LoaderConfig:
    batch_size: int = 32
    num_workers: int = 0

    def __post_init__(self):
        if not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise MarsEvalError(f"batch size must be a positive integer, got {self.batch_size!r}")
        if not isinstance(self.num_workers, int) or self.num_workers < 0:
            raise MarsEvalError(f"workers must be a non-negative integer, got {self.num_workers!r}")


@dataclass(frozen=True, eq=False)
class FolderFeatures:
    stats: GaussianStats
    features: np.ndarray | None  # (N, D) float32 when kept

    @property
    def n(self) -> int:
        return self.stats.n


class _ImageDataset(Dataset):
    """Decoded + resized images; a bad file becomes an error string, because an exception raised inside a
    DataLoader worker comes back wrapped in a multi-line traceback instead of our one-line message. The resize
    function is built lazily in each process, so the dataset pickles for any worker start method."""

    def __init__(self, files: Sequence[Path], spec: PreprocessSpec):
        self.files = list(files)
        self.spec = spec
        self._transform = None

    def __len__(self) -> int:
        return len(self.files)

    def __getstate__(self):
        return {**self.__dict__, "_transform": None}

    def __getitem__(self, i: int):
        if self._transform is None:
            self._transform = self.spec.build()
        try:
            return self._transform(load_rgb(self.files[i])), ""  # (3, 299, 299) float32
        except MarsEvalError as e:
            return torch.zeros(3, INCEPTION_SIZE, INCEPTION_SIZE), str(e)


def iter_feature_batches(files: Sequence[Path], spec: PreprocessSpec, extractor: torch.nn.Module,
                         loader: LoaderConfig = LoaderConfig()) -> Iterator[np.ndarray]:
    """Yield (B, D) float32 feature batches in file order."""
    dl = DataLoader(_ImageDataset(files, spec), batch_size=loader.batch_size, shuffle=False,
                    num_workers=loader.num_workers, drop_last=False)
    for x, errors in dl:  # x: (B, 3, 299, 299)
        bad = [e for e in errors if e]
        if bad:
            raise MarsEvalError(bad[0])
        yield extractor(x).detach().cpu().numpy().astype(np.float32, copy=False)  # (B, D)


def extract(files: Sequence[Path], spec: PreprocessSpec, extractor: torch.nn.Module,
            loader: LoaderConfig = LoaderConfig(), keep: bool = True,
            on_batch: Callable[[int], None] | None = None) -> FolderFeatures:
    """Features -> statistics in one streaming pass; `on_batch(n_images)` reports progress."""
    n = len(files)
    if n < 2:
        raise MarsEvalError(f"need at least 2 images, got {n}")
    dim = int(getattr(extractor, "dim", 2048))
    moments = RunningMoments(dim)
    kept = np.empty((n, dim), dtype=np.float32) if keep else None
    i = 0
    for batch in iter_feature_batches(files, spec, extractor, loader):
        moments.update(batch)
        if kept is not None:
            kept[i:i + len(batch)] = batch
        i += len(batch)
        if on_batch is not None:
            on_batch(len(batch))
    return FolderFeatures(moments.finalize(), kept)
