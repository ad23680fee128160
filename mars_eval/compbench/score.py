"""T2I-CompBench scoring: category -> judges -> one score per image -> mean per category (tables x 100).

`score_images(category, items, judges)` returns one `ImageScore` per image with its sub-scores, so tables,
reports and resumable runs are built from rows. Judges are loaded once from local paths (`JudgePaths`) and
reused across categories through a `Judges` object.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from mars_eval.categories import NAMES
from mars_eval.compbench import complex3in1
from mars_eval.compbench.blip_vqa import BlipVqaConfig, BlipVqaJudge
from mars_eval.compbench.clip_nonspatial import DEFAULT_CLIP_MODEL, ClipJudge, complex_text
from mars_eval.compbench.depth3d import DepthConfig, DepthJudge, spatial3d_score
from mars_eval.compbench.detector import DetectorConfig, HFDetector
from mars_eval.compbench.detector_spatial import (
    SpatialRule,
    objects_complex,
    objects_simple,
    spatial_score,
)
from mars_eval.compbench.files import ImageItem
from mars_eval.compbench.noun_phrases import MAX_PHRASES, PromptParser, noun_phrases
from mars_eval.compbench.numeracy import numeracy_score, numeracy_targets
from mars_eval.errors import MarsEvalError

CATEGORIES = NAMES
CHUNK = 32  # images held in memory at once


@dataclass(frozen=True)
class JudgePaths:
    """Local judge weights; nothing is downloaded. Only the judges a category needs must be given."""

    blip_dir: Path | None = None  # BlipForQuestionAnswering + BlipProcessor (e.g. a copy of blip-vqa-base)
    detector_dir: Path | None = None  # AutoModelForObjectDetection or OWL-ViT checkpoint directory
    clip_ckpt: Path | None = None  # open_clip weights file, or a directory with open_clip_config.json
    clip_model_name: str = DEFAULT_CLIP_MODEL
    depth_dir: Path | None = None  # AutoModelForDepthEstimation predicting inverse depth (DPT-hybrid MiDaS)

    def __post_init__(self):
        for name in ("blip_dir", "detector_dir", "clip_ckpt", "depth_dir"):
            v = getattr(self, name)
            if v is not None:
                object.__setattr__(self, name, Path(v))


@dataclass(frozen=True)
class ScoreOptions:
    device: str = "cpu"
    parser_mode: str = "auto"  # see noun_phrases.PromptParser
    spacy_model: str | None = None
    max_phrases: int = MAX_PHRASES
    blip: BlipVqaConfig = field(default_factory=BlipVqaConfig)
    detector: DetectorConfig = field(default_factory=DetectorConfig)
    spatial: SpatialRule = field(default_factory=SpatialRule)
    depth: DepthConfig = field(default_factory=DepthConfig)

    def __post_init__(self):
        if self.max_phrases < 1:
            raise MarsEvalError(f"max_phrases must be >= 1, got {self.max_phrases}")


@dataclass(frozen=True)
class ImageScore:
    category: str
    prompt_index: int
    image_index: int
    prompt: str
    path: str
    score: float
    sub: dict  # sub-scores and what produced them (phrases, p_yes, detections found, judge names, ...)

    def as_row(self) -> dict:
        return asdict(self)


class Judges:
    """Lazily loaded judges shared by every category scored in one run."""

    def __init__(self, paths: JudgePaths, options: ScoreOptions | None = None):
        self.paths, self.options = paths, options or ScoreOptions()
        self.parser = PromptParser(self.options.parser_mode, self.options.spacy_model)
        self._blip = self._det = self._clip = self._depth = None

    def _need(self, attr: str, what: str) -> Path:
        p = getattr(self.paths, attr)
        if p is None:
            raise MarsEvalError(f"this category needs the {what} judge: give its path ({attr})")
        return p

    @property
    def blip(self) -> BlipVqaJudge:
        if self._blip is None:
            cfg = self.options.blip
            if cfg.device != self.options.device:
                cfg = BlipVqaConfig(**{**asdict(cfg), "device": self.options.device})
            self._blip = BlipVqaJudge(self._need("blip_dir", "BLIP-VQA"), cfg)
        return self._blip

    @property
    def detector(self) -> HFDetector:
        if self._det is None:
            cfg = self.options.detector
            if cfg.device != self.options.device:
                cfg = DetectorConfig(**{**asdict(cfg), "device": self.options.device})
            self._det = HFDetector(self._need("detector_dir", "detector"), cfg)
        return self._det

    @property
    def depth(self) -> DepthJudge:
        if self._depth is None:
            cfg = self.options.depth
            if cfg.device != self.options.device:
                cfg = DepthConfig(**{**asdict(cfg), "device": self.options.device})
            self._depth = DepthJudge(self._need("depth_dir", "depth"), cfg)
        return self._depth

    @property
    def clip(self) -> ClipJudge:
        if self._clip is None:
            self._clip = ClipJudge(self._need("clip_ckpt", "CLIP"), self.paths.clip_model_name, self.options.device)
        return self._clip


# ------------------------------------------------------------------------------------------- per category


def _load(items: Sequence[ImageItem]) -> list[Image.Image]:
    out = []
    for it in items:
        try:
            with Image.open(it.path) as im:
                out.append(im.convert("RGB"))
        except (OSError, UnidentifiedImageError) as e:
            raise MarsEvalError(f"cannot read image {it.path}: {e}") from None
    return out


def _blip_part(j: Judges, items, images) -> list[dict]:
    phrases = [noun_phrases(j.parser(it.prompt), j.options.max_phrases) for it in items]
    probs = j.blip.p_yes(images, [[f"{p}?" for p in ps] for ps in phrases])
    return [{"score": math.prod(pr), "phrases": ps, "p_yes": pr} for ps, pr in zip(phrases, probs, strict=True)]


def _detect(j: Judges, images, queries: list[list[str]]) -> list[list]:
    """Detections per image, batching images that share their queries (all of them for a closed vocabulary)."""
    det = j.detector
    keys = [tuple(q) if det.open_vocab else () for q in queries]
    out: list[list] = [[] for _ in images]
    for key in dict.fromkeys(keys):
        idx = [i for i, k in enumerate(keys) if k == key]
        if det.open_vocab and not key:
            continue  # nothing to look for
        for i, d in zip(idx, det.detect([images[i] for i in idx], list(key)), strict=True):
            out[i] = d
    return out


def _detector_part(j: Judges, items, images, complex_mode: bool) -> list[dict]:
    out = []
    objs = [(objects_complex if complex_mode else objects_simple)(j.parser(it.prompt)) for it in items]
    dets = _detect(j, images, [[q for q in dict.fromkeys(o) if q] for o in objs])
    for (o1, o2), it, im, d in zip(objs, items, images, dets, strict=True):
        r = spatial_score(it.prompt, o1, o2, d, im.size, j.options.spatial)
        out.append({"score": r.score, "relation": r.relation, "obj1": r.obj1, "obj2": r.obj2,
                    "conf1": r.conf1, "conf2": r.conf2, "position": r.position})
    return out


def _clip_part(j: Judges, items, images, complex_mode: bool) -> list[dict]:
    texts = [complex_text(j.parser(it.prompt)) if complex_mode else it.prompt for it in items]
    return [{"score": c, "text": t} for c, t in zip(j.clip.cosine(images, texts), texts, strict=True)]


def _attribute(j: Judges, items, images) -> list[tuple[float, dict]]:
    return [(p["score"], {**p, "judge": j.blip.name}) for p in _blip_part(j, items, images)]


def _spatial(j: Judges, items, images) -> list[tuple[float, dict]]:
    return [(p["score"], {**p, "judge": j.detector.name}) for p in _detector_part(j, items, images, False)]


def _non_spatial(j: Judges, items, images) -> list[tuple[float, dict]]:
    return [(p["score"], {**p, "judge": j.clip.name, "variant": "raw-cosine"})
            for p in _clip_part(j, items, images, False)]


def _complex(j: Judges, items, images) -> list[tuple[float, dict]]:
    kinds = [complex3in1.prompt_kind(it.prompt) for it in items]
    parts: list[dict[str, dict]] = [{} for _ in items]
    for name, fn in (("blip", lambda it, im: _blip_part(j, it, im)),
                     ("detector", lambda it, im: _detector_part(j, it, im, True)),
                     ("clip", lambda it, im: _clip_part(j, it, im, True))):
        idx = [i for i, k in enumerate(kinds) if name in complex3in1.judges_for(k)]
        if idx:
            judge = getattr(j, name).name
            for i, res in zip(idx, fn([items[i] for i in idx], [images[i] for i in idx]), strict=True):
                parts[i][name] = {**res, "judge": judge}
    return [(complex3in1.combine(k, {n: p["score"] for n, p in ps.items()}), {"kind": k, **ps})
            for k, ps in zip(kinds, parts, strict=True)]


def _numeracy(j: Judges, items, images) -> list[tuple[float, dict]]:
    out = []
    targets = [numeracy_targets(j.parser(it.prompt)) for it in items]
    dets = _detect(j, images, [list(dict.fromkeys(o for o, _ in t)) for t in targets])
    for t, im, d in zip(targets, images, dets, strict=True):
        r = numeracy_score(t, d, im.size)
        out.append((r.score, {"targets": [list(t) for t in r.targets], "detected": list(r.detected),
                              "judge": j.detector.name}))
    return out


def _spatial3d(j: Judges, items, images) -> list[tuple[float, dict]]:
    objs = [objects_simple(j.parser(it.prompt)) for it in items]
    dets = _detect(j, images, [[q for q in dict.fromkeys(o) if q] for o in objs])
    maps = j.depth.nearness(images)
    out = []
    for (o1, o2), it, d, m in zip(objs, items, dets, maps, strict=True):
        r = spatial3d_score(it.prompt, o1, o2, d, m, j.options.depth)
        out.append((r.score, {"relation": r.relation, "obj1": r.obj1, "obj2": r.obj2, "conf1": r.conf1,
                              "conf2": r.conf2, "position": r.position,
                              "judge": f"{j.detector.name}+{j.depth.name}"}))
    return out


SCORERS: dict[str, Callable[[Judges, Sequence[ImageItem], list[Image.Image]], list[tuple[float, dict]]]] = {
    "color": _attribute,
    "shape": _attribute,
    "texture": _attribute,
    "spatial": _spatial,
    "non_spatial": _non_spatial,
    "complex": _complex,
    "numeracy": _numeracy,
    "3d_spatial": _spatial3d,
}


def _validate(category: str, items: Sequence[ImageItem], judges: Judges) -> None:
    """Fail before any model runs: unparseable numeracy prompts, missing judges."""
    if category not in SCORERS:
        raise MarsEvalError(f"unknown T2I-CompBench category {category!r}; known: {', '.join(CATEGORIES)}")
    if category == "numeracy":
        for p in dict.fromkeys(it.prompt for it in items):
            numeracy_targets(judges.parser(p))
    need = {"color": ("blip",), "shape": ("blip",), "texture": ("blip",), "spatial": ("detector",),
            "non_spatial": ("clip",), "numeracy": ("detector",), "3d_spatial": ("detector", "depth")}.get(category)
    if category == "complex":
        need = tuple(dict.fromkeys(n for it in items for n in complex3in1.judges_for(complex3in1.prompt_kind(it.prompt))))
    attr = {"blip": ("blip_dir", "BLIP-VQA"), "detector": ("detector_dir", "detector"), "clip": ("clip_ckpt", "CLIP"),
            "depth": ("depth_dir", "depth")}
    for n in need or ():
        judges._need(*attr[n])


def score_images(
    category: str,
    items: Sequence[ImageItem],
    judges: JudgePaths | Judges,
    options: ScoreOptions | None = None,
    *,
    progress: Callable[[int], None] | None = None,
) -> list[ImageScore]:
    """Score every image of one category; `progress(n)` is called with the number of images just scored."""
    if isinstance(judges, JudgePaths):
        judges = Judges(judges, options)
    elif options is not None:
        raise MarsEvalError("pass options when building Judges, not with a Judges object")
    if not items:
        raise MarsEvalError(f"no images to score for {category}")
    _validate(category, items, judges)
    items = sorted(items, key=lambda it: (it.prompt_index, it.image_index))
    out: list[ImageScore] = []
    for s in range(0, len(items), CHUNK):
        chunk = items[s : s + CHUNK]
        for it, (score, sub) in zip(chunk, SCORERS[category](judges, chunk, _load(chunk)), strict=True):
            sub = {**sub, "parser": judges.parser(it.prompt).source}
            out.append(ImageScore(category, it.prompt_index, it.image_index, it.prompt, str(it.path), float(score), sub))
        if progress is not None:
            progress(len(chunk))
    return out


# ------------------------------------------------------------------------------------------- tables


def category_score(scores: Iterable[ImageScore]) -> float:
    """Official category score: the mean over images (not over prompts)."""
    vals = [s.score for s in scores]
    if not vals:
        raise MarsEvalError("no scores to average")
    return sum(vals) / len(vals)


def table_x100(scores: Iterable[ImageScore]) -> dict[str, float]:
    """{category: 100 x mean image score}, in the order of the paper's Table 1."""
    by: dict[str, list[ImageScore]] = {}
    for s in scores:
        by.setdefault(s.category, []).append(s)
    return {c: 100.0 * category_score(by[c]) for c in CATEGORIES if c in by}
