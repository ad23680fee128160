"""VQ training, evaluation and the `mars-eval train vq` command, on procedurally drawn shapes."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from PIL import Image

from mars_ref.errors import MarsRefError
from mars_ref.vq import VQModel, vq_preset
from mars_ref.vq_formats import load_vq
from mars_ref.vq_train import VQTrainConfig, evaluate_vq, psnr_uint8, train_vq, write_reconstructions

TINY = vq_preset("tiny")  # f2, 64 codes
FAST = dict(batch_size=8, lr=2e-3, warmup_steps=2, restart_every=5, log_every=0)


def shapes(n: int, size: int = 16, seed: int = 0) -> torch.Tensor:
    """Flat-coloured squares and discs on a flat background: uint8 (n, 3, size, size)."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    imgs = torch.empty(n, 3, size, size, dtype=torch.uint8)
    for i in range(n):
        img = torch.randint(0, 256, (3, 1, 1), generator=g).expand(3, size, size).clone()
        for _ in range(int(torch.randint(1, 3, (1,), generator=g))):
            c = torch.randint(0, 256, (3, 1, 1), generator=g)
            cx, cy = torch.randint(0, size, (2,), generator=g)
            r = int(torch.randint(size // 8 + 1, size // 3 + 1, (1,), generator=g))
            disc = bool(torch.rand(1, generator=g) < 0.5)
            m = (xx - cx) ** 2 + (yy - cy) ** 2 <= r * r if disc else ((xx - cx).abs() <= r) & ((yy - cy).abs() <= r)
            img = torch.where(m, c.expand_as(img), img)
        imgs[i] = img
    return imgs


@pytest.fixture(scope="module")
def data():
    return shapes(160, seed=0), shapes(24, seed=1)


def test_training_beats_the_untrained_tokenizer(data):
    train, held = data
    torch.manual_seed(0)
    before = evaluate_vq(VQModel(TINY), held)
    rows = []
    model = train_vq(train, TINY, VQTrainConfig(steps=60, **{**FAST, "batch_size": 16, "log_every": 20}),
                     callback=lambda step, row: rows.append(row))
    after = evaluate_vq(model, held)
    assert after["psnr"] > before["psnr"] + 1.5, (before, after)
    assert after["codebook_usage"] > 0.5  # dead-code restarts keep most of the 64 codes alive
    assert [r["step"] for r in rows] == [20, 40, 60]
    assert rows[-1]["recon"] < rows[0]["recon"]
    assert not model.training


def test_float_and_sequence_inputs_train_identically(data):
    train = data[0][:32]
    as_float = train.float() / 127.5 - 1
    cfg = VQTrainConfig(steps=3, **FAST)
    a = train_vq(train, TINY, cfg)
    b = train_vq(list(as_float), TINY, cfg)  # a Sequence of (3, H, W) tensors, like a Dataset
    for k, v in a.state_dict().items():
        torch.testing.assert_close(v, b.state_dict()[k], msg=k)


def test_resume_after_a_crash_is_bit_exact(tmp_path, data):
    train = data[0][:64]
    cfg = VQTrainConfig(steps=8, ckpt_every=4, **{**FAST, "restart_every": 3})
    straight = train_vq(train, TINY, cfg, tmp_path / "a")

    def crash(step, row):
        if step == 6:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_vq(train, TINY, VQTrainConfig(**{**cfg.__dict__, "log_every": 1}), tmp_path / "b", callback=crash)
    assert json.loads((tmp_path / "b" / "train_state.json").read_text())["step"] == 4
    resumed = train_vq(train, TINY, cfg, tmp_path / "b", resume=True)
    for k, v in straight.state_dict().items():
        assert torch.equal(v, resumed.state_dict()[k]), k
    assert torch.equal(straight.quantize.usage_ema, resumed.quantize.usage_ema)
    saved = load_vq(tmp_path / "a")
    for k, v in straight.state_dict().items():
        assert torch.equal(v, saved.state_dict()[k]), k


def test_resume_refuses_a_different_architecture(tmp_path, data):
    train_vq(data[0][:16], TINY, VQTrainConfig(steps=1, **FAST), tmp_path)
    other = vq_preset("tiny").__class__(**{**TINY.to_dict(), "codebook_size": 32})
    with pytest.raises(MarsRefError, match="differs"):
        train_vq(data[0][:16], other, VQTrainConfig(steps=2, **FAST), tmp_path, resume=True)


def test_discriminator_option_runs_and_logs(data):
    rows = []
    train_vq(data[0][:16], TINY, VQTrainConfig(steps=2, disc_weight=0.1, disc_ch=8, **{**FAST, "log_every": 1}),
             callback=lambda s, r: rows.append(r))
    assert all("disc" in r and "gen_adv" in r for r in rows)


def test_train_config_validation():
    with pytest.raises(MarsRefError, match="recon_loss"):
        VQTrainConfig(recon_loss="lpips")
    with pytest.raises(MarsRefError, match="steps"):
        VQTrainConfig(steps=0)
    cfg = VQTrainConfig(steps=100, lr=1.0, warmup_steps=10, min_lr_ratio=0.1)
    assert cfg.lr_at(0) == pytest.approx(0.1) and cfg.lr_at(9) == pytest.approx(1.0)
    assert cfg.lr_at(99) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 89 / 90)))


def test_psnr_and_reconstruction_files_agree_with_numpy(tmp_path, data):
    held = data[1][:6]
    torch.manual_seed(3)
    model = VQModel(TINY)
    paths = write_reconstructions(model, held, tmp_path, batch_size=4)
    assert [p.name for p in paths] == [f"{i:06d}.png" for i in range(6)]
    ref = []
    for img, p in zip(held.permute(0, 2, 3, 1).numpy(), paths, strict=True):
        rec = np.asarray(Image.open(p).convert("RGB")).astype(np.float64)
        mse = np.mean((img.astype(np.float64) - rec) ** 2)
        ref.append(10 * np.log10(255.0**2 / mse))
    assert evaluate_vq(model, held, batch_size=4)["psnr"] == pytest.approx(float(np.mean(ref)), abs=1e-9)
    same = torch.zeros(1, 3, 4, 4, dtype=torch.uint8)
    assert torch.isinf(psnr_uint8(same, same)).all()
    assert float(psnr_uint8(same, same + 255)) == pytest.approx(0.0)


# ------------------------------------------------------------------------------------------------------------
# CLI


def _fake_world(root, n=40, split=False):
    (root / "images").mkdir(parents=True)
    rows = []
    for i, img in enumerate(shapes(n, size=16, seed=5).permute(0, 2, 3, 1).numpy()):
        Image.fromarray(img).save(root / "images" / f"{i:05d}.png")
        row = {"image": f"images/{i:05d}.png", "caption_en": "a shape"}
        if split:
            row["split"] = "val" if i % 5 == 0 else "train"
        rows.append(row)
    (root / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root


def test_cli_trains_evaluates_and_writes_reconstructions(tmp_path, capsys):
    from mars_eval.cli.main import main

    world = _fake_world(tmp_path / "world", n=80)
    out, recon = tmp_path / "vq", tmp_path / "recon"
    rc = main(["train", "vq", "--world", str(world), "--out", str(out), "--preset", "tiny", "--steps", "4",
               "--batch-size", "8", "--held-out", "8", "--recon-dir", str(recon), "--log-every", "2", "--json"])
    assert rc == 0
    res = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert res["n_train"] == 72 and res["n_images"] == 8 and res["image_size"] == "16x16"
    assert 0 < res["codebook_usage"] <= 1 and res["psnr"] > 0
    assert json.loads((out / "eval.json").read_text()) == res
    model = load_vq(out)
    assert model.cfg == TINY
    names = sorted(p.name for p in (recon / "recon").iterdir())
    assert names == [f"{i:05d}.png" for i in range(72, 80)] == sorted(p.name for p in (recon / "real").iterdir())
    real = np.asarray(Image.open(recon / "real" / "00073.png"))
    assert np.array_equal(real, np.asarray(Image.open(world / "images" / "00073.png")))


def test_cli_uses_manifest_splits(tmp_path, capsys):
    from mars_eval.cli.main import main

    world = _fake_world(tmp_path / "world", split=True)
    rc = main(["train", "vq", "--world", str(world), "--out", str(tmp_path / "vq"), "--preset", "tiny",
               "--steps", "1", "--batch-size", "4", "--json"])
    assert rc == 0
    res = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert (res["n_train"], res["n_images"]) == (32, 8)


@pytest.mark.parametrize("args, message", [
    (["--world", "{tmp}/nowhere"], "world directory not found"),
    (["--world", "{tmp}/world", "--preset", "huge"], "unknown VQ preset 'huge'"),
    (["--world", "{tmp}/world", "--held-out", "0"], "--held-out 0"),
    (["--world", "{tmp}/world", "--recon-loss", "l3"], "--recon-loss"),
    (["--world", "{tmp}/world", "--preset", "world-f4", "--held-out", "8"], "not a positive multiple of the VQ factor f=4"),
])
def test_cli_errors_are_one_line(tmp_path, capsys, args, message):
    from mars_eval.cli.main import main

    world = _fake_world(tmp_path / "world", n=40)
    args = [a.format(tmp=tmp_path) for a in args]
    if "world-f4" in args:  # 18 px images: not a multiple of 4
        for p in sorted((world / "images").glob("*.png")):
            Image.open(p).resize((18, 18)).save(p)
    with pytest.raises(SystemExit) as e:
        main(["train", "vq", "--out", str(tmp_path / "vq"), "--steps", "1", *args])
    assert e.value.code == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and message in err and "\n" not in err
