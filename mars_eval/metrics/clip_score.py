"""CLIP score through open_clip, from local checkpoints only, with the variant named in every result.

Three incompatible definitions are in use; never mix them in one table:

| variant         | model    | per image       | aggregate    | used by                              |
|-----------------|----------|-----------------|--------------|--------------------------------------|
| `clip-b32-raw`  | ViT-B-32 | cos             | mean         | T2I-CompBench non-spatial, GigaGAN   |
| `clip-l14-100`  | ViT-L-14 | 100 cos         | max(mean, 0) | torchmetrics `CLIPScore`             |
| `clipscore-2.5` | ViT-B-32 | 2.5 max(cos, 0) | mean         | Hessel et al. 2021 CLIPScore         |

cos is the cosine between open_clip's image and text embeddings; images go through the model's own eval
transform (resize shortest side, centre crop, normalise). `clipscore-2.5` prefixes every caption with "A photo
depicts " as Hessel's reference code does; GigaGAN's COCO script also adds that prefix to its raw ViT-B/32
cosine (pass `text_prefix="A photo depicts "` to reproduce it; the prefix is recorded).

Checkpoints: either a file (`.safetensors`, or a torch state dict read with `weights_only=True`) together with
an open_clip model name (built in, e.g. `ViT-B-32`, or a path to a model-config JSON), or a directory in
open_clip's local format (`open_clip_config.json` + weights, loaded via `local-dir:`), which is how a world
CLIP is saved. Nothing is ever downloaded: pretrained tags are not accepted, and configs naming a Hub text
tower are refused.

Images are matched to prompts by `manifest.jsonl` in the image folder when present (rows with `file` and
`prompt_index`, optionally `prompt`, which must then equal the prompt at that index), else by file name: the
stem must start with the prompt index, optionally followed by `_` or `-` and anything (`000012.png`,
`12_3.png`). Every image must map to a prompt and every prompt must have at least one image.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from mars_eval.errors import LOAD_ERRORS, MarsEvalError, load_failure
from mars_eval.metrics.images import ImageFolder, list_images, load_rgb
from mars_eval.metrics.inception import sha256_file
from mars_eval.prompts import PromptSet

MANIFEST = "manifest.jsonl"
_INDEX_STEM = re.compile(r"^(\d+)(?:[_-].*)?$")


@dataclass(frozen=True)
class ClipVariant:
    name: str
    model: str  # the open_clip architecture the variant is defined with
    scale: float
    clamp: str  # "none" | "per_image" (max(s*cos, 0) per image) | "mean" (max(mean s*cos, 0))
    text_prefix: str
    source: str

    def __post_init__(self):
        if self.clamp not in ("none", "per_image", "mean"):
            raise ValueError(f"bad clamp {self.clamp!r}")

    def per_image(self, cos: np.ndarray) -> np.ndarray:
        s = self.scale * cos
        return np.maximum(s, 0) if self.clamp == "per_image" else s

    def aggregate(self, cos: np.ndarray) -> float:
        m = float(self.per_image(cos).mean())
        return max(m, 0.0) if self.clamp == "mean" else m


VARIANTS: dict[str, ClipVariant] = {v.name: v for v in (
    ClipVariant("clip-b32-raw", "ViT-B-32", 1.0, "none", "", "raw cosine (T2I-CompBench non-spatial, GigaGAN)"),
    ClipVariant("clip-l14-100", "ViT-L-14", 100.0, "mean", "", "torchmetrics CLIPScore: max(100 * mean cos, 0)"),
    ClipVariant("clipscore-2.5", "ViT-B-32", 2.5, "per_image", "A photo depicts ",
                "Hessel et al. 2021 CLIPScore: 2.5 * max(cos, 0)"),
)}


def get_variant(name: str) -> ClipVariant:
    if name not in VARIANTS:
        raise MarsEvalError(f"unknown CLIP score variant {name!r}; known: {', '.join(VARIANTS)}")
    return VARIANTS[name]


@dataclass
class LoadedClip:
    model: torch.nn.Module
    preprocess: object  # PIL image -> (3, S, S) tensor
    tokenizer: object  # list[str] -> (N, context) token ids
    model_name: str
    checkpoint: Path
    checkpoint_sha256: str
    device: torch.device


TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json")


def _has_tokenizer(d: Path) -> bool:
    return any((d / f).is_file() for f in TOKENIZER_FILES)


def _check_offline(cfg: dict | None, where: str, local_dir: Path | None = None) -> Path | None:
    """Refuse configs that would reach the Hugging Face Hub. Returns a local tokenizer directory to use instead
    of `text_cfg.hf_tokenizer_name`, or None to keep it.

    `local_dir`: the checkpoint's own directory (`local-dir:` folder, or the folder of a model-config JSON).
    open_clip's `local-dir:` loader always reads the tokenizer from that folder, whatever `hf_tokenizer_name`
    says (a world CLIP records the absolute path it was saved at), so a checkpoint folder that was moved or
    copied elsewhere still loads as long as it holds its tokenizer files."""
    text = (cfg or {}).get("text_cfg", {})
    name = text.get("hf_model_name")
    if name and not Path(name).is_dir():  # the text tower itself would be fetched
        raise MarsEvalError(f"{where}: text_cfg.hf_model_name={name!r} would download from the Hugging Face Hub; "
                            "use a local directory")
    name = text.get("hf_tokenizer_name")
    if not name or Path(name).is_dir():
        return None
    if local_dir is not None and _has_tokenizer(local_dir):
        return local_dir
    raise MarsEvalError(f"{where}: text_cfg.hf_tokenizer_name={name!r} would download from the Hugging Face Hub "
                        f"and {local_dir or 'the checkpoint folder'} holds no {' / '.join(TOKENIZER_FILES)}; "
                        "use a local directory")


def load_clip(checkpoint: str | Path, model_name: str | None = None, device: str = "cpu") -> LoadedClip:
    """An open_clip model from a local checkpoint file (+ model name or config JSON) or a local-dir folder."""
    import open_clip

    try:
        dev = torch.device(device)
    except RuntimeError:
        raise MarsEvalError(f"invalid device {device!r}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise MarsEvalError(f"device {device!r} requested but CUDA is not available")
    ckpt = Path(checkpoint).expanduser()
    if not ckpt.exists():
        raise MarsEvalError(f"CLIP checkpoint not found: {ckpt}")
    ckpt = ckpt.resolve()  # absolute: a path can then never be mistaken for a pretrained tag
    try:
        if ckpt.is_dir():
            cfg_path = ckpt / "open_clip_config.json"
            if not cfg_path.is_file():
                raise MarsEvalError(f"{ckpt}: a CLIP checkpoint directory needs open_clip_config.json")
            try:
                local_cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
            except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
                raise MarsEvalError(f"{cfg_path}: not a JSON config ({e})") from None
            if not isinstance(local_cfg, dict) or "model_cfg" not in local_cfg:
                raise MarsEvalError(f"{cfg_path}: missing 'model_cfg'")
            _check_offline(local_cfg["model_cfg"], str(cfg_path), ckpt)  # local-dir: reads ckpt's tokenizer
            weight_files = sorted(p for ext in ("*.safetensors", "*.bin", "*.pth") for p in ckpt.glob(ext))
            if not weight_files:
                raise MarsEvalError(f"{ckpt}: no weights file (*.safetensors, *.bin, *.pth) next to the config")
            name, tok_dir = f"local-dir:{ckpt}", None  # open_clip reads the tokenizer from ckpt itself
            model, _, preprocess = open_clip.create_model_and_transforms(name, device=device)
            digest = _digest([cfg_path, *weight_files])
        else:
            if model_name is None:
                raise MarsEvalError("a CLIP checkpoint file needs --clip-model (an open_clip model name or config)")
            name = model_name
            if name.endswith(".json"):
                cfg_file = Path(name).expanduser()
                if not cfg_file.is_file():
                    raise MarsEvalError(f"CLIP model config not found: {cfg_file}")
                open_clip.add_model_config(cfg_file)
                name = cfg_file.stem
            cfg = open_clip.get_model_config(name)
            cfg_dir = Path(model_name).expanduser().resolve().parent if model_name.endswith(".json") else None
            if cfg is None:
                raise MarsEvalError(f"unknown open_clip model {name!r} (give a built-in name such as ViT-B-32 or a "
                                    "path to a model-config JSON)")
            tok_dir = _check_offline(cfg, f"model {name}", cfg_dir)
            model, _, preprocess = open_clip.create_model_and_transforms(name, pretrained=str(ckpt), device=device)
            digest = sha256_file(ckpt)
        if tok_dir is not None:  # the config's tokenizer path is stale (moved checkpoint): its folder's copy
            from open_clip.tokenizer import HFTokenizer

            text = cfg.get("text_cfg", {})
            tokenizer = HFTokenizer(str(tok_dir), context_length=text.get("context_length", 77),
                                    tokenizer_mode=text.get("tokenizer_mode"), **text.get("tokenizer_kwargs", {}))
        else:
            tokenizer = open_clip.get_tokenizer(name)
    except MarsEvalError:
        raise
    except LOAD_ERRORS as e:
        raise MarsEvalError(f"cannot load CLIP checkpoint {ckpt}: {load_failure(e)[:300]}") from None
    model.eval()
    return LoadedClip(model, preprocess, tokenizer, name, ckpt, digest, torch.device(device))


def _digest(files: list[Path]) -> str:
    """One sha256 for a checkpoint directory: over the names and sha256 of its config and weight files."""
    h = hashlib.sha256()
    for f in files:
        h.update(f"{f.name}\0{sha256_file(f)}\n".encode())
    return h.hexdigest()


def read_manifest(folder: ImageFolder, path: Path) -> dict[Path, tuple[int, str | None]]:
    from mars_eval.io import read_jsonl

    out: dict[Path, tuple[int, str | None]] = {}
    for i, row in enumerate(read_jsonl(path), 1):
        f = row.get("file", row.get("image", row.get("path"))) if isinstance(row, dict) else None
        idx = row.get("prompt_index", row.get("index")) if isinstance(row, dict) else None
        if not isinstance(f, str) or not isinstance(idx, int) or isinstance(idx, bool):
            raise MarsEvalError(f"{path}:{i}: a manifest row needs 'file' (string) and 'prompt_index' (integer)")
        out[(folder.root / f).resolve()] = (idx, row.get("prompt"))
    return out


def match_prompts(folder: ImageFolder, prompts: PromptSet, manifest: Path | None = None) -> tuple[list[int], str]:
    """The prompt index of every image in `folder.files`, and how it was found ('manifest' or 'file name')."""
    manifest = manifest if manifest is not None else folder.root / MANIFEST
    indices: list[int] = []
    if manifest.is_file():
        rows = read_manifest(folder, manifest)
        for f in folder.files:
            entry = rows.get(f.resolve())
            if entry is None:
                raise MarsEvalError(f"{f}: image has no row in {manifest}")
            idx, text = entry
            if 0 <= idx < len(prompts) and text is not None and text != prompts[idx].text:
                raise MarsEvalError(f"{manifest}: prompt of {f.name} differs from prompt {idx} of {prompts.source}")
            indices.append(idx)
        how = "manifest"
    else:
        for f in folder.files:
            m = _INDEX_STEM.match(f.stem)
            if m is None:
                raise MarsEvalError(f"{f}: file name does not start with a prompt index (e.g. 000012.png or "
                                    f"12_3.png) and there is no {MANIFEST}")
            indices.append(int(m.group(1)))
        how = "file name"
    for f, idx in zip(folder.files, indices, strict=True):
        if not 0 <= idx < len(prompts):
            raise MarsEvalError(f"{f}: prompt index {idx} is out of range ({len(prompts)} prompts in {prompts.source})")
    missing = sorted(set(range(len(prompts))) - set(indices))
    if missing:
        raise MarsEvalError(f"{len(prompts)} prompts in {prompts.source} but {len(folder)} images cover "
                            f"{len(prompts) - len(missing)} of them (first without an image: index {missing[0]})")
    return indices, how


@torch.no_grad()
def cosines(clip: LoadedClip, images: list[Path], texts: list[str], batch_size: int = 32) -> np.ndarray:
    """Cosine between each image and its text: (N,) float64."""
    from PIL import Image

    if len(images) != len(texts):
        raise MarsEvalError(f"{len(images)} images but {len(texts)} texts")
    uniq = sorted(set(texts))
    text_emb = {}
    for i in range(0, len(uniq), batch_size):
        chunk = uniq[i:i + batch_size]
        e = clip.model.encode_text(clip.tokenizer(chunk).to(clip.device))  # (B, E)
        e = torch.nn.functional.normalize(e.float(), dim=-1)
        text_emb.update(zip(chunk, e, strict=True))
    out = np.empty(len(images))
    for i in range(0, len(images), batch_size):
        x = torch.stack([clip.preprocess(Image.fromarray(load_rgb(p))) for p in images[i:i + batch_size]])
        e = clip.model.encode_image(x.to(clip.device))  # (B, E)
        e = torch.nn.functional.normalize(e.float(), dim=-1)
        t = torch.stack([text_emb[s] for s in texts[i:i + batch_size]])  # (B, E)
        out[i:i + len(e)] = (e * t).sum(-1).double().cpu().numpy()
    return out


def clip_score(image_dir: str | Path, prompts: PromptSet, variant: str, clip: LoadedClip,
               text_prefix: str | None = None, manifest: Path | None = None, batch_size: int = 32) -> dict:
    v = get_variant(variant)
    prefix = v.text_prefix if text_prefix is None else text_prefix
    folder = list_images(image_dir, min_images=1)
    indices, how = match_prompts(folder, prompts, manifest)
    texts = [prefix + prompts[i].text for i in indices]
    cos = cosines(clip, list(folder.files), texts, batch_size)
    per_image = v.per_image(cos)
    return {
        "clip_score": v.aggregate(cos),
        "clip_score_std": float(per_image.std()),
        "variant": v.name,
        "variant_definition": v.source,
        "variant_model": v.model,
        "model": clip.model_name,
        "model_matches_variant": clip.model_name == v.model,
        "checkpoint": str(clip.checkpoint),
        "checkpoint_sha256": clip.checkpoint_sha256,
        "text_prefix": prefix,
        "matching": how,
        "n_images": len(folder),
        "n_prompts": len(prompts),
        "prompts": prompts.source,
        "image_dir": str(folder.root),
    }
