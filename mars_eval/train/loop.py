"""The training loop run by every process: deterministic batches, global-token normalisation, diagnostics,
atomic checkpoints and exact resume. Engine-agnostic (see engine.py / engine_deepspeed.py)."""

from __future__ import annotations

import math
import random
import subprocess
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mars_eval.errors import MarsEvalError
from mars_eval.io import atomic_write_json
from mars_eval.train.checkpoint import CheckpointWriter, find_latest, read_json, read_tree, verify
from mars_eval.train.config import TrainConfig
from mars_eval.train.contract import Job
from mars_eval.train.diagnostics import StepLog, StepMetrics, grad_norm_fields, read_rows
from mars_eval.train.distributed import DistInfo, all_reduce, barrier, setup, teardown
from mars_eval.train.engine import make_engine, resolve_dtype
from mars_eval.train.sampler import rank_slice, step_batch

LOG_NAME = "train_log.jsonl"
RESULTS_NAME = "results.json"


def to_device(batch: Any, device: torch.device) -> Any:
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {k: to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, list | tuple):
        return type(batch)(to_device(v, device) for v in batch)
    return batch


def seed_all(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state() -> dict:
    st = {"torch": torch.get_rng_state(), "numpy": _np_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        st["cuda"] = torch.cuda.get_rng_state_all()
    return st


def _np_state():
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return [name, keys.tolist(), int(pos), int(has_gauss), float(cached)]


def set_rng_state(st: dict) -> None:
    torch.set_rng_state(st["torch"])
    name, keys, pos, has_gauss, cached = st["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    version, internal, gauss = st["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in st and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(list(st["cuda"]))


def git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True,
                             cwd=Path(__file__).parent, timeout=10)
        return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"


class _Bar:
    """rich progress bar on rank 0 (the CLI's style), with tokens/s."""

    def __init__(self, enabled: bool, total: int, start: int):
        self.p = None
        if enabled:
            from mars_eval.progress import progress

            self.p = progress()
            self.p.start()
            self.task = self.p.add_task("train", total=total, completed=start, rate="")

    def update(self, row: dict) -> None:
        if self.p is not None:
            self.p.update(self.task, completed=row["step"] + 1,
                          rate=f"loss {row['loss']:.4f}  {row['tokens_per_s']:,.0f} tok/s")

    def close(self) -> None:
        if self.p is not None:
            self.p.stop()


def _check_resume(ckpt: Path, cfg: TrainConfig, info: DistInfo) -> dict:
    verify(ckpt)
    meta = read_json(ckpt / "trainer.json")
    diff = cfg.diff_for_resume(meta["config"])
    if diff:
        raise MarsEvalError(f"cannot resume from {ckpt}: the config differs in {', '.join(diff)}")
    if cfg.engine == "deepspeed" and meta["world"] != info.world:
        raise MarsEvalError(f"cannot resume from {ckpt}: written by {meta['world']} ZeRO-3 processes, now {info.world}")
    return meta


def train_worker(cfg: TrainConfig, job: Job, out_dir: str | Path, resume: bool = False,
                 show_progress: bool = True) -> dict | None:
    """Train in this process (rank and world from the environment). Returns the results row on rank 0."""
    out_dir = Path(out_dir)
    ckpt_root = out_dir / "ckpt"
    info = setup(cfg.engine, cfg.device)
    try:
        return _train(cfg, job, out_dir, ckpt_root, info, resume, show_progress)
    finally:
        teardown(info)


def _train(cfg, job: Job, out_dir: Path, ckpt_root: Path, info: DistInfo, resume: bool, show_progress: bool):
    gas = cfg.grad_accum(info.world)
    ckpt = find_latest(ckpt_root) if resume else None
    if resume and ckpt is None:
        raise MarsEvalError(f"--resume: no checkpoint in {ckpt_root}")
    meta = _check_resume(ckpt, cfg, info) if ckpt is not None else None
    if not resume and find_latest(ckpt_root) is not None:
        raise MarsEvalError(f"{ckpt_root} already holds checkpoints: pass --resume or use a new output directory")

    seed_all(cfg.seed)  # the same on every rank: build_model must give identical weights everywhere
    engine = make_engine(job.build_model(), cfg, info)
    frozen_start = engine.frozen_fingerprint()
    start, elapsed0 = 0, 0.0
    if meta is not None:
        if meta["frozen_sha256"] != frozen_start:
            raise MarsEvalError(f"cannot resume from {ckpt}: the frozen parameters of the rebuilt model differ")
        engine.load(ckpt)
        set_rng_state(read_tree(ckpt, f"rng_rank{info.rank}"))
        start, elapsed0 = meta["step"], meta["elapsed_s"]

    log = StepLog(out_dir / LOG_NAME, resume_step=start if meta is not None else None) \
        if info.is_main else None
    bar = _Bar(show_progress and info.is_main, cfg.steps, start)
    group_of, loss_fn, data = job.loss_fn.param_group, job.loss_fn, job.data
    t_run = time.perf_counter()
    last_row, tokens_seen = None, 0
    try:
        for step in range(start, cfg.steps):
            t0 = time.perf_counter()
            indices, seeds = step_batch(cfg.seed, step, len(data), cfg.global_batch)
            mine = rank_slice(cfg.global_batch, info.rank, info.world)
            indices, seeds = indices[mine], seeds[mine]
            micro = [data.collate(indices[i:i + cfg.micro_batch], seeds[i:i + cfg.micro_batch])
                     for i in range(0, len(indices), cfg.micro_batch)]
            counts = [int(loss_fn.count_tokens(b)) for b in micro]
            n_global = int(all_reduce(torch.tensor([sum(counts)], dtype=torch.float64, device=info.device),
                                        info).item())
            if n_global == 0:
                raise MarsEvalError(f"step {step}: the global batch has no loss tokens")
            metrics = StepMetrics()
            for k, (batch, count) in enumerate(zip(micro, counts, strict=True)):
                with engine.autocast():
                    out = loss_fn(engine.module, to_device(batch, info.device))
                if int(out.n_tokens) != count:
                    raise MarsEvalError(f"step {step}: the loss function counted {out.n_tokens} tokens in a batch for "
                                        f"which count_tokens gave {count}")
                engine.backward(out.loss_sum / n_global, last=k == gas - 1)
                metrics.add(out)
            grad = grad_norm_fields(engine.grad_norms(group_of))
            lr = engine.lr()
            engine.step()
            row = {"step": step, "lr": lr, **metrics.reduce(info, metrics.key_names(info)), **grad}
            dt = time.perf_counter() - t0
            tokens_seen += row["tokens"]
            row.update(step_s=dt, tokens_per_s=row["tokens"] / dt, elapsed_s=elapsed0 + time.perf_counter() - t_run)
            if not math.isfinite(row["loss"]):
                raise MarsEvalError(f"step {step}: the loss is {row['loss']}")
            if log is not None and (step % cfg.log_every == 0 or step == cfg.steps - 1):
                log.append(row)
            bar.update(row)
            last_row = row
            done = step + 1
            if done == cfg.steps or (cfg.ckpt_every and done % cfg.ckpt_every == 0):
                _save(engine, cfg, info, ckpt_root, done, row["elapsed_s"], frozen_start)
    finally:
        bar.close()
        if log is not None:
            log.close()
    wall = time.perf_counter() - t_run
    if not info.is_main:
        return None
    if last_row is None and start > 0:  # resumed at the end (killed after the last checkpoint): the logged last step
        logged = read_rows(out_dir / LOG_NAME)
        last_row = logged[-1] if logged else None
    results = {
        "config_hash": cfg.hash(), "git_commit": git_commit(), "seed": cfg.seed, "engine": cfg.engine,
        "world": info.world, "dtype": resolve_dtype(cfg.dtype, info.device), "steps": cfg.steps,
        "resumed_from": start if meta else None,
        "final_loss": last_row["loss"] if last_row else None,
        "final": {k: v for k, v in (last_row or {}).items() if k not in ("step",)},
        "tokens_per_s": tokens_seen / wall if wall > 0 else None, "wall_s": wall,
        "frozen_sha256": frozen_start, "config": cfg.to_dict(),
    }
    atomic_write_json(out_dir / RESULTS_NAME, results)
    return results


def _save(engine, cfg: TrainConfig, info: DistInfo, root: Path, step: int, elapsed: float, frozen_start: str):
    w = CheckpointWriter(root, step)
    frozen_now = engine.frozen_fingerprint()
    if frozen_now != frozen_start:
        raise MarsEvalError(f"step {step}: frozen parameters changed during training")
    if info.is_main:
        w.prepare()
    barrier(info)
    engine.save(w)
    w.write_tree(f"rng_rank{info.rank}", rng_state())
    if info.is_main:
        w.write_json("trainer.json", {"step": step, "config": cfg.to_dict(), "config_hash": cfg.hash(),
                                      "world": info.world, "engine": cfg.engine, "elapsed_s": elapsed,
                                      "frozen_sha256": frozen_now, "data_position": {"next_step": step}})
    barrier(info)
    if info.is_main:
        w.commit(cfg.keep_last_ckpts)
    barrier(info)

