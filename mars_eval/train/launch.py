"""Start a training run: in this process, as N local processes, or under torchrun / the deepspeed launcher.

In Python:
    run_training(cfg, build_model, loss_fn, data, out_dir, nproc=2)
nproc > 1 (and every DeepSpeed run, so that its process group and globals stay out of the caller) spawns fresh
processes with MASTER_ADDR=127.0.0.1 and a free port; the three job objects are pickled into them, so they must be
module-level functions / classes (or functools.partial of them).

From a shell, on one or many machines, every process runs `python -m mars_eval.train.launch`; a job is named by an
importable factory "package.module:function" returning a `Job` (optionally with --job-kwargs JSON):
    torchrun --nproc-per-node 2 -m mars_eval.train.launch --job mars_eval.train.toy:toy_job \
        --config run.toml --out runs/x [--resume]
    deepspeed --hostfile hostfile --no_local_rank --module mars_eval.train.launch --job pkg.mod:job \
        --config run.toml --out /shared/runs/x          # multi-node: one line per host "host slots=N" in hostfile
Multi-node runs need `out` on a filesystem all nodes share (every rank writes its checkpoint shard there).
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
from pathlib import Path

import torch
import torch.multiprocessing as mp

from mars_eval.errors import MarsEvalError
from mars_eval.train.config import TrainConfig
from mars_eval.train.contract import BatchSource, Job, LossFn
from mars_eval.train.distributed import deepspeed_env, free_port
from mars_eval.train.loop import RESULTS_NAME, train_worker


def _check(cfg: TrainConfig, job: Job, out_dir: Path, nproc: int) -> None:
    if nproc < 1:
        raise MarsEvalError(f"nproc must be >= 1, got {nproc}")
    cfg.grad_accum(nproc)
    if not isinstance(job.loss_fn, LossFn):
        raise MarsEvalError(f"loss_fn {job.loss_fn!r} lacks __call__/count_tokens/param_group")
    if not isinstance(job.data, BatchSource):
        raise MarsEvalError(f"data {job.data!r} lacks __len__/collate")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise MarsEvalError(f"cannot create output directory {out_dir}: {e.strerror or e}") from None


def run_training(cfg: TrainConfig, build_model, loss_fn: LossFn, data: BatchSource, out_dir: str | Path, *,
                 nproc: int = 1, resume: bool = False, progress: bool = True) -> dict:
    """Train and return the results row (also written to out_dir/results.json)."""
    out_dir = Path(out_dir)
    job = Job(build_model, loss_fn, data)
    _check(cfg, job, out_dir, nproc)
    if nproc == 1 and cfg.engine == "single":
        return train_worker(cfg, job, out_dir, resume=resume, show_progress=progress)
    env = {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port()), "WORLD_SIZE": str(nproc)}
    if cfg.engine == "deepspeed":
        env.update(deepspeed_env())
    (out_dir / RESULTS_NAME).unlink(missing_ok=True)
    try:
        mp.start_processes(_spawned, args=(env, cfg, job, out_dir, resume, progress), nprocs=nproc,
                           join=True, start_method="spawn")
    except mp.ProcessRaisedException as e:
        last = [ln for ln in str(e).strip().splitlines() if ln.strip()][-1]
        raise MarsEvalError(f"a training process failed: {last}") from None
    except mp.ProcessExitedException as e:
        raise MarsEvalError(f"a training process died: {e}") from None
    return json.loads((out_dir / RESULTS_NAME).read_text(encoding="utf-8"))


def _spawned(rank: int, env: dict, cfg: TrainConfig, job: Job, out_dir: Path, resume: bool, progress: bool):
    os.environ.update(env, RANK=str(rank), LOCAL_RANK=str(rank))
    if "OMP_NUM_THREADS" not in os.environ:  # share the cores instead of oversubscribing them
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // int(env["WORLD_SIZE"])))
    train_worker(cfg, job, out_dir, resume=resume, show_progress=progress)


def load_job(spec: str, kwargs: dict | None = None) -> Job:
    """"package.module:function" -> function(**kwargs), which must return a Job (or a 3-tuple)."""
    mod_name, _, fn_name = spec.partition(":")
    if not mod_name or not fn_name:
        raise MarsEvalError(f"--job must look like package.module:function, got {spec!r}")
    try:
        fn = getattr(importlib.import_module(mod_name), fn_name)
    except (ImportError, AttributeError) as e:
        raise MarsEvalError(f"cannot import job {spec!r}: {e}") from None
    return Job(*fn(**(kwargs or {})))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m mars_eval.train.launch", description=__doc__.split("\n")[0])
    p.add_argument("--job", required=True, help="package.module:function returning a Job")
    p.add_argument("--job-kwargs", default="{}", help="JSON object of keyword arguments for the job factory")
    p.add_argument("--config", required=True, type=Path, help="TOML file with the TrainConfig keys")
    p.add_argument("--table", default=None, help="TOML sub-table holding the keys (default: top level)")
    p.add_argument("--out", required=True, type=Path, help="run directory (log, checkpoints, results)")
    p.add_argument("--resume", action="store_true", help="continue from the latest checkpoint in --out")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--local_rank", type=int, default=None, help=argparse.SUPPRESS)  # added by the deepspeed launcher
    a = p.parse_args(argv)
    try:
        cfg = TrainConfig.from_toml(a.config, a.table)
        job = load_job(a.job, json.loads(a.job_kwargs))
        world = int(os.environ.get("WORLD_SIZE", 1))
        _check(cfg, job, a.out, world)
        train_worker(cfg, job, a.out, resume=a.resume, show_progress=not a.no_progress)
    except MarsEvalError as e:
        print(f"error: {' '.join(str(e).split())}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
