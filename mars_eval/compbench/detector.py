"""Object detectors through transformers, standing in for T2I-CompBench's UniDet.

The official 2D-spatial, numeracy and 3D-spatial scorers use UniDet (`Unified_learned_OCIM_RS200_6x+2x`, a
detectron2 Cascade R-CNN trained on the union of COCO, Objects365, OpenImages and Mapillary, ~700 classes,
confidence threshold 0.5, input resized to short side 479 / long side <= 480). UniDet is not in transformers,
so a local transformers checkpoint is used instead:

- closed vocabulary (`AutoModelForObjectDetection`: DETR, Conditional/Deformable DETR, RT-DETR, YOLOS, ...):
  labels come from the checkpoint's `id2label`. COCO's 80 classes cover fewer T2I-CompBench nouns than UniDet's
  label space (no "key", "lamp", "painting", ...); a prompt noun the detector cannot name is never found, which
  the result rows record. Softmax scores with threshold 0.5, as UniDet.
- open vocabulary (`OwlViTForObjectDetection` / `Owlv2ForObjectDetection`): the prompt's nouns are the text
  queries, so every noun can be found. Its sigmoid scores are lower than a closed-set detector's (typical
  threshold 0.1), which lowers the 0.25*conf terms of the spatial score relative to UniDet's.

Either way the numbers are not UniDet's: name the detector next to every spatial / numeracy score.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image

from mars_eval.errors import LOAD_ERRORS, MarsEvalError, load_failure

OPEN_VOCAB_TYPES = ("owlvit", "owlv2")


@dataclass(frozen=True)
class Detection:
    label: str
    score: float
    box: tuple[float, float, float, float]  # (x0, y0, x1, y1) in pixels of the original image


@dataclass(frozen=True)
class DetectorConfig:
    threshold: float | None = None  # None: 0.5 (UniDet's) for closed vocabularies, 0.1 for OWL-ViT
    query_template: str = "a photo of a {}"  # OWL-ViT text query for a noun
    batch_size: int = 8
    device: str = "cpu"

    def __post_init__(self):
        if self.threshold is not None and not 0.0 <= self.threshold < 1.0:
            raise MarsEvalError(f"detector threshold must be in [0, 1), got {self.threshold}")
        if "{}" not in self.query_template:
            raise MarsEvalError(f"query_template must contain '{{}}': {self.query_template!r}")
        if self.batch_size < 1:
            raise MarsEvalError(f"detector batch_size must be >= 1, got {self.batch_size}")


class HFDetector:
    """`detect(images, queries)` -> detections per image, highest score first (as detectron2 returns them)."""

    def __init__(self, model_dir: str | Path, config: DetectorConfig | None = None):
        from transformers import (
            AutoConfig,
            AutoImageProcessor,
            AutoModelForObjectDetection,
            AutoModelForZeroShotObjectDetection,
            AutoProcessor,
        )

        self.config = config or DetectorConfig()
        model_dir = Path(model_dir)
        if not model_dir.is_dir():
            raise MarsEvalError(f"detector directory not found: {model_dir}")
        try:
            model_type = AutoConfig.from_pretrained(model_dir, local_files_only=True).model_type
            self.open_vocab = model_type in OPEN_VOCAB_TYPES
            if self.open_vocab:
                self.processor = AutoProcessor.from_pretrained(model_dir, local_files_only=True)
                self.model = AutoModelForZeroShotObjectDetection.from_pretrained(model_dir, local_files_only=True)
            else:
                self.processor = AutoImageProcessor.from_pretrained(model_dir, local_files_only=True)
                self.model = AutoModelForObjectDetection.from_pretrained(model_dir, local_files_only=True)
        except LOAD_ERRORS as e:
            raise MarsEvalError(f"cannot load a detector from {model_dir}: {load_failure(e)[:300]}") from None
        self.model.eval().to(self.config.device)
        self.model_type = model_type
        self.threshold = self.config.threshold if self.config.threshold is not None else (0.1 if self.open_vocab else 0.5)
        self.name = f"{model_type}:{model_dir.name}"
        if not self.open_vocab:
            self.labels = {int(k): str(v) for k, v in self.model.config.id2label.items()}

    def detect(self, images: Sequence[Image.Image], queries: Sequence[str] = ()) -> list[list[Detection]]:
        """Detections for each image; `queries` (nouns) are required by open-vocabulary models only."""
        if self.open_vocab and not queries:
            raise MarsEvalError("an open-vocabulary detector needs the nouns to look for")
        out: list[list[Detection]] = [[] for _ in images]
        bs = self.config.batch_size
        # Batch only images of one size: mixed sizes are padded, and padding changes a detector's output, which
        # would make a score depend on which other images shared its batch.
        for size in dict.fromkeys(im.size for im in images):
            idx = [i for i, im in enumerate(images) if im.size == size]
            for s in range(0, len(idx), bs):
                part = idx[s : s + bs]
                for i, d in zip(part, self._batch([images[i].convert("RGB") for i in part], list(queries)), strict=True):
                    out[i] = d
        return out

    @torch.inference_mode()
    def _batch(self, images: list[Image.Image], queries: list[str]) -> list[list[Detection]]:
        dev = self.config.device
        sizes = [(im.height, im.width) for im in images]
        if self.open_vocab:
            texts = [[self.config.query_template.format(q) for q in queries]] * len(images)
            inputs = self.processor(text=texts, images=images, return_tensors="pt").to(dev)
            outputs = self.model(**inputs)
            if self.model_type == "owlv2":  # OWLv2 pads to a square: boxes are relative to the padded image
                sizes = [(max(h, w), max(h, w)) for h, w in sizes]
            results = self.processor.image_processor.post_process_object_detection(
                outputs, threshold=self.threshold, target_sizes=torch.tensor(sizes))
            name = lambda i: queries[i]  # noqa: E731
        else:
            inputs = self.processor(images=images, return_tensors="pt").to(dev)
            outputs = self.model(**inputs)
            results = self.processor.post_process_object_detection(
                outputs, threshold=self.threshold, target_sizes=torch.tensor(sizes))
            name = lambda i: self.labels.get(i, str(i))  # noqa: E731
        dets = []
        for r in results:
            order = torch.argsort(r["scores"], descending=True, stable=True)
            dets.append([Detection(name(int(r["labels"][i])), float(r["scores"][i]),
                                   tuple(float(v) for v in r["boxes"][i].tolist()))  # type: ignore[arg-type]
                         for i in order])
        return dets
