"""`mars-eval fid` and `mars-eval clip-score`: JSON results, and every user error as one line with exit code
1."""

import json
import subprocess
import sys

import numpy as np
import open_clip
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from mars_eval.cli.main import main

TINY = {"embed_dim": 16,
        "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 8, "head_width": 16},
        "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}}


def _images(folder, n, seed=0, names=None):
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        name = names[i] if names else f"{i:04d}.png"
        Image.fromarray(rng.integers(0, 256, (24, 24, 3), dtype=np.uint8)).save(folder / name)
    return folder


def _fails_with(capsys, argv, *fragments):
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    for f in fragments:
        assert f in err, err
    return err


def test_fid_json(tmp_path, capsys):
    a, b = _images(tmp_path / "a", 3, seed=1), _images(tmp_path / "b", 4, seed=2)
    assert main(["fid", str(a), str(b), "--json", "--cache-dir", str(tmp_path / "cache"), "--bootstrap", "20"]) == 0
    out = json.loads(capsys.readouterr().out)
    for key in ("fid", "kid", "kid_std", "fid_ci_low", "fid_ci_high", "protocol", "n_a", "n_b", "extractor_sha256"):
        assert key in out, key
    assert out["protocol"] == "clean" and (out["n_a"], out["n_b"]) == (3, 4)
    assert out["fid_ci_low"] <= out["fid"] <= out["fid_ci_high"] and out["fid_inf"] is None
    assert out["kid_subset_size"] == 3 and out["fid_bootstrap_resamples"] == 20


def test_fid_errors(tmp_path, capsys):
    a = _images(tmp_path / "a", 3)
    _fails_with(capsys, ["fid", str(a), str(tmp_path / "nope")], "image folder not found", "nope")
    one = _images(tmp_path / "one", 1)
    _fails_with(capsys, ["fid", str(a), str(one)], "found 1 image(s), need at least 2")
    bad = _images(tmp_path / "bad", 3)
    (bad / "0001.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    _fails_with(capsys, ["fid", str(a), str(bad), "--no-cache"], "0001.png")
    _fails_with(capsys, ["fid", str(a), str(a), "--resolution", "128"], "coco protocol only")
    _fails_with(capsys, ["fid", str(a), str(a), "--protocol", "legacy"], "legacy")


def test_fid_error_through_the_console_script(tmp_path):
    r = subprocess.run([sys.executable, "-c", "from mars_eval.cli.main import entry; entry()", "fid",
                        str(tmp_path), str(tmp_path)], capture_output=True, text=True)
    assert r.returncode == 1 and "Traceback" not in r.stderr and r.stderr.count("\n") == 1
    assert "found 0 image(s)" in r.stderr


@pytest.fixture
def clip_dir(tmp_path):
    """A tiny random open_clip model in open_clip's local-dir format (as a world CLIP would be saved)."""
    d = tmp_path / "clip"
    d.mkdir()
    (d / "open_clip_config.json").write_text(json.dumps({"model_cfg": TINY}))
    torch.manual_seed(0)
    save_file(open_clip.create_model(f"local-dir:{d}").state_dict(), str(d / "open_clip_model.safetensors"))
    return d


def test_clip_score_json_and_errors(tmp_path, capsys, clip_dir):
    imgs = _images(tmp_path / "imgs", 4, names=["0_0.png", "0_1.png", "1_0.png", "2_0.png"])
    prompts = tmp_path / "p.txt"
    prompts.write_text("a red cube\r\ntwo blue balls\r\na green cone")
    argv = ["clip-score", str(imgs), "--prompts", str(prompts), "--clip-ckpt", str(clip_dir)]
    assert main(argv + ["--variant", "clipscore-2.5", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["variant"] == "clipscore-2.5" and out["n_images"] == 4 and out["n_prompts"] == 3
    assert out["text_prefix"] == "A photo depicts " and out["clip_score"] >= 0

    two = tmp_path / "two.txt"
    two.write_text("a red cube\ntwo blue balls\n")
    _fails_with(capsys, ["clip-score", str(imgs), "--prompts", str(two), "--clip-ckpt", str(clip_dir)],
                "2_0.png", "out of range")
    four = tmp_path / "four.txt"
    four.write_text("a\nb\nc\nd\n")
    _fails_with(capsys, ["clip-score", str(imgs), "--prompts", str(four), "--clip-ckpt", str(clip_dir)],
                "4 prompts", "index 3")
    _fails_with(capsys, argv[:4] + ["--clip-ckpt", str(tmp_path / "missing.safetensors")], "not found")
    _fails_with(capsys, ["clip-score", str(tmp_path / "none"), "--prompts", str(prompts), "--clip-ckpt",
                         str(clip_dir)], "not found")
    (imgs / "2_0.png").write_bytes(b"")
    _fails_with(capsys, argv, "2_0.png", "empty file")
