"""DeepSpeed ZeRO-3 engine (CPU with gloo, GPU with NCCL) behind the same interface as SingleEngine.

Choices, and why:
- Client optimiser = torch.optim.AdamW (our `build_optimizer`), not DeepSpeed's FusedAdam/CPUAdam: the same
  arithmetic as the single engine, and no extra JIT build. (DeepSpeed still JIT-builds `deepspeed_shm_comm` once per
  TORCH_EXTENSIONS_DIR on the CPU accelerator: its TorchBackend loads it unconditionally; later runs reuse the cache.)
- Our own LambdaLR drives the lr of the client optimiser's param groups (which ZeRO-3 steps), so the schedule is
  the single engine's.
- dtype "bf16": DeepSpeed's bf16 mode (bf16 weights for compute, fp32 master weights and optimiser state).
- Checkpoints: DeepSpeed's own save/load_checkpoint go through `torch.load(weights_only=False)` (they unpickle
  whatever the file holds), so we do not use them. Instead: the consolidated fp32 master weights of trainable
  parameters (`safe_get_full_fp32_param`, rank 0 writes model.safetensors, same format as the single engine), and
  per rank the ZeRO-3 optimiser's own state dict (fp32 partitions + AdamW moments) as safetensors + JSON, restored
  through the optimiser's `load_state_dict`, which also refreshes the bf16 partitions from the fp32 ones. Resume
  therefore needs the same world size (as DeepSpeed's own non-universal checkpoints do).
- Loss scaling: `engine.backward` divides by the accumulation steps and ZeRO averages over ranks; the loop's loss is
  already normalised by the global token count, so we multiply by gas * world to get the plain sum of gradients.
"""

from __future__ import annotations

import contextlib
import hashlib

import deepspeed
import torch
import torch.distributed as dist
from deepspeed.utils import safe_get_full_fp32_param, safe_get_local_grad
from torch import nn

from mars_eval.errors import MarsEvalError
from mars_eval.train.checkpoint import CheckpointWriter, read_json, read_tree
from mars_eval.train.config import TrainConfig
from mars_eval.train.distributed import DistInfo
from mars_eval.train.engine import GroupFn, param_digest, resolve_dtype
from mars_eval.train.optim import build_optimizer, build_scheduler

_SAVED_KEYS = ("optimizer_state_dict", "fp32_flat_groups", "partition_count", "overflow", "dynamic_loss_scale")


def ds_config(cfg: TrainConfig, world: int, device: torch.device) -> dict:
    return {
        "train_batch_size": cfg.global_batch,
        "train_micro_batch_size_per_gpu": cfg.micro_batch,
        "gradient_accumulation_steps": cfg.grad_accum(world),
        "zero_optimization": {"stage": cfg.zero_stage},
        "bf16": {"enabled": resolve_dtype(cfg.dtype, device) == "bf16"},
        "gradient_clipping": cfg.grad_clip,
        "steps_per_print": 2**31 - 1,
        "wall_clock_breakdown": False,
    }


class DeepSpeedEngine:
    def __init__(self, model: nn.Module, cfg: TrainConfig, info: DistInfo):
        self.cfg, self.info = cfg, info
        self.gas = cfg.grad_accum(info.world)
        optimizer = build_optimizer(model, cfg)
        self.scheduler = build_scheduler(optimizer, cfg)
        self.engine, self.optimizer, _, _ = deepspeed.initialize(model=model, optimizer=optimizer,
                                                                 config=ds_config(cfg, info.world, info.device))
        self.module = self.engine  # the loss function calls the engine (attribute access falls through to the model)
        self.client_optimizer = optimizer
        self.trainable = [(n, p) for n, p in self.engine.module.named_parameters() if p.requires_grad]

    def autocast(self):
        return contextlib.nullcontext()  # DeepSpeed's bf16 mode casts the model itself

    def backward(self, loss: torch.Tensor, last: bool) -> None:
        self.engine.backward(loss * (self.gas * self.info.world))
        if not last:
            self.engine.step()  # a non-boundary micro-step: DeepSpeed only advances its counter

    def grad_norms(self, group_of: GroupFn) -> dict[str, float]:
        """Squared norms per group from each rank's gradient partition, summed over ranks (pre-clip)."""
        groups = sorted({group_of(n) for n, _ in self.trainable})
        sq = torch.zeros(len(groups), dtype=torch.float64, device=self.info.device)
        for n, p in self.trainable:
            g = safe_get_local_grad(p)
            if g is not None:
                sq[groups.index(group_of(n))] += g.detach().double().pow(2).sum().to(sq.device)
        dist.all_reduce(sq)
        return dict(zip(groups, sq.tolist(), strict=True))

    def lr(self) -> float:
        return float(self.client_optimizer.param_groups[0]["lr"])

    def step(self) -> None:
        self.engine.step()  # the boundary micro-step: clip + AdamW on the partitions + re-partition
        self.scheduler.step()

    # ---- state ------------------------------------------------------------------------------------------------
    def trainable_state(self) -> dict[str, torch.Tensor]:
        """Full fp32 master weights (a collective: every rank must call it)."""
        return {n: safe_get_full_fp32_param(p).detach().cpu() for n, p in self.trainable}

    def frozen_fingerprint(self) -> str:
        """Fingerprint of the frozen parameters, gathered one at a time (a collective with bounded memory)."""
        digests = []
        for n, p in self.engine.module.named_parameters():
            if not p.requires_grad:
                with deepspeed.zero.GatheredParameters([p]):
                    digests.append(param_digest(n, p))
        return hashlib.sha256("".join(digests).encode()).hexdigest()

    def save(self, w: CheckpointWriter) -> None:
        weights = self.trainable_state()
        if self.info.is_main:
            w.write_tensors("model.safetensors", weights)
            w.write_json("scheduler.json", self.scheduler.state_dict())
        sd = self.optimizer.state_dict()
        w.write_tree(f"optimizer_rank{self.info.rank}", {k: sd[k] for k in _SAVED_KEYS})

    def load(self, directory) -> None:
        saved = read_tree(directory, f"optimizer_rank{self.info.rank}")
        if saved["partition_count"] != self.info.world:
            raise MarsEvalError(f"checkpoint {directory} was written by {saved['partition_count']} ZeRO-3 processes, "
                                f"this run has {self.info.world}")
        sd = self.optimizer.state_dict()  # template: keeps this run's loss scaler and stage tag
        sd.update(saved)
        states = [None] * self.info.world
        states[self.info.rank] = sd
        self.optimizer.checkpoint_event_prologue()
        self.optimizer.load_state_dict(states, load_optimizer_states=True)
        self.optimizer.checkpoint_event_epilogue()
        self.scheduler.load_state_dict(read_json(directory / "scheduler.json"))
