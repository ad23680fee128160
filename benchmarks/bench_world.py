"""World generation speed: scenes/s sampled, images/s rendered at 32 and 64 px, and a full `world build`.

Target (issue 2): `mars-eval world build --out DIR --n 2000 --seed 0` well under a minute on one core.
Set BENCH_WORLD_N to change the build size (default 2000).
"""

from __future__ import annotations

import os
import tempfile
import time

import numpy as np

from mars_ref.world import CATEGORIES, render, sample_scene
from mars_ref.world.build import build_world


def _rate(n: int, fn) -> float:
    t0 = time.perf_counter()
    fn()
    return round(n / (time.perf_counter() - t0), 1)


def run() -> dict:
    rng = np.random.default_rng(0)
    n = 300
    scenes = []
    sample_rate = _rate(n, lambda: scenes.extend(sample_scene(CATEGORIES[i % 7], rng) for i in range(n)))
    r32 = _rate(n, lambda: [render(s, 32, 32) for s in scenes])
    r64 = _rate(n, lambda: [render(s, 64, 64) for s in scenes])
    n_build = int(os.environ.get("BENCH_WORLD_N", "2000"))
    with tempfile.TemporaryDirectory() as tmp:
        cpu0 = time.process_time()
        summary = build_world(os.path.join(tmp, "world"), n_build, seed=0)
        cpu = time.process_time() - cpu0
    return {
        "scenes_per_s": sample_rate,
        "render_32px_per_s": r32,
        "render_64px_per_s": r64,
        "build_n": n_build,
        "build_seconds": summary["seconds"],
        "build_images": summary["images"],
        "build_images_per_s": summary["images_per_s"],
        # CPU seconds of this (single-threaded) process: the wall time on an idle core, whatever the load
        "build_cpu_seconds": round(cpu, 2),
        "build_images_per_cpu_s": round(summary["images"] / cpu, 1),
        "build_text_lines": summary["text_lines"],
        "load_avg_1min": round(os.getloadavg()[0], 2),  # this machine is shared: read figures with it
    }
