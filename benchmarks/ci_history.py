"""The CI regression row: a fast world benchmark (the `ci` preset, 1-2 minutes on 2 cores) whose figures are
appended to a results history, one row per (commit, metric). `mars-eval report --history FILE` charts them.

    python -m benchmarks.ci_history [--history FILE] [--work DIR]

FILE defaults to $MARS_EVAL_HISTORY, else ~/.cache/mars-eval/history.jsonl. The project's history is committed:
reports/history.jsonl. `.ci/run` appends to a temporary copy of it and `benchmarks/history_gate.py` compares the
new rows with the committed ones; a commit that changes a figure on purpose records it with
`nox -s history -- --history reports/history.jsonl` (a row measured before committing carries the parent's sha).
Every quality figure is seeded, so a change in one means a commit changed training, sampling or a metric; speed
figures follow the machine and its load and are charted, never gated (mars_eval.report.history.is_timing).
`nox -s history` runs it with one thread (OMP_NUM_THREADS=1), as the committed history was measured.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def default_history() -> Path:
    env = os.environ.get("MARS_EVAL_HISTORY")
    return Path(env) if env else Path.home() / ".cache" / "mars-eval" / "history.jsonl"


def tree_state() -> dict:
    """The measured tree: `commit_time` of HEAD (charts order commits by it) and `dirty`, whether tracked files
    outside reports/ differ from HEAD (a row recorded before committing: `commit` is then the parent)."""
    def git(*args: str) -> str | None:
        try:
            out = subprocess.run(["git", *args], capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.SubprocessError):
            return None
        return out.stdout if out.returncode == 0 else None

    when = git("show", "-s", "--format=%cI", "HEAD")
    status = git("status", "--porcelain", "--untracked-files=no")
    state: dict = {"commit_time": when.strip()} if when else {}
    if status is not None:
        state["dirty"] = any(line[3:].split(" -> ")[-1].split("/")[0] != "reports"
                             for line in status.splitlines() if line.strip())
    return state


def measure(work: Path) -> dict[str, float]:
    from mars_eval.generate.runner import RunOptions, generate_folder
    from mars_eval.metrics.pipeline import FidRunConfig, score_folders
    from mars_eval.prompts import PromptSet
    from mars_eval.recipe.pipeline import Artifacts, Preset

    out: dict[str, float] = {}
    arts = Artifacts(Preset.load("ci"), work / "cache", progress=False)
    models = arts.through("I")
    built = Artifacts.done(arts.world().parent)
    out["world_build_images_per_s"] = built["images"] / built["seconds"]
    stage1 = Artifacts.done(arts.stage("I", models["0"]).parent)["results"]
    out["stageI_final_loss_image"] = stage1["final"]["loss/image"]
    out["stageI_final_loss_caption"] = stage1["final"]["loss/caption"]
    out["stage0_final_loss"] = Artifacts.done(models["0"].parent)["results"]["final_loss"]
    out["vq_psnr_held_out"] = Artifacts.done(arts.vq_dir().parent)["eval_held_out"]["psnr"]

    bundle = arts.bundle(models, work / "bundle", "expert")
    world = arts.world()
    prompts = PromptSet.from_file(world / "prompts" / "color_val.txt")
    t0 = time.perf_counter()
    g = generate_folder(bundle, prompts.head(32), work / "gen", run=RunOptions(batch_size=16))
    out["generate_images_per_s"] = g["images"] / (time.perf_counter() - t0)
    refs = work / "refs"
    refs.mkdir()
    for p in sorted((world / "stage1" / "images").glob("*.png"))[: g["images"]]:
        shutil.copyfile(p, refs / p.name)
    fid = score_folders(work / "gen", refs, FidRunConfig(metrics=("fid", "kid")))
    out["fid_stageI_vs_world_renders"] = fid["fid"]
    out["kid_stageI_vs_world_renders"] = fid["kid"]
    return out


def main(argv: list[str] | None = None) -> int:
    from mars_eval.results import append_rows, stamp

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--history", type=Path, default=default_history())
    ap.add_argument("--work", type=Path, default=None, help="scratch folder (default: a temporary one)")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="mars-ci-") as tmp:
        figures = measure(args.work or Path(tmp))
    figures["ci_benchmark_wall_s"] = time.perf_counter() - t0
    args.history.parent.mkdir(parents=True, exist_ok=True)
    import torch

    # the kernel family is part of the machine kind: AVX2 and AVX-512 runs of the same seeds differ past 2 %
    machine = f"{platform.machine()}-{os.cpu_count()}cpu-{torch.backends.cpu.get_cpu_capability().lower()}"
    extra = {"machine": machine, "benchmark": "ci", "threads": torch.get_num_threads(), **tree_state()}
    append_rows(args.history, [stamp({"metric": k, "value": float(v), **extra}) for k, v in figures.items()])
    for k, v in figures.items():
        print(f"{k:32s} {v:.4f}")
    print(f"appended {len(figures)} rows to {args.history}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
