"""Process-group setup and the few collectives the loop needs (gloo on CPU, NCCL on GPU).

Ranks come from the environment variables that torchrun, the deepspeed launcher and our own `launch.py` set
(RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT). A process without them is a 1-process run and
creates no process group (the single engine then needs no torch.distributed at all).
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist


def cache_dir() -> Path:
    """Project cache (DeepSpeed's JIT-built ops live here): $MARS_EVAL_CACHE, else ./.cache (git-ignored)."""
    return Path(os.environ.get("MARS_EVAL_CACHE") or Path.cwd() / ".cache").resolve()


def deepspeed_env() -> dict[str, str]:
    """Environment a DeepSpeed process needs before `import deepspeed`: the CPU accelerator when there is no GPU,
    and the JIT op cache inside the project cache (the first run builds `deepspeed_shm_comm`, ~35-55 s)."""
    env = {"TORCH_EXTENSIONS_DIR": os.environ.get("TORCH_EXTENSIONS_DIR") or str(cache_dir() / "torch_extensions")}
    if not torch.cuda.is_available():
        env["DS_ACCELERATOR"] = os.environ.get("DS_ACCELERATOR", "cpu")
    return env


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass(frozen=True)
class DistInfo:
    rank: int
    world: int
    local_rank: int
    device: torch.device
    owns_group: bool = False  # we created the process group, so we destroy it at the end

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return dist.is_available() and dist.is_initialized()


def pick_device(device: str, local_rank: int) -> torch.device:
    if device == "cuda" and not torch.cuda.is_available():
        from mars_eval.errors import MarsEvalError

        raise MarsEvalError("train config: device = \"cuda\" but torch sees no CUDA device")
    if device == "cuda" or (device == "auto" and torch.cuda.is_available()):
        torch.cuda.set_device(local_rank)
        return torch.device("cuda", local_rank)
    return torch.device("cpu")


def setup(engine: str, device: str) -> DistInfo:
    """Join the process group named by the environment (or none for a plain 1-process single-engine run)."""
    rank = int(os.environ.get("RANK", 0))
    world = int(os.environ.get("WORLD_SIZE", 1))
    local_rank = int(os.environ.get("LOCAL_RANK", rank))
    dev = pick_device(device, local_rank)
    backend = "nccl" if dev.type == "cuda" else "gloo"
    owns = not dist.is_initialized() and (engine == "deepspeed" or world > 1)
    if engine == "deepspeed":
        for k, v in deepspeed_env().items():
            os.environ.setdefault(k, v)
        import deepspeed

        if not dist.is_initialized():
            deepspeed.init_distributed(dist_backend=backend)
    elif world > 1 and not dist.is_initialized():
        dist.init_process_group(backend=backend, device_id=dev if dev.type == "cuda" else None)
    return DistInfo(rank, world, local_rank, dev, owns)


def all_reduce(t: torch.Tensor, info: DistInfo, op=dist.ReduceOp.SUM) -> torch.Tensor:
    if info.world > 1:
        dist.all_reduce(t, op=op)
    return t


def barrier(info: DistInfo) -> None:
    if info.world > 1:
        dist.barrier()


def teardown(info: DistInfo) -> None:
    if info.owns_group and info.active:
        dist.destroy_process_group()
