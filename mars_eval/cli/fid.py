"""`mars-eval fid DIR_A DIR_B`: FID, KID, a bootstrap interval and FID-inf between any two image folders."""

from __future__ import annotations

from contextlib import contextmanager
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from mars_eval.cli.common import JsonOpt, console, emit, progress
from mars_eval.cli.main import app


class ProtocolChoice(StrEnum):
    clean = "clean"
    torch_fidelity = "torch-fidelity"
    coco = "coco"


@app.command("fid")
def fid_command(
    dir_a: Annotated[Path, typer.Argument(help="Generated images (set A).")],
    dir_b: Annotated[Path, typer.Argument(help="Reference images (set B).")],
    protocol: Annotated[ProtocolChoice, typer.Option(
        help="Preprocessing: clean (clean-fid), torch-fidelity, or coco (centre crop + LANCZOS to --resolution, "
             "then clean; the COCO FID-30K protocol).")] = ProtocolChoice.clean,
    resolution: Annotated[int | None, typer.Option(help="Pre-resize edge of the coco protocol (default: 256).")] = None,
    kid_subsets: Annotated[int, typer.Option(help="KID: number of random subsets.")] = 100,
    kid_subset_size: Annotated[int | None, typer.Option(
        help="KID: images per subset (default: min(1000, n_a, n_b)).")] = None,
    bootstrap: Annotated[int | None, typer.Option(
        help="FID bootstrap resamples for the interval; 0 turns it off (default: 100 when the smaller set has "
             "at most 5000 images, else 0).")] = None,
    fid_inf: Annotated[bool, typer.Option("--fid-inf/--no-fid-inf", help="Fit FID-infinity.")] = True,
    prc: Annotated[bool, typer.Option("--prc", help="Also compute precision / recall (k = 3).")] = False,
    seed: Annotated[int, typer.Option(help="Seed of the bootstrap and FID-inf subsets.")] = 0,
    batch_size: Annotated[int, typer.Option(help="Images per Inception batch.")] = 32,
    workers: Annotated[int, typer.Option(help="Image decoding processes (0 = in the main process).")] = 0,
    bf16: Annotated[bool, typer.Option("--bf16", help="bf16 autocast: ~1.8x faster on CPU, features ~3 % off "
                                                     "(recorded; do not compare with fp32 scores).")] = False,
    device: Annotated[str, typer.Option(help="torch device for Inception.")] = "cpu",
    cache_dir: Annotated[Path | None, typer.Option(
        help="Feature cache (default: $MARS_EVAL_CACHE_DIR or ~/.cache/mars-eval).")] = None,
    no_cache: Annotated[bool, typer.Option("--no-cache", help="Do not read or write the feature cache.")] = False,
    content_hash: Annotated[bool, typer.Option(
        "--content-hash", help="Key the cache by file contents (sha256) instead of name, size and mtime.")] = False,
    recursive: Annotated[bool, typer.Option("--recursive", help="Also read images in sub-folders.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """FID (+ KID, bootstrap interval, FID-inf, optional precision/recall) of DIR_A against DIR_B.

    Every score is recorded with its protocol, the image counts and the Inception weights' sha256.
    """
    from mars_eval.metrics.cache import default_cache_dir
    from mars_eval.metrics.features import LoaderConfig
    from mars_eval.metrics.fid_infinity import BootstrapConfig, FidInfConfig
    from mars_eval.metrics.inception import ExtractorConfig, InceptionExtractor
    from mars_eval.metrics.metric_kid import KidConfig
    from mars_eval.metrics.pipeline import FidRunConfig, score_folders
    from mars_eval.metrics.preprocess import PreprocessSpec

    metrics = ["fid", "kid", "fid_ci"] + (["fid_inf"] if fid_inf else []) + (["prc"] if prc else [])
    config = FidRunConfig(
        preprocess=PreprocessSpec(protocol.value, resolution),
        loader=LoaderConfig(batch_size, workers),
        extractor=ExtractorConfig(bf16=bf16, device=device),
        kid=KidConfig(kid_subsets, kid_subset_size),
        bootstrap=BootstrapConfig(100 if bootstrap is None else bootstrap, seed=seed),
        auto_bootstrap=bootstrap is None,
        fid_inf=FidInfConfig(seed=seed),
        metrics=tuple(metrics),
        cache_dir=None if no_cache else (cache_dir or default_cache_dir()),
        content_hash=content_hash,
        recursive=recursive,
    )
    with progress_or_quiet("Inception features") as (on_total, on_batch):
        results = score_folders(dir_a, dir_b, config, InceptionExtractor(config.extractor), on_batch=on_batch,
                                on_folders=lambda fa, fb: on_total(len(fa) + len(fb)))
    if as_json:
        emit(results, True)
        return
    emit(_summary(results), False, title=f"FID ({results['preprocessing']})")


@contextmanager
def progress_or_quiet(description: str):
    """A progress bar on an interactive stderr; nothing otherwise, so logs and error output stay one line."""
    if not console.is_terminal:
        yield (lambda total: None), (lambda n: None)
        return
    with progress() as bar:
        task = bar.add_task(description, total=None, rate="")
        yield (lambda total: bar.update(task, total=total)), (lambda n: bar.advance(task, n))


def _summary(r: dict) -> dict:
    out = {"FID": r["fid"]}
    if "fid_ci_low" in r:
        out[f"FID {r['fid_ci_level']:.0%} interval"] = f"[{r['fid_ci_low']:.4f}, {r['fid_ci_high']:.4f}]"
    if r.get("fid_inf") is not None:
        note = "" if r["fid_inf_valid"] else " (n below feature dim: partial bias correction)"
        out["FID-inf"] = f"{r['fid_inf']:.4f}{note}"
    if "kid" in r:
        out["KID"] = f"{r['kid']:.6f} +- {r['kid_std']:.6f} ({r['kid_subsets']} x {r['kid_subset_size']})"
    for k in ("precision", "recall"):
        if k in r:
            out[k] = r[k]
    out.update({"images": f"A {r['n_a']}, B {r['n_b']}", "protocol": r["protocol"],
                "features": f"{r['extractor']} ({r['extractor_precision']})",
                "cache": f"A {'hit' if r['cache_hit_a'] else 'miss'}, B {'hit' if r['cache_hit_b'] else 'miss'}"})
    return out
