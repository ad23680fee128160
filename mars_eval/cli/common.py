"""Options and output helpers shared by the command modules."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from mars_eval.errors import MarsEvalError
from mars_eval.io import writable_dir  # noqa: F401  (re-exported for the command modules)
from mars_eval.progress import console, progress  # noqa: F401  (re-exported for the command modules)

JsonOpt = Annotated[bool, typer.Option("--json", help="Print the results as one JSON object on stdout.")]


def emit(results: dict, as_json: bool, title: str = "results") -> None:
    """Print results either as JSON on stdout or as a small rich table on stderr+stdout."""
    if as_json:
        print(json.dumps(results, ensure_ascii=False, sort_keys=True))
        return
    from rich.table import Table

    table = Table(title=title)
    table.add_column("key")
    table.add_column("value")
    for k, v in results.items():
        table.add_row(str(k), f"{v:.4f}" if isinstance(v, float) else str(v))
    Console().print(table)


def require_dir(path: Path, what: str = "directory") -> Path:
    if not path.exists():
        raise MarsEvalError(f"{what} not found: {path}")
    if not path.is_dir():
        raise MarsEvalError(f"{what} is not a directory: {path}")
    return path
