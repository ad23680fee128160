"""Non-spatial judge: raw CLIP cosine with ViT-B/32 through open_clip (T2I-CompBench `CLIP_similarity.py`).

Score = cos(image embedding, text embedding), no rescaling and no clamping (the "raw cosine ViT-B/32" variant;
never mix it with 100*max(cos,0) or 2.5*max(cos,0) in one table). For complex prompts the official script first
removes every ADJ token (spaCy) and joins the remaining tokens with spaces; `complex_text` does the same on a
`Parse`. Weights: a local open_clip checkpoint. OpenAI's ViT-B/32 (what `clip.load("ViT-B/32")` gives) uses
QuickGELU, so load it as `ViT-B-32-quickgelu`; a directory with `open_clip_config.json` loads as `local-dir:`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from PIL import Image

from mars_eval.compbench.noun_phrases import Parse
from mars_eval.errors import LOAD_ERRORS, MarsEvalError, load_failure

DEFAULT_CLIP_MODEL = "ViT-B-32-quickgelu"


def complex_text(parse: Parse) -> str:
    """Official complex-category CLIP text: the prompt's tokens without adjectives, joined by spaces."""
    return " ".join(t for t, p in zip(parse.tokens, parse.pos, strict=True) if p != "ADJ")


class ClipJudge:
    def __init__(self, ckpt: str | Path, model_name: str = DEFAULT_CLIP_MODEL, device: str = "cpu",
                 batch_size: int = 32):
        import open_clip

        ckpt = Path(ckpt)
        if not ckpt.exists():
            raise MarsEvalError(f"CLIP checkpoint not found: {ckpt}")
        try:
            if ckpt.is_dir():
                spec = f"local-dir:{ckpt}"
                model, _, preprocess = open_clip.create_model_and_transforms(spec, device=device)
                self.tokenizer = open_clip.get_tokenizer(spec)
            else:
                model, _, preprocess = open_clip.create_model_and_transforms(model_name, pretrained=str(ckpt),
                                                                             device=device)
                self.tokenizer = open_clip.get_tokenizer(model_name)
        except LOAD_ERRORS as e:
            raise MarsEvalError(f"cannot load CLIP {model_name!r} from {ckpt}: {load_failure(e)[:300]}") from None
        self.model, self.preprocess = model.eval(), preprocess
        self.device, self.batch_size = device, batch_size
        self.name = f"open_clip:{model_name if not ckpt.is_dir() else ckpt.name}"

    @torch.inference_mode()
    def cosine(self, images: Sequence[Image.Image], texts: Sequence[str]) -> list[float]:
        """Raw cosine similarity of each image with its text (`texts[i]` belongs to `images[i]`)."""
        if len(images) != len(texts):
            raise MarsEvalError(f"{len(images)} images but {len(texts)} texts")
        out: list[float] = []
        for s in range(0, len(images), self.batch_size):
            ims = torch.stack([self.preprocess(im) for im in images[s : s + self.batch_size]]).to(self.device)
            tok = self.tokenizer(list(texts[s : s + self.batch_size])).to(self.device)
            img = self.model.encode_image(ims)  # (B, D)
            txt = self.model.encode_text(tok)  # (B, D)
            img = img / img.norm(dim=-1, keepdim=True)
            txt = txt / txt.norm(dim=-1, keepdim=True)
            out.extend((img * txt).sum(-1).double().cpu().tolist())
        return out
