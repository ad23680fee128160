"""`mars-eval ablate`: train and evaluate the paper's ablation grid on the embedded world, then write the report."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from mars_eval.cli.common import JsonOpt, console, emit, writable_dir
from mars_eval.cli.main import app


@app.command()
def ablate(
    preset: Annotated[str, typer.Option(help="Recipe preset: xs (the default, minutes on 2 CPU cores), small, "
                                             "or a TOML file.")] = "xs",
    seeds: Annotated[int | None, typer.Option(help="Training seeds per variant (95 % CIs across them); default: "
                                                   "the preset's `ablate` table.")] = None,
    out: Annotated[Path, typer.Option(help="Output folder: results.jsonl, evals/, bundles/, report/.")] = Path(
        "runs/ablate"),
    cache: Annotated[Path, typer.Option(help="Artifact cache shared with `train stage`: world, tokenizers, "
                                             "VQ, CLIP, judges and trained stages.")] = Path("runs/cache"),
    nproc: Annotated[int, typer.Option(help="Generation processes (1: in-process with 2 threads).")] = 1,
    from_scratch: Annotated[bool, typer.Option("--from-scratch", help="Ignore the preset's pretrained world kit "
                                                                       "([kit] table) and build the tokenizer, VQ, "
                                                                       "Stage 0 LLM, CLIP and judges here.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """With vs without the visual expert, Stage I -> II -> III, NTP vs NKTP decoding, EN vs ZH, over seeds.

    Everything is cached or resumable: rerunning after a crash continues where it stopped. A preset that names a
    world kit takes its pretrained parts from it and trains Stages I-III only.
    """
    from mars_eval.suites.ablate import run_ablate

    writable_dir(out)
    writable_dir(cache)
    res = run_ablate(preset, out, cache, seeds=seeds, nproc=nproc, say=lambda s: console.print(s, style="bold"),
                     from_scratch=from_scratch)
    emit(res, as_json, "ablate")
