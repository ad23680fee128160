"""A real SIGKILL of `mars-eval generate` at random points, then a resume: the folder ends byte-identical to
an uninterrupted run, and every image present right after the kill is already complete and correct.

Slow (each trial starts a fresh interpreter; with --nproc 2 also two workers):
    pytest -m slow tests/test_generate_crash.py
"""

from __future__ import annotations

import hashlib
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from fixtures_bundle import build_tiny_bundle

from mars_eval.generate.folder import MANIFEST
from mars_eval.generate.runner import RunOptions, generate_folder
from mars_eval.prompts import PromptSet

pytestmark = pytest.mark.slow

N_PROMPTS, PER_PROMPT, BATCH = 12, 8, 4  # 96 images in 24 chunks


def digests(out: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(out.glob("*.png"))}


def children(pid: int) -> list[int]:
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("crash")
    ckpt = build_tiny_bundle(root / "ckpt", hires=True)
    prompts = root / "prompts.txt"
    prompts.write_text("\n".join(f"prompt number {i} with a red cube_{i}" for i in range(N_PROMPTS)), "utf-8")
    ref = root / "ref"
    generate_folder(ckpt, PromptSet.from_file(prompts), ref, images_per_prompt=PER_PROMPT,
                    run=RunOptions(batch_size=BATCH))
    return ckpt, prompts, ref, digests(ref)


TRIALS = [(1, 1), (2, 1), (3, 1), (4, 2), (5, 2), (6, 2)]  # (trial seed, nproc of the killed run)


@pytest.mark.parametrize("trial,nproc", TRIALS)
def test_sigkill_then_resume_is_identical(setup, tmp_path, trial, nproc):
    ckpt, prompts, ref, want = setup
    out = tmp_path / "out"
    kill_after = random.Random(trial).randint(1, N_PROMPTS * PER_PROMPT - 2 * BATCH)
    cmd = [sys.executable, "-c", "from mars_eval.cli.main import entry; entry()", "generate",
           "--ckpt", str(ckpt), "--prompts", str(prompts), "--out", str(out),
           "--images-per-prompt", str(PER_PROMPT), "--batch-size", str(BATCH), "--nproc", str(nproc)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    workers: set[int] = set()
    deadline = time.monotonic() + 300
    while len(list(out.glob("*.png"))) < kill_after and proc.poll() is None and time.monotonic() < deadline:
        workers.update(children(proc.pid))
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert not (out / MANIFEST).exists(), "the run finished before the kill: make the job longer"
    # every image visible after the kill is complete and exactly the uninterrupted one
    present = digests(out)
    assert len(present) >= kill_after and all(want[n] == d for n, d in present.items())
    # workers notice that their parent is gone and stop after their current batch
    t0 = time.monotonic()
    while any(alive(w) for w in workers) and time.monotonic() - t0 < 120:
        time.sleep(0.2)
    assert not any(alive(w) for w in workers)
    if nproc == 2:
        assert workers, "no worker process was seen"
    summary = generate_folder(ckpt, PromptSet.from_file(prompts), out, images_per_prompt=PER_PROMPT,
                              run=RunOptions(batch_size=BATCH, nproc=1 if trial % 2 else 2))
    assert summary["skipped"] > 0 or len(present) < BATCH
    assert digests(out) == want
    assert (out / MANIFEST).read_bytes() == (ref / MANIFEST).read_bytes()
    assert not [p.name for p in out.iterdir() if p.name.endswith(".tmp")]
