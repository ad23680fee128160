"""Fast tests of the generic training engine (single process, in-process runs of the toy job)."""

from __future__ import annotations

import hashlib
import json
import math
import shutil

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from mars_eval.errors import MarsEvalError
from mars_eval.train.checkpoint import (
    CheckpointWriter,
    find_latest,
    flatten_tree,
    read_tensors,
    unflatten_tree,
)
from mars_eval.train.config import TrainConfig
from mars_eval.train.diagnostics import TIMING_KEYS, read_rows
from mars_eval.train.launch import main as launch_main
from mars_eval.train.launch import run_training
from mars_eval.train.optim import build_optimizer, build_scheduler
from mars_eval.train.sampler import rank_slice, step_batch
from mars_eval.train.toy import ToyModel, toy_job, toy_param_group


def small_cfg(**kw) -> TrainConfig:
    base = dict(steps=8, global_batch=8, micro_batch=4, lr=1e-2, dtype="fp32", warmup_ratio=0.0, ckpt_every=4,
                keep_last_ckpts=5)
    base.update(kw)
    return TrainConfig(**base)


def deterministic(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in TIMING_KEYS} for r in rows]


# ---- config --------------------------------------------------------------------------------------------------
def test_config_from_toml(tmp_path):
    p = tmp_path / "c.toml"
    p.write_text('steps = 100\nglobal_batch = 32\nmicro_batch = 4\nlr = 1e-4\nbetas = [0.9, 0.95]\n'
                 'engine = "deepspeed"\ndtype = "fp32"\n[extra]\nstage = "I"\n')
    cfg = TrainConfig.from_toml(p)
    assert cfg.betas == (0.9, 0.95) and cfg.weight_decay == 0.1 and cfg.warmup_ratio == 0.01
    assert cfg.engine == "deepspeed" and cfg.zero_stage == 3 and cfg.extra == {"stage": "I"}
    assert cfg.grad_accum(2) == 4 and cfg.warmup_steps == 1
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg and TrainConfig.from_dict(cfg.to_dict()).hash() == cfg.hash()
    assert cfg.replace(lr=2e-4).hash() != cfg.hash()


@pytest.mark.parametrize("text, needle", [
    ("steps = 1\nglobal_batch = 4\nmicro_batch = 2\nlearning_rate = 1.0\n", "learning_rate"),
    ("steps = 1\nglobal_batch = 4\n", "micro_batch"),
    ("steps = 1\nglobal_batch = 6\nmicro_batch = 4\n", "global_batch 6"),
    ("steps = 0\nglobal_batch = 4\nmicro_batch = 2\n", "steps"),
    ("steps = 1\nglobal_batch = 4\nmicro_batch = 2\ndtype = \"fp16\"\n", "dtype"),
    ("steps = 1\nglobal_batch = 4\nmicro_batch = 2\nbetas = [0.9]\n", "betas"),
    ("steps = 1\nglobal_batch = 4\nmicro_batch = 2\nzero_stage = 2\n", "zero_stage"),
    ("steps = 1\nglobal_batch = 4\nmicro_batch = 2\nlr = -1.0\n", "lr"),
    ("steps = [1\n", "not valid TOML"),
])
def test_config_errors_name_the_key(tmp_path, text, needle):
    p = tmp_path / "bad.toml"
    p.write_text(text)
    with pytest.raises(MarsEvalError, match="bad.toml") as e:
        TrainConfig.from_toml(p)
    assert needle in str(e.value) and "\n" not in str(e.value)


def test_grad_accum_needs_divisible_world():
    with pytest.raises(MarsEvalError, match="3 processes"):
        small_cfg(global_batch=8, micro_batch=2).grad_accum(3)


# ---- optimiser and schedule ----------------------------------------------------------------------------------
def _independent_lr(step: int, peak: float, total: int, warmup: int, min_ratio: float) -> float:
    """Linear warm-up from 0, then half a cosine from peak down to peak * min_ratio at `total` steps."""
    if step < warmup:
        return peak * step / warmup
    t = (step - warmup) / (total - warmup)
    return peak * min_ratio + (peak - peak * min_ratio) * (1 + math.cos(math.pi * t)) / 2


@pytest.mark.parametrize("steps, ratio", [(1000, 0.01), (250, 0.01), (40, 0.1)])
def test_lr_schedule_matches_formula(steps, ratio):
    cfg = small_cfg(steps=steps, warmup_ratio=ratio, lr=3e-4, min_lr_ratio=0.1)
    model = torch.nn.Linear(3, 3)
    opt = build_optimizer(model, cfg)
    sched = build_scheduler(opt, cfg)
    warmup = math.ceil(ratio * steps)
    for s in range(steps + 1):
        assert opt.param_groups[0]["lr"] == pytest.approx(_independent_lr(s, 3e-4, steps, warmup, 0.1), rel=1e-12,
                                                          abs=1e-18)
        opt.step()
        sched.step()
    assert _independent_lr(steps, 3e-4, steps, warmup, 0.1) == pytest.approx(3e-5)


def test_optimizer_is_paper_adamw_on_trainable_only():
    model = ToyModel(freeze_text=True)()
    cfg = small_cfg()
    opt = build_optimizer(model, cfg)
    assert isinstance(opt, torch.optim.AdamW)
    ids = {id(p): n for n, p in model.named_parameters()}
    seen = {ids[id(p)]: g["weight_decay"] for g in opt.param_groups for p in g["params"]}
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert set(seen) == trainable and not any(toy_param_group(n) == "text" for n in seen)
    for n, wd in seen.items():
        p = dict(model.named_parameters())[n]
        assert wd == (0.1 if p.ndim >= 2 else 0.0), n  # norms get no decay
    assert opt.defaults["betas"] == (0.9, 0.95)


# ---- data order ----------------------------------------------------------------------------------------------
def test_step_batch_is_pure_and_covers_each_epoch():
    a, sa = step_batch(3, 5, 20, 8)
    b, sb = step_batch(3, 5, 20, 8)
    assert (a == b).all() and (sa == sb).all()
    assert not (step_batch(3, 6, 20, 8)[0] == a).all() and not (step_batch(4, 5, 20, 8)[0] == a).all()
    # 5 steps of 8 = 2 epochs of 20: each example exactly twice
    seen = np.concatenate([step_batch(0, s, 20, 8)[0] for s in range(5)])
    assert np.bincount(seen, minlength=20).tolist() == [2] * 20
    # ranks' slices tile the global batch
    parts = [a[rank_slice(8, r, 4)] for r in range(4)]
    assert (np.concatenate(parts) == a).all()


# ---- checkpoint primitives -----------------------------------------------------------------------------------
def test_state_tree_roundtrip_and_refusals():
    obj = {"state": {0: {"step": torch.tensor(3.0), "m": torch.arange(4.0)}}, "groups": [{"betas": (0.9, 0.95),
           "params": [0, 1], "foreach": None}], "name": "x"}
    skel, tensors = flatten_tree(obj)
    back = unflatten_tree(json.loads(json.dumps(skel)), tensors)
    assert back["groups"][0]["betas"] == (0.9, 0.95) and list(back["state"]) == [0]
    assert torch.equal(back["state"][0]["m"], obj["state"][0]["m"])
    with pytest.raises(MarsEvalError, match="cannot store a object"):
        flatten_tree({"x": object()})


def test_truncated_safetensors_rejected(tmp_path):
    from safetensors.torch import save_file

    p = tmp_path / "w.safetensors"
    save_file({"a": torch.randn(100)}, str(p))
    p.write_bytes(p.read_bytes()[:-40])
    with pytest.raises(MarsEvalError, match="w.safetensors"):
        read_tensors(p)


# ---- training runs -------------------------------------------------------------------------------------------
def test_loss_is_normalised_by_global_tokens(tmp_path):
    """Whatever the micro-batch split, the step is the gradient of the mean over ALL loss tokens of the step:
    an independent one-shot computation over the whole global batch gives the logged step-0 loss and grad norm."""
    job = toy_job()
    runs = {}
    for mb in (1, 2, 8):
        run_training(small_cfg(micro_batch=mb, steps=3, ckpt_every=0), *job, tmp_path / f"mb{mb}", progress=False)
        runs[mb] = read_rows(tmp_path / f"mb{mb}" / "train_log.jsonl")
    for mb in (1, 2):
        for r, ref in zip(runs[mb], runs[8], strict=True):
            assert r["loss"] == pytest.approx(ref["loss"], rel=1e-6)
            assert r["grad_norm"] == pytest.approx(ref["grad_norm"], rel=1e-5)
    # independent: one forward over the full global batch of step 0, torch's mean cross-entropy
    torch.manual_seed(0)
    model = job.build_model()
    idx, seeds = step_batch(0, 0, len(job.data), 8)
    batch = job.data.collate(idx, seeds)
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    loss = F.cross_entropy(logits.flatten(0, 1), batch["labels"].flatten(), ignore_index=-100)
    loss.backward()
    gnorm = math.sqrt(sum(float(p.grad.pow(2).sum()) for p in model.parameters() if p.grad is not None))
    assert runs[8][0]["loss"] == pytest.approx(float(loss.detach()), rel=1e-6)
    assert runs[8][0]["grad_norm"] == pytest.approx(gnorm, rel=1e-5)
    assert runs[8][0]["loss_tokens"] == int((batch["labels"] != -100).sum())


def test_diagnostic_rows_and_results(tmp_path):
    res = run_training(small_cfg(), *toy_job(freeze_text=False), tmp_path, progress=True)
    rows = read_rows(tmp_path / "train_log.jsonl")
    assert [r["step"] for r in rows] == list(range(8))
    for key in ("loss", "lr", "grad_norm", "grad_norm/text", "grad_norm/vision", "loss/t2i", "loss/caption",
                "loss/text", "loss/vision", "logit_norm/text", "logit_norm/vision", "logit_max/text",
                "logit_max/vision", "tokens", "loss_tokens", "tokens_per_s", "elapsed_s"):
        assert key in rows[0], key
    r = rows[0]
    assert r["grad_norm"] == pytest.approx(math.hypot(r["grad_norm/text"], r["grad_norm/vision"]))
    # the total is a token-weighted mean of the per-modality losses, so it lies between them
    assert min(r["loss/text"], r["loss/vision"]) <= r["loss"] <= max(r["loss/text"], r["loss/vision"])
    assert res["final_loss"] == rows[-1]["loss"] and res["config_hash"] == small_cfg().hash()
    assert res["seed"] == 0 and (len(res["git_commit"]) == 40 or res["git_commit"] == "unknown")
    assert json.loads((tmp_path / "results.json").read_text())["final_loss"] == rows[-1]["loss"]


def _fresh_frozen_sha(model) -> str:
    digests = ""
    for n, p in model.named_parameters():
        if not p.requires_grad:
            digests += hashlib.sha256(n.encode() + p.detach().contiguous().view(torch.uint8).numpy().tobytes()).hexdigest()
    return hashlib.sha256(digests.encode()).hexdigest()


def test_frozen_params_unchanged_trainable_changed(tmp_path):
    job = toy_job(freeze_text=True)
    run_training(small_cfg(), *job, tmp_path, progress=False)
    torch.manual_seed(0)
    fresh = job.build_model()
    trained = load_file(tmp_path / "ckpt" / "step_000008" / "model.safetensors")
    trainable = {n for n, p in fresh.named_parameters() if p.requires_grad}
    assert set(trained) == trainable and not any(toy_param_group(n) == "text" for n in trained)
    for ck in ("step_000004", "step_000008"):
        meta = json.loads((tmp_path / "ckpt" / ck / "trainer.json").read_text())
        assert meta["frozen_sha256"] == _fresh_frozen_sha(fresh)
    params = dict(fresh.named_parameters())
    assert all(not torch.equal(trained[n], params[n]) for n in trained if n.endswith("weight"))


def test_resume_is_bitwise_identical_in_process(tmp_path):
    job = toy_job()
    cfg = small_cfg(steps=10, ckpt_every=4, dtype="fp32")
    run_training(cfg, *job, tmp_path / "a", progress=False)
    ref = read_rows(tmp_path / "a" / "train_log.jsonl")
    # a crash after step 5: checkpoint 4 is latest, rows up to step 5 written, the last one torn
    b = tmp_path / "b"
    shutil.copytree(tmp_path / "a", b)
    shutil.rmtree(b / "ckpt" / "step_000008")
    shutil.rmtree(b / "ckpt" / "step_000010")
    (b / "ckpt" / "latest").write_text("step_000004\n")
    lines = (b / "train_log.jsonl").read_text().splitlines(keepends=True)
    (b / "train_log.jsonl").write_text("".join(lines[:6]) + lines[6][:25])
    (b / "ckpt" / ".tmp_step_000008").mkdir()  # a checkpoint cut short while being written
    (b / "ckpt" / ".tmp_step_000008" / "model.safetensors").write_bytes(b"\0" * 10)
    res = run_training(cfg, *job, b, resume=True, progress=False)
    assert res["resumed_from"] == 4
    assert deterministic(read_rows(b / "train_log.jsonl")) == deterministic(ref)  # exact float equality
    for name in ("model.safetensors", "optimizer.safetensors"):
        x, y = load_file(tmp_path / "a/ckpt/step_000010" / name), load_file(b / "ckpt/step_000010" / name)
        assert all(torch.equal(x[k], y[k]) for k in x)


def test_resume_rejects_truncated_checkpoint_and_changed_config(tmp_path):
    job = toy_job()
    cfg = small_cfg(steps=4, ckpt_every=2)
    run_training(cfg, *job, tmp_path, progress=False)
    assert find_latest(tmp_path / "ckpt").name == "step_000004"
    with pytest.raises(MarsEvalError, match="already holds checkpoints"):
        run_training(cfg, *job, tmp_path, progress=False)
    with pytest.raises(MarsEvalError, match="differs in lr"):
        run_training(cfg.replace(lr=1.0), *job, tmp_path, resume=True, progress=False)
    f = tmp_path / "ckpt" / "step_000004" / "optimizer.safetensors"
    f.write_bytes(f.read_bytes()[:-7])
    with pytest.raises(MarsEvalError, match="optimizer.safetensors has .* bytes"):
        run_training(cfg, *job, tmp_path, resume=True, progress=False)
    (tmp_path / "ckpt" / "latest").write_text("step_000099\n")
    with pytest.raises(MarsEvalError, match="not a checkpoint directory"):
        run_training(cfg, *job, tmp_path, resume=True, progress=False)
    with pytest.raises(MarsEvalError, match="no checkpoint"):
        run_training(cfg, *job, tmp_path / "empty", resume=True, progress=False)


def test_checkpoint_writer_keeps_last_and_is_atomic(tmp_path):
    for step in (1, 2, 3):
        w = CheckpointWriter(tmp_path, step)
        w.prepare()
        w.write_json("trainer.json", {"step": step})
        assert find_latest(tmp_path) is None or find_latest(tmp_path).name != f"step_{step:06d}"  # not visible yet
        w.commit(keep_last=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["latest", "step_000002", "step_000003"]
    assert (tmp_path / "latest").read_text().strip() == "step_000003"


def test_bf16_runs_and_tracks_fp32(tmp_path):
    job = toy_job()
    run_training(small_cfg(steps=4, dtype="bf16"), *job, tmp_path / "bf", progress=False)
    run_training(small_cfg(steps=4, dtype="fp32"), *job, tmp_path / "fp", progress=False)
    bf, fp = read_rows(tmp_path / "bf" / "train_log.jsonl"), read_rows(tmp_path / "fp" / "train_log.jsonl")
    for a, b in zip(bf, fp, strict=True):
        assert a["loss"] == pytest.approx(b["loss"], rel=2e-3) and a["loss"] != b["loss"]


def test_launch_cli_errors(tmp_path, capsys):
    cfg = tmp_path / "c.toml"
    cfg.write_text("steps = 1\nglobal_batch = 2\nmicro_batch = 1\n")
    assert launch_main(["--job", "nope", "--config", str(cfg), "--out", str(tmp_path / "o")]) == 1
    assert "package.module:function" in capsys.readouterr().err
    assert launch_main(["--job", "mars_eval.train.toy:missing", "--config", str(cfg), "--out", str(tmp_path)]) == 1
    assert "cannot import job" in capsys.readouterr().err


@pytest.mark.parametrize("flags, want", [({"avx2"}, "fp32"), ({"avx2", "avx512_bf16"}, "bf16"), ({"amx_bf16"}, "bf16")])
def test_dtype_auto_is_bf16_only_on_cpus_with_native_bf16(tmp_path, monkeypatch, flags, want):
    """dtype "auto" runs bf16 autocast where the CPU has bf16 arithmetic and fp32 elsewhere, and records which."""
    from mars_eval.train import engine

    monkeypatch.setattr(engine, "cpu_flags", lambda: flags)
    cpu = torch.device("cpu")
    assert engine.resolve_dtype("auto", cpu) == want
    assert engine.resolve_dtype("bf16", cpu) == "bf16" and engine.resolve_dtype("fp32", cpu) == "fp32"
    res = run_training(small_cfg(dtype="auto"), *toy_job(freeze_text=False), tmp_path, progress=False)
    assert res["dtype"] == want
