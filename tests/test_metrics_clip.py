"""CLIP score against a direct open_clip computation, for each variant, with a tiny randomly initialised model
saved as a local checkpoint (file + model config, and open_clip's local-dir format)."""

import json

import numpy as np
import open_clip
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from mars_eval.errors import MarsEvalError
from mars_eval.metrics.clip_score import VARIANTS, clip_score, load_clip
from mars_eval.prompts import PromptSet

TINY = {"embed_dim": 16,
        "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 8, "head_width": 16},
        "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}}
PROMPTS = ["a red cube", "two blue spheres", "a green cone left of a cube", "a yellow torus"]


@pytest.fixture(scope="module", params=[2, 1], ids=["mean-cos>0", "mean-cos<0"])
def tiny_clip(tmp_path_factory, request):
    """(config json path, weights file, local-dir folder) of one tiny random open_clip model. The projections
    are re-drawn wider so cosines take both signs on the test images: with seed 2 their mean is positive, with
    seed 1 negative, so both the per-image and the mean clamps are exercised."""
    root = tmp_path_factory.mktemp("clip")
    cfg = root / "mars-tiny-clip.json"
    cfg.write_text(json.dumps(TINY))
    open_clip.add_model_config(cfg)
    torch.manual_seed(request.param)
    model = open_clip.create_model("mars-tiny-clip")
    with torch.no_grad():
        torch.nn.init.normal_(model.visual.proj, std=1.0)
        torch.nn.init.normal_(model.text_projection, std=1.0)
    weights = root / "tiny.safetensors"
    save_file(model.state_dict(), str(weights))
    local = root / "world-clip"
    local.mkdir()
    (local / "open_clip_config.json").write_text(json.dumps({"model_cfg": TINY, "preprocess_cfg": {}}))
    save_file(model.state_dict(), str(local / "open_clip_model.safetensors"))
    return cfg, weights, local


@pytest.fixture
def image_dir(tmp_path):
    """Two images per prompt, named {prompt index}_{sample}.png; random colours so cosines vary in sign."""
    rng = np.random.default_rng(0)
    d = tmp_path / "images"
    d.mkdir()
    for i in range(len(PROMPTS)):
        for s in range(2):
            Image.fromarray(rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)).save(d / f"{i:06d}_{s}.png")
    return d


@pytest.fixture
def prompts(tmp_path):
    p = tmp_path / "prompts.txt"
    p.write_text("\n".join(PROMPTS) + "\n")
    return PromptSet.from_file(p)


def _direct(weights, image_dir, prefix):
    """Cosines computed directly with open_clip, image i of the folder against prompt int(name[:6])."""
    model, _, preprocess = open_clip.create_model_and_transforms("mars-tiny-clip", pretrained=str(weights))
    tokenizer = open_clip.get_tokenizer("mars-tiny-clip")
    model.eval()
    cos = []
    with torch.no_grad():
        for f in sorted(image_dir.glob("*.png")):
            img = model.encode_image(preprocess(Image.open(f).convert("RGB"))[None])
            txt = model.encode_text(tokenizer([prefix + PROMPTS[int(f.name[:6])]]))
            cos.append(torch.nn.functional.cosine_similarity(img, txt).item())
    return np.array(cos)


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_clip_score_equals_direct_open_clip(tiny_clip, image_dir, prompts, variant):
    cfg, weights, _ = tiny_clip
    clip = load_clip(weights, str(cfg))
    out = clip_score(image_dir, prompts, variant, clip, batch_size=3)
    prefix = "A photo depicts " if variant == "clipscore-2.5" else ""
    cos = _direct(weights, image_dir, prefix)
    assert (cos < 0).any()  # the clamps bite
    assert (cos > 0).any() or prefix  # (with the prefix, seed 1 gives only negative cosines)
    expected = {
        "clip-b32-raw": cos.mean(),
        "clip-l14-100": max(100 * cos.mean(), 0.0),
        "clipscore-2.5": (2.5 * np.maximum(cos, 0)).mean(),
    }[variant]
    assert out["clip_score"] == pytest.approx(expected, rel=1e-5, abs=1e-6)
    assert out["variant"] == variant and out["text_prefix"] == prefix and out["matching"] == "file name"
    assert out["n_images"] == 8 and out["n_prompts"] == 4 and out["model"] == "mars-tiny-clip"
    assert out["model_matches_variant"] is False  # a tiny model, not the variant's ViT: recorded


def test_local_dir_checkpoint_gives_the_same_score(tiny_clip, image_dir, prompts):
    cfg, weights, local = tiny_clip
    a = clip_score(image_dir, prompts, "clip-b32-raw", load_clip(weights, str(cfg)))
    b = clip_score(image_dir, prompts, "clip-b32-raw", load_clip(local))
    assert a["clip_score"] == pytest.approx(b["clip_score"], rel=1e-6)
    assert b["checkpoint"] == str(local.resolve())


def test_manifest_matching_and_its_errors(tiny_clip, image_dir, prompts):
    cfg, weights, _ = tiny_clip
    clip = load_clip(weights, str(cfg))
    by_name = clip_score(image_dir, prompts, "clip-b32-raw", clip)
    files = sorted(p.name for p in image_dir.glob("*.png"))
    for f in files:  # rename so that only the manifest knows the prompt
        (image_dir / f).rename(image_dir / f"img_{f}")
    rows = [{"file": f"img_{f}", "prompt_index": int(f[:6]), "prompt": PROMPTS[int(f[:6])]} for f in files]
    (image_dir / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    via_manifest = clip_score(image_dir, prompts, "clip-b32-raw", clip)
    assert via_manifest["matching"] == "manifest"
    assert via_manifest["clip_score"] == pytest.approx(by_name["clip_score"], rel=1e-6)
    rows[0]["prompt"] = "something else"
    (image_dir / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(MarsEvalError, match="differs from prompt"):
        clip_score(image_dir, prompts, "clip-b32-raw", clip)


def test_mismatched_prompts_are_errors(tiny_clip, image_dir, tmp_path):
    cfg, weights, _ = tiny_clip
    clip = load_clip(weights, str(cfg))
    fewer = tmp_path / "three.txt"
    fewer.write_text("\n".join(PROMPTS[:3]))
    with pytest.raises(MarsEvalError, match="prompt index 3 is out of range"):
        clip_score(image_dir, PromptSet.from_file(fewer), "clip-b32-raw", clip)
    more = tmp_path / "five.txt"
    more.write_text("\n".join(PROMPTS + ["a fifth prompt"]))
    with pytest.raises(MarsEvalError, match="first without an image: index 4"):
        clip_score(image_dir, PromptSet.from_file(more), "clip-b32-raw", clip)
    Image.new("RGB", (8, 8)).save(image_dir / "cover.png")
    with pytest.raises(MarsEvalError, match="cover.png: file name does not start with a prompt index"):
        clip_score(image_dir, PromptSet.from_file(more), "clip-b32-raw", clip)


def test_loading_is_local_only(tiny_clip, tmp_path, monkeypatch):
    cfg, weights, _ = tiny_clip
    monkeypatch.chdir(tmp_path)
    with pytest.raises(MarsEvalError, match="not found"):
        load_clip("openai", "ViT-B-32")  # a pretrained tag is not a path: never downloaded
    with pytest.raises(MarsEvalError, match="needs --clip-model"):
        load_clip(weights, None)
    with pytest.raises(MarsEvalError, match="unknown open_clip model"):
        load_clip(weights, "No-Such-Model")
    wider = tmp_path / "mars-tiny-clip-wide.json"
    wider.write_text(json.dumps({**TINY, "embed_dim": 24}))
    with pytest.raises(MarsEvalError, match="cannot load CLIP checkpoint"):
        load_clip(weights, str(wider))  # wrong architecture for these weights
    hub = tmp_path / "hub-clip"
    hub.mkdir()
    (hub / "open_clip_config.json").write_text(json.dumps(
        {"model_cfg": {**TINY, "text_cfg": {"hf_model_name": "bert-base-uncased"}}}))
    save_file({"x": torch.zeros(1)}, str(hub / "open_clip_model.safetensors"))
    with pytest.raises(MarsEvalError, match="Hugging Face Hub"):
        load_clip(hub)
