"""Training and evaluation of the VQ tokenizer as library functions (the CLI `mars-eval train vq` wraps them).

Loss = pixel reconstruction (L1 or L2) + codebook + commitment terms, and optionally a small PatchGAN hinge loss
(off by default: it slows CPU training and needs many steps to help). No perceptual (LPIPS) term: its VGG weights
cannot be downloaded here, and LPIPS trained on ImageNet features says little about the flat-coloured world.
Dead codes are restarted from current encoder outputs, which keeps codebook usage high on small data.

Checkpoints are our VQ format (`vq_formats.save_vq`) plus `train_state.safetensors` / `train_state.json`
(optimiser moments, RNG state, step), so `resume=True` continues bit for bit where the last checkpoint stopped.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from mars_ref.errors import MarsRefError
from mars_ref.vq import VQConfig, VQModel, code_stats
from mars_ref.vq_formats import load_vq, save_vq

# An image set: a (N, 3, H, W) tensor (uint8 in [0, 255] or float in [-1, 1]) or a sequence (e.g. a Dataset)
# of (3, H, W) tensors of the same kinds. All images of one set must have the same size.
Images = torch.Tensor | Sequence[torch.Tensor]

STATE_TENSORS = "train_state.safetensors"
STATE_JSON = "train_state.json"


@dataclass(frozen=True)
class VQTrainConfig:
    steps: int = 2000
    batch_size: int = 32
    lr: float = 5e-4
    min_lr_ratio: float = 0.1  # cosine decay from lr to lr * min_lr_ratio after warm-up
    warmup_steps: int = 50
    beta1: float = 0.9
    beta2: float = 0.95  # LlamaGen's VQ training and the paper's LLM recipe
    weight_decay: float = 0.0
    grad_clip: float = 1.0  # 0 = off
    recon_loss: str = "l1"  # "l1" or "l2"
    codebook_weight: float = 1.0
    restart_every: int = 50  # steps between dead-code restarts (0 = off)
    dead_code_ratio: float = 0.03  # a code is dead below this fraction of the uniform per-batch usage
    disc_weight: float = 0.0  # PatchGAN generator-loss weight (0 = no discriminator)
    disc_start: int = 0  # step at which the discriminator and its loss start
    disc_ch: int = 32
    log_every: int = 50
    ckpt_every: int = 0  # 0 = write a checkpoint only at the end
    seed: int = 0

    def __post_init__(self):
        for name in ("steps", "batch_size"):
            if getattr(self, name) < 1:
                raise MarsRefError(f"VQTrainConfig.{name} must be >= 1, got {getattr(self, name)}")
        for name in ("warmup_steps", "restart_every", "disc_start", "log_every", "ckpt_every", "disc_ch"):
            if getattr(self, name) < 0:
                raise MarsRefError(f"VQTrainConfig.{name} must be >= 0, got {getattr(self, name)}")
        if not self.lr > 0:
            raise MarsRefError(f"VQTrainConfig.lr must be > 0, got {self.lr}")
        if self.recon_loss not in ("l1", "l2"):
            raise MarsRefError(f"VQTrainConfig.recon_loss must be 'l1' or 'l2', got {self.recon_loss!r}")
        if not 0.0 <= self.min_lr_ratio <= 1.0:
            raise MarsRefError(f"VQTrainConfig.min_lr_ratio must be in [0, 1], got {self.min_lr_ratio}")
        if self.disc_weight < 0 or self.codebook_weight < 0 or self.dead_code_ratio < 0:
            raise MarsRefError("VQTrainConfig: disc_weight, codebook_weight and dead_code_ratio must be >= 0")
        if self.disc_weight > 0 and self.disc_ch < 1:
            raise MarsRefError("VQTrainConfig.disc_ch must be >= 1 when the discriminator is on")

    def lr_at(self, step: int) -> float:
        """Linear warm-up then cosine decay; `step` counts from 0."""
        if step < self.warmup_steps:
            return self.lr * (step + 1) / self.warmup_steps
        span = max(1, self.steps - self.warmup_steps)
        t = min(1.0, (step - self.warmup_steps) / span)
        return self.lr * (self.min_lr_ratio + (1 - self.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * t)))


def to_model_range(x: torch.Tensor) -> torch.Tensor:
    """uint8 [0, 255] -> float [-1, 1]; float input is taken as already in [-1, 1]."""
    if x.dtype == torch.uint8:
        return x.float() / 127.5 - 1.0
    if not x.is_floating_point():
        raise MarsRefError(f"images must be uint8 or floating point, got {x.dtype}")
    return x.float()


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    """float [-1, 1] -> uint8 [0, 255], rounded (what a saved PNG holds)."""
    return ((x.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)


def _num_images(images: Images) -> int:
    n = images.shape[0] if isinstance(images, torch.Tensor) else len(images)
    if n == 0:
        raise MarsRefError("no images to train or evaluate on")
    return n


def _batch(images: Images, idx: Sequence[int] | torch.Tensor) -> torch.Tensor:  # -> (B, 3, H, W) in [-1, 1]
    if isinstance(images, torch.Tensor):
        x = images[torch.as_tensor(idx, dtype=torch.long)]
    else:
        items = [images[int(i)] for i in idx]
        sizes = {tuple(t.shape) for t in items}
        if len(sizes) != 1:
            raise MarsRefError(f"images in one batch have different shapes {sorted(sizes)}; use one size per set")
        x = torch.stack(items)
    if x.dim() != 4 or x.shape[1] != 3:
        raise MarsRefError(f"images must be (3, H, W) each, got a batch of shape {tuple(x.shape)}")
    return to_model_range(x)


class PatchDiscriminator(nn.Module):
    """A small PatchGAN (pix2pix / taming NLayerDiscriminator shape): one real/fake logit per receptive patch."""

    def __init__(self, ch: int = 32, n_layers: int = 2):
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(3, ch, 4, 2, 1), nn.LeakyReLU(0.2)]
        c = ch
        for _ in range(n_layers - 1):
            layers += [nn.Conv2d(c, c * 2, 4, 2, 1), nn.GroupNorm(1, c * 2), nn.LeakyReLU(0.2)]
            c *= 2
        layers.append(nn.Conv2d(c, 1, 3, 1, 1))
        self.net = nn.Sequential(*layers)

    def forward(self, x):  # (B, 3, H, W) -> (B, 1, H/2^n, W/2^n) logits
        return self.net(x)


# ----------------------------------------------------------------------------------------------------------------
# train state (optimiser moments, RNG) as safetensors + JSON; no pickle anywhere


def _flatten_optimizer(opt: torch.optim.Optimizer, prefix: str) -> tuple[dict[str, torch.Tensor], dict]:
    sd = opt.state_dict()
    tensors, scalars = {}, {}
    for pid, st in sd["state"].items():
        for name, v in st.items():
            if isinstance(v, torch.Tensor):
                tensors[f"{prefix}.{pid}.{name}"] = v.detach().cpu().contiguous()
            else:
                scalars[f"{pid}.{name}"] = v
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def _unflatten_optimizer(tensors: dict[str, torch.Tensor], meta: dict, prefix: str) -> dict:
    state: dict[int, dict] = {}
    for key, v in tensors.items():
        if key.startswith(prefix + "."):
            pid, name = key[len(prefix) + 1:].split(".", 1)
            state.setdefault(int(pid), {})[name] = v
    for key, v in meta["scalars"].items():
        pid, name = key.split(".", 1)
        state.setdefault(int(pid), {})[name] = v
    groups = [{**g, "betas": tuple(g["betas"])} if "betas" in g else g for g in meta["param_groups"]]
    return {"state": state, "param_groups": groups}


def _save_checkpoint(out_dir: Path, model: VQModel, opt, disc, opt_d, gen: torch.Generator, step: int,
                     train_cfg: VQTrainConfig, log: list[dict]) -> None:
    from safetensors.torch import save_file

    from mars_eval.io import atomic_write, atomic_write_json

    save_vq(model, out_dir)
    tensors, opt_meta = _flatten_optimizer(opt, "opt")
    tensors["rng"] = gen.get_state()
    tensors["usage_ema"] = model.quantize.usage_ema.detach().cpu().clone()
    meta: dict = {"step": step, "train_config": asdict(train_cfg), "opt": opt_meta, "log": log}
    if disc is not None:
        t_d, meta["opt_d"] = _flatten_optimizer(opt_d, "opt_d")
        tensors.update(t_d)
        tensors.update({f"disc.{k}": v.detach().cpu().contiguous() for k, v in disc.state_dict().items()})
    atomic_write(out_dir / STATE_TENSORS, lambda p: save_file(tensors, str(p)))
    atomic_write_json(out_dir / STATE_JSON, meta)  # last: its presence marks a complete checkpoint


def _load_checkpoint(out_dir: Path, vq_cfg: VQConfig, device) -> tuple[VQModel, dict, dict]:
    from safetensors.torch import load_file

    model = load_vq(out_dir, device=device)
    if model.cfg != vq_cfg:
        raise MarsRefError(f"{out_dir}: cannot resume, the checkpoint's VQ config differs from the requested one")
    try:
        meta = json.loads((out_dir / STATE_JSON).read_text(encoding="utf-8"))
        tensors = load_file(str(out_dir / STATE_TENSORS))
    except (OSError, ValueError) as e:
        raise MarsRefError(f"{out_dir}: cannot read train state: {e}") from None
    return model, meta, tensors


# ----------------------------------------------------------------------------------------------------------------


def train_vq(images: Images, vq_cfg: VQConfig, train_cfg: VQTrainConfig, out_dir: str | os.PathLike | None = None,
             *, callback: Callable[[int, dict], None] | None = None, resume: bool = False,
             device: str | torch.device = "cpu") -> VQModel:
    """Train a VQ tokenizer on `images`; return it in eval mode (and save it to `out_dir` if given).

    `callback(step, metrics)` is called every `log_every` steps and after the last one (step counts from 1).
    With `resume=True` and a complete checkpoint in `out_dir`, training continues from it up to `train_cfg.steps`.
    Results do not depend on `log_every` / `ckpt_every`: every random draw comes from one seeded generator.
    """
    n = _num_images(images)
    out = Path(out_dir) if out_dir is not None else None
    gen = torch.Generator().manual_seed(train_cfg.seed)
    start, log = 0, []
    state_tensors: dict | None = None
    meta: dict = {}
    if resume and out is not None and (out / STATE_JSON).is_file():
        model, meta, state_tensors = _load_checkpoint(out, vq_cfg, device)
        start, log = int(meta["step"]), list(meta.get("log", []))
        gen.set_state(state_tensors["rng"])
        model.quantize.usage_ema.copy_(state_tensors["usage_ema"].to(device))
    else:
        with torch.random.fork_rng(devices=[]):  # seeded initial weights without touching the global RNG
            torch.manual_seed(train_cfg.seed)
            model = VQModel(vq_cfg).to(device)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=train_cfg.lr, betas=(train_cfg.beta1, train_cfg.beta2),
                            weight_decay=train_cfg.weight_decay)
    disc = opt_d = None
    if train_cfg.disc_weight > 0:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(train_cfg.seed + 1)
            disc = PatchDiscriminator(train_cfg.disc_ch).to(device)
        opt_d = torch.optim.AdamW(disc.parameters(), lr=train_cfg.lr, betas=(0.5, 0.9))
    if state_tensors is not None:
        opt.load_state_dict(_unflatten_optimizer(state_tensors, meta["opt"], "opt"))
        if disc is not None:
            if "opt_d" not in meta:
                raise MarsRefError(f"{out}: checkpoint has no discriminator state but disc_weight > 0")
            disc.load_state_dict({k[5:]: v for k, v in state_tensors.items() if k.startswith("disc.")})
            opt_d.load_state_dict(_unflatten_optimizer(state_tensors, meta["opt_d"], "opt_d"))

    recon_fn = F.l1_loss if train_cfg.recon_loss == "l1" else F.mse_loss
    for step in range(start, train_cfg.steps):
        lr = train_cfg.lr_at(step)
        for g in opt.param_groups:
            g["lr"] = lr
        idx = torch.randint(n, (train_cfg.batch_size,), generator=gen)
        x = _batch(images, idx).to(device)  # (B, 3, H, W)
        z = model.encode_latents(x)  # (B, D, h, w)
        q = model.quantize(z)
        recon = model.decode_latents(q.z_q)
        rec_loss = recon_fn(recon, x)
        loss = rec_loss + train_cfg.codebook_weight * (q.codebook_loss + q.commit_loss)
        parts = {"recon": rec_loss, "codebook": q.codebook_loss, "commit": q.commit_loss}
        use_disc = disc is not None and step >= train_cfg.disc_start
        if use_disc:
            parts["gen_adv"] = -disc(recon).mean()
            loss = loss + train_cfg.disc_weight * parts["gen_adv"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if train_cfg.grad_clip > 0:
            nn.utils.clip_grad_norm_(model.parameters(), train_cfg.grad_clip)
        opt.step()
        if use_disc:
            d_loss = F.relu(1 - disc(x)).mean() + F.relu(1 + disc(recon.detach())).mean()  # hinge
            opt_d.zero_grad(set_to_none=True)
            d_loss.backward()
            opt_d.step()
            parts["disc"] = d_loss
        restarted = 0
        if train_cfg.restart_every and (step + 1) % train_cfg.restart_every == 0:
            per_code = q.codes.numel() / vq_cfg.codebook_size  # uniform usage per batch
            restarted = model.quantize.restart_dead_codes(z.detach(), train_cfg.dead_code_ratio * per_code, gen)
        done = step + 1
        if callback is not None or out is not None:
            if (train_cfg.log_every and done % train_cfg.log_every == 0) or done == train_cfg.steps:
                batch_stats = code_stats(q.codes, vq_cfg.codebook_size)
                row = {"step": done, "lr": lr, "loss": loss.item(), **{k: v.item() for k, v in parts.items()},
                       "restarted": restarted,
                       "batch_codebook_usage": batch_stats["codebook_usage"],
                       "batch_perplexity": batch_stats["perplexity"]}
                log.append(row)
                if callback is not None:
                    callback(done, row)
        if out is not None and (done == train_cfg.steps or (train_cfg.ckpt_every and done % train_cfg.ckpt_every == 0)):
            _save_checkpoint(out, model, opt, disc, opt_d, gen, done, train_cfg, log)
    return model.eval()


# ----------------------------------------------------------------------------------------------------------------
# evaluation


@torch.no_grad()
def reconstruct(model: VQModel, images: Images, batch_size: int = 64, device: str | torch.device = "cpu"):
    """Yield (originals, reconstructions, codes) per batch: uint8 (B, 3, H, W) images and (B, h, w) codes."""
    model.eval()
    n = _num_images(images)
    for i in range(0, n, batch_size):
        x = _batch(images, range(i, min(n, i + batch_size))).to(device)
        codes = model.encode(x)
        recon = model.decode_codes(codes)
        yield to_uint8(x).cpu(), to_uint8(recon).cpu(), codes.cpu()


def psnr_uint8(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-image PSNR (dB) of uint8 images (B, 3, H, W), data range 255; identical images give +inf."""
    mse = (a.double() - b.double()).pow(2).flatten(1).mean(1)  # (B,)
    return 10 * torch.log10(255.0**2 / mse)


def evaluate_vq(model: VQModel, images: Images, batch_size: int = 64,
                device: str | torch.device = "cpu") -> dict[str, float]:
    """Reconstruction PSNR and codebook statistics on held-out images.

    PSNR is computed as LlamaGen's reconstruction script does: on the uint8 reconstruction a saved PNG would
    hold, per image, then averaged (perfect reconstructions are capped at 100 dB so the mean stays finite).
    Codebook usage / perplexity are over all code positions of all images (`vq.code_stats`).
    """
    psnrs, all_codes = [], []
    for orig, recon, codes in reconstruct(model, images, batch_size, device):
        psnrs.append(psnr_uint8(orig, recon).clamp(max=100.0))
        all_codes.append(codes.reshape(-1))
    stats = code_stats(torch.cat(all_codes), model.cfg.codebook_size)
    p = torch.cat(psnrs)
    return {"psnr": float(p.mean()), "n_images": int(p.numel()), **stats}


def write_reconstructions(model: VQModel, images: Images, out_dir: str | os.PathLike,
                          names: Sequence[str] | None = None, batch_size: int = 64,
                          device: str | torch.device = "cpu") -> list[Path]:
    """Write each reconstruction as a PNG (atomically) into `out_dir`, for reconstruction FID against the originals.

    `names` are the file names to use (e.g. the originals' names, so that the two folders pair up); by default
    `000000.png`, `000001.png`, ...
    """
    from PIL import Image

    from mars_eval.io import atomic_write

    out = Path(out_dir)
    n = _num_images(images)
    if names is not None and len(names) != n:
        raise MarsRefError(f"{len(names)} names given for {n} images")
    paths, i = [], 0
    for _, recon, _ in reconstruct(model, images, batch_size, device):
        for img in recon.permute(0, 2, 3, 1).numpy():  # (H, W, 3) uint8
            name = names[i] if names is not None else f"{i:06d}.png"
            pil = Image.fromarray(img)
            paths.append(atomic_write(out / name, lambda p, pil=pil: pil.save(p, format="PNG")))
            i += 1
    return paths
