"""`mars-eval train judges`: train the world judges (the world detector) and print their calibration table."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from mars_eval.cli.common import JsonOpt, console, emit, progress, require_dir
from mars_eval.cli.train import train_app


@train_app.command("judges")
def train_judges_cmd(
    world: Annotated[Path, typer.Option(help="A world built by `mars-eval world build` (uses stage1, stage3, "
                                             "prompts).")],
    out: Annotated[Path, typer.Option(help="Output folder: world_detector.safetensors + world_judges.json.")],
    steps: Annotated[int, typer.Option(help="Optimiser steps (0.5-1.3 s each on 2 CPU cores with --vq; the "
                                            "small world's judges: 7000, then three --init cycles of 3000 at "
                                            "--lr 1e-3, the last with --swapped-pairs).")] = 1200,
    seed: Annotated[int, typer.Option(help="Seed for initial weights, batches, augmentation and calibration.")] = 0,
    calibrate: Annotated[int, typer.Option(help="Held-out val prompts per category for the calibration table "
                                                "(0 = skip).")] = 100,
    vq: Annotated[Path | None, typer.Option(help="A VQ checkpoint directory: train on VQ reconstructions too "
                                                 "(so the judges read decoded model samples) and measure "
                                                 "accuracy on VQ-reconstructed renders.")] = None,
    width: Annotated[int, typer.Option(help="Detector channels (32: fast default; 48: more accurate, ~2x "
                                            "slower).")] = 32,
    lr: Annotated[float, typer.Option(help="Peak learning rate of the cosine schedule.")] = 3e-3,
    init: Annotated[Path | None, typer.Option(help="A judge directory to start from (its weights and detector "
                                                   "config; --width is then ignored): another cosine cycle "
                                                   "on top of a finished run.")] = None,
    swapped_pairs: Annotated[bool, typer.Option(
        help="Also put the second image of each occlusion minimal pair (the pair drawn the other way round) in "
             "the detector's batch: twice the partly hidden objects for the reader (a larger "
             "batch, so slower steps).")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Train the world detector behind the judges; print judge accuracy per category against ground truth."""
    from mars_eval.judges.world_calibration import calibration_metrics, judge_calibration
    from mars_eval.judges.world_detector import DetectorConfig
    from mars_eval.judges.world_detector_train import DetectorTrainConfig
    from mars_eval.judges.world_judges import WorldJudges, train_world_judges

    require_dir(world, "world directory")
    if vq is not None:
        require_dir(vq, "VQ checkpoint directory")
    if init is not None:
        WorldJudges.load(init)  # a bad directory fails here, before any work
    with progress() as bar:
        task = bar.add_task("train judges", total=steps, rate="")

        def on_step(step: int, total: int, loss: float) -> None:
            if step % 10 == 0 or step == total:
                bar.update(task, completed=step, rate=f"loss {loss:.3f}")

        cfg = DetectorTrainConfig(lr=lr, detector=DetectorConfig(width=width), swapped_in_batch=swapped_pairs)
        summary = train_world_judges(world, out, seed=seed, steps=steps, cfg=cfg, progress=on_step, vq=vq, init=init)
    results = {"out": summary["out"], "n_images": summary["train"]["n_images"],
               "train_seconds": summary["train"]["train_seconds"], "seconds": summary["seconds"]}
    if calibrate > 0:
        judges = WorldJudges.load(out)
        rows = judge_calibration(world, calibrate, seed, judges=judges, vq=vq)  # vq: a path, loaded again
        judges.save(out, {"calibration": rows})
        results.update(calibration_metrics(rows))
        if not as_json:
            console.print(f"calibration: {calibrate} held-out val prompts per category, true vs corrupted renders")
    emit(results, as_json, "world judges")
