"""Build a report (Markdown + self-contained HTML) from run folders' results files.

A run folder holds `results.jsonl`. Rows have `kind`:
- "metric": {table, label, metric, value, seed?, scale?, protocol?, control?, per_prompt?} -> tables + bar charts:
  mean ± 95 % CI across seeds, or, where every row of a cell carries `per_prompt` ({prompt index: the prompt's mean
  score, in `value`'s units}), the cluster bootstrap over prompts (report/stats.py); `control` names a control row (e.g. "shuffled_prompts"), a row of its own label with a table note;
- "diagnostics": {label, path} -> a per-step JSONL training log (the paper's Fig. 5: gradient norms and loss);
- "samples": {label, images_dir, limit?} -> an image grid from a generated folder's manifest (+ per-image scores).
Paths in rows are relative to the run folder. All user text (prompts, labels) is HTML-escaped.
"""

from __future__ import annotations

import base64
import html
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from mars_eval.errors import MarsEvalError
from mars_eval.io import atomic_write_bytes, atomic_write_text, read_jsonl
from mars_eval.report import charts
from mars_eval.report.stats import BOOTSTRAP_RESAMPLES, Estimate, cluster_bootstrap, mean_ci

RESULTS = "results.jsonl"
CONTROL_NOTES = {"shuffled_prompts": "shuffled-prompt control rows: the same images, each scored against another "
                                     "prompt of its category (a fixed derangement: never its own prompt or an "
                                     "identical one), i.e. what a model that ignores its prompt scores; a model is "
                                     "above chance where its row clears its control row"}
PROMPT_CI_NOTE = (f"[low, high]: 95 % CI, percentile bootstrap over prompts ({BOOTSTRAP_RESAMPLES:,} resamples; a "
                  "prompt's images of every seed pooled): prompt-sampling uncertainty, not seed-to-seed variance")


@dataclass
class Table:
    title: str
    labels: list[str]
    metrics: list[str]
    cells: dict[tuple[str, str], Estimate]
    scale: float = 1.0
    notes: list[str] = field(default_factory=list)

    def markdown(self) -> str:
        head = "| | " + " | ".join(self.metrics) + " |\n|---|" + "---|" * len(self.metrics) + "\n"
        body = "".join(
            f"| {lab} | " + " | ".join(self.cells.get((lab, m), Estimate(float('nan'), float('nan'), 0)).fmt(self.scale)
                                      for m in self.metrics) + " |\n" for lab in self.labels)
        return f"### {self.title}\n\n{head}{body}" + "".join(f"\n{n}" for n in self.notes) + "\n"

    def html(self) -> str:
        e = html.escape
        head = "<tr><th></th>" + "".join(f"<th>{e(m)}</th>" for m in self.metrics) + "</tr>"
        rows = "".join(
            "<tr><th>" + e(lab) + "</th>" + "".join(
                f"<td>{e(self.cells.get((lab, m), Estimate(float('nan'), float('nan'), 0)).fmt(self.scale))}</td>"
                for m in self.metrics) + "</tr>" for lab in self.labels)
        notes = "".join(f"<p class='note'>{e(n)}</p>" for n in self.notes)
        return f"<h3>{e(self.title)}</h3><table>{head}{rows}</table>{notes}"


def load_rows(runs: list[Path]) -> list[dict]:
    rows = []
    for run in runs:
        path = run / RESULTS if run.is_dir() else run
        if not path.is_file():
            raise MarsEvalError(f"no results file: {path}")
        for i, r in enumerate(read_jsonl(path), 1):
            check_row(r, path, i)
            rows.append({**r, "_run": str(path.parent)})
    if not rows:
        raise MarsEvalError("no results rows in " + ", ".join(map(str, runs)))
    return rows


# the fields each kind of row must have, and their types (results files are user input)
_NEEDS = {"metric": {"metric": str, "value": (int, float, type(None))}, "diagnostics": {"label": str, "path": str},
          "samples": {"label": str, "images_dir": str}, "history": {"metric": str, "value": (int, float)}}


def check_row(row, path: Path, i: int, kind: str | None = None) -> None:
    """One-line error naming the file and row for a row that the report could not use."""
    if not isinstance(row, dict):
        raise MarsEvalError(f"{path}: row {i} is not a JSON object")
    for key, types in _NEEDS.get(kind or row.get("kind", "metric"), {}).items():
        if key not in row or not isinstance(row[key], types) or isinstance(row[key], bool):
            raise MarsEvalError(f"{path}: row {i} needs {key!r} of type "
                                f"{'/'.join(t.__name__ for t in (types if isinstance(types, tuple) else (types,)))}, "
                                f"got {row.get(key)!r}")
    for key in ("label", "table", "control"):  # optional, but text when present
        if key in row and not isinstance(row[key], str):
            raise MarsEvalError(f"{path}: row {i}: {key!r} must be a string, got {row[key]!r}")
    pp = row.get("per_prompt")
    if pp is not None and not (isinstance(pp, dict) and all(
            isinstance(v, int | float) and not isinstance(v, bool) for v in pp.values())):
        raise MarsEvalError(f"{path}: row {i}: 'per_prompt' must map prompt indices to numbers")


def cell_estimate(rows: list[dict]) -> Estimate:
    """One table cell from its rows (one per seed): pooled over prompts where every row has per-prompt means."""
    if rows and all(r.get("per_prompt") for r in rows):
        clusters: dict[str, list[float]] = defaultdict(list)
        for r in rows:
            for k, v in r["per_prompt"].items():
                clusters[k].append(float(v))
        return cluster_bootstrap(list(clusters.values()))
    return mean_ci([r["value"] for r in rows])


def tables(rows: list[dict]) -> list[Table]:
    by_table: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        if r.get("kind", "metric") == "metric":
            by_table[r.get("table", r.get("benchmark", "results"))].append(r)
    out = []
    for title, rs in by_table.items():
        labels = list(dict.fromkeys(r.get("label", r["_run"]) for r in rs))
        metrics = list(dict.fromkeys(r["metric"] for r in rs))
        by_cell: dict[tuple[str, str], list[dict]] = defaultdict(list)
        for r in rs:
            by_cell[(r.get("label", r["_run"]), r["metric"])].append(r)
        cells = {k: cell_estimate(v) for k, v in by_cell.items()}
        pooled = {k for k in cells if cells[k].low is not None}
        seeds = sorted({r.get("seed") for r in rs if r.get("seed") is not None})
        by_protocol: dict[str, list[str]] = defaultdict(list)  # each protocol once, with the metrics it covers
        for r in rs:
            if r.get("protocol") and r["metric"] not in by_protocol[r["protocol"]]:
                by_protocol[r["protocol"]].append(r["metric"])
        if len(by_protocol) == 1:
            notes = [f"protocol: {next(iter(by_protocol))}"]
        else:
            notes = sorted(f"{', '.join(ms)}: {p}" for p, ms in by_protocol.items())
        if len(seeds) > 1 and len(pooled) < len(cells):
            notes.insert(0, f"mean ± 95 % CI (Student t) over {len(seeds)} seeds")
        if pooled:
            notes.insert(0, PROMPT_CI_NOTE)
        for c in dict.fromkeys(r["control"] for r in rs if r.get("control")):
            notes.append(CONTROL_NOTES.get(c, f"rows with control {c!r}: control rows, not a model"))
        mult = rs[0].get("scale", 1.0)  # a number multiplies; a string ("world" / "real") only names the scale
        out.append(Table(title, labels, metrics, cells, float(mult) if isinstance(mult, int | float) else 1.0, notes))
    return out


def _diagnostic_charts(rows: list[dict]) -> list[tuple[str, bytes]]:
    logs = [(r["label"], Path(r["_run"]) / r["path"]) for r in rows if r.get("kind") == "diagnostics"]
    if not logs:
        return []
    out = []
    for key, title, logy in (("grad_norm/text", "gradient norm, text-path parameters", True),
                             ("grad_norm/vision", "gradient norm, vision-path parameters", True),
                             ("loss", "training loss", False),
                             ("max_logit/image", "max logit at image positions", False)):
        series = {}
        for label, path in logs:
            if not path.is_file():
                continue
            pts = [(r["step"], r[key]) for r in read_jsonl(path) if r.get(key) is not None]
            if pts:
                series[label] = ([p[0] for p in pts], [p[1] for p in pts])
        if series:
            out.append((title, charts.lines(title, series, "step", key, logy=logy)))
    return out


def _grids(rows: list[dict]) -> list[tuple[str, list[dict]]]:
    grids = []
    for r in rows:
        if r.get("kind") != "samples":
            continue
        d = Path(r["_run"]) / r["images_dir"]
        manifest = d / "manifest.jsonl"
        if not manifest.is_file():
            continue
        scores = {}
        if (d / "scores.jsonl").is_file():
            scores = {s["file"]: s.get("score") for s in read_jsonl(d / "scores.jsonl")}
        items = []
        for m in read_jsonl(manifest)[: int(r.get("limit", 24))]:
            items.append({"path": d / m["file"], "prompt": m["prompt"], "score": scores.get(m["file"])})
        grids.append((r["label"], items))
    return grids


def _b64(data: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(data).decode()


def build_report(runs: list[Path], out: Path, title: str = "mars-eval report") -> dict:
    rows = load_rows(runs)
    tabs = tables(rows)
    figs = []
    for t in tabs:  # the first metric's bars, for the rows that have it (a CLIP-score control row has no FID)
        labels = [lab for lab in t.labels if (lab, t.metrics[0]) in t.cells]
        ests = [t.cells[(lab, t.metrics[0])] for lab in labels]
        figs.append((t.title, charts.bar_with_ci(t.title, labels, [e.mean * t.scale for e in ests],
                                                 [e.distances(t.scale) for e in ests], t.metrics[0])))
    figs += _diagnostic_charts(rows)
    grids = _grids(rows)
    out.mkdir(parents=True, exist_ok=True)
    md = [f"# {title}\n"] + [t.markdown() for t in tabs]
    for i, (name, png) in enumerate(figs):
        atomic_write_bytes(out / f"chart_{i:02d}.png", png)
        md.append(f"![{name}](chart_{i:02d}.png)\n")
    for i, (label, items) in enumerate(grids):
        atomic_write_bytes(out / f"grid_{i:02d}.png", charts.image_grid(label, items))
        md.append(f"### Samples: {label}\n\n![{label}](grid_{i:02d}.png)\n\n" + "".join(
            f"- `{it['path'].name}` {it['prompt']!r}" + (f" score {it['score']:.3f}" if it["score"] is not None else "")
            + "\n" for it in items))
    atomic_write_text(out / "report.md", "\n".join(md))
    atomic_write_text(out / "report.html", _html(title, tabs, figs, grids))
    return {"markdown": str(out / "report.md"), "html": str(out / "report.html"), "tables": len(tabs),
            "charts": len(figs), "grids": len(grids)}


def _html(title: str, tabs: list[Table], figs: list[tuple[str, bytes]], grids) -> str:
    e = html.escape
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{e(title)}</title><style>"
             "body{font-family:sans-serif;margin:2em;max-width:1100px}table{border-collapse:collapse;margin:1em 0}"
             "td,th{border:1px solid #bbb;padding:4px 8px;text-align:right}th{background:#eee}"
             ".grid{display:flex;flex-wrap:wrap;gap:8px}.cell{width:140px;font-size:11px;overflow-wrap:anywhere}"
             ".cell img{width:128px;image-rendering:pixelated}.note{font-size:12px;color:#555}"
             "</style></head><body>", f"<h1>{e(title)}</h1>"]
    parts += [t.html() for t in tabs]
    parts += [f"<figure><img alt='{e(n)}' src='{_b64(p)}'><figcaption>{e(n)}</figcaption></figure>" for n, p in figs]
    for label, items in grids:
        cells = "".join(
            f"<div class='cell'><img alt='' src='{_b64(it['path'].read_bytes())}'><br>{e(it['prompt'])}"
            + (f"<br><b>{it['score']:.3f}</b>" if it["score"] is not None else "") + "</div>" for it in items
            if it["path"].is_file())
        parts.append(f"<h3>Samples: {e(label)}</h3><div class='grid'>{cells}</div>")
    parts.append("</body></html>")
    return "\n".join(parts)
