"""Per-step diagnostics (the data of the paper's Fig. 5) and the JSONL log they go to.

Row keys: step, loss, lr, grad_norm (pre-clip, all trainable), grad_norm/<group> (e.g. text, vision), every
mean-type metric of the loss function (e.g. loss/t2i, loss/text, logit_norm/vision) and max-type metric
(e.g. logit_max/vision) reduced over the whole global batch, tokens, loss_tokens, tokens_per_s, step_s, elapsed_s.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import torch
import torch.distributed as dist

from mars_eval.io import atomic_write_text
from mars_eval.train.contract import LossOutput
from mars_eval.train.distributed import DistInfo

# Fields that depend on wall-clock time; everything else in a row is a deterministic function of the run.
TIMING_KEYS = frozenset({"tokens_per_s", "step_s", "elapsed_s"})


def _f(x) -> float:
    return float(x.detach()) if isinstance(x, torch.Tensor) else float(x)


class StepMetrics:
    """Accumulates the LossOutputs of one optimiser step's micro-batches, then reduces them over processes."""

    def __init__(self):
        self.loss_sum = 0.0
        self.n_tokens = 0
        self.n_input = 0
        self.sums: dict[str, list[float]] = {}
        self.maxes: dict[str, float] = {}

    def add(self, out: LossOutput) -> None:
        self.loss_sum += _f(out.loss_sum)
        self.n_tokens += int(out.n_tokens)
        self.n_input += int(out.n_tokens if out.n_input_tokens is None else out.n_input_tokens)
        for k, (s, c) in out.sums.items():
            acc = self.sums.setdefault(k, [0.0, 0.0])
            acc[0] += _f(s)
            acc[1] += _f(c)
        for k, v in out.maxes.items():
            v = _f(v)
            if not math.isnan(v):
                self.maxes[k] = max(self.maxes.get(k, -math.inf), v)

    def reduce(self, info: DistInfo, names: tuple[list[str], list[str]]) -> dict:
        """Global values. `names` = (sum keys, max keys), identical on all ranks (a rank may lack some keys)."""
        sum_keys, max_keys = names
        vec = [self.loss_sum, float(self.n_tokens), float(self.n_input)]
        for k in sum_keys:
            vec += self.sums.get(k, [0.0, 0.0])
        # on the process group's device: NCCL reduces only CUDA tensors
        s = torch.tensor(vec, dtype=torch.float64, device=info.device)
        m = torch.tensor([self.maxes.get(k, -math.inf) for k in max_keys], dtype=torch.float64, device=info.device)
        if info.world > 1:
            dist.all_reduce(s)
            if len(max_keys):
                dist.all_reduce(m, op=dist.ReduceOp.MAX)
        loss_sum, n_tok, n_in = s[:3].tolist()
        row = {"loss": loss_sum / max(n_tok, 1), "loss_tokens": int(n_tok), "tokens": int(n_in)}
        for i, k in enumerate(sum_keys):
            total, count = s[3 + 2 * i].item(), s[4 + 2 * i].item()
            row[k] = total / count if count else None
        for k, v in zip(max_keys, m.tolist(), strict=True):
            row[k] = v if math.isfinite(v) else None
        return row

    def key_names(self, info: DistInfo) -> tuple[list[str], list[str]]:
        """The union of metric names over ranks (ranks may see different tasks in a step)."""
        mine = (sorted(self.sums), sorted(self.maxes))
        if info.world == 1:
            return mine
        gathered: list = [None] * info.world
        dist.all_gather_object(gathered, mine)
        return sorted({k for g in gathered for k in g[0]}), sorted({k for g in gathered for k in g[1]})


def grad_norm_fields(sq: dict[str, float]) -> dict[str, float]:
    row = {"grad_norm": math.sqrt(sum(sq.values()))}
    row.update({f"grad_norm/{g}": math.sqrt(v) for g, v in sorted(sq.items())})
    return row


class StepLog:
    """Append-only JSONL, one row per logged step, flushed and fsynced per row (a crash loses at most the row
    being written). On resume from step s, rows at steps >= s and a torn last line are dropped first."""

    def __init__(self, path: Path, resume_step: int | None):
        self.path = Path(path)
        if resume_step is None:
            atomic_write_text(self.path, "")
        else:
            atomic_write_text(self.path, "".join(json.dumps(r, sort_keys=True) + "\n"
                                                 for r in read_rows(self.path) if r["step"] < resume_step))
        self._f = open(self.path, "a", encoding="utf-8")

    def append(self, row: dict) -> None:
        self._f.write(json.dumps(row, sort_keys=True) + "\n")
        self._f.flush()
        os.fsync(self._f.fileno())

    def close(self) -> None:
        self._f.close()


def read_rows(path: Path) -> list[dict]:
    """Rows of a step log; a torn (unparseable, unterminated) last line is dropped, a bad middle line is an error."""
    from mars_eval.errors import MarsEvalError

    path = Path(path)
    if not path.exists():
        return []
    text = path.read_text(encoding="utf-8")
    lines = text.split("\n")
    rows = []
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            if i == len(lines) - 1:  # the last line has no newline: a write cut short by a crash
                break
            raise MarsEvalError(f"{path}:{i + 1}: not a JSON line") from None
    return rows
