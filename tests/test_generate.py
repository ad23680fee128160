"""`mars-eval generate`: determinism across process counts and batch sizes, resume after an interruption, the
seed rule against the sampling library, hostile prompts, and one-line errors for bad checkpoints and reruns.
"""

from __future__ import annotations

import hashlib
import json
import shutil

import numpy as np
import pytest
import torch
from fixtures_bundle import build_tiny_bundle
from PIL import Image
from safetensors.torch import load_file, save_file

from mars_eval.bundle import Bundle
from mars_eval.cli.main import main
from mars_eval.errors import MarsEvalError
from mars_eval.generate.folder import JOB, MANIFEST, read_manifest
from mars_eval.generate.runner import LOCK, RunOptions, folder_lock, generate_folder
from mars_eval.prompts import PromptSet
from mars_ref.sampling import generate_image_tokens, image_seed

torch.set_num_threads(1)

PROMPTS = ["a red cube", "two green cones and a yellow cylinder", "一个红色的立方体", "a blue sphere",
           "a small purple torus on top of an orange box"]


@pytest.fixture(scope="module")
def base_ckpt(tmp_path_factory):
    return build_tiny_bundle(tmp_path_factory.mktemp("base") / "ckpt")


@pytest.fixture(scope="module")
def hires_ckpt(tmp_path_factory):
    return build_tiny_bundle(tmp_path_factory.mktemp("hires") / "ckpt", hires=True, seed=3)


def prompt_set(texts=PROMPTS, name="p") -> PromptSet:
    return PromptSet.from_text("\n".join(texts), name, "test")


def digests(out) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(out.glob("*.png"))}


def run_cli(args, capsys) -> tuple[int, str, str]:
    try:
        code = main([str(a) for a in args])
    except SystemExit as e:
        code = e.code
    out, err = capsys.readouterr()
    return code, out, err


# ---- determinism
# ---------------------------------------------------------------------------------------------


def test_one_and_two_processes_give_byte_identical_images_and_manifests(hires_ckpt, tmp_path):
    """Stage III bundle (NTP base grid + NKTP super-resolution): the issue 6 acceptance line."""
    ps = prompt_set()
    one = generate_folder(hires_ckpt, ps, tmp_path / "one", images_per_prompt=2,
                          run=RunOptions(batch_size=3, nproc=1))
    two = generate_folder(hires_ckpt, ps, tmp_path / "two", images_per_prompt=2,
                          run=RunOptions(batch_size=3, nproc=2))
    assert one["computed"] == two["computed"] == 10 and two["nproc"] == 2
    a, b = digests(tmp_path / "one"), digests(tmp_path / "two")
    assert len(a) == 10 and a == b
    assert (tmp_path / "one" / MANIFEST).read_bytes() == (tmp_path / "two" / MANIFEST).read_bytes()
    assert len(set(a.values())) == 10  # seeds and prompts give distinct images
    with Image.open(tmp_path / "one" / "00000_000.png") as im:
        assert im.size == (16, 16) and im.mode == "RGB"  # the hires size, not the 8x8 base size
    rows = read_manifest(tmp_path / "two")
    assert [r["sha256"] for r in rows] == [a[r["file"]] for r in rows]
    assert {r["nktp_steps"] for r in rows} == {4} and rows[0]["stage"] == "III"


def test_batch_size_does_not_change_images(base_ckpt, tmp_path):
    """Per-image seeds: an image must not depend on its batch neighbours (only float rounding could, at
    near-ties, which is why batch_size is still recorded in the job; see runner.py)."""
    ps = prompt_set()
    generate_folder(base_ckpt, ps, tmp_path / "b1", images_per_prompt=2, run=RunOptions(batch_size=1))
    generate_folder(base_ckpt, ps, tmp_path / "b4", images_per_prompt=2, run=RunOptions(batch_size=4))
    assert digests(tmp_path / "b1") == digests(tmp_path / "b4")


def test_images_follow_the_documented_seed_rule(base_ckpt, tmp_path):
    """Recompute the images with the sampling library, one prompt at a time, and the VQ (decoding the 4 grids
    in one batch, as the run's single chunk did: VQ pixels may round differently at another batch size)."""
    ps = prompt_set(PROMPTS[:2])
    generate_folder(base_ckpt, ps, tmp_path / "o", images_per_prompt=2, base_seed=7,
                    run=RunOptions(batch_size=4))
    b = Bundle.load(base_ckpt)
    rows = read_manifest(tmp_path / "o")
    assert [r["seed"] for r in rows] == [7, 8, 7, 8]
    seeds = [image_seed(r["seed"], r["prompt_index"], r["image_index"]) for r in rows]
    codes = torch.cat([generate_image_tokens(b.model, [b.encode_prompt(r["prompt"])], (4, 4), seeds=[s],
                                             cfg_scale=2.0, temperature=1.0, top_k=32)
                       for r, s in zip(rows, seeds, strict=True)])
    for r, want in zip(rows, b.decode_codes(codes, (4, 4)), strict=True):
        got = np.asarray(Image.open(tmp_path / "o" / r["file"]))
        assert np.array_equal(got, np.asarray(want)), r["file"]


def test_prompt_seeds_from_csv_are_used(base_ckpt, tmp_path):
    f = tmp_path / "coco.csv"
    f.write_text('caption,evaluation_seed\n"a red cube",1000\n"a blue sphere",5\n', encoding="utf-8")
    generate_folder(base_ckpt, PromptSet.from_file(f), tmp_path / "o", images_per_prompt=2)
    assert [r["seed"] for r in read_manifest(tmp_path / "o")] == [1000, 1001, 5, 6]
    assert json.loads((tmp_path / "o" / JOB).read_text())["use_prompt_seeds"] is True


# ---- resume
# --------------------------------------------------------------------------------------------------


class Interrupt(Exception):
    pass


def test_interrupted_run_resumes_to_the_uninterrupted_result(base_ckpt, tmp_path):
    ps = prompt_set()
    run = RunOptions(batch_size=2)
    generate_folder(base_ckpt, ps, tmp_path / "ref", images_per_prompt=2, run=run)
    want = digests(tmp_path / "ref")

    calls = []

    def stop_after_two_batches(n, total):
        calls.append(n)
        if len(calls) == 3:  # the first call (n=0) announces the total
            raise Interrupt

    out = tmp_path / "run"
    with pytest.raises(Interrupt):
        generate_folder(base_ckpt, ps, out, images_per_prompt=2, run=run, on_progress=stop_after_two_batches)
    assert len(digests(out)) == 4 and not (out / MANIFEST).exists()
    (out / ".00004_001.png.abcd.tmp").write_bytes(b"half an image")  # what a kill mid-write leaves
    (out / "00001_000.png").unlink()  # a missing image inside an otherwise complete chunk
    summary = generate_folder(base_ckpt, ps, out, images_per_prompt=2, run=run)
    assert summary["computed"] == 8 and summary["skipped"] == 2  # chunks [2:4] to [8:10] are computed whole
    assert digests(out) == want
    assert (out / MANIFEST).read_bytes() == (tmp_path / "ref" / MANIFEST).read_bytes()
    assert not list(out.glob("*.tmp")) and not list(out.glob(".*.tmp"))
    again = generate_folder(base_ckpt, ps, out, images_per_prompt=2, run=run)
    assert again["computed"] == 0 and digests(out) == want


def test_rerun_with_other_settings_is_a_one_line_error(base_ckpt, tmp_path, capsys):
    pfile = tmp_path / "p.txt"
    pfile.write_text("\n".join(PROMPTS[:2]), encoding="utf-8")
    base = ["generate", "--ckpt", base_ckpt, "--prompts", pfile, "--out", tmp_path / "o", "--json"]
    code, out, err = run_cli(base, capsys)
    assert code == 0, err
    summary = json.loads(out)
    assert summary["images"] == 2 and summary["compute"] == {"device": "cpu", "batch_size": 8, "threads": 1}
    for extra, field in ((["--cfg-scale", "5"], "settings"), (["--seed", "1"], "base_seed"),
                         (["--batch-size", "2"], "settings"),
                         (["--images-per-prompt", "3"], "images_per_prompt")):
        code, out, err = run_cli(base + extra, capsys)
        assert code == 1 and err.startswith("error: ") and err.count("\n") == 1, err
        assert field in err and "use a new output directory" in err
    code, out, err = run_cli(base + ["--nproc", "1", "--temperature", "1.0"], capsys)  # same job: all skipped
    assert code == 0 and json.loads(out)["skipped"] == 2


def test_second_concurrent_run_is_refused(base_ckpt, tmp_path):
    out = tmp_path / "o"
    out.mkdir()
    with folder_lock(out), pytest.raises(MarsEvalError, match="another generate run"):
        generate_folder(base_ckpt, prompt_set(PROMPTS[:1]), out)
    generate_folder(base_ckpt, prompt_set(PROMPTS[:1]), out)  # the lock is released with its holder
    assert (out / LOCK).exists() and (out / MANIFEST).exists()


# ---- bad input
# -----------------------------------------------------------------------------------------------


def _wrong_shape(ckpt, dst):
    shutil.copytree(ckpt, dst)
    f = dst / "mars" / "model.safetensors"
    t = load_file(f)
    t["embed_text.weight"] = t["embed_text.weight"][:, :-2].contiguous()
    save_file(t, f)
    return dst


@pytest.mark.parametrize("case", ["missing", "no_bundle_json", "wrong_shape", "truncated"])
def test_bad_checkpoint_is_a_one_line_error(base_ckpt, tmp_path, capsys, case):
    ckpt = tmp_path / "ckpt"
    if case == "no_bundle_json":
        shutil.copytree(base_ckpt, ckpt)
        (ckpt / "bundle.json").unlink()
    elif case == "wrong_shape":
        _wrong_shape(base_ckpt, ckpt)
    elif case == "truncated":
        shutil.copytree(base_ckpt, ckpt)
        f = ckpt / "vq" / "model.safetensors"
        f.write_bytes(f.read_bytes()[:1000])
    out = tmp_path / "out"
    code, _, err = run_cli(
        ["generate", "--ckpt", ckpt, "--prompts", "color_val", "--limit", "1", "--out", out], capsys)
    assert code == 1 and err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    assert str(ckpt) in err
    assert not out.exists()  # nothing is written before the checkpoint loads


@pytest.mark.parametrize("args", [["--top-p", "1.5"], ["--temperature", "-1"], ["--batch-size", "0"],
                                  ["--nproc", "0"], ["--images-per-prompt", "0"], ["--cfg-scale", "nan"]])
def test_bad_options_are_one_line_errors(base_ckpt, tmp_path, capsys, args):
    code, _, err = run_cli(
        ["generate", "--ckpt", base_ckpt, "--prompts", "color_val", "--out", tmp_path / "o", *args], capsys)
    assert code == 1 and err.startswith("error: ") and err.count("\n") == 1, err


def test_hostile_prompts_give_index_names_and_nothing_outside_out(base_ckpt, tmp_path):
    hostile = ["a/b/../../escape", "..", "../../etc/passwd", "cube_with_underscores_000001",
               "红色的立方体在左边", "<script>alert('x')</script><img src=x onerror=alert(1)>", "x" * 10_000,
               "C:\\windows\\..\\x.png"]
    pfile = tmp_path / "hostile.txt"
    pfile.write_text("\n".join(hostile), encoding="utf-8")
    work = tmp_path / "work"
    work.mkdir()
    out = work / "out"
    before = sorted(p for p in tmp_path.rglob("*"))
    generate_folder(base_ckpt, PromptSet.from_file(pfile), out, run=RunOptions(batch_size=4))
    after = sorted(p for p in tmp_path.rglob("*"))
    assert [p for p in after if p not in before and out not in p.parents and p != out] == []
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted([LOCK, JOB, MANIFEST] + [f"{i:05d}_000.png" for i in range(len(hostile))])
    assert [r["prompt"] for r in read_manifest(out)] == hostile  # the text survives, only in the manifest


def test_worker_failure_is_reported_as_one_line(tmp_path):
    """A spawned worker that cannot load its checkpoint makes the parent fail with the worker's message."""
    from mars_eval.generate.folder import Item
    from mars_eval.generate.generator import SamplerSettings
    from mars_eval.generate.runner import _run_workers

    with pytest.raises(MarsEvalError, match=r"generate worker 0: checkpoint directory not found: .*nowhere"):
        _run_workers(tmp_path / "nowhere", tmp_path, [[Item(0, 0, "a red cube", 42)]], SamplerSettings(),
                     RunOptions(nproc=1), None, 1)
    assert not list(tmp_path.glob("*.png"))


# ---- prompt length ---------------------------------------------------------------------------------------------
def test_long_prompts_keep_their_head_and_the_manifest_says_so(base_ckpt, tmp_path):
    long = ("a red cube to the left of a blue sphere " * 60).strip()
    res = generate_folder(base_ckpt, prompt_set(["a red cube", long]), tmp_path / "o", run=RunOptions(batch_size=2))
    short_row, long_row = read_manifest(tmp_path / "o")
    tok = Bundle.load(base_ckpt).tokenizer
    assert short_row["prompt_tokens"] == short_row["prompt_tokens_total"] == len(tok("a red cube")["input_ids"])
    assert long_row["prompt_tokens_total"] == len(tok(long, add_special_tokens=False)["input_ids"]) > 256
    assert long_row["prompt_tokens"] == 256
    assert res["truncated_prompt_images"] == 1


def test_the_prompt_budget_leaves_room_for_the_image_tokens(base_ckpt, hires_ckpt):
    from dataclasses import replace

    b = Bundle.load(base_ckpt)
    assert b.prompt_budget((4, 4)) == min(256, b.model.config.max_position_embeddings - 16)
    b.model.config = replace(b.model.config, max_position_embeddings=40)
    assert b.prompt_budget((4, 4)) == 40 - 16
    h = Bundle.load(hires_ckpt)
    h.hires.config = replace(h.hires.config, max_position_embeddings=100)
    assert h.prompt_budget((4, 4), (8, 8)) == 100 - (16 + 3 + 64)
    b.model.config = replace(b.model.config, max_position_embeddings=16)
    with pytest.raises(MarsEvalError, match="no room for a prompt"):
        b.prompt_budget((4, 4))
