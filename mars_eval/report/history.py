"""CI regression history: one row per (commit, metric), charts of each metric over commits, regression flags."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from mars_eval.io import atomic_write_bytes, atomic_write_text
from mars_eval.report import charts
from mars_eval.results import read_rows

LOWER_IS_BETTER = ("fid", "kid", "loss", "wall_s", "seconds", "peak_rss")


def lower_is_better(metric: str) -> bool:
    return any(k in metric for k in LOWER_IS_BETTER)


def regressions(values: list[float], metric: str, rel_tol: float) -> list[int]:
    """Indices whose value is worse than the best of all earlier values by more than rel_tol (relative)."""
    flags = []
    for i in range(1, len(values)):
        prev = values[:i]
        best = min(prev) if lower_is_better(metric) else max(prev)
        worse = values[i] - best if lower_is_better(metric) else best - values[i]
        if worse > rel_tol * max(abs(best), 1e-12):
            flags.append(i)
    return flags


def history_report(path: Path, out: Path, rel_tol: float = 0.05) -> dict:
    from mars_eval.report.build import check_row

    rows = read_rows(path)
    for i, r in enumerate(rows, 1):
        check_row(r, path, i, kind="history")
    series: dict[str, list[tuple[str, str, float]]] = defaultdict(list)
    for r in rows:
        series[r["metric"]].append((r.get("time", ""), r.get("commit", "?"), float(r["value"])))
    out.mkdir(parents=True, exist_ok=True)
    md = ["# Regression history\n", f"Flag: worse than the best earlier commit by more than {rel_tol:.0%}.\n",
          "| metric | commits | last | flagged commits |", "|---|---|---|---|"]
    flagged = {}
    for i, (metric, pts) in enumerate(sorted(series.items())):
        pts.sort()
        vals = [p[2] for p in pts]
        flags = regressions(vals, metric, rel_tol)
        flagged[metric] = [pts[j][1] for j in flags]
        png = charts.lines(metric, {metric: (list(range(len(vals))), vals)}, "commit #", metric,
                           flags={metric: flags})
        atomic_write_bytes(out / f"history_{i:02d}.png", png)
        md.append(f"| {metric} | {len(vals)} | {vals[-1]:.4g} | {', '.join(flagged[metric]) or '-'} |")
    md.append("")
    md += [f"![{m}](history_{i:02d}.png)" for i, m in enumerate(sorted(series))]
    atomic_write_text(out / "history.md", "\n".join(md) + "\n")
    return {"metrics": len(series), "regressions": {m: c for m, c in flagged.items() if c},
            "markdown": str(out / "history.md")}
