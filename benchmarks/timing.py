"""Timing helper shared by the benchmarks."""

import time


def best_of(fn, repeats: int = 3) -> tuple[float, object]:
    """Best wall time of `repeats` calls and the last result (the machine is shared; the minimum is the least
    disturbed run)."""
    best, out = float("inf"), None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out
