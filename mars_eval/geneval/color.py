"""GenEval's colour check: CLIP ViT-L/14 zero-shot over its 10 colours on each object's masked crop.

As the official `color_classification`: the object's pixels (its mask) are pasted on a grey (#999) canvas, the
canvas is cropped to the object's box, and CLIP's image embedding is compared with one text embedding per
colour: the mean of the normalised embeddings of "a photo of a {color} {object}", "a photo of a {color}-colored
{object}" and "a photo of a {color} object", renormalised (clip_benchmark's `zero_shot_classifier`); the colour
of the largest dot product wins. Weights: a local open_clip checkpoint - the official uses OpenAI's ViT-L/14
(QuickGELU), so a weights file loads as `ViT-L-14-quickgelu`; a directory with `open_clip_config.json` loads as
`local-dir:`. The official runs CLIP under CUDA autocast (fp16); this runs fp32, so a near tie can flip.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image

from mars_eval.errors import LOAD_ERRORS, MarsEvalError, load_failure
from mars_eval.geneval.metadata import COLORS
from mars_eval.geneval.rules import Detection

TEMPLATES: tuple[str, ...] = ("a photo of a {c} {cls}", "a photo of a {c}-colored {cls}", "a photo of a {c} object")
BACKGROUND = "#999"
DEFAULT_MODEL = "ViT-L-14-quickgelu"


def color_texts(cls: str) -> list[list[str]]:
    """For each colour (COLORS order), the official prompts for an object of class `cls`."""
    return [[t.format(c=c, cls=cls) for t in TEMPLATES] for c in COLORS]


def object_crop(image: Image.Image, det: Detection, background: str = BACKGROUND) -> Image.Image:
    """The object on a flat background (when it has a mask), cropped to its box (PIL rounds the box)."""
    image = image.convert("RGB")
    if det.mask is not None:
        if tuple(det.mask.shape) != (image.height, image.width):
            raise MarsEvalError(f"mask of shape {tuple(det.mask.shape)} for an image of "
                                f"{image.height}x{image.width}")
        image = Image.composite(image, Image.new("RGB", image.size, background), Image.fromarray(det.mask))
    return image.crop(det.box)


@dataclass(frozen=True)
class ColorSettings:
    model_name: str = DEFAULT_MODEL  # open_clip architecture of a weights file (ignored for a local-dir)
    background: str = BACKGROUND
    batch_size: int = 16
    device: str = "cpu"


class ClipColorClassifier:
    """`classify(image, objects, cls)` -> one of COLORS per object: the rules' colour function."""

    def __init__(self, ckpt: str | Path, settings: ColorSettings | None = None):
        import open_clip

        self.settings = s = settings or ColorSettings()
        ckpt = Path(ckpt)
        if not ckpt.exists():
            raise MarsEvalError(f"CLIP checkpoint not found: {ckpt}")
        spec = f"local-dir:{ckpt}" if ckpt.is_dir() else s.model_name
        try:
            kw = {} if ckpt.is_dir() else {"pretrained": str(ckpt)}
            model, _, self.preprocess = open_clip.create_model_and_transforms(spec, device=s.device, **kw)
            self.tokenizer = open_clip.get_tokenizer(spec)
        except LOAD_ERRORS as e:
            raise MarsEvalError(f"cannot load CLIP {spec!r} from {ckpt}: {load_failure(e)[:300]}") from None
        self.model = model.eval()
        self.name = f"open_clip:{ckpt.name if ckpt.is_dir() else s.model_name}"
        self._weights: dict[str, torch.Tensor] = {}

    @torch.inference_mode()
    def text_weights(self, cls: str) -> torch.Tensor:
        """(embedding dim, 10): the zero-shot classifier for objects of class `cls` (cached per class)."""
        if cls not in self._weights:
            cols = []
            for texts in color_texts(cls):
                emb = self.model.encode_text(self.tokenizer(texts).to(self.settings.device)).float()
                mean = torch.nn.functional.normalize(emb, dim=-1).mean(dim=0)
                cols.append(mean / mean.norm())
            self._weights[cls] = torch.stack(cols, dim=1)
        return self._weights[cls]

    @torch.inference_mode()
    def logits(self, image: Image.Image, objects: Sequence[Detection], cls: str) -> torch.Tensor:
        """(objects, 10): 100 x cosine of each crop with each colour."""
        w = self.text_weights(cls)
        out = []
        bs = self.settings.batch_size
        for i in range(0, len(objects), bs):
            crops = [self.preprocess(object_crop(image, d, self.settings.background)) for d in objects[i : i + bs]]
            feats = self.model.encode_image(torch.stack(crops).to(self.settings.device)).float()
            out.append(100.0 * torch.nn.functional.normalize(feats, dim=-1) @ w)
        return torch.cat(out).cpu() if out else torch.zeros((0, len(COLORS)))

    def classify(self, image: Image.Image, objects: Sequence[Detection], cls: str) -> list[str]:
        return [COLORS[i] for i in self.logits(image, objects, cls).argmax(dim=1).tolist()]
