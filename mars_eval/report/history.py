"""CI regression history: one row per (commit, metric), charts of each metric over commits, flags on moves.

Metrics are of two kinds (`is_timing`):
- deterministic (losses, PSNR, seeded FID / KID): the benchmark is seeded, so a move beyond the tolerance
  (relative to the previous commit, either way) means a commit changed training, sampling or a metric; it is
  flagged, and a move in the worse direction is a regression;
- timings (speeds, wall times, memory): charted but never flagged, because they follow the machine and its load
  (machines of one kind differ by about 2x).

`benchmarks/history_gate.py` applies the same split when CI compares a commit with the committed history
(reports/README.md).
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from mars_eval.io import atomic_write_bytes, atomic_write_text
from mars_eval.report import charts
from mars_eval.results import read_rows

LOWER_IS_BETTER = ("fid", "kid", "loss", "wall_s", "seconds", "peak_rss")
TIMING = ("_per_s", "wall_s", "seconds", "peak_rss", "_ms", "throughput")


def lower_is_better(metric: str) -> bool:
    return any(k in metric for k in LOWER_IS_BETTER)


def is_timing(metric: str) -> bool:
    """Speed, wall-time and memory figures: they depend on the machine, so they are charted but never gate."""
    return any(k in metric for k in TIMING)


def rel_change(old: float, new: float) -> float:
    return (new - old) / max(abs(old), 1e-12)


def moves(values: list[float], rel_tol: float) -> list[int]:
    """Indices whose value differs from the previous one by more than rel_tol (relative), in either direction."""
    return [i for i in range(1, len(values)) if abs(rel_change(values[i - 1], values[i])) > rel_tol]


def worse(metric: str, old: float, new: float) -> bool:
    return new > old if lower_is_better(metric) else new < old


def regressions(values: list[float], metric: str, rel_tol: float) -> list[int]:
    """The moves (see `moves`) in the worse direction; none for a timing metric."""
    if is_timing(metric):
        return []
    return [i for i in moves(values, rel_tol) if worse(metric, values[i - 1], values[i])]


def order(row: dict) -> tuple[str, str]:
    """Charts follow the commits' order: `commit_time` where a row has it (a backfilled row was measured long
    after its commit), else the time it was measured; rows that tie keep the file's order (a stable sort)."""
    return row.get("commit_time") or row.get("time", ""), row.get("time", "")


def history_report(path: Path, out: Path, rel_tol: float = 0.05) -> dict:
    from mars_eval.report.build import check_row

    rows = read_rows(path)
    for i, r in enumerate(rows, 1):
        check_row(r, path, i, kind="history")
    rows = sorted(rows, key=order)
    series: dict[str, list[tuple[str, str, float]]] = defaultdict(list)
    for r in rows:
        series[r["metric"]].append((r.get("time", ""), r.get("commit", "?"), float(r["value"])))
    commits = list(dict.fromkeys(r.get("commit", "?") for r in rows))
    out.mkdir(parents=True, exist_ok=True)
    md = ["# Regression history\n",
          f"Deterministic metrics are flagged (red rings) where they move by more than {rel_tol:.0%} from the "
          "previous commit; timings are charted but never flagged (they follow the machine and its load).\n",
          "| metric | kind | commits | last | flagged moves |", "|---|---|---|---|---|"]
    flagged, regressed = {}, {}
    for i, (metric, pts) in enumerate(sorted(series.items())):
        vals = [p[2] for p in pts]
        timing = is_timing(metric)
        flags = [] if timing else moves(vals, rel_tol)
        flagged[metric] = [pts[j][1] for j in flags]
        regressed[metric] = [pts[j][1] for j in regressions(vals, metric, rel_tol)]
        xs = [commits.index(p[1]) for p in pts]
        png = charts.lines(metric, {metric: (xs, vals)}, "commit # (table below)", metric, flags={metric: flags})
        atomic_write_bytes(out / f"history_{i:02d}.png", png)
        notes = [f"{pts[j][1]} ({rel_change(vals[j - 1], vals[j]):+.1%}"
                 f"{', worse' if worse(metric, vals[j - 1], vals[j]) else ''})" for j in flags]
        md.append(f"| {metric} | {'timing (never flagged)' if timing else 'deterministic'} | {len(vals)} | "
                  f"{vals[-1]:.4g} | {', '.join(notes) or '-'} |")
    when = {r.get("commit", "?"): r.get("commit_time", "") for r in rows}
    md += ["", "| commit # | commit | commit time |", "|---|---|---|"]
    md += [f"| {k} | {c} | {when[c] or '-'} |" for k, c in enumerate(commits)]
    md.append("")
    md += [f"![{m}](history_{i:02d}.png)" for i, m in enumerate(sorted(series))]
    atomic_write_text(out / "history.md", "\n".join(md) + "\n")
    return {"metrics": len(series), "commits": len(commits),
            "moves": {m: c for m, c in flagged.items() if c},
            "regressions": {m: c for m, c in regressed.items() if c},
            "timings": sorted(m for m in series if is_timing(m)),
            "markdown": str(out / "history.md")}
