"""`mars-eval coco --ckpt CKPT | --images DIR --out OUT [--coco-dir val2014/]`: COCO-style FID / KID / CLIP score."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from mars_eval.cli.common import JsonOpt
from mars_eval.cli.main import app


class Protocol(StrEnum):
    clean = "clean"
    torch_fidelity = "torch-fidelity"
    coco = "coco"


class Variant(StrEnum):
    clip_b32_raw = "clip-b32-raw"
    clip_l14_100 = "clip-l14-100"
    clipscore_2_5 = "clipscore-2.5"


@app.command("coco")
def coco_command(
    out: Annotated[Path, typer.Option(help="Output folder: images/, scores.jsonl, results.jsonl; rerunning the "
                                           "same command resumes a killed run.")],
    ckpt: Annotated[Path | None, typer.Option(help="Checkpoint bundle directory to generate with.")] = None,
    images: Annotated[Path | None, typer.Option(
        help="Another model's images instead of --ckpt: one per caption, named by caption index (00000.png or "
             "00000_000.png, captions 0 .. n-1 exactly); on the world give --world and --clip.")] = None,
    coco_dir: Annotated[Path | None, typer.Option(
        help="A local COCO val2014 image folder: the reference set for the COCO-30k captions (default: the "
             "world's COCO-like split).")] = None,
    captions: Annotated[str | None, typer.Option(
        help="Captions instead of the package's COCO-30k list (a .csv with prompt/caption and optional "
             "evaluation_seed, or a prompt file); needs --coco-dir.")] = None,
    n: Annotated[int | None, typer.Option(help="Captions to generate for (default: 30000 with --coco-dir, "
                                                "300 on the world).")] = None,
    protocol: Annotated[Protocol | None, typer.Option(
        help="FID preprocessing: coco (centre crop + LANCZOS to 256, then clean-fid clean; default with "
             "--coco-dir), clean (default on the world), torch-fidelity.")] = None,
    clip: Annotated[Path | None, typer.Option(
        help="CLIP weights for the CLIP score: an open_clip directory or a weights file (with --clip-model) "
             "(default on the world: the recipe's world CLIP; with --coco-dir: no CLIP score).")] = None,
    clip_model: Annotated[str | None, typer.Option(
        help="open_clip model name or config JSON for a --clip file (default: the variant's model).")] = None,
    clip_variant: Annotated[Variant, typer.Option(
        help="CLIP score definition with real CLIP weights (clip-b32-raw: raw cosine; clip-l14-100: "
             "torchmetrics; clipscore-2.5: Hessel).")] = Variant.clip_b32_raw,
    world: Annotated[Path | None, typer.Option(
        help="A built world (default: the one recorded in the bundle's recipe).")] = None,
    label: Annotated[str | None, typer.Option(help="Row label in the table (default: the checkpoint's name).")] = None,
    seed: Annotated[int, typer.Option(help="Training seed recorded in the rows; seeds the bootstrap.")] = 0,
    cache_dir: Annotated[Path | None, typer.Option(
        help="Inception feature cache (default: $MARS_EVAL_CACHE_DIR or ~/.cache/mars-eval).")] = None,
    control: Annotated[bool, typer.Option(
        help="Also the CLIP score of the same images against a fixed derangement of the captions (the "
             "shuffled-prompt control: what a prompt-blind model scores).")] = True,
    best_of: Annotated[int, typer.Option(
        help="Generate N images per caption and keep the one CLIP scores highest against its caption (the "
             "paper's Table 2 best-of protocol; recorded in the protocol; needs --clip or the world CLIP).")] = 1,
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
    """COCO-style FID, KID, FID-inf (bootstrap interval for small n) and CLIP score, with the protocol named."""
    from mars_eval.generate.runner import RunOptions
    from mars_eval.suites.coco import run_coco

    res = run_coco(ckpt, out, images=images, n=n, coco_dir=coco_dir, captions=captions,
                   protocol=protocol.value if protocol else None, clip=clip, clip_model=clip_model,
                   clip_variant=clip_variant.value, world=world, label=label, seed=seed,
                   run=RunOptions(batch_size=batch_size, nproc=nproc, device=device, threads=threads),
                   sampler=dict(cfg_scale=cfg_scale, temperature=temperature, top_k=top_k, top_p=top_p),
                   cache_dir=cache_dir, control=control, best_of=best_of)
    if as_json:
        import json

        print(json.dumps(res, ensure_ascii=False, sort_keys=True))
        return
    print_table(res)


def print_table(res: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    out = Console()
    if not out.is_terminal:  # a pipe or a log: wide enough for the table's columns
        out = Console(width=120)
    t = Table(title=f"COCO-style FID ({'world COCO-like split' if res['scale'] == 'world' else 'COCO val2014'}, "
                    f"n = {res['n']} vs {res['n_b']} reference images)")
    t.add_column("Model")
    cols = {"FID": f"{res['fid']:.2f}"}
    if res.get("fid_ci_low") is not None:
        cols[f"FID {res['fid_ci_level']:.0%} interval"] = f"[{res['fid_ci_low']:.2f}, {res['fid_ci_high']:.2f}]"
    if res.get("fid_inf") is not None:
        cols["FID-inf"] = f"{res['fid_inf']:.2f}" + ("" if res["fid_inf_valid"] else "*")
    cols["KID x1000"] = f"{1000 * res['kid']:.2f} ± {1000 * res['kid_std']:.2f}"
    if res["clip_score"] is not None:
        cols[f"CLIP score ({res['clip_variant']})"] = f"{res['clip_score']:.4f}"
    for c in cols:
        t.add_column(c, justify="right")
    t.add_row(res["label"], *cols.values())
    if res.get("clip_control") is not None:
        from mars_eval.suites.control import control_label

        t.add_row(control_label(res["label"]), *(["-"] * (len(cols) - 1)), f"{res['clip_control']:.4f}")
    out.print(t)
    out.print(f"protocol: {res['preprocessing']}; Inception {res['extractor_sha256'][:12]} "
              f"({res['extractor_precision']})")
    if res.get("fid_inf") is not None and not res["fid_inf_valid"]:
        out.print("* FID-inf: fewer images than feature dimensions in the smallest subset (partial bias correction)")
    if res["clip_note"]:
        out.print(res["clip_note"])
    if res.get("clip_control_skipped"):
        out.print(f"no shuffled-prompt control: {res['clip_control_skipped']}")
    elif res["clip_model"]:
        out.print(f"CLIP score model: {res['clip_model']}")
    out.print(f"results: {res['results']}  (report: mars-eval report {res['out']} --out {res['out']}/report)")
