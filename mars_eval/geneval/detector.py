"""GenEval's object detector: COCO instance segmentation by Mask2Former through transformers, from a local
directory (`Mask2FormerForUniversalSegmentation` + its image processor, e.g. a copy of
facebook/mask2former-swin-small-coco-instance; nothing is downloaded).

The official scorer runs mmdetection 2.x's Mask2Former Swin-S (`mask2former_swin-s-p4-w7-224_lsj_8x2_50e_coco`,
CUDA only). This module repeats its test-time steps on the transformers model:
- the image resized keeping its aspect ratio to fit 1333 x 800 (mmcv `imrescale`: scale = min(1333 / long side,
  800 / short side), sides rounded), normalised by the processor, zero-padded to a multiple of 32;
- mask logits upsampled (bilinear) to the padded size, cropped to the resized image, upsampled to the original
  size; per image the 100 best (query, class) pairs by softmax class probability; mask = logit > 0;
  confidence = class probability x the mean sigmoid over the mask; box = the mask's extent (x1, y1 exclusive,
  mmdet `mask2bbox`);
- labels from the config's `id2label`, mapped to GenEval's class names (`object_names.txt`: "mouse" ->
  "computer mouse", "remote" -> "tv remote", "keyboard" -> "computer keyboard"; common spelling variants too).
What differs: other weights (transformers' conversion of the Detectron2 / Meta checkpoint, not the mmdetection
one), PIL instead of OpenCV resizing, fp32 on any device. Scores are close to but not bit-identical with the
official ones; name the detector next to every GenEval score. transformers' own `post_process_instance_segmentation`
is not used: it resizes every mask through a fixed 384 x 384 and returns no boxes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import torch
from PIL import Image

from mars_eval.errors import LOAD_ERRORS, MarsEvalError, load_failure
from mars_eval.geneval.rules import Detection

# detector label -> GenEval object name, after lower-casing and turning "_" / "-" into spaces
ALIASES = {"mouse": "computer mouse", "remote": "tv remote", "keyboard": "computer keyboard",
           "tvmonitor": "tv", "tv monitor": "tv", "motorbike": "motorcycle", "aeroplane": "airplane",
           "sofa": "couch", "diningtable": "dining table", "pottedplant": "potted plant", "hair dryer": "hair drier",
           "cellphone": "cell phone", "doughnut": "donut"}


def object_names() -> tuple[str, ...]:
    """GenEval's 80 class names (package data, the official `object_names.txt`)."""
    text = resources.files("mars_eval.data").joinpath("geneval/object_names.txt").read_text(encoding="utf-8")
    return tuple(x.strip() for x in text.splitlines() if x.strip())


def geneval_name(label: str, names: tuple[str, ...]) -> str:
    """A detector label in GenEval's vocabulary (unchanged when it is not one of GenEval's classes)."""
    key = " ".join(str(label).lower().replace("_", " ").replace("-", " ").split())
    if key in names:
        return key
    alias = ALIASES.get(key) or ALIASES.get(key.replace(" ", ""))
    return alias if alias in names else str(label)


@dataclass(frozen=True)
class DetectorSettings:
    shortest_edge: int = 800  # mmdetection's test scale (1333, 800)
    longest_edge: int = 1333
    size_divisor: int = 32
    max_per_image: int = 100
    min_score: float = 0.0  # detections at or below are dropped (the rules never use them)
    device: str = "cpu"

    def __post_init__(self):
        if min(self.shortest_edge, self.longest_edge, self.size_divisor, self.max_per_image) < 1:
            raise MarsEvalError(f"detector sizes and max_per_image must be >= 1: {self}")


def rescaled_size(width: int, height: int, long_edge: int, short_edge: int) -> tuple[int, int]:
    """mmcv `imrescale` with keep_ratio: (width, height) scaled to fit long_edge x short_edge."""
    scale = min(long_edge / max(width, height), short_edge / min(width, height))
    return int(width * scale + 0.5), int(height * scale + 0.5)


def mask_box(mask: torch.Tensor) -> tuple[float, float, float, float]:
    """mmdet `mask2bbox` of one (H, W) bool mask: (x0, y0, x1 + 1, y1 + 1) of its pixels; zeros when empty."""
    xs = torch.nonzero(mask.any(dim=0)).flatten()
    ys = torch.nonzero(mask.any(dim=1)).flatten()
    if len(xs) == 0 or len(ys) == 0:
        return (0.0, 0.0, 0.0, 0.0)
    return (float(xs[0]), float(ys[0]), float(xs[-1] + 1), float(ys[-1] + 1))


class Mask2FormerDetector:
    """`detect(image)` -> every instance above `min_score`, any order (rules.kept sorts per class)."""

    def __init__(self, model_dir: str | Path, settings: DetectorSettings | None = None):
        from transformers import AutoConfig, AutoImageProcessor, Mask2FormerForUniversalSegmentation

        self.settings = settings or DetectorSettings()
        model_dir = Path(model_dir)
        if not model_dir.is_dir():
            raise MarsEvalError(f"detector directory not found: {model_dir}")
        try:
            model_type = AutoConfig.from_pretrained(model_dir, local_files_only=True).model_type
            if model_type != "mask2former":
                raise MarsEvalError(f"{model_dir}: a {model_type!r} model; GenEval's detector is a Mask2Former "
                                    "(model_type 'mask2former', e.g. mask2former-swin-small-coco-instance)")
            self.processor = AutoImageProcessor.from_pretrained(model_dir, local_files_only=True)
            self.model = Mask2FormerForUniversalSegmentation.from_pretrained(model_dir, local_files_only=True)
        except LOAD_ERRORS as e:
            raise MarsEvalError(f"cannot load Mask2Former from {model_dir}: {load_failure(e)[:300]}") from None
        self.model.eval().to(self.settings.device)
        names = object_names()
        n = self.model.config.num_labels
        self.labels = [geneval_name(self.model.config.id2label[i], names) for i in range(n)]
        self.name = f"mask2former:{model_dir.name}"

    def missing(self, classes) -> list[str]:
        """The classes in `classes` that this detector cannot name (a prompt asking for one always fails)."""
        have = set(self.labels)
        return [c for c in dict.fromkeys(classes) if c not in have]

    @torch.inference_mode()
    def detect(self, image: Image.Image) -> list[Detection]:
        s = self.settings
        image = image.convert("RGB")
        w, h = image.size
        nw, nh = rescaled_size(w, h, s.longest_edge, s.shortest_edge)
        resized = image.resize((nw, nh), Image.BILINEAR) if (nw, nh) != (w, h) else image
        pixels = self.processor(images=[resized], do_resize=False, return_tensors="pt")["pixel_values"]
        ph, pw = (math.ceil(v / s.size_divisor) * s.size_divisor for v in (nh, nw))
        padded = torch.zeros((1, 3, ph, pw), dtype=pixels.dtype)
        padded[:, :, :nh, :nw] = pixels[:, :, :nh, :nw]
        pixel_mask = torch.zeros((1, ph, pw), dtype=torch.long)
        pixel_mask[:, :nh, :nw] = 1
        out = self.model(pixel_values=padded.to(s.device), pixel_mask=pixel_mask.to(s.device))
        return self._instances(out.class_queries_logits[0].float().cpu(), out.masks_queries_logits[0].float().cpu(),
                               (ph, pw), (nh, nw), (h, w))

    def _instances(self, cls_logits: torch.Tensor, mask_logits: torch.Tensor, padded: tuple[int, int],
                   resized: tuple[int, int], original: tuple[int, int]) -> list[Detection]:
        n_cls = cls_logits.shape[-1] - 1
        probs = torch.softmax(cls_logits, dim=-1)[:, :-1].flatten()  # (queries * classes)
        top, idx = probs.topk(min(self.settings.max_per_image, probs.numel()))
        out = []
        for p, k in zip(top.tolist(), idx.tolist(), strict=True):
            if p <= self.settings.min_score:  # the confidence is p times a mean sigmoid <= 1: never above
                continue
            query, label = divmod(k, n_cls)
            logit = _upsample(mask_logits[query], padded, resized, original)
            mask = logit > 0
            m = mask.float()
            score = p * float((logit.sigmoid() * m).sum() / (m.sum() + 1e-6))
            if score > self.settings.min_score:
                out.append(Detection(self.labels[label], score, mask_box(mask), mask=mask.numpy()))
        return out


def _upsample(logit: torch.Tensor, padded: tuple[int, int], resized: tuple[int, int],
              original: tuple[int, int]) -> torch.Tensor:
    """(h, w) mask logits at the model's stride -> (H, W) at the original image size (mmdet's test path)."""
    x = torch.nn.functional.interpolate(logit[None, None], size=padded, mode="bilinear", align_corners=False)
    x = x[:, :, : resized[0], : resized[1]]
    x = torch.nn.functional.interpolate(x, size=original, mode="bilinear", align_corners=False)
    return x[0, 0]
