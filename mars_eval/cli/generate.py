"""`mars-eval generate --ckpt CKPT --prompts SET --out DIR`: images + manifest, resumable, multi-process."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer

from mars_eval.cli.common import JsonOpt, emit, progress
from mars_eval.cli.main import app


@app.command("generate")
def generate_command(
    ckpt: Annotated[Path, typer.Option(
        help="Checkpoint bundle directory (bundle.json, mars/, vq/, tokenizer/).")],
    prompts: Annotated[str, typer.Option(
        help="A built-in prompt set (e.g. color_val, coco-30k, geneval) or a prompt file (.txt one per line, "
             ".csv, .jsonl).")],
    out: Annotated[Path, typer.Option(
        help="Output folder; rerunning the same command resumes a killed run.")],
    images_per_prompt: Annotated[int, typer.Option(help="Images per prompt (T2I-CompBench: 10).")] = 1,
    seed: Annotated[int, typer.Option(help="Base seed: image n of a prompt uses seed + n.")] = 42,
    prompt_seeds: Annotated[bool | None, typer.Option(
        "--prompt-seeds/--no-prompt-seeds",
        help="Use the seed each prompt carries (COCO-30k `evaluation_seed`) (default: when the set has "
             "them).")] = None,
    limit: Annotated[int | None, typer.Option(help="Only the first N prompts.", min=1)] = None,
    cfg_scale: Annotated[float | None, typer.Option(
        help="Classifier-free guidance scale; 1 = no guidance (default: the bundle's).")] = None,
    temperature: Annotated[float | None, typer.Option(help="0 = greedy (default: the bundle's).")] = None,
    top_k: Annotated[int | None, typer.Option(help="0 = off (default: the bundle's).")] = None,
    top_p: Annotated[float | None, typer.Option(help="1 = off (default: the bundle's).")] = None,
    nktp_steps: Annotated[int | None, typer.Option(
        help="Stage III NKTP passes (bundles with a hires model) (default: the bundle's).")] = None,
    batch_size: Annotated[int, typer.Option(
        help="Images per forward batch. Fixes the float rounding, so a resume must keep it.")] = 8,
    nproc: Annotated[int, typer.Option(help="Worker processes; never changes an image.")] = 1,
    device: Annotated[str, typer.Option(
        help="torch device: cpu, cuda (worker r uses GPU r), cuda:N.")] = "cpu",
    threads: Annotated[int, typer.Option(
        help="torch threads per worker. Fixes the float rounding, so a resume must keep it.")] = 1,
    as_json: JsonOpt = False,
) -> None:
    """Generate images for a prompt set: files named by prompt and image index; the manifest comes last."""
    from mars_eval.generate.runner import RunOptions, generate_folder
    from mars_eval.prompts import PromptSet

    prompt_set = PromptSet.resolve(prompts)
    if limit is not None:
        prompt_set = prompt_set.head(limit)
    run = RunOptions(batch_size=batch_size, nproc=nproc, device=device, threads=threads)
    sampler = dict(cfg_scale=cfg_scale, temperature=temperature, top_k=top_k, top_p=top_p,
                   nktp_steps=nktp_steps)
    bar = _RateBar("generate")
    try:
        summary = generate_folder(ckpt, prompt_set, out, images_per_prompt=images_per_prompt, base_seed=seed,
                                  use_prompt_seeds=prompt_seeds, sampler=sampler, run=run, on_progress=bar)
    finally:
        bar.close()
    emit(summary, as_json, title="generate")


class _RateBar:
    """Progress callback: a bar with images/s since the first report. The bar starts on the first report
    (after the checkpoint and the folder were checked), so an error before it prints only its one line."""

    def __init__(self, description: str):
        self.bar, self.description, self.task, self.t0, self.done = progress(), description, None, 0.0, 0

    def __call__(self, n: int, total: int) -> None:
        now = time.perf_counter()
        if self.task is None:
            self.bar.start()
            self.t0 = now
            self.task = self.bar.add_task(self.description, total=total, rate="")
        self.done += n
        rate = f"{self.done / (now - self.t0):.2f} img/s" if self.done and now > self.t0 else ""
        self.bar.update(self.task, advance=n, rate=rate)

    def close(self) -> None:
        if self.task is not None:
            self.bar.stop()
