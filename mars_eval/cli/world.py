"""`mars-eval world ...`: build the embedded bilingual world (prompt sets and all training corpora)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from mars_eval.cli.common import JsonOpt, emit, progress
from mars_eval.cli.main import app
from mars_eval.errors import MarsEvalError

world_app = typer.Typer(
    help="The embedded bilingual world: procedural scenes with ground truth, captioned in "
    "English and Chinese.",
    no_args_is_help=True,
)
app.add_typer(world_app, name="world")

STAGE_LABELS = {
    "prompts": "prompt sets",
    "stage1": "stage I images",
    "stage2": "stage II images",
    "stage3": "stage III pairs",
    "interleaved": "sequences",
    "text": "LLM text",
}


def _positive(name: str, value: int | None, allow_zero: bool) -> None:
    if value is not None and (value < 0 or (value == 0 and not allow_zero)):
        raise MarsEvalError(f"{name} must be {'>= 0' if allow_zero else '>= 1'}, got {value}")


@world_app.command("build")
def build_cmd(
    out: Annotated[
        Path,
        typer.Option(
            "--out",
            help="Directory to write the world into (created; must be empty "
            "or hold an earlier world build with --overwrite).",
        ),
    ],
    n: Annotated[
        int, typer.Option("--n", help="Number of Stage I images (32x32); the other corpora scale with it.")
    ] = 2000,
    seed: Annotated[int, typer.Option("--seed", help="Seed: the same seed gives byte-identical files.")] = 0,
    n_stage2: Annotated[
        int | None, typer.Option("--n-stage2", help="Stage II images at several aspect ratios (default: N).")
    ] = None,
    n_stage3: Annotated[
        int | None,
        typer.Option("--n-stage3", help="Stage III (32 px, caption, 64 px) triplets (default: N/2)."),
    ] = None,
    n_sequences: Annotated[
        int | None, typer.Option("--n-sequences", help="Interleaved multi-step sequences (default: N/10).")
    ] = None,
    n_text: Annotated[
        int | None,
        typer.Option(
            "--n-text", help="Scenes described in the LLM text corpus (5 lines each) (default: 2N)."
        ),
    ] = None,
    val_size: Annotated[
        int,
        typer.Option("--val-size", help="Prompts per category in each *_val.txt (T2I-CompBench uses 300)."),
    ] = 300,
    train_size: Annotated[
        int, typer.Option("--train-size", help="Prompts per category in each *_train.txt.")
    ] = 700,
    layout: Annotated[
        str, typer.Option("--layout", help="Where objects go: 'free' (anywhere) or 'slots' (a fixed place per "
                          "object, from the caption's order and relation).")
    ] = "free",
    backgrounds: Annotated[
        str, typer.Option("--backgrounds", help="'varied' (six textured kinds) or 'plain' (one muted colour).")
    ] = "varied",
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace an earlier world build in --out.")
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Write prompt sets (300 val prompts per category), Stage I/II/III image corpora, interleaved sequences
    and the LLM text corpus, each with a JSONL manifest of ground truth. Files appear only when complete."""
    from mars_ref.world.build import build_world, check_output_dir
    from mars_ref.world.style import WorldStyle

    style = WorldStyle(layout, backgrounds)  # a bad value is a one-line error before anything is written
    _positive("--n", n, allow_zero=False)
    _positive("--val-size", val_size, allow_zero=False)
    for name, v in (
        ("--n-stage2", n_stage2),
        ("--n-stage3", n_stage3),
        ("--n-sequences", n_sequences),
        ("--n-text", n_text),
        ("--train-size", train_size),
    ):
        _positive(name, v, allow_zero=True)
    if seed < 0:
        raise MarsEvalError(f"--seed must be >= 0, got {seed}")
    check_output_dir(out, overwrite)  # before the progress bar, so an error is the only output

    with progress() as bar:
        tasks: dict[str, int] = {}

        def on_progress(stage: str, done: int, total: int) -> None:
            if stage not in tasks:
                tasks[stage] = bar.add_task(STAGE_LABELS.get(stage, stage), total=total, rate="")
            if done == total or done % 25 == 0:
                task = bar.tasks[tasks[stage]]
                rate = f"{done / task.elapsed:.0f}/s" if task.elapsed else ""
                bar.update(tasks[stage], completed=done, rate=rate)

        summary = build_world(
            out,
            n,
            seed,
            n_stage2=n_stage2,
            n_stage3=n_stage3,
            n_sequences=n_sequences,
            n_text=n_text,
            val_size=val_size,
            train_size=train_size,
            style=style,
            overwrite=overwrite,
            progress=on_progress,
        )
    result = {
        "out": summary["out"],
        "seed": seed,
        "images": summary["images"],
        "seconds": summary["seconds"],
        "images_per_s": summary["images_per_s"],
        "text_lines": summary["text_lines"],
        "prompt_files": summary["prompt_files"],
        **{f"n_{k}": v for k, v in summary["counts"].items()},
    }
    emit(result, as_json, title="world build")
