"""`mars-eval report`: Markdown + self-contained HTML from results files, or the CI regression history."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from mars_eval.cli.common import JsonOpt, emit, writable_dir
from mars_eval.cli.main import app
from mars_eval.errors import MarsEvalError


@app.command()
def report(
    runs: Annotated[list[Path] | None, typer.Argument(help="Run folders (each with results.jsonl) or results files.")] = None,
    out: Annotated[Path, typer.Option(help="Output folder for report.md, report.html and charts.")] = Path("report"),
    history: Annotated[Path | None, typer.Option(help="A results-history JSONL: chart every metric over commits "
                                                      "and flag regressions instead.")] = None,
    tolerance: Annotated[float, typer.Option(help="Relative tolerance for regression flags (with --history).")] = 0.05,
    title: Annotated[str, typer.Option(help="Report title.")] = "mars-eval report",
    as_json: JsonOpt = False,
) -> None:
    """Build a report from results files only (tables with 95 % CIs, charts, image grids)."""
    from mars_eval.report.build import build_report
    from mars_eval.report.history import history_report

    if history is not None:
        if not history.is_file():
            raise MarsEvalError(f"history file not found: {history}")
        writable_dir(out)
        emit(history_report(history, out, tolerance), as_json, "history")
        return
    if not runs:
        raise MarsEvalError("give at least one run folder, or --history FILE")
    for run in runs:
        if not (run / "results.jsonl" if run.is_dir() else run).is_file():
            raise MarsEvalError(f"no results file: {run}")
    writable_dir(out)
    emit(build_report(list(runs), out, title), as_json, "report")
