"""The InceptionV3 weights in torch-fidelity's format: its own `inception-v3-compat` runs offline, and our fast
extractor reuses its blocks with batch norms folded (`FusedInception`).

torch-fidelity downloads its converted weights unless given `feature_extractor_weights_path`. We write that
file from the fid-helper TorchScript module instead: the 94 conv+BN groups appear in the same order in both
networks (both follow the TF graph), so they map one to one. The TF graph has BN without a scale (gamma = 1).
The 1008-way classifier (`fc`, used only by the Inception Score) is not in the TorchScript file; it is filled
with NaN so that anything reading logits fails loudly instead of scoring with made-up weights. Tested:
features equal to the TorchScript module within 1e-6 relative.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from mars_eval.errors import MarsEvalError
from mars_eval.io import atomic_write_bytes
from mars_eval.metrics.inception import (
    INCEPTION_SHA256,
    default_weights_path,
    load_inception_layers,
    sha256_file,
)

# torch-fidelity's top-level blocks in forward order, with their constructor arguments.
_BLOCKS = (
    ("Conv2d_1a_3x3", "BasicConv2d", (3, 32), {"kernel_size": 3, "stride": 2}),
    ("Conv2d_2a_3x3", "BasicConv2d", (32, 32), {"kernel_size": 3}),
    ("Conv2d_2b_3x3", "BasicConv2d", (32, 64), {"kernel_size": 3, "padding": 1}),
    ("Conv2d_3b_1x1", "BasicConv2d", (64, 80), {"kernel_size": 1}),
    ("Conv2d_4a_3x3", "BasicConv2d", (80, 192), {"kernel_size": 3}),
    ("Mixed_5b", "InceptionA", (192,), {"pool_features": 32}),
    ("Mixed_5c", "InceptionA", (256,), {"pool_features": 64}),
    ("Mixed_5d", "InceptionA", (288,), {"pool_features": 64}),
    ("Mixed_6a", "InceptionB", (288,), {}),
    ("Mixed_6b", "InceptionC", (768,), {"channels_7x7": 128}),
    ("Mixed_6c", "InceptionC", (768,), {"channels_7x7": 160}),
    ("Mixed_6d", "InceptionC", (768,), {"channels_7x7": 160}),
    ("Mixed_6e", "InceptionC", (768,), {"channels_7x7": 192}),
    ("Mixed_7a", "InceptionD", (768,), {}),
    ("Mixed_7b", "InceptionE_1", (1280,), {}),
    ("Mixed_7c", "InceptionE_2", (2048,), {}),
)


def _fidelity_conv_prefixes() -> list[tuple[str, tuple[int, ...]]]:
    """Names and weight shapes of torch-fidelity's BasicConv2d modules, in module order."""
    import torch_fidelity.feature_extractor_inceptionv3 as fe

    out = []
    for name, cls, args, kwargs in _BLOCKS:
        block = getattr(fe, cls)(*args, **kwargs)
        for sub_name, sub in block.named_modules():
            if isinstance(sub, fe.BasicConv2d):
                prefix = f"{name}.{sub_name}." if sub_name else f"{name}."
                out.append((prefix, tuple(sub.conv.weight.shape)))
    return out


def convert_state_dict(layers: torch.nn.Module) -> dict[str, torch.Tensor]:
    """torch-fidelity `FeatureExtractorInceptionV3` state dict from the TorchScript `net.layers`."""
    groups: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in layers.state_dict().items():
        module, leaf = key.rsplit(".", 1)
        groups.setdefault(module, {})[leaf] = value
    ts_groups = list(groups.items())
    targets = _fidelity_conv_prefixes()
    if len(ts_groups) != len(targets):
        raise MarsEvalError(f"cannot map InceptionV3 weights: {len(ts_groups)} conv groups vs {len(targets)}")
    out: dict[str, torch.Tensor] = {}
    for (ts_name, g), (prefix, shape) in zip(ts_groups, targets, strict=True):
        if tuple(g["weight"].shape) != shape:
            raise MarsEvalError(f"cannot map InceptionV3 weights: {ts_name} {tuple(g['weight'].shape)} vs "
                                f"{prefix} {shape}")
        c = shape[0]
        out[prefix + "conv.weight"] = g["weight"].clone()
        out[prefix + "bn.weight"] = torch.ones(c)
        out[prefix + "bn.bias"] = g["beta"].clone()
        out[prefix + "bn.running_mean"] = g["mean"].clone()
        out[prefix + "bn.running_var"] = g["var"].clone()
        out[prefix + "bn.num_batches_tracked"] = torch.tensor(0)
    out["fc.weight"] = torch.full((1008, 2048), float("nan"))
    out["fc.bias"] = torch.full((1008,), float("nan"))
    return out


def fidelity_weights_path(cache_dir: str | os.PathLike, weights: str | os.PathLike | None = None) -> Path:
    """Write (once) and return the torch-fidelity weights file inside `cache_dir`.

    torch-fidelity loads it with `torch.load(weights_only=False)`, so the file must be one we wrote: it holds
    tensors only and is rewritten if it is missing; its name carries the source sha256.
    """
    src = Path(weights) if weights is not None else default_weights_path()
    digest = sha256_file(src)
    if digest != INCEPTION_SHA256:
        raise MarsEvalError(f"{src}: not the InceptionV3 weights (sha256 {digest[:12]}...)")
    path = Path(cache_dir) / f"inception-v3-fidelity-{digest[:16]}.pth"
    if not path.is_file():
        buf = io.BytesIO()
        torch.save(convert_state_dict(load_inception_layers(src)), buf)
        atomic_write_bytes(path, buf.getvalue())
    return path


class FusedInception(nn.Module):
    """torch-fidelity's InceptionV3 blocks holding the TorchScript weights, each batch norm folded into its
    convolution (`torch.nn.utils.fusion.fuse_conv_bn_eval`): (B, 3, 299, 299) in [-1, 1] -> (B, 2048).

    The forward order is torch-fidelity's `FeatureExtractorInceptionV3.forward` after its resize and
    normalisation; the classifier is left out. Tested against the TorchScript module to 1e-5 relative.
    """

    def __init__(self, state_dict: dict[str, torch.Tensor]):
        super().__init__()
        import torch_fidelity.feature_extractor_inceptionv3 as fe
        from torch.nn.utils.fusion import fuse_conv_bn_eval

        for name, cls, args, kwargs in _BLOCKS:
            setattr(self, name, getattr(fe, cls)(*args, **kwargs))
        self.load_state_dict({k: v for k, v in state_dict.items() if not k.startswith("fc.")})
        self.eval()
        for module in self.modules():
            if isinstance(module, fe.BasicConv2d):
                module.conv = fuse_conv_bn_eval(module.conv, module.bn)
                module.bn = nn.Identity()
        self.requires_grad_(False)

    @classmethod
    def from_torchscript(cls, layers: nn.Module) -> FusedInception:
        return cls(convert_state_dict(layers))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: (B, 3, 299, 299)
        x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))  # (B, 64, 147, 147)
        x = F.max_pool2d(x, kernel_size=3, stride=2)  # (B, 64, 73, 73)
        x = self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x))  # (B, 192, 71, 71)
        x = F.max_pool2d(x, kernel_size=3, stride=2)  # (B, 192, 35, 35)
        for name, *_ in _BLOCKS[5:]:
            x = getattr(self, name)(x)  # ... (B, 2048, 8, 8)
        return F.adaptive_avg_pool2d(x, 1).flatten(1)  # (B, 2048)
