"""`mars-eval clip-score DIR --prompts FILE`: CLIP score of an image folder against its prompts."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from mars_eval.cli.common import JsonOpt, emit
from mars_eval.cli.main import app


class VariantChoice(StrEnum):
    clip_b32_raw = "clip-b32-raw"
    clip_l14_100 = "clip-l14-100"
    clipscore_2_5 = "clipscore-2.5"


@app.command("clip-score")
def clip_score_command(
    image_dir: Annotated[Path, typer.Argument(help="Folder of generated images.")],
    prompts: Annotated[str, typer.Option(help="Prompt file (.txt one per line, .csv, .jsonl) or a built-in set "
                                              "name; images are matched to prompts as --manifest says.")],
    clip_ckpt: Annotated[Path, typer.Option(help="open_clip weights: a file (with --clip-model) or a directory "
                                                  "in open_clip's local format (open_clip_config.json + weights).")],
    variant: Annotated[VariantChoice, typer.Option(
        help="clip-b32-raw: raw cosine (T2I-CompBench, GigaGAN); clip-l14-100: max(100 mean cos, 0) "
             "(torchmetrics); clipscore-2.5: 2.5 max(cos, 0) with 'A photo depicts ' (Hessel).")
    ] = VariantChoice.clip_b32_raw,
    clip_model: Annotated[str | None, typer.Option(
        help="open_clip model name or model-config JSON for a checkpoint file (default: the variant's model, "
             "ViT-B-32 or ViT-L-14).")] = None,
    text_prefix: Annotated[str | None, typer.Option(
        help="Text put before every prompt (default: the variant's, '' or 'A photo depicts ').")] = None,
    manifest: Annotated[Path | None, typer.Option(
        help="Image -> prompt manifest (JSONL rows with file, prompt_index) (default: DIR/manifest.jsonl if it "
             "exists, else the leading number of each file name is the prompt index).")] = None,
    batch_size: Annotated[int, typer.Option(help="Images per batch.")] = 32,
    device: Annotated[str, typer.Option(help="torch device.")] = "cpu",
    as_json: JsonOpt = False,
) -> None:
    """CLIP score of the images in IMAGE_DIR against their prompts, with the variant named in the result."""
    from mars_eval.cli.common import require_dir
    from mars_eval.errors import MarsEvalError
    from mars_eval.metrics.clip_score import clip_score, get_variant, load_clip
    from mars_eval.prompts import PromptSet

    if batch_size < 1:
        raise MarsEvalError(f"--batch-size must be positive, got {batch_size}")
    require_dir(image_dir, "image folder")
    if manifest is not None and not manifest.is_file():
        raise MarsEvalError(f"manifest not found: {manifest}")
    prompt_set = PromptSet.resolve(prompts)
    v = get_variant(variant.value)
    clip = load_clip(clip_ckpt, clip_model or v.model, device=device)
    results = clip_score(image_dir, prompt_set, v.name, clip, text_prefix=text_prefix, manifest=manifest,
                         batch_size=batch_size)
    if as_json:
        emit(results, True)
        return
    keys = ("clip_score", "clip_score_std", "variant", "model", "text_prefix", "matching", "n_images", "n_prompts")
    emit({k: results[k] for k in keys}, False, title=f"CLIP score ({results['variant_definition']})")
