"""`mars-eval compare RUN_A [RUN_B]`: a paired test on identical prompts and seeds (mars_eval.report.compare)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from mars_eval.cli.common import JsonOpt
from mars_eval.cli.main import app


@app.command()
def compare(
    run_a: Annotated[Path, typer.Argument(help="A scored run folder (its scores.jsonl), e.g. a `compbench --out`.")],
    run_b: Annotated[Path | None, typer.Argument(help="The other run; omit it to compare RUN_A with its own "
                                                      "shuffled-prompt control.")] = None,
    alpha: Annotated[float, typer.Option(help="Significance level of the 'significant' column.")] = 0.05,
    as_json: JsonOpt = False,
) -> None:
    """Per category: mean score of A and B, their difference (A - B) with its 95 % CI, and the paired t-test's
    p-value over prompts (images of one prompt averaged first: they are correlated)."""
    import json

    from rich.console import Console
    from rich.table import Table

    from mars_eval.report.compare import paired_compare, score_rows

    results = paired_compare(score_rows(run_a), score_rows(run_b) if run_b is not None else None)
    rows = [{**r.to_dict(), "significant": r.p_value is not None and r.p_value < alpha} for r in results]
    if as_json:
        print(json.dumps({"a": str(run_a), "b": str(run_b) if run_b else "control", "alpha": alpha,
                          "results": rows}, sort_keys=True))
        return
    t = Table(title=f"{run_a} vs {run_b if run_b is not None else 'its shuffled-prompt control'}")
    for col in ("category", "lang", "prompts", "A", "B", "A - B", "95 % CI", "p", "sig."):
        t.add_column(col, justify="left" if col in ("category", "lang") else "right")
    for r in rows:
        ci = f"[{r['ci'][0]:.4f}, {r['ci'][1]:.4f}]" if r["ci"] else "-"
        p = f"{r['p_value']:.3g}" if r["p_value"] is not None else "-"
        t.add_row(r["category"], r["lang"], str(r["n_prompts"]), f"{r['mean_a']:.4f}", f"{r['mean_b']:.4f}",
                  f"{r['diff']:+.4f}", ci, p, "yes" if r["significant"] else "no")
    Console().print(t)
