"""The engine interface the loop drives, its plain-torch implementation, and the factory.

Per optimiser step the loop calls: `backward(loss, last)` once per micro-batch (the loss already divided by the
global token count), `grad_norms()` (pre-clip, global), `step()` (clip + AdamW + schedule + zero grads).

dtype "auto" is bf16 on a device with native bf16 arithmetic and fp32 elsewhere: a CPU without AVX512-BF16 / AMX
emulates bf16 matrix products ~10x slower than fp32 (measured on an AVX2-only EPYC), so bf16 there only costs.

SingleEngine: plain torch with fp32 parameters (the master weights) and bf16 autocast when dtype is "bf16". With
WORLD_SIZE > 1 it sums gradients over processes with one all-reduce per step (DDP's arithmetic without its bucketing),
which is exact because every process already divided its loss by the global token count.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Callable
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn

from mars_eval.train.checkpoint import CheckpointWriter, read_json, read_tensors, read_tree
from mars_eval.train.config import TrainConfig
from mars_eval.train.distributed import DistInfo
from mars_eval.train.optim import build_optimizer, build_scheduler

GroupFn = Callable[[str], str]


def cpu_flags() -> set[str]:
    """The CPU's feature flags (Linux /proc/cpuinfo); empty where unknown."""
    try:
        return set(Path("/proc/cpuinfo").read_text(encoding="utf-8").split())
    except OSError:
        return set()


def native_bf16(device: torch.device) -> bool:
    """Whether `device` has bf16 arithmetic in hardware (CUDA: torch says; CPU: the avx512_bf16 / amx_bf16 flags)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return bool({"avx512_bf16", "amx_bf16"} & cpu_flags())


def resolve_dtype(dtype: str, device: torch.device) -> str:
    """A TrainConfig dtype as run on `device`: "auto" becomes "bf16" or "fp32"."""
    if dtype != "auto":
        return dtype
    return "bf16" if native_bf16(device) else "fp32"


def param_digest(name: str, t: torch.Tensor) -> str:
    """sha256 of one parameter's name and bytes."""
    h = hashlib.sha256(name.encode())
    h.update(t.detach().to("cpu").contiguous().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def frozen_fingerprint(named: list[tuple[str, torch.Tensor]]) -> str:
    """sha256 over the per-parameter digests of the frozen parameters: proves they never changed."""
    return hashlib.sha256("".join(param_digest(n, t) for n, t in named).encode()).hexdigest()


class SingleEngine:
    def __init__(self, model: nn.Module, cfg: TrainConfig, info: DistInfo):
        self.cfg, self.info = cfg, info
        self.dtype = resolve_dtype(cfg.dtype, info.device)
        self.model = model.to(info.device, dtype=torch.float32)
        self.module = self.model  # what the loss function calls
        self.trainable = [(n, p) for n, p in self.model.named_parameters() if p.requires_grad]
        self.optimizer = build_optimizer(self.model, cfg)
        self.scheduler = build_scheduler(self.optimizer, cfg)

    def autocast(self):
        if self.dtype == "bf16":
            return torch.autocast(device_type=self.info.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def backward(self, loss: torch.Tensor, last: bool) -> None:
        loss.backward()
        if last and self.info.world > 1:
            for _, p in self.trainable:  # every rank must reduce the same tensors, even unused ones
                if p.grad is None:
                    p.grad = torch.zeros_like(p)
                dist.all_reduce(p.grad)

    def grad_norms(self, group_of: GroupFn) -> dict[str, float]:
        sq: dict[str, float] = {}
        for n, p in self.trainable:
            if p.grad is not None:
                g = group_of(n)
                sq[g] = sq.get(g, 0.0) + float(p.grad.detach().double().pow(2).sum())
        return sq

    def lr(self) -> float:
        return float(self.optimizer.param_groups[0]["lr"])

    def step(self) -> None:
        if self.cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_([p for _, p in self.trainable], self.cfg.grad_clip, foreach=False)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)

    # ---- state ------------------------------------------------------------------------------------------------
    def trainable_state(self) -> dict[str, torch.Tensor]:
        return {n: p.detach() for n, p in self.trainable}

    def frozen_fingerprint(self) -> str:
        return frozen_fingerprint([(n, p) for n, p in self.model.named_parameters() if not p.requires_grad])

    def save(self, w: CheckpointWriter) -> None:
        if self.info.is_main:  # replicated state: one copy
            w.write_tensors("model.safetensors", self.trainable_state())
            w.write_tree("optimizer", self.optimizer.state_dict())
            w.write_json("scheduler.json", self.scheduler.state_dict())

    def load(self, directory) -> None:
        weights = read_tensors(directory / "model.safetensors")
        _copy_into(self.trainable, weights, directory / "model.safetensors")
        self.optimizer.load_state_dict(read_tree(directory, "optimizer"))
        self.scheduler.load_state_dict(read_json(directory / "scheduler.json"))


def _copy_into(named: list[tuple[str, nn.Parameter]], weights: dict[str, torch.Tensor], source) -> None:
    from mars_eval.errors import MarsEvalError

    names = {n for n, _ in named}
    if set(weights) != names:
        missing, extra = sorted(names - set(weights)), sorted(set(weights) - names)
        raise MarsEvalError(f"{source}: parameters do not match the model (missing {missing[:3]}, unexpected {extra[:3]})")
    with torch.no_grad():
        for n, p in named:
            if weights[n].shape != p.shape:
                raise MarsEvalError(f"{source}: {n} has shape {tuple(weights[n].shape)}, the model {tuple(p.shape)}")
            p.copy_(weights[n])


def make_engine(model: nn.Module, cfg: TrainConfig, info: DistInfo):
    if cfg.engine == "deepspeed":
        from mars_eval.train.engine_deepspeed import DeepSpeedEngine

        return DeepSpeedEngine(model, cfg, info)
    return SingleEngine(model, cfg, info)
