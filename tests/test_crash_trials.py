"""Crash trials: a real SIGKILL at a random moment of `generate`, training (`mars-eval train stage` on a tiny
preset and on a user's tiny Qwen2 + VQ + encoded data, and the training engine's launcher) and scoring (`fid`,
`clip-score`, `coco`, `compbench`), then the same command again. Each trial checks

- right after the kill: every file under its final name is complete - byte-identical to the uninterrupted run
  (images, manifests, jobs, exported weights), equal in content (JSON / JSONL / safetensors, without timing
  fields), every checkpoint directory passes its manifest check, and an append-only log holds a prefix of the
  uninterrupted log (a torn last line is allowed: the resume drops it);
- after the rerun: exit 0 and the same files and the same printed results as the uninterrupted run.

The kill moment is random: in even trials uniform in time between the first output file and the end of the
uninterrupted run (timed once per scenario; the clock starts at the killed run's first file, since start-up
times vary with the machine's load), in odd trials when the n-th file appears, n uniform over the files a finished
run leaves. A run that finishes before its kill is retried with an earlier kill. The whole process group
is killed (workers included), as a machine crash would.

    pytest -m slow tests/test_crash_trials.py          # ~25 trials, several minutes on 2 cores

Adding a command is one entry in SCENARIOS (setup of its inputs, its command line, which outputs to compare).
"""

from __future__ import annotations

import fnmatch
import importlib.util
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from fixtures_bundle import build_tiny_bundle
from PIL import Image
from safetensors import safe_open

from mars_eval.train.checkpoint import verify
from mars_eval.train.diagnostics import TIMING_KEYS

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
# values that legitimately differ between an uninterrupted and a killed-and-rerun run: wall times, provenance,
# how much of the work this particular invocation did, whether a cache was hit
VOLATILE = set(TIMING_KEYS) | {"time", "commit", "seconds", "images_per_s", "wall_s", "resumed_from", "computed",
                               "skipped", "generated", "rows_appended", "cache_hit_a", "cache_hit_b", "scored"}
HASHED_NAME = re.compile(r"-[0-9a-f]{16}(?=[/.]|$)")  # cache folders named by a hash of their (absolute) inputs


@dataclass(frozen=True)
class Scenario:
    name: str
    trials: int
    setup: Callable[[Path], dict]  # builds the inputs once; returns a context for `argv`
    argv: Callable[[dict, Path, int], list[str]]  # the command writing into `out` (trial number given)
    exact: tuple[str, ...] = ()  # globs (relative to out) of files that must be byte-identical
    rows: tuple[str, ...] = ()  # JSON / JSONL globs compared without VOLATILE keys
    tensors: tuple[str, ...] = ()  # safetensors globs compared by content (tensors + metadata)
    logs: tuple[str, ...] = ()  # append-only JSONL logs (after a kill: a prefix, maybe a torn last line)
    stores: tuple[str, ...] = ()  # append-only JSONL row stores: compared as sets of rows (order may differ)
    stdout: bool = True  # compare the JSON the command prints
    rerun: Callable[[dict, Path], list[str]] | None = None  # the resume command where it differs
    requires: str | None = None  # a module the command needs (commands written in parallel)


def cli(*args) -> list[str]:
    return [sys.executable, "-c", "from mars_eval.cli.main import entry; entry()", *map(str, args)]


def image_folder(path: Path, n: int, seed: int) -> Path:
    path.mkdir(parents=True)
    for i in range(n):
        arr = np.random.default_rng(seed * 1000 + i).integers(0, 256, (24, 24, 3), dtype=np.uint8)
        Image.fromarray(arr).save(path / f"{i}_0.png")
    return path


# ---- the scenarios --------------------------------------------------------------------------------------------


def _generate_setup(root: Path) -> dict:
    prompts = root / "prompts.txt"
    prompts.write_text("\n".join(f"prompt {i}: a red cube_{i} left of a ball" for i in range(12)), "utf-8")
    return {"ckpt": build_tiny_bundle(root / "ckpt", hires=True), "prompts": prompts}


def _generate_argv(ctx: dict, out: Path, trial: int) -> list[str]:
    return cli("generate", "--ckpt", ctx["ckpt"], "--prompts", ctx["prompts"], "--out", out,
               "--images-per-prompt", 6, "--batch-size", 4, "--nproc", 1 + trial % 2, "--json")


TOY_RUN = ('steps = 40\nglobal_batch = 8\nmicro_batch = 4\nlr = 1e-2\ndtype = "fp32"\nckpt_every = 6\n'
           'keep_last_ckpts = 3\nwarmup_ratio = 0.1\n')


def _engine_setup(root: Path) -> dict:
    (root / "run.toml").write_text(TOY_RUN)
    return {"config": root / "run.toml"}


def _engine_argv(ctx: dict, out: Path, trial: int) -> list[str]:
    return [sys.executable, "-m", "mars_eval.train.launch", "--job", "mars_eval.train.toy:toy_job", "--job-kwargs",
            json.dumps({"collate_delay_s": 0.03}), "--config", str(ctx["config"]), "--out", str(out), "--no-progress"]


def _engine_rerun(ctx: dict, out: Path) -> list[str]:
    """The documented resume: --resume when a checkpoint exists (a run killed before its first one restarts)."""
    has_ckpt = (out / "ckpt").is_dir() and any(p.name.startswith("step_") for p in (out / "ckpt").iterdir())
    return _engine_argv(ctx, out, 0) + (["--resume"] if has_ckpt else [])


TINY_PRESET = """# crash trials: the whole recipe up to Stage I in ~20 s
[world]
n = 200
seed = 0
[tokenizer]
vocab_size = 320
[model]
hidden_size = 32
num_hidden_layers = 2
num_attention_heads = 2
num_key_value_heads = 1
intermediate_size = 64
max_position_embeddings = 512
[vq]
preset = "world-f4"
steps = 6
batch_size = 8
lr = 1e-3
[stage0]
steps = 8
global_batch = 8
micro_batch = 8
lr = 3e-3
dtype = "fp32"
ckpt_every = 2
[stageI]
steps = 8
global_batch = 8
micro_batch = 8
lr = 2e-3
dtype = "fp32"
ckpt_every = 2
[stageII]
steps = 2
global_batch = 4
micro_batch = 4
dtype = "fp32"
[stageIII]
steps = 2
global_batch = 4
micro_batch = 4
dtype = "fp32"
"""


def _stage_setup(root: Path) -> dict:
    (root / "tiny.toml").write_text(TINY_PRESET)
    return {"preset": root / "tiny.toml"}


def _stage_argv(ctx: dict, out: Path, trial: int) -> list[str]:
    return cli("train", "stage", "I", "--preset", ctx["preset"], "--cache", out, "--json")


REAL_STAGE1 = """[stageI]
steps = 6
global_batch = 4
micro_batch = 2
lr = 2e-3
dtype = "fp32"
engine = "single"
warmup_ratio = 0.0
ckpt_every = 2
"""


def _real_setup(root: Path) -> dict:
    from fixtures_real import build_user_corpus

    (root / "stage1.toml").write_text(REAL_STAGE1)
    return {"user": build_user_corpus(root / "user"), "config": root / "stage1.toml"}


def _real_argv(ctx: dict, out: Path, trial: int) -> list[str]:
    u = ctx["user"]
    return cli("train", "stage", "I", "--llm", u / "qwen2", "--vq", u / "vq", "--data", u / "enc", "--config",
               ctx["config"], "--cache", out, "--json")


def _fid_setup(root: Path) -> dict:
    return {"a": image_folder(root / "a", 16, 1), "b": image_folder(root / "b", 16, 2)}


def _fid_argv(ctx: dict, out: Path, trial: int) -> list[str]:
    return cli("fid", ctx["a"], ctx["b"], "--json", "--bootstrap", 20, "--batch-size", 4, "--cache-dir", out / "cache")


def _clip_setup(root: Path) -> dict:
    from mars_eval.compbench import tiny

    prompts = root / "p.txt"
    prompts.write_text("\n".join(f"a red cube number {i}" for i in range(12)), "utf-8")
    return {"imgs": image_folder(root / "imgs", 12, 3), "prompts": prompts, "clip": tiny.build_open_clip(root / "clip")}


def _clip_argv(ctx: dict, out: Path, trial: int) -> list[str]:
    return cli("clip-score", ctx["imgs"], "--prompts", ctx["prompts"], "--clip-ckpt", ctx["clip"], "--batch-size", 2,
               "--json")


def _suite_setup(root: Path) -> dict:
    from fixtures_suites import random_world_judges, tiny_world

    from mars_eval.compbench import tiny

    return {"world": tiny_world(root / "world"), "judges": random_world_judges(root / "judges"),
            "ckpt": build_tiny_bundle(root / "ckpt"), "clip": tiny.build_open_clip(root / "clip")}


def _coco_argv(ctx: dict, out: Path, trial: int) -> list[str]:
    return cli("coco", "--ckpt", ctx["ckpt"], "--out", out, "--world", ctx["world"], "--n", 16, "--clip", ctx["clip"],
               "--batch-size", 2, "--cache-dir", out.parent / f"{out.name}-cache", "--json")


def _compbench_argv(ctx: dict, out: Path, trial: int) -> list[str]:
    return cli("compbench", "--ckpt", ctx["ckpt"], "--out", out, "--world", ctx["world"], "--judges", ctx["judges"],
               "--categories", "color,spatial,complex", "--limit", 6, "--images-per-prompt", 3, "--batch-size", 2,
               "--calibration", 0, "--json")


SUITE_FILES = dict(exact=("images/*.png", "*manifest.jsonl", "*job.json", "reference/*.png", "*captions.txt"),
                   rows=("images/scores.jsonl", "results.jsonl", "*scenes.jsonl", "*split.json"),
                   stores=("scores.jsonl",))

SCENARIOS = [
    Scenario("generate", 6, _generate_setup, _generate_argv, exact=("*.png", "manifest.jsonl", "job.json"),
             stdout=False),
    Scenario("train-engine", 4, _engine_setup, _engine_argv, rerun=_engine_rerun, stdout=False,
             tensors=("ckpt/step_*/*.safetensors",), rows=("ckpt/step_*/scheduler.json", "ckpt/step_*/optimizer.json"),
             logs=("train_log.jsonl",)),
    Scenario("train-stage", 4, _stage_setup, _stage_argv,
             exact=("*/model/model.safetensors", "*/vq/model.safetensors", "*/tokenizer/tokenizer.json", "*.png"),
             tensors=("*.safetensors",), rows=("*DONE.json", "*/scheduler.json", "*world.json"),
             logs=("*/train_log.jsonl",)),
    Scenario("train-real", 3, _real_setup, _real_argv, exact=("*/model/model.safetensors",),
             tensors=("*.safetensors",), rows=("*/scheduler.json",), logs=("*/train_log.jsonl",)),
    Scenario("fid", 4, _fid_setup, _fid_argv, tensors=("cache/*.safetensors",)),
    Scenario("clip-score", 2, _clip_setup, _clip_argv),
    Scenario("coco", 3, _suite_setup, _coco_argv, requires="mars_eval.cli.coco", **SUITE_FILES),
    Scenario("compbench", 3, _suite_setup, _compbench_argv, requires="mars_eval.cli.compbench",
             exact=("images/*/*.png", "images/*/manifest.jsonl", "images/*/job.json"),
             rows=("images/*/scores.jsonl", "results.jsonl"), stores=("scores.jsonl",)),
]
BY_NAME = {s.name: s for s in SCENARIOS}


def available(s: Scenario) -> bool:
    return s.requires is None or importlib.util.find_spec(s.requires) is not None


# ---- comparing folders ----------------------------------------------------------------------------------------


def norm(rel: str) -> str:
    return HASHED_NAME.sub("-H", rel)


def files(out: Path, patterns: tuple[str, ...]) -> dict[str, Path]:
    """Non-hidden files under `out` matching a pattern, by normalised relative path (hidden = temporary/lock)."""
    found = {}
    for p in out.rglob("*"):
        rel = p.relative_to(out).as_posix()
        if p.is_file() and not any(part.startswith(".") for part in rel.split("/")):
            if any(fnmatch.fnmatch(norm(rel), pat) for pat in patterns):
                found[norm(rel)] = p
    return found


def strip(obj, out: Path):
    """Drop volatile keys; paths inside the output folder and hashed names are normalised."""
    if isinstance(obj, dict):
        return {k: strip(v, out) for k, v in obj.items() if k not in VOLATILE}
    if isinstance(obj, list):
        return [strip(v, out) for v in obj]
    if isinstance(obj, str):
        return norm(obj.replace(str(out.parent / f"{out.name}-cache"), "<CACHE>").replace(str(out), "<OUT>"))
    return obj


def json_rows(path: Path, out: Path):
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".jsonl":
        return [strip(json.loads(line), out) for line in text.split("\n") if line.strip()]
    return strip(json.loads(text), out)


def tensor_content(path: Path) -> tuple[dict, dict]:
    with safe_open(str(path), framework="pt") as f:
        return f.metadata() or {}, {k: f.get_tensor(k) for k in f.keys()}


def same_tensors(a: Path, b: Path) -> bool:
    (ma, ta), (mb, tb) = tensor_content(a), tensor_content(b)
    return ma == mb and ta.keys() == tb.keys() and all(torch.equal(ta[k], tb[k]) for k in ta)


def compare(s: Scenario, out: Path, ref: Path, complete: bool) -> None:
    """Every file present in `out` equals its counterpart in `ref`; with complete=True also the same set."""
    for kind, patterns in (("exact", s.exact), ("rows", s.rows), ("tensors", s.tensors)):
        got, want = files(out, patterns), files(ref, patterns)
        if kind == "tensors":  # exact patterns already compared these byte for byte
            got = {k: v for k, v in got.items() if not any(fnmatch.fnmatch(k, p) for p in s.exact)}
            want = {k: v for k, v in want.items() if not any(fnmatch.fnmatch(k, p) for p in s.exact)}
        # a killed run may still hold checkpoints that the finished run pruned (`verify` checks them below)
        extra = sorted(k for k in set(got) - set(want) if complete or "step_" not in k)
        assert not extra, f"{kind}: files the uninterrupted run does not have: {extra[:5]}"
        got = {k: v for k, v in got.items() if k in want}
        if complete:
            assert sorted(got) == sorted(want), f"{kind}: missing {sorted(set(want) - set(got))[:5]}"
        for rel, p in got.items():
            if kind == "exact":
                assert p.read_bytes() == want[rel].read_bytes(), f"{rel} differs from the uninterrupted run"
            elif kind == "rows":
                assert json_rows(p, out) == json_rows(want[rel], ref), f"{rel} differs from the uninterrupted run"
            else:
                assert same_tensors(p, want[rel]), f"{rel} differs from the uninterrupted run"
    got, want = files(out, s.logs), files(ref, s.logs)
    assert not set(got) - set(want)
    for rel, p in got.items():
        text = p.read_text(encoding="utf-8")
        lines = text.split("\n")
        whole = lines[:-1]  # the last element is "" after a final newline, else a torn line (allowed mid-run)
        assert complete is False or lines[-1] == "", f"{rel}: torn last line after a complete run"
        rows = [strip(json.loads(x), out) for x in whole if x.strip()]
        ref_rows = json_rows(want[rel], ref)
        assert rows == (ref_rows if complete else ref_rows[: len(rows)]), f"{rel} differs from the uninterrupted log"
    got, want = files(out, s.stores), files(ref, s.stores)
    assert not set(got) - set(want)
    if complete:
        assert sorted(got) == sorted(want)
    for rel, p in got.items():  # scored chunks: each row one the finished run also has; a torn tail allowed
        *whole, tail = p.read_text(encoding="utf-8").split("\n")
        assert not complete or tail == "", f"{rel}: torn last line after a complete run"
        rows = sorted(json.dumps(strip(json.loads(x), out), sort_keys=True) for x in whole if x.strip())
        ref_rows = sorted(json.dumps(r, sort_keys=True) for r in json_rows(want[rel], ref))
        if complete:
            assert rows == ref_rows, f"{rel}: rows differ from the uninterrupted run"
        else:
            assert set(rows) <= set(ref_rows), f"{rel}: rows the uninterrupted run does not have"
    for d in out.rglob("step_*"):
        if d.is_dir():
            verify(d)  # raises on a missing, truncated or edited file


# ---- running and killing --------------------------------------------------------------------------------------


def env_for(root: Path) -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "MARS_EVAL_CACHE_DIR": str(root / "mars-eval-cache"),
            "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}


def start(argv: list[str], log: Path, env: dict) -> tuple[subprocess.Popen, object, object]:
    so, se = open(log.with_suffix(".out"), "wb"), open(log.with_suffix(".err"), "wb")
    return subprocess.Popen(argv, stdout=so, stderr=se, env=env, cwd=REPO, start_new_session=True), so, se


def finish(proc, so, se, log: Path, timeout: float = 900) -> tuple[int, str, str]:
    rc = proc.wait(timeout=timeout)
    so.close()
    se.close()
    return rc, log.with_suffix(".out").read_text(errors="replace"), log.with_suffix(".err").read_text(errors="replace")


def count_files(out: Path) -> int:
    """Files under `out` while a running command writes there: a temporary folder may vanish mid-walk."""
    n = 0
    for root, _, names in os.walk(out):  # os.walk skips what disappears while it walks (rglob raises)
        n += sum(1 for name in names if os.path.isfile(os.path.join(root, name)))
    return n


def any_file(out: Path) -> bool:
    return count_files(out) > 0


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """Per scenario, built on first use: (inputs, uninterrupted output folder, its stdout, t_first, t_end)."""
    made: dict[str, tuple] = {}

    def get(s: Scenario):
        if s.name not in made:
            root = tmp_path_factory.mktemp(s.name)
            ctx = s.setup(root)
            out = root / "ref"
            env = env_for(root)
            t0 = time.monotonic()
            proc, so, se = start(s.argv(ctx, out, 0), root / "ref-log", env)
            t_first = None
            while proc.poll() is None:
                if t_first is None and any_file(out):
                    t_first = time.monotonic() - t0
                time.sleep(0.02)
            t_end = time.monotonic() - t0
            rc, stdout, stderr = finish(proc, so, se, root / "ref-log")
            assert rc == 0, stderr[-3000:]
            made[s.name] = (ctx, out, stdout, t_first or 0.0, t_end, root)
        return made[s.name]
    return get


TRIALS = [(s.name, i) for s in SCENARIOS for i in range(s.trials)]


def test_at_least_20_trials_run():
    assert sum(s.trials for s in SCENARIOS if available(s)) >= 20


@pytest.mark.parametrize("name,trial", TRIALS)
def test_sigkill_then_rerun(name, trial, reference, tmp_path):
    s = BY_NAME[name]
    if not available(s):
        pytest.skip(f"{s.requires} does not exist yet")
    ctx, ref, ref_stdout, t_first, t_end, root = reference(s)
    env = env_for(tmp_path)
    n_ref = count_files(ref)
    by_files = trial % 2 == 1 and n_ref > 1  # odd trials: kill when the n-th file appears; even: at a time
    u0 = random.Random(f"{name}-{trial}").random()
    out = tmp_path / "out"
    for attempt in range(5):
        u = u0 * 0.5**attempt  # a run that finished before its kill (the machine is less loaded now): kill earlier
        shutil.rmtree(out, ignore_errors=True)
        shutil.rmtree(tmp_path / "out-cache", ignore_errors=True)
        proc, so, se = start(s.argv(ctx, out, trial), tmp_path / "killed", env)
        if by_files:
            target = 1 + int(u * (n_ref - 1))
            while proc.poll() is None and count_files(out) < target:
                time.sleep(0.002)
            when = f"at file {target} of {n_ref}"
        else:
            t0 = time.monotonic()
            if t_first > 0:  # start the clock at the first output file: start-up times vary with the load
                while proc.poll() is None and not any_file(out) and time.monotonic() - t0 < 600:
                    time.sleep(0.005)
                t0 = time.monotonic() - t_first
            delay = t_first + u * (t_end - t_first)
            while proc.poll() is None and time.monotonic() - t0 < delay:
                time.sleep(0.005)
            when = f"at {delay:.2f} s of a {t_end:.1f} s run"
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            rc, _, stderr = finish(proc, so, se, tmp_path / "killed")
            assert rc == -signal.SIGKILL, stderr[-2000:]
            break
        finish(proc, so, se, tmp_path / "killed")
    else:
        pytest.fail(f"{name}: the run always finished before the kill")
    print(f"{name} trial {trial}: killed {when} (attempt {attempt + 1}); {count_files(out)} files there, "
          f"{n_ref} after a finished run")

    compare(s, out, ref, complete=False)  # nothing half-written under a final name

    argv = s.rerun(ctx, out) if s.rerun else s.argv(ctx, out, trial + 1)
    proc, so, se = start(argv, tmp_path / "rerun", env)
    rc, stdout, stderr = finish(proc, so, se, tmp_path / "rerun")
    assert rc == 0, stderr[-3000:]
    compare(s, out, ref, complete=True)
    if s.stdout:
        assert strip(json.loads(stdout), out) == strip(json.loads(ref_stdout), ref)
