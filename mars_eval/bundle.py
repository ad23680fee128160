"""A generation bundle: everything `generate`, `coco` and `compbench` need from one `--ckpt` directory.

    CKPT/bundle.json      what the checkpoint is: stage, variant, token grids, pixel sizes, sampler defaults
    CKPT/mars/            the SemVIE model (model.safetensors + config.json; mars_ref.checkpoint)
    CKPT/vq/              the VQ tokenizer (config.json + model.safetensors; mars_ref.vq_formats)
    CKPT/tokenizer/       a Hugging Face tokenizer directory (ours, or any local Qwen/Qwen2 one)
    CKPT/hires/           optional Stage III model (super-resolution with NKTP), same format as mars/

Everything loads without pickles (safetensors + JSON) and strictly; `digest` names the checkpoint in manifests.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from PIL import Image

from mars_eval.errors import MarsEvalError
from mars_eval.io import atomic_write_json

BUNDLE = "bundle.json"
PROMPT_CAP = 256  # caption tokens a prompt may keep at most, whatever the context allows


@dataclass(frozen=True)
class BundleInfo:
    stage: str = "I"  # "I" | "II" | "III"
    variant: str = "expert"  # "expert" | "no-expert"
    image_px: tuple[int, int] = (32, 32)  # (height, width) of the base-resolution images
    hires_px: tuple[int, int] | None = None  # Stage III output size, when CKPT/hires exists
    cfg_scale: float = 3.0
    temperature: float = 1.0
    top_k: int | None = None
    top_p: float | None = None
    nktp_steps: int = 8
    extra: dict = field(default_factory=dict)

    @classmethod
    def from_json(cls, path: Path) -> BundleInfo:
        try:
            d = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise MarsEvalError(f"not a checkpoint bundle (no {BUNDLE}): {path.parent}") from None
        except (OSError, json.JSONDecodeError) as e:
            raise MarsEvalError(f"{path}: unreadable ({e})") from None
        known = set(cls.__dataclass_fields__)
        if not isinstance(d, dict):
            raise MarsEvalError(f"{path}: not a JSON object")
        if set(d) - known:
            raise MarsEvalError(f"{path}: unknown fields {sorted(set(d) - known)}")
        for k, v in d.items():
            if not _FIELD_OK[k](v):
                raise MarsEvalError(f"{path}: field {k!r} has an invalid value {v!r}")
        for k in ("image_px", "hires_px"):
            if d.get(k) is not None:
                d[k] = tuple(d[k])
        return cls(**d)


def _is_num(v) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_px(v) -> bool:
    return isinstance(v, list) and len(v) == 2 and all(_is_int(x) and x > 0 for x in v)


# bundle.json is user input: each field's type is checked before it reaches the sampler
_FIELD_OK = {"stage": lambda v: v in ("I", "II", "III"), "variant": lambda v: isinstance(v, str),
             "image_px": _is_px, "hires_px": lambda v: v is None or _is_px(v), "cfg_scale": _is_num,
             "temperature": _is_num, "top_k": lambda v: v is None or _is_int(v),
             "top_p": lambda v: v is None or _is_num(v), "nktp_steps": _is_int, "extra": lambda v: isinstance(v, dict)}


class Bundle:
    def __init__(self, path: Path, info: BundleInfo, model, vq, tokenizer, hires=None):
        self.path, self.info, self.model, self.vq, self.tokenizer, self.hires = path, info, model, vq, tokenizer, hires

    @property
    def grid(self) -> tuple[int, int]:
        f = self.vq.cfg.downsample_factor
        return self.info.image_px[0] // f, self.info.image_px[1] // f

    @classmethod
    def load(cls, path: str | Path, device: str = "cpu") -> Bundle:
        from mars_ref.checkpoint import load_model
        from mars_ref.text_tokenizer import load_text_tokenizer
        from mars_ref.vq_formats import load_vq

        path = Path(path)
        if not path.is_dir():
            raise MarsEvalError(f"checkpoint directory not found: {path}")
        info = BundleInfo.from_json(path / BUNDLE)
        model = load_model(path / "mars").to(device).eval()
        vq = load_vq(path / "vq", device=device).eval()
        tok = load_text_tokenizer(path / "tokenizer")
        if len(tok) > model.config.text_vocab_size:
            raise MarsEvalError(f"{path}: tokenizer has {len(tok)} tokens, model text vocabulary "
                                f"{model.config.text_vocab_size}")
        if vq.cfg.codebook_size != model.config.codebook_size:
            raise MarsEvalError(f"{path}: VQ codebook {vq.cfg.codebook_size} != model codebook "
                                f"{model.config.codebook_size}")
        hires = load_model(path / "hires").to(device).eval() if (path / "hires").is_dir() else None
        return cls(path, info, model, vq, tok, hires)

    @staticmethod
    def write(path: Path, info: BundleInfo, model, vq, tokenizer_dir: Path, hires=None) -> Path:
        """Write a bundle directory; bundle.json goes last, so a directory without it is incomplete."""
        import shutil

        from mars_ref.vq_formats import save_vq

        path.mkdir(parents=True, exist_ok=True)
        model.save(path / "mars")
        save_vq(vq, path / "vq")
        if (path / "tokenizer").exists():
            shutil.rmtree(path / "tokenizer")
        shutil.copytree(tokenizer_dir, path / "tokenizer")
        if hires is not None:
            hires.save(path / "hires")
        d = asdict(info)
        atomic_write_json(path / BUNDLE, d)
        return path

    @property
    def digest(self) -> str:
        """sha256 over the weight and tokenizer files: names the checkpoint in every manifest row."""
        h = hashlib.sha256()
        for p in sorted(self.path.rglob("*")):
            if p.is_file() and p.suffix in (".safetensors", ".json"):
                h.update(p.relative_to(self.path).as_posix().encode() + b"\0" + p.read_bytes())
        return h.hexdigest()[:16]

    def encode_prompt(self, text: str, max_tokens: int = PROMPT_CAP) -> list[int]:
        """Caption ids as the model was trained on them (no special tokens); long prompts keep their head."""
        return self.tokenizer(text, add_special_tokens=False)["input_ids"][:max_tokens]

    def prompt_budget(self, grid: tuple[int, int], hires_grid: tuple[int, int] | None = None) -> int:
        """The most caption tokens a generation may condition on: PROMPT_CAP, and what fits the model's trained
        context (max_position_embeddings) beside the image tokens - `caption <boi> codes` for the base grid,
        `caption <boi> low <eoi> <boh> high` for Stage III. A longer prompt keeps its head (the truncation rule
        recorded per image in a generation manifest)."""
        n_low = grid[0] * grid[1]
        budget = min(PROMPT_CAP, self.model.config.max_position_embeddings - n_low)
        if hires_grid is not None and self.hires is not None:
            budget = min(budget, self.hires.config.max_position_embeddings - (n_low + 3 + hires_grid[0] * hires_grid[1]))
        if budget < 1:
            raise MarsEvalError(f"{self.path}: the image tokens fill the model's {self.model.config.max_position_embeddings}"
                                " positions, leaving no room for a prompt")
        return budget

    @torch.inference_mode()
    def decode_codes(self, codes: torch.Tensor, hw: tuple[int, int]) -> list[Image.Image]:
        """Codebook indices (B, h*w) -> RGB images via the VQ decoder."""
        x = self.vq.decode_codes(codes.view(codes.shape[0], *hw).to(next(self.vq.parameters()).device))
        from mars_ref.vq_train import to_uint8

        x = to_uint8(x).permute(0, 2, 3, 1).cpu().numpy()  # (B, H, W, 3)
        return [Image.fromarray(a) for a in x]
