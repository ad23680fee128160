"""Run benchmarks by name: `python -m benchmarks.run [NAME ...]` (default: all). Each writes benchmarks/results/NAME.json.

A benchmark is a module `benchmarks/bench_<name>.py` with `run() -> dict`; the registry finds them by name.
Speed and memory targets live here, never in unit tests.
"""

from __future__ import annotations

import importlib
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

from mars_eval.io import atomic_write_json

# name -> module: every `bench_<name>.py` in this folder
REGISTRY: dict[str, str] = {
    p.stem.removeprefix("bench_"): f"benchmarks.{p.stem}" for p in sorted(Path(__file__).parent.glob("bench_*.py"))
}

RESULTS = Path(__file__).parent / "results"


def _commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def main(names: list[str]) -> int:
    names = names or list(REGISTRY)
    unknown = [n for n in names if n not in REGISTRY]
    if unknown:
        print(f"error: unknown benchmark(s) {unknown}; known: {sorted(REGISTRY)}", file=sys.stderr)
        return 1
    for name in names:
        t0 = time.perf_counter()
        result = importlib.import_module(REGISTRY[name]).run()
        result["_meta"] = {"commit": _commit(), "machine": platform.machine(), "python": platform.python_version(),
                           "wall_s": round(time.perf_counter() - t0, 2), "date": time.strftime("%Y-%m-%d %H:%M")}
        atomic_write_json(RESULTS / f"{name}.json", result)
        print(json.dumps({name: result}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
