"""World CLIP: open_clip model trained on bilingual world captions, saved in open_clip's local format.

The fast tests train a few steps of a tiny configuration; what they check is the plumbing that makes the held-out
figure trustworthy: the saved directory loads through open_clip's own `local-dir:` path and through the metrics
package's `load_clip`, open_clip's own preprocessing and tokenizer reproduce the training-time tensors, the
retrieval figure recomputed from the loaded model equals the one reported, and a failed run leaves nothing behind.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from mars_eval.errors import MarsEvalError
from mars_eval.world_clip import WorldClipConfig, load_world_clip, top1_in_batch, train_world_clip
from mars_eval.world_clip.data import normalise, read_pairs, shift
from mars_eval.world_clip.train import MEAN, STD
from mars_ref.world.build import build_world

TINY = dict(resnet_width=8, text_width=32, head_width=16, embed_dim=32, context_length=64, vocab_size=300,
            steps=3, batch_size=8, held_out=8, eval_batch=4)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    out = tmp_path_factory.mktemp("w") / "world"
    build_world(out, 40, 3, n_stage2=1, n_stage3=8, n_sequences=1, n_text=2, val_size=3, train_size=1)
    return out


@pytest.fixture(scope="module")
def trained(world, tmp_path_factory):
    out = tmp_path_factory.mktemp("c") / "clip"
    return train_world_clip(world, out, WorldClipConfig(**TINY)), out


def test_saved_directory_is_open_clip_local_format(trained):
    summary, out = trained
    names = {p.name for p in out.iterdir()}
    assert {"open_clip_config.json", "open_clip_model.safetensors", "tokenizer.json", "world_clip.json"} <= names
    cfg = json.loads((out / "open_clip_config.json").read_text())
    assert cfg["model_cfg"]["text_cfg"]["pool_type"] == "last"
    assert cfg["model_cfg"]["text_cfg"]["hf_tokenizer_name"] == str(out)
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")]  # no staging leftovers
    assert summary["n_held_out"] == 8 and summary["n_train"] == 32 + 8  # stage1 minus held out, plus stage3
    assert summary["truncated_captions"] == {"en": 0, "zh": 0}


def test_open_clip_and_metrics_loaders_reproduce_the_reported_retrieval(trained, world):
    """Recompute held-out retrieval through open_clip's own transform and tokenizer on PIL images."""
    import open_clip

    from mars_eval.metrics.clip_score import load_clip

    summary, out = trained
    model, _, preprocess = open_clip.create_model_and_transforms(f"local-dir:{out}")
    tokenizer = open_clip.get_tokenizer(f"local-dir:{out}")
    model.eval()
    paths, caps = read_pairs(world)
    held = slice(len(paths) - summary["n_held_out"], None)
    with torch.no_grad():
        x = torch.stack([preprocess(Image.open(p)) for p in paths[held]])
        img = torch.nn.functional.normalize(model.encode_image(x), dim=-1)
        for lang in ("en", "zh"):
            txt = torch.nn.functional.normalize(model.encode_text(tokenizer(caps[lang][held])), dim=-1)
            got = top1_in_batch(img, txt, caps[lang][held], 4)["top1"]
            assert got == pytest.approx(summary[f"top1_{lang}"])
    clip = load_clip(out)  # the metrics helper's loader (CLIP score)
    a = clip.model.encode_image(x[:2])
    b = model.encode_image(x[:2])
    assert torch.allclose(a, b)
    m2, _, tok2 = load_world_clip(out)
    assert torch.equal(tok2(["一个钟在一颗纽扣的右边"]), tokenizer(["一个钟在一颗纽扣的右边"]))
    # the other open_clip route: a registered model config + pretrained=<weights file>
    open_clip.add_model_config(out / "world-clip.json")
    m3, _, _ = open_clip.create_model_and_transforms("world-clip", pretrained=str(out / "open_clip_model.safetensors"))
    m3.eval()
    assert torch.allclose(m3.encode_image(x[:2]), b)
    clip2 = load_clip(out / "open_clip_model.safetensors", model_name=str(out / "world-clip.json"))
    assert torch.allclose(clip2.model.encode_image(x[:2]), b)


def test_a_moved_directory_still_loads(world, tmp_path):
    """The saved config records the absolute path it was written at (hf_tokenizer_name); a directory moved
    elsewhere loads through open_clip's local-dir route, the metrics loader and the model-config route, with
    the same tokens and embeddings."""
    import shutil

    from mars_eval.metrics.clip_score import load_clip

    first = tmp_path / "first" / "clip"
    train_world_clip(world, first, WorldClipConfig(**TINY))
    model, _, tok = load_world_clip(first)
    text = ["a red ball on the left of two blue boxes", "一个钟在一颗纽扣的右边"]
    ids = tok(text)
    with torch.no_grad():
        want = model.encode_text(ids)
    moved = tmp_path / "elsewhere" / "renamed-clip"
    moved.parent.mkdir()
    shutil.move(first, moved)
    assert not first.exists()
    recorded = json.loads((moved / "open_clip_config.json").read_text())["model_cfg"]["text_cfg"]["hf_tokenizer_name"]
    assert recorded == str(first)  # stale: the loaders must not depend on it
    m2, _, tok2 = load_world_clip(moved)
    clip = load_clip(moved)
    clip3 = load_clip(moved / "open_clip_model.safetensors", model_name=str(moved / "world-clip.json"))
    with torch.no_grad():
        for m, t in ((m2, tok2), (clip.model, clip.tokenizer), (clip3.model, clip3.tokenizer)):
            assert torch.equal(t(text), ids)
            assert torch.allclose(m.encode_text(t(text)), want)
    (moved / "tokenizer.json").unlink()  # without its tokenizer the folder cannot be used offline
    (moved / "tokenizer_config.json").unlink()
    with pytest.raises(MarsEvalError, match="Hugging Face Hub"):
        load_clip(moved)


def test_training_tensors_equal_open_clip_preprocessing(world, trained):
    """Our uint8 -> float normalisation is what open_clip's eval transform gives for 32 px images."""
    paths, _ = read_pairs(world)
    _, preprocess, _ = load_world_clip(trained[1])
    im = Image.open(paths[0]).convert("RGB")
    ours = normalise(torch.from_numpy(np.asarray(im).copy()).permute(2, 0, 1)[None], MEAN, STD)[0]
    assert torch.allclose(ours, preprocess(im), atol=1e-6)


def test_tokenizer_round_trips_both_languages_and_ends_with_padding(trained):
    _, out = trained
    _, _, tok = load_world_clip(out)
    for text in ("a red ball on the left of two blue boxes", "一个红色的球在两个蓝色的盒子的左边"):
        ids = tok([text])[0]
        pad = tok.tokenizer.pad_token_id
        n = int((ids != pad).sum())
        assert 0 < n < len(ids) and (ids[n:] == pad).all()  # right padding: the text comes first
        assert tok.tokenizer.decode(ids[:n].tolist()) == text


def test_top1_in_batch_counts_by_caption_text():
    e = torch.eye(4)
    assert top1_in_batch(e, e, ["a", "b", "c", "d"], 4)["top1"] == 1.0
    swapped = e[[1, 0, 2, 3]]
    assert top1_in_batch(e, swapped, ["a", "b", "c", "d"], 4)["top1"] == 0.5
    assert top1_in_batch(e, swapped, ["a", "a", "c", "d"], 4)["top1"] == 1.0  # same caption: either copy is right
    res = top1_in_batch(torch.eye(6), torch.eye(6), list("abcdef"), 4)
    assert res["n"] == 4  # the incomplete last batch is dropped


def test_shift_moves_content_and_keeps_shape():
    img = torch.zeros(1, 3, 8, 8, dtype=torch.uint8)
    img[0, :, 3, 3] = 255
    out = shift(img.repeat(50, 1, 1, 1), 2, torch.Generator().manual_seed(0))
    assert out.shape == (50, 3, 8, 8) and out.dtype == torch.uint8
    pos = {tuple(torch.nonzero(o[0]).tolist()[0]) for o in out}
    assert len(pos) > 5 and all(1 <= y <= 5 and 1 <= x <= 5 for y, x in pos)


def test_failed_run_leaves_no_output(world, tmp_path):
    out = tmp_path / "clip"
    with pytest.raises(MarsEvalError, match="stage1/manifest.jsonl"):
        train_world_clip(tmp_path / "nowhere", out, WorldClipConfig(**TINY))
    assert not out.exists() and not list(tmp_path.iterdir())
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "keep.txt").write_text("x")
    with pytest.raises(MarsEvalError, match="not empty"):
        train_world_clip(world, tmp_path / "other", WorldClipConfig(**TINY))
    assert (tmp_path / "other" / "keep.txt").read_text() == "x"


@pytest.mark.parametrize("bad", [dict(patch_size=5, vision="vit"), dict(vision="cnn"), dict(steps=0),
                                 dict(vocab_size=100), dict(text_width=100)])
def test_config_validation(bad):
    with pytest.raises(MarsEvalError, match="invalid world CLIP config"):
        WorldClipConfig(**bad)


def test_cli_trains_and_prints_json(world, tmp_path, capsys):
    from mars_eval.cli.main import main

    out = tmp_path / "clip"
    rc = main(["train", "clip", "--world", str(world), "--out", str(out), "--steps", "2", "--batch-size", "8",
               "--json"])
    assert rc == 0
    res = json.loads(capsys.readouterr().out)
    assert 0 <= res["top1_en"] <= 1 and 0 <= res["top1_zh"] <= 1 and res["eval_batch"] == 32
    assert (out / "world_clip.json").is_file()


def test_cli_missing_world_is_one_line_error(tmp_path, capsys):
    from mars_eval.cli.main import main

    with pytest.raises(SystemExit) as e:
        main(["train", "clip", "--world", str(tmp_path / "none"), "--out", str(tmp_path / "o")])
    assert e.value.code == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: world directory not found") and "\n" not in err


@pytest.mark.slow
def test_world_clip_learns_held_out_retrieval(tmp_path):
    """A short real run: held-out retrieval far above chance (1/32) in both languages."""
    world = tmp_path / "world"
    build_world(world, 1200, 0, n_stage2=1, n_stage3=600, n_sequences=1, n_text=2)
    summary = train_world_clip(world, tmp_path / "clip", WorldClipConfig(steps=600, held_out=256))
    assert summary["top1_en"] > 0.12 and summary["top1_zh"] > 0.12, summary["retrieval"]  # chance: 1/32
