"""`mars-eval world calibrate`: the calibration table of a finished judge directory, on val prompts or a dev set."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from mars_eval.cli.common import JsonOpt, console, emit, require_dir
from mars_eval.cli.world import world_app


@world_app.command("calibrate")
def calibrate_cmd(
    world: Annotated[Path, typer.Option(help="The world the judges were trained on (`mars-eval world build`).")],
    judges: Annotated[Path, typer.Option(help="A judge directory (`mars-eval train judges --out`).")],
    n: Annotated[int, typer.Option(help="Prompts per category: up to this many val prompts, or exactly this many "
                                        "fresh scenes.")] = 300,
    source: Annotated[str, typer.Option(help="val: the world's held-out val prompts (what every score table "
                                             "reports); fresh: new scenes that are not val prompts, a dev set for "
                                             "choosing between judge runs.")] = "val",
    seed: Annotated[int, typer.Option(help="Seed for the corruptions (and the fresh scenes).")] = 0,
    vq: Annotated[Path | None, typer.Option(help="A VQ checkpoint directory: also score VQ-reconstructed "
                                                 "renders.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Judge accuracy per category against the world's ground truth, true vs corrupted renders."""
    from mars_eval.judges.world_calibration import calibration_metrics, judge_calibration
    from mars_eval.judges.world_judges import WorldJudges

    require_dir(world, "world directory")
    loaded = WorldJudges.load(judges)
    if vq is not None:
        require_dir(vq, "VQ checkpoint directory")
    with console.status(f"calibrating on {source} scenes"):
        rows = judge_calibration(world, n, seed, judges=loaded, vq=vq, source=source)
    results = {"judges": str(judges), "source": source, "seed": seed,
               **{f"n/{r['category']}": r["n"] for r in rows}, **calibration_metrics(rows)}
    emit(results, as_json, "world judge calibration")
