"""Checkpoint I/O for MarsModel: safetensors + JSON config, strict loading with errors that name the key and file.

Two formats are read:
- a MARS directory written by `save_model` (`config.json` = MarsConfig, `model.safetensors` = our state dict);
- a Hugging Face `Qwen2ForCausalLM` directory (`config.json` + `model.safetensors` or a sharded
  `model.safetensors.index.json`), whose weights become the frozen text path.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from mars_ref.config import MarsConfig
from mars_ref.errors import MarsRefError
from mars_ref.model import MarsModel, is_visual_param

WEIGHTS, CONFIG = "model.safetensors", "config.json"


def read_safetensors_dir(directory: str | Path) -> dict[str, torch.Tensor]:
    """All tensors of `model.safetensors` or of the shards listed in `model.safetensors.index.json`."""
    d = Path(directory)
    single, index = d / WEIGHTS, d / "model.safetensors.index.json"
    try:
        if single.is_file():
            return load_file(single)
        if index.is_file():
            shards = sorted(set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values()))
            out: dict[str, torch.Tensor] = {}
            for shard in shards:
                out.update(load_file(d / shard))
            return out
    except (OSError, SafetensorError, KeyError, json.JSONDecodeError) as e:
        raise MarsRefError(f"cannot read weights in {d}: {e}") from None
    raise MarsRefError(f"no {WEIGHTS} or model.safetensors.index.json in {d}")


def check_tensors(tensors: dict[str, torch.Tensor], expected: dict[str, tuple[int, ...]], source: str):
    """Every expected key present with its shape, nothing unexpected; the error names the first offending key."""
    missing, unexpected = sorted(set(expected) - set(tensors)), sorted(set(tensors) - set(expected))
    for what, keys in (("missing", missing), ("unexpected", unexpected)):
        if keys:
            more = f" (+{len(keys) - 1} more)" if len(keys) > 1 else ""
            raise MarsRefError(f"{source}: {what} tensor {keys[0]!r}{more}")
    for k, t in tensors.items():
        if tuple(t.shape) != tuple(expected[k]):
            raise MarsRefError(f"{source}: tensor {k!r} has shape {tuple(t.shape)}, model expects {tuple(expected[k])}")


def _hf_key(ours: str) -> str:
    """Our text-path name -> the Hugging Face Qwen2ForCausalLM name."""
    if ours.startswith("lm_head."):
        return ours
    k = ours.replace("embed_text.", "embed_tokens.").replace(".attn_text.", ".self_attn.").replace(".mlp_text.", ".mlp.")
    return "model." + k


def empty_model(cfg: MarsConfig, dtype: torch.dtype = torch.float32) -> MarsModel:
    """A model with allocated but uninitialised weights (no wasted random init): the loaders fill every value."""
    with torch.device("meta"):
        model = MarsModel(cfg)
    return model.to_empty(device="cpu").to(dtype)


def load_qwen2(directory: str | Path, codebook_size: int, visual_expert: bool = True,
               dtype: torch.dtype = torch.float32, caption_kv: str = "text") -> MarsModel:
    """MarsModel whose text path is the Qwen2 checkpoint in `directory`; experts and visual rows follow the paper init."""
    cfg = MarsConfig.from_hf_qwen2(directory, codebook_size, visual_expert, caption_kv=caption_kv)
    hf = read_safetensors_dir(directory)
    if cfg.tie_word_embeddings and "lm_head.weight" in hf:  # some exports store the tied head; it must be the embedding
        head = hf.pop("lm_head.weight")
        if "model.embed_tokens.weight" in hf and not torch.equal(head, hf["model.embed_tokens.weight"]):
            raise MarsRefError(f"{directory}: tie_word_embeddings is true but lm_head.weight differs from embed_tokens")
    model = empty_model(cfg, dtype)
    own = {k: tuple(v.shape) for k, v in model.state_dict().items() if not is_visual_param(k)}
    to_ours = {_hf_key(k): k for k in own}
    check_tensors(hf, {_hf_key(k): s for k, s in own.items()}, str(directory))
    model.load_state_dict({to_ours[k]: v for k, v in hf.items()}, strict=False)
    model.init_visual_from_text()
    return model


def save_model(model: MarsModel, directory: str | Path) -> Path:
    """Write `model.safetensors` then `config.json` (each atomically; a directory with a config is complete)."""
    from mars_eval.io import atomic_write, atomic_write_text

    d = Path(directory)
    tensors = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    # one metadata key: safetensors writes the metadata map in a random order, so two keys would make the same
    # weights give different bytes (and bundle digests) from run to run
    meta = {"mars_config": model.config.to_json()}
    atomic_write(d / WEIGHTS, lambda p: save_file(tensors, str(p), metadata=meta))
    atomic_write_text(d / CONFIG, model.config.to_json())
    return d


def _describe_mismatch(saved: MarsConfig, wanted: MarsConfig, directory: Path) -> str:
    if saved.name != wanted.name:
        return f"checkpoint {directory} is preset {saved.name!r}, config says {wanted.name!r}"
    a, b = saved.to_dict(), wanted.to_dict()
    diffs = [f"{k}={a[k]!r} (config says {b[k]!r})" for k in a if a[k] != b[k]]
    return f"checkpoint {directory} has " + ", ".join(diffs)


def load_config(directory: str | Path) -> MarsConfig:
    """The MarsConfig a `save_model` directory was saved with (no weights read)."""
    d = Path(directory)
    try:
        text = (d / CONFIG).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise MarsRefError(f"no {CONFIG} in {d} (not a MARS checkpoint directory)") from None
    return MarsConfig.from_json(text, str(d / CONFIG))


def load_model(directory: str | Path, config: MarsConfig | None = None,
               dtype: torch.dtype = torch.float32) -> MarsModel:
    d = Path(directory)
    saved = load_config(d)
    if config is not None and config != saved:
        raise MarsRefError(_describe_mismatch(saved, config, d))
    weights = d / WEIGHTS
    if not weights.is_file():
        raise MarsRefError(f"no {WEIGHTS} in {d}")
    try:
        tensors = load_file(weights)
    except (OSError, SafetensorError) as e:
        raise MarsRefError(f"cannot read {weights}: {e}") from None
    model = empty_model(saved, dtype)
    check_tensors(tensors, {k: tuple(v.shape) for k, v in model.state_dict().items()}, str(weights))
    model.load_state_dict(tensors)
    model.set_trainable()
    return model
