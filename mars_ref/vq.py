"""VQ image tokenizer (VQGAN family): images (B, 3, H, W) in [-1, 1] <-> codes (B, H/f, W/f).

The module layout follows LlamaGen's `tokenizer/tokenizer_image/vq_model.py` (itself taming-transformers' VQGAN
with the encoder/decoder levels renamed `conv_blocks` and an l2-normalised codebook), so that a public LlamaGen
checkpoint maps onto it key for key (`mars_ref.vq_formats`). Everything is convolutional plus attention over the
lowest-resolution grid, so any H, W that are multiples of f work (Stage II aspect ratios).

No I/O here: saving, loading and public formats live in `vq_formats.py`, training in `vq_train.py`.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from mars_ref.errors import MarsRefError


@dataclass(frozen=True)
class VQConfig:
    """Shape of a VQ tokenizer. Defaults are LlamaGen's VQ-16 (f16, 16,384 codes of dimension 8)."""

    codebook_size: int = 16384
    embed_dim: int = 8  # dimension of a code vector (after quant_conv)
    l2_norm: bool = True  # LlamaGen: codes and latents on the unit sphere (cosine matching); taming: False
    beta: float = 0.25  # commitment loss weight
    ch: int = 128  # channels of the first level
    ch_mult: tuple[int, ...] = (1, 1, 2, 2, 4)  # channel multiplier per level; f = 2 ** (len(ch_mult) - 1)
    num_res_blocks: int = 2  # ResnetBlocks per encoder level (the decoder has one more)
    z_channels: int = 256  # encoder output / decoder input channels (before quant_conv / after post_quant_conv)
    in_channels: int = 3
    norm_groups: int = 32  # GroupNorm groups (32 in every public VQGAN)
    attn: bool = True  # self-attention in the lowest-resolution level and the middle (the public layout)
    dropout: float = 0.0
    # "conv": the public VQGAN encoder; "patch": each code is computed from its own f x f patch only (a stride-f
    # patch embedding and per-position MLPs), so codes are local by construction: a constant image is one code,
    # and recolouring an object cannot change the code of a patch it does not touch
    encoder: str = "conv"
    norm: str = "group"  # "group": GroupNorm (public); "channel": per-position LayerNorm over channels (local)

    def __post_init__(self):
        object.__setattr__(self, "ch_mult", tuple(int(m) for m in self.ch_mult))
        ints = {"codebook_size": 2, "embed_dim": 1, "ch": 1, "num_res_blocks": 1, "z_channels": 1,
                "in_channels": 1, "norm_groups": 1}
        for name, lo in ints.items():
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < lo:
                raise MarsRefError(f"VQConfig.{name} must be an integer >= {lo}, got {v!r}")
        if not self.ch_mult or any(m < 1 for m in self.ch_mult):
            raise MarsRefError(f"VQConfig.ch_mult must be a non-empty list of positive integers, got {self.ch_mult}")
        for m in self.ch_mult:
            if (self.ch * m) % self.norm_groups:
                raise MarsRefError(f"VQConfig: channels ch*{m} = {self.ch * m} are not divisible by "
                                   f"norm_groups={self.norm_groups}")
        if not 0.0 <= self.dropout < 1.0:
            raise MarsRefError(f"VQConfig.dropout must be in [0, 1), got {self.dropout}")
        if not self.beta >= 0.0:
            raise MarsRefError(f"VQConfig.beta must be >= 0, got {self.beta}")
        if self.encoder not in ("conv", "patch"):
            raise MarsRefError(f"VQConfig.encoder must be 'conv' or 'patch', got {self.encoder!r}")
        if self.norm not in ("group", "channel"):
            raise MarsRefError(f"VQConfig.norm must be 'group' or 'channel', got {self.norm!r}")

    @property
    def num_downsamples(self) -> int:
        return len(self.ch_mult) - 1

    @property
    def downsample_factor(self) -> int:
        """f: one code per f x f pixel patch."""
        return 2 ** self.num_downsamples

    def token_grid(self, height: int, width: int) -> tuple[int, int]:
        """(h, w) of the code grid for an image, or an error if the size is not a multiple of f."""
        f = self.downsample_factor
        if height % f or width % f or height < f or width < f:
            raise MarsRefError(f"image size {height}x{width} is not a positive multiple of the VQ factor f={f}")
        return height // f, width // f

    def to_dict(self) -> dict:
        d = asdict(self)
        d["ch_mult"] = list(self.ch_mult)
        return d

    @classmethod
    def from_dict(cls, d: dict, source: str = "config") -> VQConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise MarsRefError(f"{source}: unknown VQConfig keys {unknown}")
        try:
            return cls(**d)
        except TypeError as e:
            raise MarsRefError(f"{source}: {e}") from None


# Presets as data. World tokenizers are f4 (32 px -> 8x8 codes, 64 px -> 16x16 codes); the paper's is f16.
VQ_PRESETS: dict[str, VQConfig] = {
    "world-f4": VQConfig(codebook_size=512, embed_dim=8, ch=32, ch_mult=(1, 2, 2), num_res_blocks=1,
                         z_channels=64, norm_groups=8),
    "world-f4-1024": VQConfig(codebook_size=1024, embed_dim=8, ch=64, ch_mult=(1, 2, 2), num_res_blocks=1,
                              z_channels=64, norm_groups=16),
    # local, low-entropy codes for a small generator: patch encoder, no attention, no cross-position norm
    "world-f4-local": VQConfig(codebook_size=512, embed_dim=8, ch=32, ch_mult=(1, 2, 2), num_res_blocks=1,
                               z_channels=64, attn=False, encoder="patch", norm="channel"),
    "tiny": VQConfig(codebook_size=64, embed_dim=4, ch=8, ch_mult=(1, 2), num_res_blocks=1, z_channels=8,
                     norm_groups=4),
    "llamagen-vq16": VQConfig(),
    "mars-f16-8192": VQConfig(codebook_size=8192),
    "taming-f16-1024": VQConfig(codebook_size=1024, embed_dim=256, l2_norm=False),
}


def vq_preset(name: str) -> VQConfig:
    if name not in VQ_PRESETS:
        raise MarsRefError(f"unknown VQ preset {name!r}; known: {sorted(VQ_PRESETS)}")
    return VQ_PRESETS[name]


# ----------------------------------------------------------------------------------------------------------------
# building blocks (names and shapes as in the public VQGAN code)


class ChannelNorm(nn.Module):
    """LayerNorm over the channels of each position of a (B, C, H, W) map: no statistics cross positions."""

    def __init__(self, channels: int, eps: float = 1e-6):
        super().__init__()
        self.weight, self.bias, self.eps = nn.Parameter(torch.ones(channels)), nn.Parameter(torch.zeros(channels)), eps

    def forward(self, x):  # (B, C, H, W)
        return F.layer_norm(x.permute(0, 2, 3, 1), x.shape[1:2], self.weight, self.bias, self.eps).permute(0, 3, 1, 2)


def _norm(cfg: VQConfig, channels: int) -> nn.Module:
    if cfg.norm == "channel":
        return ChannelNorm(channels)
    return nn.GroupNorm(num_groups=cfg.norm_groups, num_channels=channels, eps=1e-6, affine=True)


class ResnetBlock(nn.Module):
    def __init__(self, cfg: VQConfig, in_ch: int, out_ch: int):
        super().__init__()
        self.norm1 = _norm(cfg, in_ch)
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.norm2 = _norm(cfg, out_ch)
        self.dropout = nn.Dropout(cfg.dropout)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, padding=1)
        # 1x1 projection of the skip path when the width changes ("nin_shortcut" in the public code)
        self.nin_shortcut = nn.Conv2d(in_ch, out_ch, 1) if in_ch != out_ch else None

    def forward(self, x):  # (B, Cin, H, W) -> (B, Cout, H, W)
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        skip = x if self.nin_shortcut is None else self.nin_shortcut(x)
        return skip + h


class AttnBlock(nn.Module):
    """Single-head self-attention over all H*W positions (1x1 convs for q, k, v and the output projection)."""

    def __init__(self, cfg: VQConfig, ch: int):
        super().__init__()
        self.norm = _norm(cfg, ch)
        self.q = nn.Conv2d(ch, ch, 1)
        self.k = nn.Conv2d(ch, ch, 1)
        self.v = nn.Conv2d(ch, ch, 1)
        self.proj_out = nn.Conv2d(ch, ch, 1)

    def forward(self, x):  # (B, C, H, W)
        B, C, H, W = x.shape
        h = self.norm(x)
        q, k, v = (m(h).reshape(B, 1, C, H * W).transpose(2, 3) for m in (self.q, self.k, self.v))  # (B, 1, HW, C)
        out = F.scaled_dot_product_attention(q, k, v)  # softmax(q k^T / sqrt(C)) v, (B, 1, HW, C)
        out = out.transpose(2, 3).reshape(B, C, H, W)
        return x + self.proj_out(out)


class Downsample(nn.Module):
    """Stride-2 3x3 conv with the public code's asymmetric (right/bottom) zero padding."""

    def __init__(self, ch: int):
        super().__init__()
        self.conv = nn.Conv2d(ch, ch, 3, stride=2, padding=0)

    def forward(self, x):  # (B, C, H, W) -> (B, C, H/2, W/2)
        return self.conv(F.pad(x, (0, 1, 0, 1)))


class Upsample(nn.Module):
    def __init__(self, ch: int):
        super().__init__()
        self.conv = nn.Conv2d(ch, ch, 3, padding=1)

    def forward(self, x):  # (B, C, H, W) -> (B, C, 2H, 2W)
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


def _mid(cfg: VQConfig, ch: int) -> nn.ModuleList:
    # Identity keeps the indices (mid.0, mid.2) of the public layout when attention is switched off
    return nn.ModuleList([ResnetBlock(cfg, ch, ch), AttnBlock(cfg, ch) if cfg.attn else nn.Identity(),
                          ResnetBlock(cfg, ch, ch)])


class Encoder(nn.Module):
    def __init__(self, cfg: VQConfig):
        super().__init__()
        n = len(cfg.ch_mult)
        self.conv_in = nn.Conv2d(cfg.in_channels, cfg.ch, 3, padding=1)
        self.conv_blocks = nn.ModuleList()
        block_in = cfg.ch
        for level, mult in enumerate(cfg.ch_mult):
            block = nn.Module()
            block.res = nn.ModuleList()
            block.attn = nn.ModuleList()
            block_out = cfg.ch * mult
            for _ in range(cfg.num_res_blocks):
                block.res.append(ResnetBlock(cfg, block_in, block_out))
                block_in = block_out
                if cfg.attn and level == n - 1:
                    block.attn.append(AttnBlock(cfg, block_in))
            if level != n - 1:
                block.downsample = Downsample(block_in)
            self.conv_blocks.append(block)
        self.mid = _mid(cfg, block_in)
        self.norm_out = _norm(cfg, block_in)
        self.conv_out = nn.Conv2d(block_in, cfg.z_channels, 3, padding=1)

    def forward(self, x):  # (B, 3, H, W) -> (B, z_channels, H/f, W/f)
        h = self.conv_in(x)
        for block in self.conv_blocks:
            for i, res in enumerate(block.res):
                h = res(h)
                if len(block.attn):
                    h = block.attn[i](h)
            if hasattr(block, "downsample"):
                h = block.downsample(h)
        for m in self.mid:
            h = m(h)
        return self.conv_out(F.silu(self.norm_out(h)))


class PatchEncoder(nn.Module):
    """A stride-f patch embedding, then residual per-position MLPs (1x1 convs): code (i, j) sees patch (i, j) only."""

    def __init__(self, cfg: VQConfig):
        super().__init__()
        f, width = cfg.downsample_factor, cfg.ch * cfg.ch_mult[-1]
        self.conv_in = nn.Conv2d(cfg.in_channels, width, f, stride=f)
        self.mlp = nn.ModuleList(nn.Sequential(_norm(cfg, width), nn.Conv2d(width, 2 * width, 1), nn.SiLU(),
                                               nn.Conv2d(2 * width, width, 1))
                                 for _ in range(2 * cfg.num_res_blocks))
        self.norm_out = _norm(cfg, width)
        self.conv_out = nn.Conv2d(width, cfg.z_channels, 1)

    def forward(self, x):  # (B, 3, H, W) -> (B, z_channels, H/f, W/f)
        h = self.conv_in(x)
        for block in self.mlp:
            h = h + block(h)
        return self.conv_out(F.silu(self.norm_out(h)))


class Decoder(nn.Module):
    def __init__(self, cfg: VQConfig):
        super().__init__()
        n = len(cfg.ch_mult)
        block_in = cfg.ch * cfg.ch_mult[-1]
        self.conv_in = nn.Conv2d(cfg.z_channels, block_in, 3, padding=1)
        self.mid = _mid(cfg, block_in)
        # conv_blocks[0] is the lowest resolution (public layout: levels in reverse order)
        self.conv_blocks = nn.ModuleList()
        for level in reversed(range(n)):
            block = nn.Module()
            block.res = nn.ModuleList()
            block.attn = nn.ModuleList()
            block_out = cfg.ch * cfg.ch_mult[level]
            for _ in range(cfg.num_res_blocks + 1):
                block.res.append(ResnetBlock(cfg, block_in, block_out))
                block_in = block_out
                if cfg.attn and level == n - 1:
                    block.attn.append(AttnBlock(cfg, block_in))
            if level != 0:
                block.upsample = Upsample(block_in)
            self.conv_blocks.append(block)
        self.norm_out = _norm(cfg, block_in)
        self.conv_out = nn.Conv2d(block_in, cfg.in_channels, 3, padding=1)

    def forward(self, z):  # (B, z_channels, h, w) -> (B, 3, h*f, w*f)
        h = self.conv_in(z)
        for m in self.mid:
            h = m(h)
        for block in self.conv_blocks:
            for i, res in enumerate(block.res):
                h = res(h)
                if len(block.attn):
                    h = block.attn[i](h)
            if hasattr(block, "upsample"):
                h = block.upsample(h)
        return self.conv_out(F.silu(self.norm_out(h)))


class QuantizerOutput(NamedTuple):
    z_q: torch.Tensor  # (B, D, h, w) quantised latents with straight-through gradients to the encoder
    codes: torch.Tensor  # (B, h, w) int64
    codebook_loss: torch.Tensor  # ||sg[z] - e||^2: moves codes towards encoder outputs
    commit_loss: torch.Tensor  # beta * ||z - sg[e]||^2: keeps encoder outputs near their codes


class VectorQuantizer(nn.Module):
    """Nearest-neighbour codebook lookup with a straight-through estimator.

    With `l2_norm`, latents and codes are compared on the unit sphere (LlamaGen), which keeps codebook usage high
    without any extra machinery. `usage_ema` (not saved) counts how often each code is picked during training,
    so the trainer can restart dead codes (`restart_dead_codes`).
    """

    def __init__(self, cfg: VQConfig, usage_decay: float = 0.99):
        super().__init__()
        self.codebook_size, self.embed_dim = cfg.codebook_size, cfg.embed_dim
        self.l2_norm, self.beta, self.usage_decay = cfg.l2_norm, cfg.beta, usage_decay
        self.embedding = nn.Embedding(cfg.codebook_size, cfg.embed_dim)
        with torch.no_grad():
            self.embedding.weight.uniform_(-1.0 / cfg.codebook_size, 1.0 / cfg.codebook_size)
            if cfg.l2_norm:
                self.embedding.weight.copy_(F.normalize(self.embedding.weight, dim=-1))
        self.register_buffer("usage_ema", torch.zeros(cfg.codebook_size), persistent=False)

    def codebook(self) -> torch.Tensor:  # (K, D), the vectors actually used for matching and decoding
        w = self.embedding.weight
        return F.normalize(w, dim=-1) if self.l2_norm else w

    def _prepare(self, z: torch.Tensor) -> torch.Tensor:  # (B, D, h, w) -> (B, h, w, D)
        if z.dim() != 4 or z.shape[1] != self.embed_dim:
            raise MarsRefError(f"quantizer expects latents (B, {self.embed_dim}, h, w), got {tuple(z.shape)}")
        z = z.permute(0, 2, 3, 1)
        return F.normalize(z, dim=-1) if self.l2_norm else z

    @torch.no_grad()
    def nearest(self, z_flat: torch.Tensor, chunk: int = 4096) -> torch.Tensor:  # (N, D) -> (N,) code indices
        e = self.codebook()  # (K, D)
        e2 = e.pow(2).sum(1)[None, :]  # (1, K)
        # ||z - e||^2 = ||z||^2 + ||e||^2 - 2 z.e ; the ||z||^2 term does not change the argmin.
        # Chunked so that (N, K) never materialises at once (f16 at 256 px, batch 64, 8192 codes: 0.5 GB).
        return torch.cat([(e2 - 2 * z @ e.t()).argmin(dim=1) for z in z_flat.split(chunk)])  # (N,)

    def forward(self, z: torch.Tensor) -> QuantizerOutput:  # z: (B, D, h, w)
        z = self._prepare(z)  # (B, h, w, D)
        B, h, w, D = z.shape
        codes = self.nearest(z.reshape(-1, D))  # (B*h*w,)
        z_q = self.codebook()[codes].view(B, h, w, D)
        codebook_loss = torch.mean((z_q - z.detach()) ** 2)
        commit_loss = self.beta * torch.mean((z_q.detach() - z) ** 2)
        if self.training:
            with torch.no_grad():
                counts = torch.bincount(codes, minlength=self.codebook_size).to(self.usage_ema.dtype)
                self.usage_ema.mul_(self.usage_decay).add_(counts, alpha=1 - self.usage_decay)
        z_q = z + (z_q - z).detach()  # straight-through: forward uses codes, backward copies grads to z
        return QuantizerOutput(z_q.permute(0, 3, 1, 2), codes.view(B, h, w), codebook_loss, commit_loss)

    def lookup(self, codes: torch.Tensor) -> torch.Tensor:  # (B, h, w) int -> (B, D, h, w)
        if codes.dim() != 3:
            raise MarsRefError(f"codes must have shape (B, h, w), got {tuple(codes.shape)}")
        if codes.numel() and (int(codes.min()) < 0 or int(codes.max()) >= self.codebook_size):
            raise MarsRefError(f"codes out of range [0, {self.codebook_size}): min {int(codes.min())}, "
                               f"max {int(codes.max())}")
        return self.codebook()[codes.long()].permute(0, 3, 1, 2)

    @torch.no_grad()
    def restart_dead_codes(self, z: torch.Tensor, threshold: float, generator: torch.Generator | None = None) -> int:
        """Move codes whose usage EMA fell below `threshold` (picks per batch) onto random current latents.

        z: (B, D, h, w) encoder latents of the current batch. Returns how many codes were restarted.
        """
        dead = (self.usage_ema < threshold).nonzero().squeeze(1)  # (n_dead,)
        if dead.numel() == 0:
            return 0
        z_flat = self._prepare(z).reshape(-1, self.embed_dim)  # (N, D)
        pick = torch.randint(z_flat.shape[0], (dead.numel(),), generator=generator, device="cpu").to(z.device)
        self.embedding.weight[dead] = z_flat[pick].to(self.embedding.weight.dtype)
        self.usage_ema[dead] = threshold  # grace period before a restarted code can be judged dead again
        return int(dead.numel())


class VQOutput(NamedTuple):
    recon: torch.Tensor  # (B, 3, H, W), unclamped
    codes: torch.Tensor  # (B, h, w)
    codebook_loss: torch.Tensor
    commit_loss: torch.Tensor


class VQModel(nn.Module):
    """Encoder -> quant_conv -> VectorQuantizer -> post_quant_conv -> Decoder (keys as in LlamaGen's VQModel)."""

    def __init__(self, cfg: VQConfig):
        super().__init__()
        self.cfg = cfg
        self.encoder = PatchEncoder(cfg) if cfg.encoder == "patch" else Encoder(cfg)
        self.decoder = Decoder(cfg)
        self.quantize = VectorQuantizer(cfg)
        self.quant_conv = nn.Conv2d(cfg.z_channels, cfg.embed_dim, 1)
        self.post_quant_conv = nn.Conv2d(cfg.embed_dim, cfg.z_channels, 1)

    def _check_images(self, x: torch.Tensor) -> None:
        if x.dim() != 4 or x.shape[1] != self.cfg.in_channels:
            raise MarsRefError(f"images must have shape (B, {self.cfg.in_channels}, H, W), got {tuple(x.shape)}")
        self.cfg.token_grid(x.shape[2], x.shape[3])

    def encode_latents(self, x: torch.Tensor) -> torch.Tensor:  # (B, 3, H, W) -> (B, D, H/f, W/f), unquantised
        self._check_images(x)
        return self.quant_conv(self.encoder(x))

    def encode(self, x: torch.Tensor) -> torch.Tensor:  # (B, 3, H, W) in [-1, 1] -> codes (B, H/f, W/f) int64
        return self.quantize(self.encode_latents(x)).codes

    def decode_latents(self, z_q: torch.Tensor) -> torch.Tensor:  # (B, D, h, w) -> (B, 3, h*f, w*f)
        return self.decoder(self.post_quant_conv(z_q))

    def decode_codes(self, codes: torch.Tensor) -> torch.Tensor:  # (B, h, w) -> (B, 3, h*f, w*f), unclamped
        return self.decode_latents(self.quantize.lookup(codes))

    def forward(self, x: torch.Tensor) -> VQOutput:
        q = self.quantize(self.encode_latents(x))
        return VQOutput(self.decode_latents(q.z_q), q.codes, q.codebook_loss, q.commit_loss)


def code_stats(codes: torch.Tensor, codebook_size: int) -> dict[str, float]:
    """Codebook usage (fraction of codes that occur at least once) and perplexity exp(H(code histogram)).

    Perplexity equals the number of codes in use when all are used equally often, so it is the "effective"
    codebook size; both are computed over all positions of all images given.
    """
    counts = torch.bincount(codes.reshape(-1).long().cpu(), minlength=codebook_size).double()
    if counts.numel() != codebook_size:
        raise MarsRefError(f"codes out of range for a codebook of {codebook_size}")
    total = counts.sum()
    if total == 0:
        return {"codebook_usage": 0.0, "perplexity": 0.0, "codes_used": 0}
    p = counts[counts > 0] / total
    entropy = float(-(p * p.log()).sum())
    return {"codebook_usage": float((counts > 0).sum()) / codebook_size, "perplexity": math.exp(entropy),
            "codes_used": int((counts > 0).sum())}
