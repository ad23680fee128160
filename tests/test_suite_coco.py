"""`mars-eval coco` / run_coco: the world's COCO-like split, FID / CLIP score against independent computations,
resume after an interrupted generation, a real-style COCO folder, errors.

FID runs on the real InceptionV3 (~7-14 images/s here), so the sets are 4-6 images and one extractor is shared.
"""

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from fixtures_bundle import build_tiny_bundle
from fixtures_suites import recipe_bundle, tiny_world
from PIL import Image

from mars_eval.compbench import tiny
from mars_eval.errors import MarsEvalError
from mars_eval.generate.runner import RunOptions
from mars_eval.io import read_jsonl
from mars_eval.metrics.features import extract
from mars_eval.metrics.images import list_images
from mars_eval.metrics.inception import InceptionExtractor
from mars_eval.metrics.metric_fid import frechet_distance_features
from mars_eval.metrics.preprocess import PreprocessSpec
from mars_eval.suites import run_coco
from mars_eval.suites.coco import TABLE
from mars_eval.suites.control import derangement
from mars_eval.suites.world_split import build_split
from mars_ref.world import caption, render
from mars_ref.world.scene import Scene


class Stop(Exception):
    pass


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("coco")
    return {"world": tiny_world(root / "world"), "ckpt": build_tiny_bundle(root / "ckpt"),
            "clip": tiny.build_open_clip(root / "clip"), "extractor": InceptionExtractor(), "root": root}


def _kw(env, tmp_path, **kw):
    return dict(n=6, world=env["world"], clip=env["clip"], run=RunOptions(batch_size=2), progress=False,
                cache_dir=tmp_path / "cache", extractor=env["extractor"], **kw)


@pytest.fixture(scope="module")
def run_a(env):
    out = env["root"] / "a"
    return run_coco(env["ckpt"], out, **_kw(env, env["root"])), out


def _training_captions(world):
    caps = set()
    for corpus in ("stage1", "stage2", "stage3"):
        for r in read_jsonl(world / corpus / "manifest.jsonl"):
            caps.add(r["caption_en"].split("> ")[-1])
    return caps


def test_world_split_is_deterministic_disjoint_and_prefix_stable(env, tmp_path):
    a = build_split(env["world"], 6, (8, 8), tmp_path / "a")
    b = build_split(env["world"], 6, (8, 8), tmp_path / "b")
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    assert files and all((a / f).read_bytes() == (b / f).read_bytes() for f in files)
    caps = (a / "captions.txt").read_text(encoding="utf-8").splitlines()
    assert len(caps) == len(set(caps)) == 6 and not set(caps) & _training_captions(env["world"])
    for i, row in enumerate(read_jsonl(a / "scenes.jsonl")):  # captions and renders of the recorded scenes
        scene = Scene.from_dict(row["scene"])
        assert caption(scene, "en") == caps[i]
        assert np.array_equal(np.asarray(render(scene, 8, 8)), np.asarray(Image.open(a / "images" / f"{i:05d}.png")))
    small = build_split(env["world"], 4, (8, 8), tmp_path / "a")
    assert small != a and (small / "captions.txt").read_text(encoding="utf-8").splitlines() == caps[:4]
    assert (small / "images" / "00003.png").read_bytes() == (a / "images" / "00003.png").read_bytes()
    mtime = (a / "split.json").stat().st_mtime_ns
    assert build_split(env["world"], 6, (8, 8), tmp_path / "a") == a and (a / "split.json").stat().st_mtime_ns == mtime
    assert not [p for p in (tmp_path / "a").iterdir() if p.name.startswith(".")]  # no staging left behind


def test_fid_and_clip_score_match_independent_computations(env, run_a):
    res, out = run_a
    spec, ext = PreprocessSpec("clean"), env["extractor"]
    gen = extract(list_images(out / "images").files, spec, ext, keep=True).features
    ref = extract(list_images(res["reference_dir"]).files, spec, ext, keep=True).features
    # rel 1e-6: Inception features are float32 and oneDNN's sums depend on batch size and thread count
    assert res["fid"] == pytest.approx(frechet_distance_features(gen, ref), rel=1e-6)
    assert res["n_a"] == res["n_b"] == 6 and res["kid"] is not None and res["fid_ci_low"] <= res["fid"]

    import open_clip  # CLIP score: raw cosine of open_clip's own embeddings, computed here by hand

    model, _, pre = open_clip.create_model_and_transforms(f"local-dir:{env['clip']}")
    tok = open_clip.get_tokenizer(f"local-dir:{env['clip']}")
    man = read_jsonl(out / "images" / "manifest.jsonl")
    with torch.no_grad():
        im = model.encode_image(torch.stack([pre(Image.open(out / "images" / m["file"]).convert("RGB")) for m in man]))
        tx = model.encode_text(tok([m["prompt"] for m in man]))
    cos = torch.nn.functional.cosine_similarity(im, tx).numpy()
    assert res["clip_score"] == pytest.approx(float(cos.mean()), abs=1e-5) and res["clip_variant"] == "world-clip-raw"
    sigma = derangement([m["prompt"] for m in man])  # the control: the same images against deranged captions
    with torch.no_grad():
        other = model.encode_text(tok([man[s]["prompt"] for s in sigma]))
    ctrl = torch.nn.functional.cosine_similarity(im, other).numpy()
    assert res["clip_control"] == pytest.approx(float(ctrl.mean()), abs=1e-5) and res["clip_control_scored"] == 6

    rows = read_jsonl(out / "results.jsonl")
    metric = {r["metric"]: r for r in rows if r["kind"] == "metric" and "control" not in r}
    assert set(metric) == {"FID", "KID (x1000)", "CLIP score (world-clip-raw)"}  # FID-inf needs >= 50 images
    control = [r for r in rows if "control" in r]
    assert [(r["metric"], r["label"], r["control"]) for r in control] == [
        ("CLIP score (world-clip-raw)", "ckpt · shuffled-prompt control", "shuffled_prompts")]
    assert control[0]["value"] == res["clip_control"] and metric["CLIP score (world-clip-raw)"]["value"] == \
        res["clip_score"]
    assert all(r["table"] == TABLE and r["scale"] == "world" for r in metric.values())
    assert metric["FID"]["value"] == res["fid"] and "clean-fid clean" in metric["FID"]["protocol"]
    assert [r["images_dir"] for r in rows if r["kind"] == "samples"] == ["images"]
    grid = read_jsonl(out / "images" / "scores.jsonl")
    assert [g["file"] for g in grid] == [m["file"] for m in man]
    assert [g["score"] for g in grid] == pytest.approx(list(cos), abs=1e-5)


def test_interrupted_generation_resumes_to_the_same_results(env, run_a, tmp_path):
    res_a, out_a = run_a

    def stop(n, total):
        if n > 0:
            raise Stop

    with pytest.raises(Stop):
        run_coco(env["ckpt"], tmp_path / "b", on_generate=stop, **_kw(env, tmp_path))
    assert len(list((tmp_path / "b" / "images").glob("*.png"))) == 2
    res_b = run_coco(env["ckpt"], tmp_path / "b", **_kw(env, tmp_path))
    assert res_b["generated"] == 4
    for k in ("fid", "kid", "fid_ci_low", "fid_ci_high", "clip_score"):
        assert res_b[k] == res_a[k], k
    assert read_jsonl(tmp_path / "b" / "scores.jsonl") == read_jsonl(out_a / "scores.jsonl")
    again = run_coco(env["ckpt"], tmp_path / "b", **_kw(env, tmp_path))
    assert (again["generated"], again["clip_scored"], again["rows_appended"]) == (0, 0, 0)
    assert again["cache_hit_a"] and again["cache_hit_b"] and again["fid"] == res_a["fid"]


def test_real_coco_folder_with_per_caption_seeds_and_no_clip(env, tmp_path):
    coco = tmp_path / "val2014"
    coco.mkdir()
    rng = np.random.default_rng(0)
    for i, (w, h) in enumerate([(40, 30), (30, 44), (36, 36), (50, 20), (24, 32)]):
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(coco / f"COCO_val2014_{i:012d}.jpg")
    res = run_coco(env["ckpt"], tmp_path / "out", n=4, coco_dir=coco, run=RunOptions(batch_size=2),
                   progress=False, cache_dir=tmp_path / "cache", extractor=env["extractor"])
    man = read_jsonl(tmp_path / "out" / "images" / "manifest.jsonl")
    with open(__import__("mars_eval").__path__[0] + "/data/coco/coco_30k.csv", newline="", encoding="utf-8") as f:
        first = [r for _, r in zip(range(4), csv.DictReader(f), strict=False)]
    assert [m["prompt"] for m in man] == [r["prompt"] for r in first]
    assert [m["seed"] for m in man] == [int(r["evaluation_seed"]) for r in first]  # each caption's own seed
    spec = PreprocessSpec("coco")
    gen = extract(list_images(tmp_path / "out" / "images").files, spec, env["extractor"], keep=True).features
    ref = extract(list_images(coco).files, spec, env["extractor"], keep=True).features
    # rel 1e-6: Inception features are float32 and oneDNN's sums depend on batch size and thread count
    assert res["fid"] == pytest.approx(frechet_distance_features(gen, ref), rel=1e-6)
    assert res["scale"] == "real" and res["protocol"] == "coco" and res["n_b"] == 5
    assert res["clip_score"] is None and "not computed" in res["clip_note"]
    rows = read_jsonl(tmp_path / "out" / "results.jsonl")
    assert not [r for r in rows if r.get("metric", "").startswith("CLIP")]
    assert "LANCZOS to 256" in next(r for r in rows if r.get("metric") == "FID")["protocol"]


def test_a_shared_split_dir_reuses_the_reference_features(env, tmp_path):
    kw = {**_kw(env, tmp_path), "n": 4, "split_dir": tmp_path / "splits"}
    first = run_coco(env["ckpt"], tmp_path / "x", **kw)
    second = run_coco(env["ckpt"], tmp_path / "y", **kw, label="other")
    assert first["reference_dir"] == second["reference_dir"] and not first["cache_hit_b"] and second["cache_hit_b"]
    assert second["fid"] == first["fid"]  # same model and seeds: same images


@pytest.mark.timeout(120)  # a cache miss would train a world CLIP for minutes
def test_recipe_default_finds_the_cached_world_and_clip(env, tmp_path):
    ckpt = recipe_bundle(env["ckpt"], tmp_path / "ckpt", tmp_path / "rc", env["world"], clip=env["clip"])
    res = run_coco(ckpt, tmp_path / "out", **{**_kw(env, tmp_path), "world": None, "clip": None, "n": 4})
    assert str(tmp_path / "rc") in res["clip_model"] and res["n"] == 4 and res["clip_score"] is not None


def test_another_models_folder_scores_like_the_bundle_that_wrote_it(env, run_a, tmp_path):
    res_a, out_a = run_a
    plain = tmp_path / "plain"  # the usual COCO-30k naming: 00000.png, one image per caption
    plain.mkdir()
    for m in read_jsonl(out_a / "images" / "manifest.jsonl"):
        shutil.copy(out_a / "images" / m["file"], plain / f"{m['prompt_index']:05d}.png")
    for folder in (out_a / "images", plain):  # the folder `coco --ckpt` generated, and the same images renamed
        res = run_coco(None, tmp_path / folder.name, images=folder, **_kw(env, tmp_path))
        for k in ("fid", "kid", "kid_std", "clip_score", "clip_control", "n", "n_b"):
            assert res[k] == res_a[k], k
        assert Path(res["reference_dir"]).parent.name == Path(res_a["reference_dir"]).parent.name  # the same split
        assert res["generated"] == 0 and res["label"] == folder.name and res["images_dir"] == str(folder)


def test_best_of_n_keeps_the_candidate_clip_scores_highest(env, tmp_path):
    import open_clip

    out = tmp_path / "best"
    res = run_coco(env["ckpt"], out, best_of=3, **_kw(env, tmp_path))
    man = read_jsonl(out / "candidates" / "manifest.jsonl")
    assert len(man) == 18 and sorted({m["image_index"] for m in man}) == [0, 1, 2]
    model, _, pre = open_clip.create_model_and_transforms(f"local-dir:{env['clip']}")
    tok = open_clip.get_tokenizer(f"local-dir:{env['clip']}")
    with torch.no_grad():  # every candidate against its own caption, by hand
        im = model.encode_image(torch.stack([pre(Image.open(out / "candidates" / m["file"]).convert("RGB"))
                                             for m in man]))
        cos = torch.nn.functional.cosine_similarity(im, model.encode_text(tok([m["prompt"] for m in man]))).numpy()
    kept = sorted((out / "images").glob("*.png"))
    assert [k.name for k in kept] == [f"{i:05d}_000.png" for i in range(6)]
    for i, k in enumerate(kept):
        cand = [(c, m) for c, m in zip(cos, man, strict=True) if m["prompt_index"] == i]
        best = max(cand, key=lambda t: t[0])[1]
        assert k.read_bytes() == (out / "candidates" / best["file"]).read_bytes()
    sel = json.loads((out / "images" / "selection.json").read_text())
    assert sel["best_of"] == 3 and [len(c["cos"]) for c in sel["captions"]] == [3] * 6
    assert res["clip_score"] == pytest.approx(float(np.mean([max(c) for c in np.reshape(
        [cos[[j for j, m in enumerate(man) if m["prompt_index"] == i]] for i in range(6)], (6, 3))])), abs=1e-5)
    assert res["best_of"] == 3 and res["clip_score"] >= res["mean_candidate_cos"]
    rows = [r for r in read_jsonl(out / "results.jsonl") if r["kind"] == "metric"]
    assert all(r["protocol"].startswith("best of 3 by CLIP score; ") for r in rows)
    with pytest.raises(MarsEvalError, match="needs --ckpt, not --images"):
        run_coco(None, tmp_path / "o", images=out / "images", best_of=2, **_kw(env, tmp_path))
    with pytest.raises(MarsEvalError, match="best-of must be an integer >= 1"):
        run_coco(env["ckpt"], tmp_path / "o", best_of=0, **_kw(env, tmp_path))


def test_image_folder_names_are_checked(env, tmp_path):
    from mars_eval.suites.image_folder import caption_index

    assert [caption_index(n) for n in ("00042.png", "7.jpg", "00042_000.png", "00042_001.png", "a.png")] == [
        42, 7, 42, None, None]
    kw = _kw(env, tmp_path)

    def folder(name, files, size=(8, 8)):
        d = tmp_path / name
        d.mkdir()
        for f in files:
            Image.new("RGB", size if f != "big.png" else (16, 16)).save(d / f)
        return d

    six = [f"{i:05d}.png" for i in range(6)]
    cases = [
        (folder("missing", six[:5]), r"no image for caption 5 \(expected 00005.png; 1 of 6 missing"),
        (folder("badname", six + ["cat.png"]), "image name 'cat.png' is not a caption index"),
        (folder("twice", six + ["3.png"]), "two images for caption 3: 00003.png and 3.png"),
        (folder("extra", six + ["00006.png"]), r"1 images beyond the 6 captions scored .* give --n 7"),
        (folder("sizes", six[:5] + ["big.png"]), "images of 2 sizes"),
    ]
    for d, match in cases:
        with pytest.raises(MarsEvalError, match=match):
            run_coco(None, tmp_path / "o", images=d, **kw)
    with pytest.raises(MarsEvalError, match="not both"):
        run_coco(env["ckpt"], tmp_path / "o", images=tmp_path / "missing", **kw)
    with pytest.raises(MarsEvalError, match="image folder not found"):
        run_coco(None, tmp_path / "o", images=tmp_path / "none", **kw)


def test_bad_inputs_are_one_line_errors(env, tmp_path):
    ck, w, c = env["ckpt"], env["world"], env["clip"]
    cases = [
        (lambda: run_coco(tmp_path / "nope", tmp_path / "o", world=w, clip=c), "checkpoint directory not found"),
        (lambda: run_coco(ck, tmp_path / "o"), "records no recipe"),
        (lambda: run_coco(ck, tmp_path / "o", world=w), r"world CLIP \(--clip\)"),
        (lambda: run_coco(ck, tmp_path / "o", world=tmp_path, clip=c), "not a built world"),
        (lambda: run_coco(ck, tmp_path / "o", n=1, world=w, clip=c), "n must be an integer >= 2"),
        (lambda: run_coco(ck, tmp_path / "o", world=w, clip=c, captions="x.csv"), "--captions needs --coco-dir"),
        (lambda: run_coco(ck, tmp_path / "o", world=w, clip=c, protocol="bogus"), "unknown FID protocol"),
        (lambda: run_coco(ck, tmp_path / "o", coco_dir=tmp_path / "none"), "COCO image folder not found"),
    ]
    for fn, match in cases:
        with pytest.raises(MarsEvalError, match=match):
            fn()
    (tmp_path / "coco").mkdir()
    with pytest.raises(MarsEvalError, match="found 0 image"):
        run_coco(ck, tmp_path / "o", coco_dir=tmp_path / "coco")
    for name in ("a.png", "b.png"):
        Image.new("RGB", (8, 8)).save(tmp_path / "coco" / name)
    with pytest.raises(MarsEvalError, match="exceeds the 30000"):
        run_coco(ck, tmp_path / "o", coco_dir=tmp_path / "coco", n=40000)


def test_cli_prints_the_table(env, run_a, tmp_path, capsys):
    from mars_eval.cli.main import main

    captions = tmp_path / "caps.csv"
    captions.write_text("prompt,evaluation_seed\na red ball,7\n\"a blue box, a star\",9\nthree trees,11\n")
    out = tmp_path / "cli"
    shutil.copytree(run_a[1] / "images", tmp_path / "ref")  # any folder of images stands in for val2014
    args = ["coco", "--ckpt", str(env["ckpt"]), "--out", str(out), "--coco-dir", str(tmp_path / "ref"),
            "--captions", str(captions), "--n", "3", "--protocol", "clean", "--clip", str(env["clip"]),
            "--batch-size", "2", "--cache-dir", str(tmp_path / "cache")]
    assert main(args) == 0
    text = capsys.readouterr().out
    assert "COCO-style FID" in text and "n = 3 vs 6 reference" in text and "CLIP score (clip-b32-raw)" in text
    assert main([*args, "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["generated"] == 0 and res["protocol"] == "clean" and res["clip_model"].startswith("local-dir:")
    assert res["clip_control"] is not None and res["clip_control_scored"] == 0
    assert main([*args, "--no-control", "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["clip_control"] is None and res["clip_scored"] == res["clip_control_scored"] == 0
    assert [m["seed"] for m in read_jsonl(out / "images" / "manifest.jsonl")] == [7, 9, 11]
