"""Inception feature extraction: our path vs torch-fidelity's own CPU path, and peak memory vs folder size.

Throughput: the same world-like 32 px PNGs through (1) torch-fidelity's own loop (`ImagesPathDataset`,
`create_feature_extractor("inception-v3-compat")` with these weights, `get_featuresdict_from_dataset` with its
default DataLoader workers) and (2) our `extract` with the torch-fidelity protocol (same preprocessing, so the
features are comparable) with each extractor: the fused backend (default: torch-fidelity's blocks holding the
TorchScript weights, batch norms folded, channels-last), the TorchScript module frozen channels-last and plain,
and fused with bf16 autocast. `network_only` times the networks alone on one identical 299x299 batch. Runs are
interleaved and the best of `REPEATS` is kept (the machine is shared). Feature error is relative to
torch-fidelity's fp32 features: max |diff| / max |ref|.

Memory: peak RSS (VmHWM) of a child process that extracts one folder's features and statistics (clean protocol),
for a small and a 10x larger folder: with a stand-in network of Inception's input and output shapes for the
1,000 vs 10,000 comparison of the pipeline (listing, decoding, resizing, streaming statistics, with and without
the kept feature matrix), and with the real Inception at smaller sizes (it runs at ~6-10 images/s here).

Sizes: env BENCH_INCEPTION_N (throughput images, default 64), BENCH_INCEPTION_MEM (real-Inception memory sizes,
default "100,1000"), BENCH_INCEPTION_MEM_STANDIN (default "1000,10000"); BENCH_INCEPTION_THREADS (torch threads,
default torch's), BENCH_INCEPTION_REPEATS (default 3).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPEATS = int(os.environ.get("BENCH_INCEPTION_REPEATS", "3"))


def _make_images(folder: Path, n: int, seed: int = 0) -> list[Path]:
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i in range(n):
        img = Image.new("RGB", (32, 32), tuple(int(v) for v in rng.integers(0, 256, 3)))
        draw = ImageDraw.Draw(img)
        for _ in range(int(rng.integers(1, 4))):
            x0, y0 = (int(v) for v in rng.integers(0, 24, 2))
            w, h = (int(v) for v in rng.integers(6, 16, 2))
            shape = draw.ellipse if rng.integers(0, 2) else draw.rectangle
            shape([x0, y0, x0 + w, y0 + h], fill=tuple(int(v) for v in rng.integers(0, 256, 3)))
        p = folder / f"{i:06d}.png"
        img.save(p)
        out.append(p)
    return out


def _throughput(files: list[Path], cache_dir: Path) -> dict:
    import torch
    from torch_fidelity.datasets import ImagesPathDataset
    from torch_fidelity.utils import create_feature_extractor, get_featuresdict_from_dataset

    from mars_eval.metrics.features import LoaderConfig, extract
    from mars_eval.metrics.inception import ExtractorConfig, InceptionExtractor
    from mars_eval.metrics.inception_fidelity import fidelity_weights_path
    from mars_eval.metrics.preprocess import PreprocessSpec

    spec = PreprocessSpec("torch-fidelity")
    tf_net = create_feature_extractor("inception-v3-compat", ["2048"], cuda=False, verbose=False,
                                      feature_extractor_weights_path=str(fidelity_weights_path(cache_dir)))

    def torch_fidelity_path(fs):
        data = ImagesPathDataset([str(f) for f in fs])
        return get_featuresdict_from_dataset(data, tf_net, 32, False, False, False)["2048"].numpy()

    ours = {
        "ours_fused_fp32": InceptionExtractor(ExtractorConfig()),  # the default
        "ours_torchscript_frozen_cl_fp32": InceptionExtractor(ExtractorConfig(backend="torchscript")),
        "ours_torchscript_plain_fp32": InceptionExtractor(
            ExtractorConfig(backend="torchscript", channels_last=False, freeze=False)),
        "ours_fused_bf16_autocast": InceptionExtractor(ExtractorConfig(bf16=True)),
    }
    paths = {"torch_fidelity": torch_fidelity_path}
    for name, net in ours.items():
        paths[name] = lambda fs, net=net: extract(fs, spec, net, LoaderConfig(batch_size=32)).features
    for fn in paths.values():  # warm-up: TorchScript's profiling runs, allocator, file cache
        for _ in range(2):
            fn(files[:4])
    best = {k: float("inf") for k in paths}
    feats = {}
    for _ in range(REPEATS):
        for name, fn in paths.items():
            t0 = time.perf_counter()
            feats[name] = fn(files)
            best[name] = min(best[name], time.perf_counter() - t0)
    ref = feats["torch_fidelity"]
    out = {"images": len(files), "threads": torch.get_num_threads(), "repeats": REPEATS,
           "torch_fidelity_workers": min(4, 2 * os.cpu_count()), "ours_workers": 0,
           "network_only": _network_only(tf_net, ours)}
    for name in paths:
        out[f"{name}_img_per_s"] = round(len(files) / best[name], 2)
        if name != "torch_fidelity":
            out[f"{name}_speedup"] = round(best["torch_fidelity"] / best[name], 2)
            out[f"{name}_max_rel_err"] = float(np.abs(feats[name] - ref).max() / np.abs(ref).max())
    return out


def _network_only(tf_net, ours: dict, batch: int = 16, repeats: int = 5) -> dict:
    """Forward passes on one identical 299x299 uint8 batch (no decoding or resizing): the networks alone."""
    import torch

    x = torch.randint(0, 256, (batch, 3, 299, 299), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    nets = {"torch_fidelity": lambda: tf_net(x)[0]}
    for name, net in ours.items():
        nets[name] = lambda net=net: net(x.float())
    best = {k: float("inf") for k in nets}
    with torch.no_grad():
        for fn in nets.values():
            fn()
        for _ in range(repeats):
            for name, fn in nets.items():
                t0 = time.perf_counter()
                fn()
                best[name] = min(best[name], time.perf_counter() - t0)
    out = {"batch": batch, "repeats": repeats}
    for name in nets:
        out[f"{name}_img_per_s"] = round(batch / best[name], 2)
        if name != "torch_fidelity":
            out[f"{name}_speedup"] = round(best["torch_fidelity"] / best[name], 2)
    return out


_CHILD = r"""
import json, sys, time
import torch
from mars_eval.metrics.features import LoaderConfig, extract
from mars_eval.metrics.images import list_images
from mars_eval.metrics.preprocess import PreprocessSpec
folder, real, keep = sys.argv[1], sys.argv[2] == "1", sys.argv[3] == "1"
if real:
    from mars_eval.metrics.inception import InceptionExtractor
    net = InceptionExtractor()
else:
    class StandIn(torch.nn.Module):
        # same input and output shapes as Inception, ~1000x cheaper: pooled pixels -> fixed random projection
        dim = 2048
        def __init__(self):
            super().__init__()
            self.proj = torch.nn.Linear(3 * 16 * 16, 2048)
        @torch.no_grad()
        def forward(self, x):  # (B, 3, 299, 299) -> (B, 2048)
            return torch.relu(self.proj(torch.nn.functional.adaptive_avg_pool2d(x / 255, 16).flatten(1)))
    torch.manual_seed(0)
    net = StandIn()
t0 = time.perf_counter()
files = list_images(folder).files
out = extract(files, PreprocessSpec("clean"), net, LoaderConfig(batch_size=32), keep=keep)
# VmHWM, not getrusage: ru_maxrss keeps the forking parent's high-water mark across exec
hwm = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM:"))
print(json.dumps({"n": out.n, "seconds": round(time.perf_counter() - t0, 1), "peak_rss_mib": round(hwm / 1024, 1)}))
"""


def _peak_rss(folder: Path, real: bool, keep: bool) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2")}
    r = subprocess.run([sys.executable, "-c", _CHILD, str(folder), "1" if real else "0", "1" if keep else "0"],
                       capture_output=True, text=True, env=env, check=True)
    return json.loads(r.stdout.strip().splitlines()[-1])


def _memory(root: Path, sizes: list[int], real: bool, keeps: tuple[bool, ...] = (False, True)) -> dict:
    out = {}
    pool = _make_images(root / "pool", max(sizes), seed=1)
    for n in sizes:
        d = root / f"n{n}"
        d.mkdir()
        for p in pool[:n]:
            os.link(p, d / p.name)
        for keep in keeps:
            res = _peak_rss(d, real, keep)
            out[f"{n}_{'keep_features' if keep else 'stats_only'}"] = res
    return out


def run() -> dict:
    threads = os.environ.get("BENCH_INCEPTION_THREADS")
    if threads:
        import torch

        torch.set_num_threads(int(threads))
    n = int(os.environ.get("BENCH_INCEPTION_N", "64"))
    mem_real = [int(x) for x in os.environ.get("BENCH_INCEPTION_MEM", "100,1000").split(",") if x]
    mem_standin = [int(x) for x in os.environ.get("BENCH_INCEPTION_MEM_STANDIN", "1000,10000").split(",") if x]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        files = _make_images(root / "throughput", n)
        result = {"throughput": _throughput(files, root / "cache")}
        if mem_standin:
            result["memory_standin_network"] = _memory(root / "standin", mem_standin, real=False)
        if mem_real:
            result["memory_real_inception"] = _memory(root / "real", mem_real, real=True, keeps=(True,))
    return result


if __name__ == "__main__":
    print(json.dumps(run(), indent=1))
