"""`TrainConfig`: every knob of a training run, validated once, loadable from TOML, hashed into the results row."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from mars_eval.errors import MarsEvalError

ENGINES = ("single", "deepspeed")
DTYPES = ("bf16", "fp32", "auto")
SCHEDULES = ("cosine", "constant")
DEVICES = ("auto", "cpu", "cuda")

# Fields that may change when a run is resumed: they do not change what is computed, only how often it is written.
RESUMABLE_CHANGES = frozenset({"ckpt_every", "log_every", "keep_last_ckpts"})


@dataclass(frozen=True)
class TrainConfig:
    """One training run. Defaults follow the paper (AdamW, beta2 0.95, weight decay 0.1, warm-up ratio 0.01)."""

    steps: int
    global_batch: int  # examples per optimiser step, over all processes and accumulation micro-steps
    micro_batch: int  # examples per forward pass on one process; accumulation = global / (micro * world)
    lr: float = 1e-4  # peak learning rate (the paper's value)
    min_lr_ratio: float = 0.1  # the cosine ends at lr * min_lr_ratio
    betas: tuple[float, float] = (0.9, 0.95)
    eps: float = 1e-8
    weight_decay: float = 0.1  # applied to matrices only; norms, biases and other 1-d params get none
    warmup_ratio: float = 0.01  # warm-up steps = ceil(warmup_ratio * steps), as transformers' Trainer counts them
    schedule: str = "cosine"
    grad_clip: float = 1.0  # max global grad norm; 0 disables clipping
    dtype: str = "bf16"  # "bf16": autocast (single) or DeepSpeed bf16 with fp32 master weights; "fp32": exact;
    # "auto": bf16 where the device computes it natively, else fp32 (engine.resolve_dtype)
    seed: int = 0
    ckpt_every: int = 0  # 0: only the final checkpoint
    log_every: int = 1
    keep_last_ckpts: int = 2
    engine: str = "single"
    zero_stage: int = 3
    device: str = "auto"  # "auto": cuda if available else cpu
    extra: dict = field(default_factory=dict)  # free-form, stage-specific settings (e.g. [extra] data paths)

    def __post_init__(self):
        def need(ok: bool, msg: str):
            if not ok:
                raise MarsEvalError(f"train config: {msg}")

        for name in ("steps", "global_batch", "micro_batch", "log_every", "keep_last_ckpts"):
            v = getattr(self, name)
            need(isinstance(v, int) and not isinstance(v, bool) and v >= 1, f"{name} must be an integer >= 1, got {v!r}")
        for name in ("ckpt_every", "seed"):
            v = getattr(self, name)
            need(isinstance(v, int) and not isinstance(v, bool) and v >= 0, f"{name} must be an integer >= 0, got {v!r}")
        need(self.global_batch % self.micro_batch == 0,
             f"global_batch {self.global_batch} is not a multiple of micro_batch {self.micro_batch}")
        for name in ("lr", "min_lr_ratio", "eps", "weight_decay", "warmup_ratio", "grad_clip"):
            v = getattr(self, name)
            need(isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) and v >= 0,
                 f"{name} must be a finite number >= 0, got {v!r}")
        need(self.lr > 0, f"lr must be > 0, got {self.lr!r}")
        need(self.min_lr_ratio <= 1, f"min_lr_ratio must be in [0, 1], got {self.min_lr_ratio!r}")
        need(self.warmup_ratio < 1, f"warmup_ratio must be in [0, 1), got {self.warmup_ratio!r}")
        betas = tuple(self.betas)
        need(len(betas) == 2 and all(isinstance(b, int | float) and 0 <= b < 1 for b in betas),
             f"betas must be two numbers in [0, 1), got {self.betas!r}")
        object.__setattr__(self, "betas", (float(betas[0]), float(betas[1])))
        need(self.schedule in SCHEDULES, f"schedule must be one of {SCHEDULES}, got {self.schedule!r}")
        need(self.dtype in DTYPES, f"dtype must be one of {DTYPES}, got {self.dtype!r}")
        need(self.engine in ENGINES, f"engine must be one of {ENGINES}, got {self.engine!r}")
        need(self.device in DEVICES, f"device must be one of {DEVICES}, got {self.device!r}")
        # Our checkpoint format reads ZeRO-3's partitioned optimiser state; stages 1/2 lay it out differently.
        need(self.zero_stage == 3, f"zero_stage must be 3 (the only stage our checkpoints support), got {self.zero_stage!r}")
        need(isinstance(self.extra, dict), f"extra must be a table, got {self.extra!r}")

    # ---- derived values -------------------------------------------------------------------------------------
    @property
    def warmup_steps(self) -> int:
        return math.ceil(self.warmup_ratio * self.steps)

    def grad_accum(self, world: int) -> int:
        """Micro-steps per optimiser step on each of `world` processes."""
        if self.global_batch % (self.micro_batch * world):
            raise MarsEvalError(f"train config: global_batch {self.global_batch} is not divisible by "
                                f"micro_batch {self.micro_batch} x {world} processes")
        return self.global_batch // (self.micro_batch * world)

    # ---- (de)serialisation ----------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["betas"] = list(self.betas)
        return d

    def hash(self) -> str:
        """Short hash of every field: names the run in results rows."""
        blob = json.dumps(self.to_dict(), sort_keys=True, ensure_ascii=False).encode()
        return hashlib.sha256(blob).hexdigest()[:12]

    def replace(self, **changes) -> TrainConfig:
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_dict(cls, d: dict, source: str = "config") -> TrainConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        for key in d:
            if key not in known:
                raise MarsEvalError(f"{source}: unknown train config key {key!r} (known: {', '.join(sorted(known))})")
        missing = [f.name for f in dataclasses.fields(cls)
                   if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING and f.name not in d]
        if missing:
            raise MarsEvalError(f"{source}: missing train config key(s) {', '.join(missing)}")
        d = dict(d)
        if "betas" in d and isinstance(d["betas"], list):
            d["betas"] = tuple(d["betas"])
        try:
            return cls(**d)
        except MarsEvalError as e:
            raise MarsEvalError(f"{source}: {e}") from None

    @classmethod
    def from_toml(cls, path: str | Path, table: str | None = None) -> TrainConfig:
        """Load from a TOML file; `table` selects a sub-table (e.g. "train") instead of the top level."""
        path = Path(path)
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except OSError as e:
            raise MarsEvalError(f"cannot read train config {path}: {e.strerror or e}") from None
        except tomllib.TOMLDecodeError as e:
            raise MarsEvalError(f"{path}: not valid TOML: {e}") from None
        if table is not None:
            if not isinstance(data.get(table), dict):
                raise MarsEvalError(f"{path}: no [{table}] table")
            data = data[table]
        return cls.from_dict(data, source=str(path))

    def diff_for_resume(self, saved: dict) -> list[str]:
        """Keys whose values differ from a checkpoint's config in a way that would change the computation."""
        mine = self.to_dict()
        keys = (set(mine) | set(saved)) - RESUMABLE_CHANGES
        return sorted(k for k in keys if mine.get(k) != saved.get(k))
