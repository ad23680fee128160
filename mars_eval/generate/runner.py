"""Orchestrate one generation run: check the folder's job, split the missing images over N worker processes,
report progress, and write the manifest last.

Why the pieces look as they do:
- Results must not depend on the process count or on where a run was killed. Per-image seeds
  make the sampling independent of the batch, but not the floating-point rounding: CPU and GPU matmuls give
  results that differ in the last bits with the batch size, the padding and the thread count, and that flips a
  sampled token or a rounded pixel now and then. So every image is computed in a canonical batch: the job's
  item list cut into fixed chunks of `batch_size`, each chunk always computed whole, with the same shapes and
  the same number of threads. Processes take whole chunks; a resumed run recomputes the chunks that miss an
  image. `batch_size`, `threads` and the device are therefore recorded in the job (`compute`) and a resume
  must use the same ones; `nproc` is free.
- Every PNG is written atomically (folder.py) and the manifest, written last, marks completion; stale
  temporary files of a killed run are removed before the manifest is written.
- Workers are started with `spawn` (no forked torch/OpenMP state) and exit on their own when the parent dies
  (e.g. SIGKILL), so a resumed run never races with orphans for long. A lock file keeps two runs out of one
  folder.
"""

from __future__ import annotations

import fcntl
import multiprocessing as mp
import os
import queue as queue_mod
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from mars_eval.errors import MarsEvalError
from mars_eval.generate.folder import (
    JOB,
    MANIFEST,
    Item,
    Job,
    check_or_write_job,
    pending,
    run_shard,
    write_manifest,
)
from mars_eval.generate.generator import BundleGenerator, SamplerSettings
from mars_eval.io import writable_dir
from mars_eval.prompts import PromptSet
from mars_ref.errors import MarsRefError

LOCK = ".generate.lock"
# on_progress(images_done_now, images_to_compute): after every finished batch, and once with 0 at the start
ProgressFn = Callable[[int, int], None]


@dataclass(frozen=True)
class RunOptions:
    """How to run. `batch_size`, `threads` and `device` fix the floating-point rounding (see the module doc),
    so they are part of the job; `nproc` never changes a byte."""

    batch_size: int = 8
    nproc: int = 1
    device: str = "cpu"  # "cuda" gives worker r the GPU r % device_count
    threads: int = 1  # torch threads per worker; parallelism comes from nproc (more threads need more cores)

    def __post_init__(self):
        for name in ("batch_size", "nproc", "threads"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise MarsEvalError(f"{name.replace('_', '-')} must be an integer >= 1, got {v!r}")

    def compute(self) -> dict:
        """What determines the rounding: recorded in the job, so that a resume computes the same way."""
        kind = self.device.split(":")[0]
        if kind == "cuda":
            import torch

            if not torch.cuda.is_available():
                raise MarsEvalError(f"device {self.device!r} requested but no CUDA device is available")
            kind = torch.cuda.get_device_name(_worker_device(self.device, 0))
        return {"device": kind, "batch_size": self.batch_size, "threads": self.threads}


def make_job(prompts: PromptSet, generator: BundleGenerator, run: RunOptions, images_per_prompt: int = 1,
             base_seed: int = 42, use_prompt_seeds: bool | None = None) -> Job:
    """The job spec of a run; use_prompt_seeds=None: per-prompt seeds when the set carries them (COCO-30k)."""
    if isinstance(images_per_prompt, bool) or not isinstance(images_per_prompt, int) or images_per_prompt < 1:
        raise MarsEvalError(f"images-per-prompt must be an integer >= 1, got {images_per_prompt!r}")
    if use_prompt_seeds is None:
        use_prompt_seeds = any(p.seed is not None for p in prompts)
    settings = {**generator.describe(), "compute": run.compute()}
    return Job(prompts, images_per_prompt, int(base_seed), bool(use_prompt_seeds), settings)


def chunks(items: list[Item], batch_size: int) -> list[list[Item]]:
    """The canonical batches: runs of `batch_size` items of the whole job (the last may be short)."""
    return [items[i : i + batch_size] for i in range(0, len(items), batch_size)]


def chunks_to_compute(out_dir: Path, items: list[Item], batch_size: int) -> list[list[Item]]:
    """Chunks that miss an image (computed whole, so that every image comes from its canonical batch)."""
    return [c for c in chunks(items, batch_size) if pending(out_dir, c)]


@contextmanager
def folder_lock(out_dir: Path) -> Iterator[None]:
    """Refuse a second run writing into the same folder at the same time (the lock dies with its process)."""
    path = out_dir / LOCK
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as e:
        raise MarsEvalError(f"cannot create {path}: {e.strerror or e}") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise MarsEvalError(f"another generate run is writing to {out_dir}") from None
        yield
    finally:
        os.close(fd)


def remove_stale_temporaries(out_dir: Path, items: list[Item]) -> int:
    """Delete `.NAME.*.tmp` files that a killed run left behind (only names our atomic writes use)."""
    names = {it.file_name for it in items} | {MANIFEST, JOB}
    n = 0
    for p in out_dir.glob(".*.tmp"):
        stem = p.name[1:].rsplit(".", 2)[0]  # ".00000_000.png.abc123.tmp" -> "00000_000.png"
        if stem in names and p.is_file():
            p.unlink(missing_ok=True)
            n += 1
    return n


def generate_folder(ckpt: str | Path, prompts: PromptSet, out_dir: str | Path, *, images_per_prompt: int = 1,
                    base_seed: int = 42, use_prompt_seeds: bool | None = None,
                    sampler: dict | None = None, run: RunOptions | None = None,
                    on_progress: ProgressFn | None = None) -> dict:
    """Generate every missing image of the job into `out_dir`, then write the manifest; returns a summary.

    sampler: overrides of the bundle's defaults (cfg_scale, temperature, top_k, top_p, nktp_steps; None keeps
    the default). on_progress(images_done_now, images_to_compute) is called after every batch.
    """
    import torch

    from mars_eval.bundle import Bundle

    run = run or RunOptions()
    out_dir = Path(out_dir)
    # load (and so validate) the checkpoint before any work; with workers, on the CPU, as they load their own
    bundle = Bundle.load(ckpt, device=_worker_device(run.device, 0) if run.nproc == 1 else "cpu")
    generator = BundleGenerator(bundle, SamplerSettings.from_bundle(bundle.info, **(sampler or {})))
    job = make_job(prompts, generator, run, images_per_prompt, base_seed, use_prompt_seeds)
    settings = generator.settings
    lengths = {p: generator.prompt_length(p) for p in dict.fromkeys(it.prompt for it in job.items())}
    if run.nproc > 1:
        del bundle, generator
    writable_dir(out_dir)
    t0 = time.perf_counter()
    with folder_lock(out_dir):
        check_or_write_job(out_dir, job)
        items = job.items()
        todo = chunks_to_compute(out_dir, items, run.batch_size)
        n_todo = sum(len(c) for c in todo)
        if on_progress:
            on_progress(0, n_todo)
        if todo and run.nproc == 1:
            threads = torch.get_num_threads()
            torch.set_num_threads(run.threads)
            try:
                _run_chunks(out_dir, todo, generator, run.batch_size,
                            (lambda n: on_progress(n, n_todo)) if on_progress else None)
            finally:
                torch.set_num_threads(threads)
        elif todo:
            _run_workers(Path(ckpt), out_dir, todo, settings, run, on_progress, n_todo)
        seconds = time.perf_counter() - t0
        remove_stale_temporaries(out_dir, items)
        manifest = write_manifest(out_dir, job, lengths.__getitem__)
    truncated = sum(1 for it in items if lengths[it.prompt][0] < lengths[it.prompt][1])
    return {"out": str(out_dir), "manifest": str(manifest), "prompt_set": prompts.name,
            "prompts": len(prompts), "images": len(items), "computed": n_todo, "skipped": len(items) - n_todo,
            "truncated_prompt_images": truncated,
            "seconds": round(seconds, 3), "images_per_s": round(n_todo / seconds, 3) if n_todo else None,
            "nproc": run.nproc, **job.settings}


def _run_chunks(out_dir: Path, todo: list[list[Item]], generator, batch_size: int,
                on_done: Callable[[int], None] | None) -> None:
    """Compute whole chunks: run_shard batches the flattened list by batch_size, which gives back exactly
    these chunks (every chunk but the job's last is full, and the job's last chunk comes last)."""
    run_shard(out_dir, [it for c in todo for it in c], generator, batch_size, on_done=on_done)


def _worker_device(device: str, rank: int) -> str:
    if device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise MarsEvalError("device 'cuda' requested but no CUDA device is available")
        return f"cuda:{rank % torch.cuda.device_count()}"
    return device


# ---- worker processes
# ----------------------------------------------------------------------------------------
def _worker(rank: int, ckpt: str, out_dir: str, todo: list[list[Item]], settings: SamplerSettings,
            run: RunOptions, parent_pid: int, q) -> None:
    """Entry of a spawned worker: load the bundle, compute its chunks, report each batch on the queue."""
    try:
        import torch

        from mars_eval.bundle import Bundle

        torch.set_num_threads(run.threads)
        generator = BundleGenerator(Bundle.load(ckpt, device=_worker_device(run.device, rank)), settings)

        def done(n: int) -> None:
            q.put(("done", rank, n))
            if os.getppid() != parent_pid:  # the parent was killed: stop instead of running on as an orphan
                raise SystemExit(3)

        _run_chunks(Path(out_dir), todo, generator, run.batch_size, done)
        q.put(("finished", rank, 0))
    except MarsRefError as e:
        q.put(("error", rank, str(e)))
    except KeyboardInterrupt:
        pass
    except Exception as e:  # report, so the parent fails with one line instead of waiting
        q.put(("error", rank, f"{type(e).__name__}: {e}"))


def _run_workers(ckpt: Path, out_dir: Path, todo: list[list[Item]], settings: SamplerSettings,
                 run: RunOptions, on_progress: ProgressFn | None, total: int) -> None:
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    procs = []
    for rank in range(run.nproc):
        part = todo[rank :: run.nproc]  # whole chunks, round robin, in job order
        if not part:
            continue
        p = ctx.Process(target=_worker, name=f"mars-eval-generate-{rank}", daemon=True,
                        args=(rank, str(ckpt), str(out_dir), part, settings, run, os.getpid(), q))
        p.start()
        procs.append((rank, p))
    running = {rank for rank, _ in procs}
    try:
        while running:
            try:
                kind, rank, value = q.get(timeout=0.5)
            except queue_mod.Empty:
                for rank, p in procs:
                    if rank in running and not p.is_alive():
                        _drain(q, running, on_progress, total)
                        if rank in running:
                            raise MarsEvalError(f"generate worker {rank} died (exit code {p.exitcode}); "
                                                "rerun the same command to resume") from None
                continue
            _handle(kind, rank, value, running, on_progress, total)
    finally:
        for _, p in procs:
            if p.is_alive():
                p.terminate()
        for _, p in procs:
            p.join(timeout=10)
        q.close()


def _handle(kind: str, rank: int, value, running: set[int], on_progress: ProgressFn | None,
            total: int) -> None:
    if kind == "done":
        if on_progress:
            on_progress(value, total)
    elif kind == "finished":
        running.discard(rank)
    elif kind == "error":
        raise MarsEvalError(f"generate worker {rank}: {value}")


def _drain(q, running: set[int], on_progress: ProgressFn | None, total: int) -> None:
    """Read what a worker sent just before it exited (its 'finished' may still be in the pipe)."""
    while True:
        try:
            kind, rank, value = q.get(timeout=0.2)
        except queue_mod.Empty:
            return
        _handle(kind, rank, value, running, on_progress, total)
