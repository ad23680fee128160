"""`mars-eval compbench --ckpt CKPT --out OUT`: T2I-CompBench per category x 100, laid out like the paper's Table 1."""

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


@app.command("compbench")
def compbench_command(
    out: Annotated[Path, typer.Option(help="Output folder: images/, scores.jsonl, results.jsonl; rerunning the "
                                           "same command resumes a killed run.")],
    ckpt: Annotated[Path | None, typer.Option(help="Checkpoint bundle directory (not needed with --images).")] = None,
    images: Annotated[Path | None, typer.Option(
        help="Score a folder another model generated, in T2I-CompBench's naming {prompt}_{000000}.png: one "
             "sub-folder per category (DIR/color/ or DIR/color/samples/), or the images directly for one "
             "category.")] = None,
    categories: Annotated[list[str] | None, typer.Option(
        help="Categories (repeat the option or separate with commas) (default: all that the judges given can "
             "score; with --images: the sub-folders present).")] = None,
    images_per_prompt: Annotated[int, typer.Option(help="Images per prompt (official: 10, seeds 42 + n).")] = 10,
    limit: Annotated[int | None, typer.Option(help="Only the first N val prompts of each category.")] = None,
    lang: Annotated[Lang, typer.Option(help="World prompt language (WORLD/prompts/[zh/]).")] = Lang.en,
    world: Annotated[Path | None, typer.Option(
        help="A built world (default: the one recorded in the bundle's recipe).")] = None,
    world_judges: Annotated[Path | None, typer.Option(
        "--world-judges", "--judges",
        help="World judge directory (default: the recipe's, trained once and cached).")] = None,
    blip_dir: Annotated[Path | None, typer.Option(
        help="Official judges: BLIP-VQA directory (colour, shape, texture, complex).")] = None,
    detector_dir: Annotated[Path | None, typer.Option(
        help="Official judges: detector directory (spatial, numeracy, complex, 3D-spatial).")] = None,
    clip_ckpt: Annotated[Path | None, typer.Option(
        help="Official judges: CLIP ViT-B/32 weights file or open_clip directory (non-spatial, complex).")] = None,
    clip_model: Annotated[str, typer.Option(help="open_clip model name for a --clip-ckpt file.")] = "ViT-B-32",
    depth_dir: Annotated[Path | None, typer.Option(help="Official judges: depth model directory (3D-spatial).")] = None,
    label: Annotated[str | None, typer.Option(help="Row label in the table (default: the checkpoint's name).")] = None,
    seed: Annotated[int, typer.Option(help="Training seed recorded in the results rows.")] = 0,
    calibration: Annotated[int, typer.Option(
        help="World: held-out prompts per category for the judge-calibration table (0 = skip).")] = 100,
    control: Annotated[bool, typer.Option(
        help="Also score the shuffled-prompt control: the same images against a fixed derangement of each "
             "category's prompts (what a prompt-blind model scores); doubles the judge work.")] = True,
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
    """T2I-CompBench: the world's CompBench scored by the world judges (default), or the official val prompts
    scored by the real-architecture judges when their paths are given."""
    from mars_eval.compbench.score import JudgePaths, ScoreOptions
    from mars_eval.generate.runner import RunOptions
    from mars_eval.suites.compbench import run_compbench

    official = any(p is not None for p in (blip_dir, detector_dir, clip_ckpt, depth_dir))
    judges = JudgePaths(blip_dir, detector_dir, clip_ckpt, clip_model, depth_dir) if official else None
    cats = [c.strip() for v in categories for c in v.split(",") if c.strip()] if categories else None
    res = run_compbench(ckpt, out, categories=cats, images_per_prompt=images_per_prompt, limit=limit,
                        lang=lang.value, judges=judges, world=world, world_judges=world_judges, label=label,
                        seed=seed, run=RunOptions(batch_size=batch_size, nproc=nproc, device=device, threads=threads),
                        images=images, score_options=ScoreOptions(device=device) if official else None,
                        sampler=dict(cfg_scale=cfg_scale, temperature=temperature, top_k=top_k, top_p=top_p),
                        calibration_n=calibration, control=control)
    if as_json:
        import json

        print(json.dumps(res, ensure_ascii=False, sort_keys=True))
        return
    print_tables(res)


def print_tables(res: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    from mars_eval.suites.compbench import TABLE, TABLE_ZH

    out = Console()
    if not out.is_terminal:  # a pipe or a log: wide enough for the table's columns
        out = Console(width=120)
    title = (TABLE_ZH if res["lang"] == "zh" else TABLE) + (" - world judges" if res["mode"] == "world"
                                                              else " - official judges")
    t = Table(title=title)
    t.add_column("Model")
    for col in res["table_x100"]:
        t.add_column(col, justify="right")
    t.add_row(res["label"], *(f"{v:.2f}" for v in res["table_x100"].values()))
    ctrl = res.get("control")
    if ctrl and ctrl["table_x100"]:
        from mars_eval.suites.control import control_label

        t.add_row(control_label(res["label"]), *(f"{ctrl['table_x100'][c]:.2f}" if c in ctrl["table_x100"] else "-"
                                                  for c in res["table_x100"]))
    out.print(t)
    if ctrl and ctrl["skipped"]:
        out.print("no shuffled-prompt control for " + "; ".join(f"{c}: {w}" for c, w in ctrl["skipped"].items()))
    n = ", ".join(f"{c} {k}" for c, k in res["n_images"].items())
    out.print(f"images scored per category: {n} ({res['images_per_prompt']} per prompt)")
    if res["calibration"]:
        from mars_eval.suites.compbench import COLUMNS

        c = Table(title="Judge calibration: accuracy (%) against ground truth, true vs corrupted renders")
        c.add_column("")
        for r in res["calibration"]:
            c.add_column(COLUMNS[r["category"]], justify="right")
        c.add_row("clean renders", *(f"{100 * r['accuracy_clean']:.1f}" for r in res["calibration"]))
        if any(r["accuracy_vq"] is not None for r in res["calibration"]):
            c.add_row("VQ round trip", *(f"{100 * r['accuracy_vq']:.1f}" if r["accuracy_vq"] is not None else "-"
                                         for r in res["calibration"]))
        out.print(c)
    out.print(f"results: {res['results']}  (report: mars-eval report {res['out']} --out {res['out']}/report)")
