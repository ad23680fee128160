"""Saving and strict loading of VQ tokenizers: our own format and two public checkpoint formats.

- ours: a directory with `config.json` (a `VQConfig`) and `model.safetensors`.
- LlamaGen (`vq_ds16_c2i.pt`, `vq_ds16_t2i.pt`): a torch file whose "ema" / "model" / "state_dict" entry holds the
  state_dict of LlamaGen's `tokenizer/tokenizer_image/vq_model.py` VQModel. Our module uses the same layout, so the
  keys map one to one.
- taming-transformers f16 VQGAN (`last.ckpt`): a Lightning checkpoint whose "state_dict" holds
  `taming.models.vqgan.VQModel` (encoder.down.N.block.M..., mid.block_1/attn_1/block_2, decoder.up.N...) plus the
  training loss modules under "loss." (discriminator, LPIPS), which inference does not need and are dropped.

Torch files are read with `torch.load(weights_only=True)` (tensors and plain containers only; LlamaGen's training
checkpoints also carry an `argparse.Namespace`, which is allow-listed). Every key and shape is checked: a missing or
unexpected key or a shape mismatch is a `MarsRefError` that names it and the file.
"""

from __future__ import annotations

import argparse
import json
import os
import re
from collections.abc import Mapping
from pathlib import Path

import torch

from mars_ref.errors import MarsRefError
from mars_ref.vq import VQConfig, VQModel

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
MODEL_TYPE = "mars_vq"

# LlamaGen's VectorQuantizer registers a usage ring buffer (`codebook_show_usage`); it is statistics, not weights.
_LLAMAGEN_OPTIONAL = {"quantize.codebook_used"}


# ----------------------------------------------------------------------------------------------------------------
# our own format


def save_vq(model: VQModel, out_dir: str | os.PathLike) -> Path:
    """Write `model.safetensors` then `config.json` atomically into `out_dir` (the config marks a complete save)."""
    from safetensors.torch import save_file

    from mars_eval.io import atomic_write, atomic_write_json

    out_dir = Path(out_dir)
    state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    atomic_write(out_dir / WEIGHTS_NAME, lambda p: save_file(state, str(p), metadata={"model_type": MODEL_TYPE}))
    atomic_write_json(out_dir / CONFIG_NAME, {"model_type": MODEL_TYPE, **model.cfg.to_dict()})
    return out_dir


def load_vq_config(path: str | os.PathLike) -> VQConfig:
    path = Path(path)
    cfg_path = path / CONFIG_NAME if path.is_dir() else path
    try:
        d = json.loads(cfg_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise MarsRefError(f"VQ config not found: {cfg_path}") from None
    except (OSError, json.JSONDecodeError) as e:
        raise MarsRefError(f"cannot read VQ config {cfg_path}: {e}") from None
    if not isinstance(d, dict) or d.pop("model_type", None) != MODEL_TYPE:
        raise MarsRefError(f"{cfg_path} is not a {MODEL_TYPE} config (model_type missing or different)")
    return VQConfig.from_dict(d, source=str(cfg_path))


def load_vq(path: str | os.PathLike, device: str | torch.device = "cpu") -> VQModel:
    """Load a directory written by `save_vq`; strict on keys and shapes. Returns the model in eval mode."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_dir():
        raise MarsRefError(f"VQ checkpoint directory not found: {path}")
    cfg = load_vq_config(path)
    weights = path / WEIGHTS_NAME
    if not weights.is_file():
        raise MarsRefError(f"VQ weights not found: {weights}")
    try:
        state = load_file(str(weights))
    except (SafetensorError, OSError) as e:
        raise MarsRefError(f"cannot read {weights}: {e}") from None
    model = VQModel(cfg)
    load_state_strict(model, state, str(weights))
    return model.to(device).eval()


# ----------------------------------------------------------------------------------------------------------------
# strict loading


def load_state_strict(model: torch.nn.Module, state: Mapping[str, torch.Tensor], source: str) -> None:
    """Copy `state` into `model` after checking that keys and shapes match exactly; errors name the key."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    if missing:
        raise MarsRefError(f"{source}: missing key {missing[0]!r}" + _more(missing))
    if unexpected:
        raise MarsRefError(f"{source}: unexpected key {unexpected[0]!r}" + _more(unexpected))
    for k, v in expected.items():
        t = state[k]
        if not isinstance(t, torch.Tensor):
            raise MarsRefError(f"{source}: {k!r} is a {type(t).__name__}, not a tensor")
        if tuple(t.shape) != tuple(v.shape):
            raise MarsRefError(f"{source}: shape mismatch for {k!r}: checkpoint {tuple(t.shape)}, "
                               f"model {tuple(v.shape)}")
        if not t.is_floating_point():
            raise MarsRefError(f"{source}: {k!r} has dtype {t.dtype}, expected a floating-point tensor")
    model.load_state_dict({k: state[k].to(expected[k].dtype) for k in expected}, strict=True)


def _more(keys: list) -> str:
    return f" (and {len(keys) - 1} more)" if len(keys) > 1 else ""


def _read_torch_or_safetensors(path: Path) -> dict:
    if not path.is_file():
        raise MarsRefError(f"checkpoint file not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except (SafetensorError, OSError) as e:
            raise MarsRefError(f"cannot read {path}: {e}") from None
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:  # pickle.UnpicklingError for disallowed objects, RuntimeError for corrupt archives
        raise MarsRefError(f"cannot load {path} safely (weights_only): {type(e).__name__}: "
                           f"{str(e).splitlines()[0] if str(e) else ''}") from None
    if not isinstance(obj, dict):
        raise MarsRefError(f"{path}: expected a dict, got {type(obj).__name__}")
    return obj


def _select_state_dict(obj: dict, path: Path, marker: str) -> dict[str, torch.Tensor]:
    """The weights inside a training checkpoint: "ema" first (as LlamaGen's demos do), then "model", "state_dict"."""
    if marker in obj:
        return obj
    for key in ("ema", "model", "state_dict"):
        if key in obj and isinstance(obj[key], dict):
            return obj[key]
    raise MarsRefError(f"{path}: no state_dict found (looked for 'ema', 'model', 'state_dict' and for {marker!r}); "
                       f"top-level keys: {sorted(map(str, obj))[:8]}")


def _read_state(path: Path) -> dict[str, torch.Tensor]:
    return _select_state_dict(_read_torch_or_safetensors(path), path, marker="encoder.conv_in.weight")


def _shape(sd: Mapping[str, torch.Tensor], key: str, path: Path, ndim: int) -> tuple[int, ...]:
    if key not in sd:
        raise MarsRefError(f"{path}: missing key {key!r}")
    t = sd[key]
    if not isinstance(t, torch.Tensor) or t.dim() != ndim:
        raise MarsRefError(f"{path}: {key!r} must be a {ndim}-d tensor, got "
                           f"{tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__}")
    return tuple(t.shape)


def _count(sd: Mapping, pattern: str) -> int:
    """How many consecutive indices i (from 0) have a key matching pattern.format(i)."""
    n = 0
    while any(k.startswith(pattern.format(n)) for k in sd):
        n += 1
    return n


def _infer_config(sd: Mapping[str, torch.Tensor], path: Path, level_prefix: str, res_name: str,
                  l2_norm: bool, norm_groups: int, beta: float) -> VQConfig:
    """Architecture hyper-parameters from weight shapes (the public checkpoints do not store their config)."""
    ch, in_ch = _shape(sd, "encoder.conv_in.weight", path, 4)[:2]
    n_levels = _count(sd, f"encoder.{level_prefix}.{{}}.")
    n_res = _count(sd, f"encoder.{level_prefix}.0.{res_name}.{{}}.")
    if n_levels == 0 or n_res == 0:
        raise MarsRefError(f"{path}: no encoder levels found under 'encoder.{level_prefix}.N.{res_name}.M'")
    ch_mult = []
    for i in range(n_levels):
        out_ch = _shape(sd, f"encoder.{level_prefix}.{i}.{res_name}.0.conv2.weight", path, 4)[0]
        if out_ch % ch:
            raise MarsRefError(f"{path}: level {i} width {out_ch} is not a multiple of ch={ch}")
        ch_mult.append(out_ch // ch)
    z_channels = _shape(sd, "encoder.conv_out.weight", path, 4)[0]
    codebook_size, embed_dim = _shape(sd, "quantize.embedding.weight", path, 2)
    attn = any(k.startswith("encoder.mid.1.") or k.startswith("encoder.mid.attn_1.") for k in sd)
    return VQConfig(codebook_size=codebook_size, embed_dim=embed_dim, l2_norm=l2_norm, beta=beta, ch=ch,
                    ch_mult=tuple(ch_mult), num_res_blocks=n_res, z_channels=z_channels, in_channels=in_ch,
                    norm_groups=norm_groups, attn=attn)


def _check_expected_config(cfg: VQConfig, expected: VQConfig | None, path: Path) -> None:
    if expected is None:
        return
    for k, v in expected.to_dict().items():
        if cfg.to_dict()[k] != v and k not in ("beta", "dropout"):
            raise MarsRefError(f"{path}: checkpoint has {k}={cfg.to_dict()[k]!r}, expected {v!r}")


# ----------------------------------------------------------------------------------------------------------------
# LlamaGen


def load_llamagen_vq(path: str | os.PathLike, *, l2_norm: bool = True, norm_groups: int = 32, beta: float = 0.25,
                     expected: VQConfig | None = None) -> VQModel:
    """Load a LlamaGen VQ checkpoint (VQ-16 / VQ-8, any codebook size) into our `VQModel`, strictly.

    `l2_norm` cannot be read from the weights: LlamaGen trains with `codebook_l2_norm=True` (its default and the
    released models); `norm_groups` is hard-coded to 32 in its `Normalize`. Pass `expected` to also require a
    specific architecture (e.g. `vq_preset("llamagen-vq16")`).
    """
    path = Path(path)
    return _llamagen_from_state(_read_state(path), path, l2_norm=l2_norm, norm_groups=norm_groups, beta=beta,
                                expected=expected)


def _llamagen_from_state(sd: dict, path: Path, *, l2_norm: bool = True, norm_groups: int = 32, beta: float = 0.25,
                         expected: VQConfig | None = None) -> VQModel:
    sd = {k: v for k, v in sd.items() if k not in _LLAMAGEN_OPTIONAL}
    if any(k.startswith("encoder.down.") for k in sd):
        raise MarsRefError(f"{path}: this is a taming-transformers checkpoint (encoder.down.*); use load_taming_vq")
    cfg = _infer_config(sd, path, "conv_blocks", "res", l2_norm, norm_groups, beta)
    _check_expected_config(cfg, expected, path)
    model = VQModel(cfg)
    load_state_strict(model, sd, str(path))
    return model.eval()


# ----------------------------------------------------------------------------------------------------------------
# taming-transformers


_MID = {"block_1": "0", "attn_1": "1", "block_2": "2"}


def taming_to_ours(key: str, n_levels: int) -> str:
    """Rename one taming-transformers VQGAN key to our (LlamaGen) layout; unknown keys pass through unchanged.

    taming indexes decoder levels by resolution (`up.0` = full resolution, built with `insert(0, ...)`), we
    (like LlamaGen) in execution order (`conv_blocks.0` = lowest resolution): `up.i` -> `conv_blocks.{n-1-i}`.
    """
    m = re.fullmatch(r"(encoder|decoder)\.mid\.(block_1|attn_1|block_2)\.(.+)", key)
    if m:
        return f"{m[1]}.mid.{_MID[m[2]]}.{m[3]}"
    m = re.fullmatch(r"encoder\.down\.(\d+)\.(block|attn|downsample)\.(.+)", key)
    if m:
        part = {"block": "res"}.get(m[2], m[2])
        return f"encoder.conv_blocks.{m[1]}.{part}.{m[3]}"
    m = re.fullmatch(r"decoder\.up\.(\d+)\.(block|attn|upsample)\.(.+)", key)
    if m:
        part = {"block": "res"}.get(m[2], m[2])
        return f"decoder.conv_blocks.{n_levels - 1 - int(m[1])}.{part}.{m[3]}"
    return key


def load_taming_vq(path: str | os.PathLike, *, norm_groups: int = 32, beta: float = 0.25,
                   expected: VQConfig | None = None) -> VQModel:
    """Load a taming-transformers VQGAN (`VectorQuantizer2`, e.g. the f16 ImageNet 1024/16384 models) strictly.

    Supported: attention only at the lowest resolution (the public f16 configs, `attn_resolutions: [16]` at
    256 px), `double_z: False`, no index remapping. Keys under "loss." are training-only and dropped.
    """
    path = Path(path)
    return _taming_from_state(_read_state(path), path, norm_groups=norm_groups, beta=beta, expected=expected)


def _taming_from_state(sd: dict, path: Path, *, norm_groups: int = 32, beta: float = 0.25,
                       expected: VQConfig | None = None) -> VQModel:
    sd = {k: v for k, v in sd.items() if not k.startswith("loss.")}
    if any(k.startswith("encoder.conv_blocks.") for k in sd):
        raise MarsRefError(f"{path}: this is a LlamaGen checkpoint (encoder.conv_blocks.*); use load_llamagen_vq")
    cfg = _infer_config(sd, path, "down", "block", False, norm_groups, beta)
    n = len(cfg.ch_mult)
    for k in sd:  # attention elsewhere than the lowest level has no place in our layout
        m = re.match(r"(encoder\.down|decoder\.up)\.(\d+)\.attn\.", k)
        if m and int(m[2]) != n - 1:
            raise MarsRefError(f"{path}: attention at level {m[2]} ({k!r}) is not supported: only the lowest "
                               f"resolution (level {n - 1}) may have attention")
    if cfg.attn and not any(k.startswith(f"encoder.down.{n - 1}.attn.") for k in sd):
        raise MarsRefError(f"{path}: middle attention without attention at the lowest level is not supported")
    _check_expected_config(cfg, expected, path)
    model = VQModel(cfg)
    load_state_strict(model, {taming_to_ours(k, n): v for k, v in sd.items()}, str(path))
    return model.eval()


# ----------------------------------------------------------------------------------------------------------------


def load_any_vq(path: str | os.PathLike, **kwargs) -> VQModel:
    """Our directory, or a LlamaGen / taming checkpoint file told apart by its key names."""
    path = Path(path)
    if path.is_dir():
        return load_vq(path)
    sd = _read_state(path)
    if any(k.startswith("encoder.conv_blocks.") for k in sd):
        return _llamagen_from_state(sd, path, **kwargs)
    if any(k.startswith("encoder.down.") for k in sd):
        return _taming_from_state(sd, path, **kwargs)
    raise MarsRefError(f"{path}: neither a LlamaGen (encoder.conv_blocks.*) nor a taming (encoder.down.*) VQ checkpoint")
