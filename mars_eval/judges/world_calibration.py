"""Judge calibration: how often the world judges get it right, measured against the world's ground truth.

For each category, `n` held-out val prompts (`WORLD/prompts/{category}_val.jsonl`, never in a training corpus;
3d_spatial: the non_spatial ones with "in front of" / "behind")
give two images each: the prompt's own scene (the prompt is true) and a corrupted scene (world_corrupt.py: the
prompt is false). A judge is right when it scores the true image above 0.5 and the corrupted one at or below
0.5 (for complex: every part of its 3-in-1 score above 0.5, see `world_rules.passes`); accuracy = correct
decisions / all decisions. The same pairs go through a VQ tokenizer round trip when a
VQ checkpoint is given (`mars_ref.vq_formats.load_vq`), which is what the judges see when scoring a model's
samples. Also reported: the pair accuracy (true scored above corrupted) and the mean scores.

With source "fresh", the pairs come from newly sampled scenes that are not val prompts instead: a dev set of any
size, for choosing between judge runs before the val calibration is looked at.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from mars_eval.errors import MarsEvalError
from mars_eval.io import read_jsonl
from mars_eval.judges.world_corrupt import corrupt
from mars_eval.judges.world_detector_train import vq_roundtrip
from mars_eval.judges.world_judges import CATEGORIES, WorldJudges
from mars_eval.judges.world_rules import passes
from mars_ref.world.render import render
from mars_ref.world.sampling import OCCLUSION_RELATIONS
from mars_ref.world.scene import Scene
from mars_ref.world.style import world_style

SIZE = 32
SOURCES = ("val", "fresh")  # held-out val prompts (the reported calibration), or fresh scenes (a dev set)
FRESH_TRIES = 50  # sampled scenes per fresh item at most (3d_spatial keeps about two non-spatial scenes in five)


# categories whose val prompts are a subset of another category's: 3d_spatial = non_spatial prompts stating an
# occlusion relation (unless the world has its own 3d_spatial_val.jsonl)
SUBSETS = {"3d_spatial": ("non_spatial", OCCLUSION_RELATIONS)}


def val_rows(world_dir: str | Path, category: str) -> list[dict]:
    """The world's val prompt rows (prompt, prompt_zh, scene, ...) of `category`."""
    path = Path(world_dir) / "prompts" / f"{category}_val.jsonl"
    if category in SUBSETS and not path.is_file():
        source, rels = SUBSETS[category]
        return [row for row in val_rows(world_dir, source)
                if any(r.get("rel") in rels for r in row.get("scene", {}).get("relations", []))]
    if not path.is_file():
        raise MarsEvalError(f"no {path.name} in {path.parent} (build the world with `mars-eval world build`)")
    return read_jsonl(path)


def calibration_items(world_dir: str | Path, category: str, n: int, seed: int) -> list[tuple[str, str, Scene, Scene]]:
    """(prompt_en, prompt_zh, true scene, corrupted scene) for up to `n` val prompts of `category`."""
    rows, style = val_rows(world_dir, category), world_style(world_dir)
    rng = np.random.default_rng([seed, 101, CATEGORIES.index(category)])
    order = rng.permutation(len(rows))[: n]
    items = []
    for i in order:
        row = rows[int(i)]
        scene = Scene.from_dict(row["scene"])
        bad = corrupt(scene, category, rng, style)
        if bad is not None:
            items.append((row["prompt"], row["prompt_zh"], scene, bad))
    return items


def fresh_items(world_dir: str | Path, category: str, n: int, seed: int) -> list[tuple[str, str, Scene, Scene]]:
    """(prompt_en, prompt_zh, true scene, corrupted scene) for `n` fresh scenes of `category` that are not val
    prompts of the world: a dev set of any size for choosing between judges without spending the val prompts
    (a fresh prompt may have been trained on with another layout; a val prompt never was)."""
    from mars_eval.world_clip.scenes import val_prompts
    from mars_ref.world.captions import caption
    from mars_ref.world.sampling import sample_scene

    val, style = val_prompts(world_dir), world_style(world_dir)
    source, rels = SUBSETS.get(category, (category, None))
    rng = np.random.default_rng([seed, 103, CATEGORIES.index(category)])
    items = []
    for _ in range(FRESH_TRIES * n):
        if len(items) == n:
            break
        scene = sample_scene(source, rng, style=style)
        if rels is not None and not any(r.rel in rels for r in scene.relations):
            continue
        en = caption(scene, "en")
        if en in val:
            continue
        bad = corrupt(scene, category, rng, style)
        if bad is not None:
            items.append((en, caption(scene, "zh"), scene, bad))
    return items


def _vq_roundtrip(vq, images: list[Image.Image]) -> list[Image.Image]:
    """PIL images through a VQ tokenizer's encode + decode."""
    import torch

    x = torch.stack([torch.from_numpy(np.asarray(im).copy()).permute(2, 0, 1) for im in images])  # (B, 3, H, W)
    return [Image.fromarray(a) for a in vq_roundtrip(vq, x).permute(0, 2, 3, 1).numpy()]


def _accuracy(judges: WorldJudges, category: str, images_true, images_bad, prompts, lang: str) -> dict:
    res_true = judges.score_batch(category, images_true, prompts, lang)
    res_bad = judges.score_batch(category, images_bad, prompts, lang)
    s_true, s_bad = np.array([s for s, _ in res_true]), np.array([s for s, _ in res_bad])
    ok_true = np.array([passes(category, s, sub) for s, sub in res_true])
    ok_bad = ~np.array([passes(category, s, sub) for s, sub in res_bad])
    return {
        "accuracy": float(np.concatenate([ok_true, ok_bad]).mean()),
        "true_accepted": float(ok_true.mean()),
        "corrupt_rejected": float(ok_bad.mean()),
        "pair_accuracy": float((s_true > s_bad).mean()),
        "mean_true": float(s_true.mean()),
        "mean_corrupt": float(s_bad.mean()),
    }


def judge_calibration(world_dir: str | Path, n: int = 100, seed: int = 0, judges: WorldJudges | str | Path | None = None,
                      vq=None, categories=CATEGORIES, lang: str = "en", source: str = "val") -> list[dict]:
    """Rows {category, n, accuracy_clean, accuracy_vq, ...} for a judge directory (default WORLD/judges) or
    object; `vq` is a loaded VQ model or a checkpoint path (None: no VQ column); `source` "val" (up to n
    held-out val prompts per category) or "fresh" (n fresh scenes, `fresh_items`)."""
    if n < 1:
        raise MarsEvalError(f"calibration needs n >= 1 prompts per category, got {n}")
    if source not in SOURCES:
        raise MarsEvalError(f"calibration source must be one of {', '.join(SOURCES)}, got {source!r}")
    make_items = calibration_items if source == "val" else fresh_items
    if judges is None:
        judges = Path(world_dir) / "judges"
    if not isinstance(judges, WorldJudges):
        judges = WorldJudges.load(judges)
    if isinstance(vq, str | Path):
        from mars_ref.vq_formats import load_vq

        vq = load_vq(vq)
    rows = []
    for cat in categories:
        items = make_items(world_dir, cat, n, seed)
        if not items:
            raise MarsEvalError(f"no calibration pairs for category {cat!r}")
        prompts = [en if lang == "en" else zh for en, zh, _, _ in items]
        good = [render(t, SIZE, SIZE) for _, _, t, _ in items]
        bad = [render(b, SIZE, SIZE) for _, _, _, b in items]
        clean = _accuracy(judges, cat, good, bad, prompts, lang)
        row = {"category": cat, "n": len(items), "source": source, "accuracy_clean": clean["accuracy"],
               "accuracy_vq": None, "clean": clean}
        if vq is not None:
            vq_res = _accuracy(judges, cat, _vq_roundtrip(vq, good), _vq_roundtrip(vq, bad), prompts, lang)
            row["accuracy_vq"] = vq_res["accuracy"]
            row["vq"] = vq_res
        rows.append(row)
    return rows


def calibration_metrics(rows: list[dict]) -> dict[str, float]:
    """`judge_calibration` rows as flat result keys: accuracy_clean/CATEGORY (and accuracy_vq/CATEGORY)."""
    out = {}
    for r in rows:
        out[f"accuracy_clean/{r['category']}"] = r["accuracy_clean"]
        if r["accuracy_vq"] is not None:
            out[f"accuracy_vq/{r['category']}"] = r["accuracy_vq"]
    return out
