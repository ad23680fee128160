"""`mars-eval geneval --ckpt CKPT --out OUT`: GenEval per-task accuracy and overall score (mean of task means)."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from mars_eval.cli.common import JsonOpt
from mars_eval.cli.main import app


class Lang(StrEnum):
    en = "en"
    zh = "zh"


@app.command("geneval")
def geneval_command(
    out: Annotated[Path, typer.Option(help="Output folder: images/, scores.jsonl, geneval_images.jsonl (one verdict "
                                           "per image), results.jsonl; rerunning the same command resumes.")],
    ckpt: Annotated[Path | None, typer.Option(help="Checkpoint bundle directory (not needed with --images).")] = None,
    images: Annotated[Path | None, typer.Option(
        help="Score a folder another model generated, in GenEval's layout: DIR/00000/metadata.jsonl and "
             "DIR/00000/samples/0000.png ... (the metadata in the folder is what is scored).")] = None,
    detector: Annotated[Path | None, typer.Option(
        help="Official scorer: a transformers Mask2Former COCO instance-segmentation directory (e.g. "
             "mask2former-swin-small-coco-instance).")] = None,
    clip: Annotated[Path | None, typer.Option(
        help="Official scorer: CLIP ViT-L/14 weights file or open_clip directory (colours).")] = None,
    clip_model: Annotated[str, typer.Option(help="open_clip model name for a --clip file.")] = "ViT-L-14-quickgelu",
    world: Annotated[Path | None, typer.Option(
        help="World scorer: a built world, whose style the scenes recorded beside the world prompts use "
             "(default: the bundle's recipe world).")] = None,
    world_judges: Annotated[Path | None, typer.Option(
        "--world-judges", "--judges", help="World judge directory (default: the bundle's recipe judges).")] = None,
    lang: Annotated[Lang, typer.Option(help="World prompt language.")] = Lang.en,
    images_per_prompt: Annotated[int, typer.Option(help="Images per prompt (GenEval: 4, seeds 42 + n).")] = 4,
    limit: Annotated[int | None, typer.Option(help="Only the first N prompts.")] = None,
    label: Annotated[str | None, typer.Option(help="Row label in the table (default: the checkpoint's name).")] = None,
    seed: Annotated[int, typer.Option(help="Training seed recorded in the results rows.")] = 0,
    control: Annotated[bool, typer.Option(
        help="Also judge the shuffled-prompt control: the same images against a fixed derangement of each task's "
             "prompts (what a prompt-blind model scores); doubles the scoring work.")] = True,
    cfg_scale: Annotated[float | None, typer.Option(help="Guidance scale (default: the bundle's).")] = None,
    temperature: Annotated[float | None, typer.Option(help="Sampling temperature (default: the bundle's).")] = None,
    top_k: Annotated[int | None, typer.Option(help="0 = off (default: the bundle's).")] = None,
    top_p: Annotated[float | None, typer.Option(help="1 = off (default: the bundle's).")] = None,
    batch_size: Annotated[int, typer.Option(help="Images per forward batch (a resume must keep it).")] = 8,
    nproc: Annotated[int, typer.Option(help="Generation worker processes; never changes an image.")] = 1,
    device: Annotated[str, typer.Option(help="torch device: cpu, cuda, cuda:N.")] = "cpu",
    threads: Annotated[int, typer.Option(help="torch threads per worker (a resume must keep it).")] = 1,
    as_json: JsonOpt = False,
) -> None:
    """GenEval: the world GenEval prompts scored by the world judges (default), or the official 553 prompts
    scored by Mask2Former + CLIP ViT-L/14 when --detector and --clip are given."""
    from mars_eval.errors import MarsEvalError
    from mars_eval.generate.runner import RunOptions
    from mars_eval.suites.geneval import OfficialPaths, run_geneval

    if (detector is None) != (clip is None):
        raise MarsEvalError("the official GenEval scorer needs both --detector (Mask2Former) and --clip (ViT-L/14)")
    official = OfficialPaths(detector, clip, clip_model) if detector is not None else None
    res = run_geneval(ckpt, out, images=images, official=official, world=world, world_judges=world_judges,
                      lang=lang.value, images_per_prompt=images_per_prompt, limit=limit, label=label, seed=seed,
                      run=RunOptions(batch_size=batch_size, nproc=nproc, device=device, threads=threads),
                      sampler=dict(cfg_scale=cfg_scale, temperature=temperature, top_k=top_k, top_p=top_p),
                      control=control)
    if as_json:
        import json

        print(json.dumps(res, ensure_ascii=False, sort_keys=True))
        return
    print_table(res)


def print_table(res: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    out = Console()
    if not out.is_terminal:
        out = Console(width=120)
    t = Table(title=res["table"] + (" - world judges" if res["mode"] == "world" else " - official scorer"))
    t.add_column("Model")
    for col in res["table_values"]:
        t.add_column(col, justify="right")
    t.add_row(res["label"], *(f"{v:.2f}" for v in res["table_values"].values()))
    ctrl = res.get("control")
    if ctrl and ctrl["tasks"]:
        from mars_eval.geneval.metadata import TASK_LABELS
        from mars_eval.suites.control import control_label

        by_label = {TASK_LABELS[k]: v for k, v in ctrl["tasks"].items()}
        cells = [ctrl["overall"], *(by_label.get(c) for c in list(res["table_values"])[1:])]
        t.add_row(control_label(res["label"]), *(f"{v:.2f}" if v is not None else "-" for v in cells))
    out.print(t)
    if ctrl and ctrl["skipped"]:
        out.print("no shuffled-prompt control for " + "; ".join(f"{c}: {w}" for c, w in ctrl["skipped"].items()))
    out.print(f"images: {sum(res['n_images'].values())} ({res['images_per_prompt']} per prompt, {res['n_prompts']} "
              f"prompts); correct images {res['image_accuracy']:.2f}, prompts with a correct image "
              f"{res['prompt_accuracy']:.2f}")
    out.print(f"per image: {res['images_file']}")
    out.print(f"results: {res['results']}  (report: mars-eval report {res['out']} --out {res['out']}/report)")
