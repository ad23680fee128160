"""Small worlds, judges and recipe-carrying bundles for the `coco` / `compbench` suite tests (a few seconds).

    from fixtures_suites import tiny_world, random_world_judges, recipe_bundle
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch

from mars_eval.judges.world_detector import DetectorConfig, WorldDetector
from mars_eval.judges.world_judges import WorldJudges
from mars_ref.world.build import build_world


def tiny_world(path: Path) -> Path:
    """30 Stage I images, 6 val prompts per category."""
    build_world(path, 30, 5, n_stage2=2, n_stage3=6, n_sequences=1, n_text=2, val_size=6, train_size=1)
    return path


def random_world_judges(path: Path, seed: int = 0) -> Path:
    """World judges with random weights, spread so that their spatial / complex scores vary continuously with
    the image (a detector trained for a few steps finds nothing in a tiny bundle's 8 px noise, scoring 0)."""
    torch.manual_seed(seed)
    det = WorldDetector(DetectorConfig(width=8))
    with torch.no_grad():
        for p in det.parameters():
            if p.dim() >= 2:
                p.normal_(0.0, 0.1)
        det.head.bias[0] = 2.0  # object-centre logit: detections above the decoder's threshold
    return WorldJudges(det).save(path)


def recipe_bundle(ckpt: Path, out: Path, cache: Path, world: Path, judges: Path | None = None,
                  clip: Path | None = None) -> Path:
    """A copy of `ckpt` whose bundle.json records a recipe whose cache already holds `world` (and the judges /
    world CLIP), as `mars-eval ablate` writes it, so the suites' defaults find them without training."""
    from mars_eval.recipe.pipeline import DONE, Artifacts, Preset
    from mars_ref.world.build import FORMAT

    tables = {"world": {"n": 30, "seed": 5}, "vq": {"preset": "tiny"}, "judges": {"steps": 1}, "clip": {"steps": 1}}
    arts = Artifacts(Preset("test", tables), cache)
    w = arts._dir("world", {**tables["world"], "format": FORMAT})
    shutil.copytree(world, w / "world")
    (w / DONE).write_text('{"test": true}')
    vq = arts._dir("vq", {**tables["vq"], "world": str(w / "world")})
    shutil.copytree(ckpt / "vq", vq / "vq")
    (vq / DONE).write_text('{"test": true}')
    if judges is not None:
        d = arts.judges_cache()[0]
        shutil.copytree(judges, d / "judges")
        (d / DONE).write_text('{"test": true}')
    if clip is not None:
        d = arts.clip_cache()[0]
        shutil.copytree(clip, d / "clip")
        (d / DONE).write_text('{"test": true}')
    shutil.copytree(ckpt, out)
    info = json.loads((out / "bundle.json").read_text())
    info["extra"] = {"recipe": arts.recipe_info()}
    (out / "bundle.json").write_text(json.dumps(info))
    return out
