"""`run_coco`: COCO-style FID / KID / CLIP score of a checkpoint.

- real (`coco_dir` given): the COCO-30k captions (package data, or `captions`), each with its own
  `evaluation_seed`, against the val2014 images in `coco_dir`; default protocol `coco` (centre crop + LANCZOS to
  256, then clean-fid's clean resize; docs/protocols.md), applied to both folders. CLIP score only with real
  CLIP weights (`clip`); without them the result says it was not computed.
- world (default): the world's COCO-like split (world_split.py): captions of fresh scenes, disjoint from the
  training captions, with their renders at the generator's output size as the reference; protocol `clean`;
  CLIP score with the world CLIP (raw cosine).

FID comes with KID, a bootstrap interval and FID-infinity for small sets (mars_eval.metrics.pipeline); the
preprocessing mode is recorded with every number. The CLIP score comes with a shuffled-prompt control row
(suites/control.py): the same images against a fixed derangement of the captions.
"""

from __future__ import annotations

from pathlib import Path

from mars_eval.errors import MarsEvalError
from mars_eval.generate.folder import read_manifest
from mars_eval.generate.runner import ProgressFn, RunOptions, generate_folder
from mars_eval.io import writable_dir
from mars_eval.prompts import PromptSet
from mars_eval.suites.best_of import select_best
from mars_eval.suites.common import (
    RESULTS,
    SCORES,
    Bars,
    ScoreStore,
    append_results,
    bundle_info,
    check_world,
    no_recipe,
    output_px,
    recipe_artifacts,
    relative_to,
    score_key,
    score_resumable,
    torch_threads,
    write_grid_view,
)
from mars_eval.suites.control import control_row, control_scores, per_prompt_means, prompt_ci
from mars_eval.suites.image_folder import coco_folder_manifest, image_size

TABLE = "COCO-style FID"
WORLD_N = 300  # "a few hundred": FID-inf needs >= 50 per set; Inception runs ~7-14 images/s on this CPU
REAL_N = 30000
BASE_SEED = 42  # world split (COCO-30k captions carry their own seeds)
CLIP_CHUNK = 32
WORLD_CLIP_VARIANT = "clip-b32-raw"  # its definition (raw cosine, mean), computed with the world CLIP


def _prompts(captions: Path | str | None, n: int | None) -> PromptSet:
    prompts = PromptSet.resolve(captions) if captions is not None else PromptSet.builtin("coco-30k")
    n = REAL_N if n is None else n
    if n > len(prompts):
        raise MarsEvalError(f"--n {n} exceeds the {len(prompts)} captions of {prompts.source}")
    return prompts.head(n) if n < len(prompts) else prompts


def _check_n(n: int | None) -> None:
    if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 2):
        raise MarsEvalError(f"n must be an integer >= 2 (FID needs two images per set), got {n!r}")


def run_coco(ckpt: Path | None, out: Path, *, images: Path | None = None, n: int | None = None,
             coco_dir: Path | None = None,
             captions: Path | str | None = None, protocol: str | None = None, clip: Path | None = None,
             clip_model: str | None = None, clip_variant: str = "clip-b32-raw", world: Path | None = None,
             label: str | None = None, seed: int = 0, run: RunOptions | None = None, progress: bool = True,
             sampler: dict | None = None, cache_dir: Path | None = None, extractor=None,
             split_dir: Path | None = None, table: str = TABLE, on_generate: ProgressFn | None = None,
             control: bool = True, best_of: int = 1) -> dict:
    """Generate (resumably) for the captions, or take another model's `images` (one per caption, in COCO-30k
    naming: suites/image_folder.py), then FID / KID / FID-inf vs the reference and CLIP score.

    n: captions (world default 300, real default 30,000). protocol: clean | torch-fidelity | coco (default:
    coco with `coco_dir`, clean on the world). clip: real CLIP weights (file + clip_model, or an open_clip
    directory) with `clip_variant`; on the world default the recipe's world CLIP. cache_dir: Inception feature
    cache (default: mars_eval.metrics.cache.default_cache_dir()). extractor: a loaded InceptionExtractor to
    reuse. split_dir: where the world split is cached (default OUT/reference; share one across runs so its
    Inception features come from the feature cache). seed: recorded in the rows (the checkpoint's training seed).
    control: also the CLIP score of the same images against deranged captions (a row with `control`).
    best_of: generate N images per caption and keep the one CLIP scores highest against its caption
    (suites/best_of.py; the paper's Table 2 protocol), recorded in the protocol.
    """
    from mars_eval.metrics.cache import default_cache_dir
    from mars_eval.metrics.clip_score import get_variant
    from mars_eval.metrics.fid_infinity import BootstrapConfig, FidInfConfig
    from mars_eval.metrics.inception import ExtractorConfig, InceptionExtractor
    from mars_eval.metrics.pipeline import FidRunConfig, score_folders
    from mars_eval.metrics.preprocess import PreprocessSpec

    _check_n(n)
    run = run or RunOptions()
    if (ckpt is None) == (images is None):
        raise MarsEvalError("give a checkpoint (--ckpt) or another model's image folder (--images), not both")
    if isinstance(best_of, bool) or not isinstance(best_of, int) or best_of < 1:
        raise MarsEvalError(f"best-of must be an integer >= 1, got {best_of!r}")
    if best_of > 1 and images is not None:
        raise MarsEvalError("--best-of picks among generated candidates: it needs --ckpt, not --images")
    info = bundle_info(ckpt) if ckpt is not None else None
    if images is not None and not Path(images).is_dir():
        raise MarsEvalError(f"image folder not found: {images}")
    real = coco_dir is not None
    variant = get_variant(clip_variant if real else WORLD_CLIP_VARIANT)
    spec = PreprocessSpec(protocol or ("coco" if real else "clean"))
    out = writable_dir(out)
    label = label or Path(ckpt if ckpt is not None else images).name
    own = images is None and best_of == 1  # images the run generated into OUT/images, with their manifest
    bars = Bars(progress)
    try:
        if real:
            from mars_eval.metrics.images import list_images

            if not Path(coco_dir).is_dir():
                raise MarsEvalError(f"COCO image folder not found: {coco_dir}")
            ref_dir = list_images(coco_dir).root  # fails early on an empty folder
            prompts = _prompts(captions, n)
            base_seed, use_prompt_seeds, scale = BASE_SEED, None, "real"
        else:
            if captions is not None:
                raise MarsEvalError("--captions needs --coco-dir (the world split has its own captions)")
            from mars_eval.suites.world_split import build_split, split_prompts

            arts = recipe_artifacts(ckpt, info, progress)
            if world is None and arts is None:
                raise no_recipe(ckpt, "world (--world) and world CLIP (--clip)")
            if clip is None and arts is None:
                raise no_recipe(ckpt, "world CLIP (--clip)")
            world = check_world(Path(world) if world is not None else arts.world())
            if clip is None:
                clip = arts.clip_dir()
            px = output_px(ckpt, info) if ckpt is not None else image_size(images)
            split = build_split(world, WORLD_N if n is None else n, px,
                                split_dir if split_dir is not None else out / "reference")
            ref_dir, prompts = split / "images", split_prompts(split)
            base_seed, use_prompt_seeds, scale = BASE_SEED, False, "world"

        if clip is None and best_of > 1:
            raise MarsEvalError("--best-of picks by CLIP score: give CLIP weights (--clip)")
        device = run.device if run.device != "cuda" else "cuda:0"
        loaded = selection = None  # the CLIP is loaded once, after generation (best-of: before it selects)
        if images is not None:
            folder, summary = Path(images), {"computed": 0}
            manifest = coco_folder_manifest(folder, prompts)
        elif best_of > 1:
            summary = generate_folder(ckpt, prompts, out / "candidates", images_per_prompt=best_of,
                                      base_seed=base_seed, use_prompt_seeds=use_prompt_seeds, sampler=sampler,
                                      run=run, on_progress=bars.generation("generate", on_generate))
            folder = out / "images"
            loaded = _load_clip(clip, clip_model, variant, device)
            selection = select_best(out / "candidates", read_manifest(out / "candidates"), folder,
                                    _clip_scorer(loaded, variant, run))
            manifest = coco_folder_manifest(folder, prompts)
        else:
            folder = out / "images"
            summary = generate_folder(ckpt, prompts, folder, images_per_prompt=1, base_seed=base_seed,
                                      use_prompt_seeds=use_prompt_seeds, sampler=sampler, run=run,
                                      on_progress=bars.generation("generate", on_generate))
            manifest = read_manifest(folder)

        config = FidRunConfig(preprocess=spec, bootstrap=BootstrapConfig(seed=seed), fid_inf=FidInfConfig(seed=seed),
                              cache_dir=Path(cache_dir) if cache_dir is not None else default_cache_dir())
        if extractor is None:
            extractor = InceptionExtractor(ExtractorConfig(device=device))
        advance = {}

        def on_folders(fa, fb):
            advance["f"] = bars.task("Inception features", len(fa) + len(fb))

        with torch_threads(run.threads):
            fid = score_folders(folder, ref_dir, config, extractor, on_batch=lambda k: advance["f"](k),
                                on_folders=on_folders)
        clip_res = None
        if clip is not None:
            if loaded is None:
                loaded = _load_clip(clip, clip_model, variant, device)
            clip_res = _clip_scores(out, folder, manifest, prompts, loaded, variant, scale, run, bars, control, own)
    finally:
        bars.close()

    clip_note = None if clip_res else ("CLIP score not computed: no CLIP weights given (--clip); real CLIP "
                                       "weights are never downloaded")
    rows = _rows(fid, clip_res, label, seed, scale, table, len(prompts), best_of)
    grid = folder if own or clip_res is None else out / "samples"
    rows.append({"kind": "samples", "label": f"{label}: COCO-style" + (" (world)" if scale == "world" else ""),
                 "images_dir": relative_to(grid, out), "limit": 24})
    appended = append_results(out / RESULTS, rows)
    keep = ("fid", "kid", "kid_std", "fid_ci_low", "fid_ci_high", "fid_ci_level", "fid_inf", "fid_inf_valid",
            "n_a", "n_b", "protocol", "preprocessing", "cache_hit_a", "cache_hit_b", "extractor_sha256",
            "extractor_precision")
    return {"scale": scale, "label": label, "n": len(prompts), **{k: fid.get(k) for k in keep},
            "clip_score": clip_res["clip_score"] if clip_res else None,
            "clip_variant": clip_res["variant"] if clip_res else None,
            "clip_model": clip_res["model"] if clip_res else None, "clip_note": clip_note,
            **{k: clip_res[k] if clip_res else None for k in ("clip_score_ci", "clip_control", "clip_control_ci",
                                                             "clip_control_skipped")},
            "clip_scored": clip_res["computed"] if clip_res else 0,
            "clip_control_scored": clip_res["control_computed"] if clip_res else 0, "generated": summary["computed"],
            "best_of": best_of, "mean_best_cos": selection["mean_best_cos"] if selection else None,
            "mean_candidate_cos": selection["mean_cos"] if selection else None,
            "images_dir": str(folder), "reference_dir": str(ref_dir), "prompts": prompts.name,
            "rows_appended": appended, "out": str(out), "results": str(out / RESULTS),
            "scores_file": str(out / SCORES)}


def _load_clip(clip: Path, clip_model: str | None, variant, device: str):
    """The run's CLIP: an open_clip directory, or a weights file with clip_model (default: the variant's model)."""
    from mars_eval.metrics.clip_score import load_clip

    return load_clip(clip, clip_model or (None if Path(clip).is_dir() else variant.model), device=device)


def _clip_scorer(loaded, variant, run: RunOptions):
    """score(files, texts) -> (N,) cosines with the run's CLIP (best-of-N selection)."""
    from mars_eval.metrics.clip_score import cosines

    def score(files: list[Path], texts: list[str]):
        with torch_threads(run.threads):
            return cosines(loaded, files, [variant.text_prefix + t for t in texts], batch_size=CLIP_CHUNK)

    return score


def _clip_scores(out: Path, folder: Path, manifest: list[dict], prompts: PromptSet, loaded, variant, scale: str,
                 run: RunOptions, bars: Bars, control: bool = True, own: bool = True) -> dict:
    """Per-image cosines (resumable, in OUT/scores.jsonl) aggregated with the variant's definition; with
    `control`, also against the deranged captions (the shuffled-prompt control)."""
    import numpy as np

    from mars_eval.metrics.clip_score import cosines

    prefix = variant.text_prefix
    files = [relative_to(folder / r["file"], out) for r in manifest]
    parts = [dict(clip=loaded.checkpoint_sha256, model=loaded.model_name, prefix=prefix, prompt=r["prompt"],
                  file=f, sha256=r["sha256"]) for r, f in zip(manifest, files, strict=True)]

    def compute(pos: range, asked: list[str] | None = None) -> list[dict]:
        part = [manifest[i] for i in pos]  # asked: other captions to score them against (the control)
        texts = [r["prompt"] for r in part] if asked is None else asked
        with torch_threads(run.threads):
            cos = cosines(loaded, [folder / r["file"] for r in part], [prefix + t for t in texts],
                          batch_size=CLIP_CHUNK)
        return [{"suite": "coco", "scale": scale, "prompt_index": r["prompt_index"], "prompt": r["prompt"],
                 "file": files[i], "sha256": r["sha256"], "clip": loaded.checkpoint_sha256,
                 "clip_model": loaded.model_name, "text_prefix": prefix, "cos": float(c)}
                for i, r, c in zip(pos, part, cos, strict=True)]

    store = ScoreStore(out / SCORES)
    rows, computed = score_resumable(store, [score_key(**k) for k in parts], CLIP_CHUNK, compute,
                                     bars.task("CLIP score", len(parts)))
    got = control_scores(store, [(r["prompt_index"], r["prompt"]) for r in manifest], parts, CLIP_CHUNK, compute,
                         bars.task("CLIP score, shuffled-prompt control", len(parts))) if control else None
    store.compact()
    cos = np.array([r["cos"] for r in rows])
    ctrl = None if got is None or isinstance(got, str) else np.array([r["cos"] for r in got[0]])
    per_image = variant.per_image(cos)
    if own:  # the run's generate folder: the grid reads its manifest
        write_grid_view(folder, {r["file"]: float(c) for r, c in zip(manifest, per_image, strict=True)})
    else:  # another model's folder or best-of picks: the grid's manifest goes under OUT/samples, the folder is left
        names = [str((folder / r["file"]).resolve()) for r in manifest]
        write_grid_view(out / "samples", dict(zip(names, map(float, per_image), strict=True)),
                        [{"file": f, "prompt": r["prompt"], "prompt_index": r["prompt_index"]}
                         for f, r in zip(names, manifest, strict=True)])
    world = scale == "world"
    name = "world-clip-raw" if world else variant.name
    definition = ("raw cosine (the clip-b32-raw definition) with the world CLIP" if world
                  else variant.source + ("" if loaded.model_name == variant.model else
                                         f"; model {loaded.model_name}, not the variant's {variant.model}"))
    return {"clip_score": variant.aggregate(cos), "clip_score_std": float(variant.per_image(cos).std()),
            "clip_score_ci": prompt_ci(rows, variant.per_image(cos)),
            "clip_control": variant.aggregate(ctrl) if ctrl is not None else None,
            "clip_control_std": float(variant.per_image(ctrl).std()) if ctrl is not None else None,
            "clip_control_ci": prompt_ci(got[0], variant.per_image(ctrl)) if ctrl is not None else None,
            "clip_control_skipped": got if isinstance(got, str) else None,
            # per-prompt means for the report's clustered interval; a clamped mean is not a mean of prompt means
            "clip_per_prompt": per_prompt_means(rows, per_image) if variant.clamp != "mean" else None,
            "clip_control_per_prompt": (per_prompt_means(got[0], variant.per_image(ctrl))
                                        if ctrl is not None and variant.clamp != "mean" else None),
            "control_computed": got[1] if ctrl is not None else 0,
            "variant": name, "definition": definition, "model": loaded.model_name,
            "checkpoint_sha256": loaded.checkpoint_sha256, "computed": computed}


def _rows(fid: dict, clip: dict | None, label: str, seed: int, scale: str, table: str, n: int,
          best_of: int = 1) -> list[dict]:
    base = {"kind": "metric", "table": table, "label": label, "seed": seed, "scale": scale, "n": n,
            "n_reference": fid["n_b"]}
    picked = f"best of {best_of} by CLIP score; " if best_of > 1 else ""
    proto = f"{picked}{fid['preprocessing']}; Inception {fid['extractor_sha256'][:12]} {fid['extractor_precision']}"
    rows = [{**base, "metric": "FID", "value": fid["fid"], "protocol": proto,
             "ci_low": fid.get("fid_ci_low"), "ci_high": fid.get("fid_ci_high"), "ci_level": fid.get("fid_ci_level")},
            {**base, "metric": "KID (x1000)", "value": 1000 * fid["kid"], "protocol": proto,
             "std": 1000 * fid["kid_std"]}]
    if fid.get("fid_inf") is not None:
        rows.append({**base, "metric": "FID-inf", "value": fid["fid_inf"], "protocol": proto,
                     "valid": fid["fid_inf_valid"]})
    if clip is not None:
        rows.append({**base, "metric": f"CLIP score ({clip['variant']})", "value": clip["clip_score"],
                     "protocol": f"{picked}{clip['definition']}; CLIP {clip['checkpoint_sha256'][:12]}",
                     "std": clip["clip_score_std"], "per_prompt": clip.get("clip_per_prompt")})
        if clip["clip_control"] is not None:
            rows.append({**control_row(rows[-1], clip["clip_control"], clip.get("clip_control_per_prompt")),
                         "std": clip["clip_control_std"]})
    return rows
