"""`mars-eval train vq`: train the VQ image tokenizer on a built world; report held-out PSNR, codebook usage and the
tokenizer properties a small generator needs (`mars_ref.vq_probes`: constant-image codes, flip rates, locality,
object colour fidelity)."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from mars_eval.cli.common import JsonOpt, emit, progress, require_dir, writable_dir
from mars_eval.cli.train import train_app


class ReconLoss(Enum):
    l1 = "l1"
    l2 = "l2"


@train_app.command("vq")
def train_vq_cmd(
    world: Annotated[Path, typer.Option(help="A world built by `mars-eval world build` (with manifest.jsonl).")],
    out: Annotated[Path, typer.Option(help="Output folder: config.json, model.safetensors, train state, eval.json.")],
    # a plain string, checked by `vq_preset` (listing the known names), so that the CLI starts without torch
    preset: Annotated[str, typer.Option(help="VQ architecture preset: world-f4, world-f4-1024, tiny, llamagen-vq16, "
                                             "mars-f16-8192, taming-f16-1024.")] = "world-f4",
    codebook_size: Annotated[int | None, typer.Option(help="Override the preset's codebook size.")] = None,
    steps: Annotated[int, typer.Option(help="Optimiser steps.")] = 2000,
    batch_size: Annotated[int, typer.Option(help="Images per step.")] = 32,
    lr: Annotated[float, typer.Option(help="Peak learning rate (AdamW, warm-up then cosine decay).")] = 5e-4,
    recon_loss: Annotated[ReconLoss, typer.Option(help="Pixel loss.")] = ReconLoss.l1,
    disc_weight: Annotated[float, typer.Option(help="PatchGAN loss weight (0 = no discriminator).")] = 0.0,
    seed: Annotated[int, typer.Option(help="Seed for initial weights and batch sampling.")] = 0,
    held_out: Annotated[int, typer.Option(help="Held-out images for evaluation when the manifest has no "
                                               "val/test split (the last N rows, at most a tenth).")] = 256,
    max_images: Annotated[int | None, typer.Option(help="Use only the first N manifest rows.")] = None,
    recon_dir: Annotated[Path | None, typer.Option(help="Also write held-out originals and reconstructions as "
                                                        "PNG into DIR/real and DIR/recon (for reconstruction FID).")] = None,
    resume: Annotated[bool, typer.Option(help="Continue from the checkpoint in --out if there is one.")] = False,
    ckpt_every: Annotated[int, typer.Option(help="Write a checkpoint every N steps (0 = only at the end).")] = 0,
    log_every: Annotated[int, typer.Option(help="Log (and update the progress bar) every N steps.")] = 50,
    as_json: JsonOpt = False,
) -> None:
    """Train the VQ tokenizer on world images; print held-out PSNR, codebook usage, perplexity and probes."""
    import dataclasses

    from mars_eval.io import atomic_write_json
    from mars_ref.vq import vq_preset
    from mars_ref.vq_probes import tokenizer_properties
    from mars_ref.vq_train import VQTrainConfig, evaluate_vq, train_vq, write_reconstructions

    require_dir(world, "world directory")
    writable_dir(out)
    cfg = vq_preset(preset)
    if codebook_size is not None:
        cfg = dataclasses.replace(cfg, codebook_size=codebook_size)
    tcfg = VQTrainConfig(steps=steps, batch_size=batch_size, lr=lr, recon_loss=ReconLoss(recon_loss).value, disc_weight=disc_weight,
                         seed=seed, ckpt_every=ckpt_every, log_every=log_every)
    from mars_eval.recipe.data import load_world_images

    train, held, held_names, skipped = load_world_images(world, held_out, max_images)
    cfg.token_grid(train.shape[2], train.shape[3])  # fail before training if the size does not fit f

    with progress() as bar:
        task = bar.add_task("train vq", total=steps, rate="")

        def on_log(step: int, row: dict) -> None:
            bar.update(task, completed=step, rate=f"loss {row['loss']:.4f} usage {row['batch_codebook_usage']:.2f}")

        model = train_vq(train, cfg, tcfg, out, callback=on_log, resume=resume)
    results = {"preset": preset, "codebook_size": cfg.codebook_size, "downsample_factor": cfg.downsample_factor,
               "image_size": f"{train.shape[3]}x{train.shape[2]}", "steps": steps, "n_train": int(train.shape[0]),
               "skipped_other_size": skipped, **evaluate_vq(model, held), "out": str(out)}
    if train.shape[2:] == (32, 32):  # the probes render fresh world scenes at the Stage I resolution
        results.update(tokenizer_properties(model))
    if recon_dir is not None:
        writable_dir(recon_dir)
        write_reconstructions(model, held, recon_dir / "recon", names=_png_names(held_names))
        _write_pngs(held, recon_dir / "real", _png_names(held_names))
        results["recon_dir"] = str(recon_dir)
    atomic_write_json(out / "eval.json", results)
    emit(results, as_json, "VQ tokenizer (held-out)")


def _png_names(names: list[str]) -> list[str]:
    stems = [Path(n).stem for n in names]
    if len(set(stems)) != len(stems):  # same file name in different sub-folders: fall back to indices
        return [f"{i:06d}.png" for i in range(len(names))]
    return [s + ".png" for s in stems]


def _write_pngs(images, out: Path, names: list[str]) -> None:
    from PIL import Image

    from mars_eval.io import atomic_write

    for img, name in zip(images.permute(0, 2, 3, 1).numpy(), names, strict=True):
        pil = Image.fromarray(img)
        atomic_write(out / name, lambda p, pil=pil: pil.save(p, format="PNG"))
