"""World judges: the trained world detector + the per-category rules, behind one object the lead can call.

    judges = WorldJudges.load(DIR)
    score, subscores = judges.score("color", image, "a red ball and a blue box", lang="en")
    results = judges.score_batch("spatial", images, prompts, lang="zh")

The prompt is parsed with the world's own grammar (`parse_caption`, English or Chinese); only pixels and that
parse reach the rules, never a scene's ground truth. A saved judge directory holds `world_detector.safetensors`
and `world_judges.json` (format, detector config, training summary, calibration table when measured).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import torch
from PIL import Image

from mars_eval.errors import MarsEvalError
from mars_eval.judges.world_decode import IDENTITY, Detection, detect
from mars_eval.judges.world_detector import DetectorConfig, WorldDetector
from mars_eval.judges.world_detector_eval import evaluate_detector
from mars_eval.judges.world_detector_train import DetectorTrainConfig, load_training_scenes, train_detector
from mars_eval.judges.world_order import MinimalPairs
from mars_eval.judges.world_rules import score_parse
from mars_eval.world_clip.scenes import SceneStream, val_prompts
from mars_eval.world_clip.store import staged_dir
from mars_ref.errors import MarsRefError
from mars_ref.world.parse import parse_caption
from mars_ref.world.style import world_style

# 2: class-agnostic finder + crop reader; 3: occlusion read from the crop; 4: pairwise occlusion-order reader
FORMAT = "mars-world-judges/4"
MARKER = "world_judges.json"
WEIGHTS = "world_detector.safetensors"
MAX_CALIBRATION_IMAGES = 400  # held out from detector training for the Platt fit and detector metrics
# 3d_spatial (T2I-CompBench++): the world's occlusion relations, "in front of" / "behind"; its prompts are the
# non_spatial prompts that state one (world_calibration.py)
CATEGORIES = ("color", "shape", "texture", "spatial", "non_spatial", "numeracy", "complex", "3d_spatial")


class WorldJudges:
    def __init__(self, detector: WorldDetector, meta: dict | None = None):
        self.detector = detector.eval()
        self.meta = meta or {}
        platt = self.meta.get("platt", IDENTITY)
        self.platt = (float(platt[0]), float(platt[1]))

    @classmethod
    def load(cls, path: str | Path) -> WorldJudges:
        from safetensors.torch import load_file

        path = Path(path)
        marker = path / MARKER
        if not marker.is_file() or not (path / WEIGHTS).is_file():
            raise MarsEvalError(f"{path} is not a world judge directory (needs {MARKER} and {WEIGHTS})")
        try:
            meta = json.loads(marker.read_text(encoding="utf-8"))
            cfg = DetectorConfig(**meta["detector"])
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise MarsEvalError(f"{marker}: not a world judge config ({e})") from None
        if meta.get("format") != FORMAT:
            raise MarsEvalError(f"{marker}: format {meta.get('format')!r}, expected {FORMAT!r}")
        model = WorldDetector(cfg)
        try:
            model.load_state_dict(load_file(str(path / WEIGHTS)))
        except (RuntimeError, OSError, ValueError) as e:
            raise MarsEvalError(f"{path / WEIGHTS}: weights do not fit the detector ({str(e)[:200]})") from None
        return cls(model, meta)

    def save(self, path: str | Path, extra: dict | None = None) -> Path:
        """Write weights + config atomically (the whole directory appears at once)."""
        from safetensors.torch import save_file

        meta = {**self.meta, **(extra or {}), "format": FORMAT, "detector": self.detector.cfg.to_dict()}
        with staged_dir(path, MARKER) as tmp:
            save_file({k: v.detach().contiguous() for k, v in self.detector.state_dict().items()}, str(tmp / WEIGHTS))
            (tmp / MARKER).write_text(json.dumps(meta, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        self.meta = meta
        return Path(path)

    def detect(self, images: list[Image.Image]) -> list[list[Detection]]:
        return detect(self.detector, images, platt=self.platt)

    def score_batch(self, category: str, images: list[Image.Image], prompts: list[str],
                    lang: str = "en") -> list[tuple[float, dict]]:
        if category not in CATEGORIES:
            raise MarsEvalError(f"unknown world judge category {category!r} (expected one of {', '.join(CATEGORIES)})")
        if len(images) != len(prompts):
            raise MarsEvalError(f"{len(images)} images but {len(prompts)} prompts")
        parses = []
        for p in prompts:
            try:
                parses.append(parse_caption(p, lang))
            except MarsRefError as e:
                raise MarsEvalError(f"not a world prompt ({lang}): {e}") from None
        dets = self.detect(images)
        return [score_parse(category, d, parse) for d, parse in zip(dets, parses, strict=True)]

    def score(self, category: str, image: Image.Image, prompt: str, lang: str = "en") -> tuple[float, dict]:
        return self.score_batch(category, [image], [prompt], lang)[0]


def train_world_judges(world_dir: str | Path, out_dir: str | Path, seed: int = 0, steps: int | None = None,
                       cfg: DetectorTrainConfig | None = None,
                       progress: Callable[[int, int, float], None] | None = None, vq=None,
                       init: str | Path | None = None) -> dict:
    """Train the world detector on a built world and save the judges to `out_dir`; returns the summary.
    `vq` (a loaded VQ model or a checkpoint directory): also train on VQ reconstructions, so the judges read
    images decoded from VQ codes (a model's samples) as well as clean renders. `init` (a judge directory): start
    from its weights and detector config (a second cosine cycle, or judges carried over to a changed world)."""
    cfg = replace(cfg or DetectorTrainConfig(), seed=seed, **({"steps": steps} if steps is not None else {}))
    start = None
    if init is not None:
        start = WorldJudges.load(init)
        cfg = replace(cfg, detector=start.detector.cfg)
    t0 = time.perf_counter()
    if isinstance(vq, str | Path):
        from mars_ref.vq_formats import load_vq

        vq = load_vq(vq)
    images, scenes = load_training_scenes(world_dir, cfg.max_images)
    n_cal = max(1, min(MAX_CALIBRATION_IMAGES, len(scenes) // 10))
    if len(scenes) - n_cal < 1:
        raise MarsEvalError(f"{world_dir}: {len(scenes)} training images are too few (need >= 2)")
    val, style = val_prompts(world_dir), world_style(world_dir)
    stream = SceneStream(cfg.seed, val, weights=dict(cfg.fresh_weights), style=style) if cfg.fresh > 0 else None
    pairs = MinimalPairs(cfg.seed, val, style=style) if cfg.order_pairs else None
    model, summary = train_detector(images[:-n_cal], scenes[:-n_cal], cfg, progress, stream, vq, pairs,
                                    start.detector if start is not None else None)
    platt, held_out = evaluate_detector(model, images[-n_cal:], scenes[-n_cal:])
    meta = {"world": str(Path(world_dir).absolute()), "train": {**cfg.to_dict(), **summary},
            **({"init": {"from": str(Path(init).absolute()), "world": start.meta.get("world"),
                         "train": start.meta.get("train"), "init": start.meta.get("init")}} if start else {}),
            "platt": list(platt), "held_out_detector": held_out,
            "seconds": round(time.perf_counter() - t0, 2), "threads": torch.get_num_threads()}
    WorldJudges(model, meta).save(out_dir)
    return {**meta, "out": str(Path(out_dir).absolute())}
