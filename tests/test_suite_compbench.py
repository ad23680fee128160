"""`mars-eval compbench` / run_compbench: world and official suites, resumable scoring, rows, errors.

A tiny bundle (8 px images), a 30-image world with 6 val prompts per category, random-weight world judges whose
spatial / complex scores vary with the image, and a tiny random BLIP-VQA for the official path.
"""

import json
import shutil

import numpy as np
import pytest
from fixtures_bundle import build_tiny_bundle
from fixtures_suites import random_world_judges, recipe_bundle, tiny_world
from PIL import Image

from mars_eval.compbench import tiny
from mars_eval.compbench.blip_vqa import BlipVqaConfig
from mars_eval.compbench.files import ImageItem, official_name
from mars_eval.compbench.score import JudgePaths, ScoreOptions, score_images
from mars_eval.errors import MarsEvalError
from mars_eval.generate.runner import RunOptions
from mars_eval.io import read_jsonl
from mars_eval.judges.world_calibration import judge_calibration
from mars_eval.judges.world_judges import WorldJudges
from mars_eval.prompts import PromptSet
from mars_eval.suites import run_compbench
from mars_eval.suites.compbench import CALIBRATION_TABLE, TABLE, TABLE_ZH

COLOR = PromptSet.builtin("color_val").texts[:2]
OPTIONS = ScoreOptions(blip=BlipVqaConfig(image_size=32))


class Stop(Exception):
    pass


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("suite")
    blip = tiny.build_blip_vqa(root / "blip", {w.strip(".,").lower() for t in COLOR for w in t.split()})
    return {"world": tiny_world(root / "world"), "judges": random_world_judges(root / "judges"),
            "ckpt": build_tiny_bundle(root / "ckpt"), "blip": blip, "root": root}


def _world_kw(env, **kw):
    return dict(categories=["spatial", "complex"], images_per_prompt=2, limit=3, world=env["world"],
                world_judges=env["judges"], run=RunOptions(batch_size=2), progress=False, calibration_n=2, **kw)


@pytest.fixture(scope="module")
def run_a(env):
    out = env["root"] / "a"
    return run_compbench(env["ckpt"], out, **_world_kw(env)), out


def _strip(rows):
    return [{k: v for k, v in r.items() if k not in ("commit", "time")} for r in rows]


def test_interrupted_run_resumes_to_the_same_scores(env, run_a, tmp_path):
    res_a, out_a = run_a
    assert 0 < res_a["scores"]["spatial"] < 1  # scores vary: the comparison below can fail
    seen = []

    def stop_after_first_batch(n, total):
        seen.append(n)
        if n > 0:
            raise Stop

    out_b = tmp_path / "b"
    with pytest.raises(Stop):
        run_compbench(env["ckpt"], out_b, on_generate=stop_after_first_batch, **_world_kw(env))
    made = sorted(p.name for p in (out_b / "images" / "spatial").glob("*.png"))
    assert made == ["00000_000.png", "00000_001.png"] and not (out_b / "results.jsonl").exists()
    res_b = run_compbench(env["ckpt"], out_b, **_world_kw(env))
    assert res_b["generated"] == {"spatial": 4, "complex": 6}  # the finished chunk was not generated again
    assert res_b["scores"] == res_a["scores"]
    assert read_jsonl(out_b / "scores.jsonl") == read_jsonl(out_a / "scores.jsonl")
    assert _strip(read_jsonl(out_b / "results.jsonl")) == _strip(read_jsonl(out_a / "results.jsonl"))


def test_rerun_recomputes_nothing_and_rescores_only_missing_chunks(env, run_a, tmp_path):
    _, out_a = run_a
    out = tmp_path / "c"
    shutil.copytree(out_a, out)
    again = run_compbench(env["ckpt"], out, **_world_kw(env))
    assert again["generated"] == {"spatial": 0, "complex": 0} and again["scored"] == 0
    assert again["rows_appended"] == 0  # a finished run appends nothing twice
    rows = read_jsonl(out / "scores.jsonl")
    kept = [r for r in rows if r["category"] != "complex" or r["prompt_index"] != 2]
    torn = json.dumps(rows[-1])[:40]  # a killed append leaves a partial last line
    (out / "scores.jsonl").write_text("".join(json.dumps(r) + "\n" for r in kept) + torn)
    third = run_compbench(env["ckpt"], out, **_world_kw(env))
    assert third["scored"] == 6  # the one canonical chunk of `complex` that lost rows, recomputed whole
    assert sorted(map(json.dumps, read_jsonl(out / "scores.jsonl"))) == sorted(map(json.dumps, rows))


def test_scores_rows_and_report_from_independent_computations(env, run_a, tmp_path):
    res, out = run_a
    judges = WorldJudges.load(env["judges"])
    for cat in ("spatial", "complex"):  # category score = mean over images of the judge's per-image score
        man = read_jsonl(out / "images" / cat / "manifest.jsonl")
        direct = [judges.score(cat, Image.open(out / "images" / cat / m["file"]).convert("RGB"), m["prompt"])[0]
                  for m in man]
        assert len(direct) == 6 and res["scores"][cat] == pytest.approx(np.mean(direct), rel=1e-5, abs=1e-9)
    rows = read_jsonl(out / "results.jsonl")
    metric = {r["metric"]: r for r in rows if r.get("table") == TABLE and "control" not in r}
    assert list(metric) == ["Spatial", "Complex"]
    control = {r["metric"]: r for r in rows if r.get("table") == TABLE and "control" in r}
    assert list(control) == ["Spatial", "Complex"] and control["Spatial"]["label"] == "ckpt · shuffled-prompt control"
    assert metric["Spatial"]["value"] == pytest.approx(100 * res["scores"]["spatial"])
    assert metric["Spatial"]["scale"] == "world" and metric["Spatial"]["kind"] == "metric"
    assert {r["images_dir"] for r in rows if r["kind"] == "samples"} == {"images/spatial", "images/complex"}
    cal = judge_calibration(env["world"], 2, 0, judges=env["judges"], vq=env["ckpt"] / "vq",
                            categories=("spatial", "complex"))
    got = {(r["label"], r["metric"]): r["value"] for r in rows if r.get("table") == CALIBRATION_TABLE}
    assert got[("world judges, clean renders", "Spatial")] == pytest.approx(100 * cal[0]["accuracy_clean"])
    assert got[("world judges, VQ round trip", "Complex")] == pytest.approx(100 * cal[1]["accuracy_vq"])
    grid = {r["file"]: r["score"] for r in read_jsonl(out / "images" / "spatial" / "scores.jsonl")}
    per_image = {r["file"]: r["score"] for r in read_jsonl(out / "scores.jsonl")
                 if r["category"] == "spatial" and "control" not in r}
    assert grid == {f.split("/")[-1]: s for f, s in per_image.items()}

    from mars_eval.report.build import build_report

    info = build_report([out], tmp_path / "report")
    md = (tmp_path / "report" / "report.md").read_text()
    assert info["grids"] == 2 and TABLE in md and CALIBRATION_TABLE in md


def test_chinese_prompts(env, tmp_path):
    res = run_compbench(env["ckpt"], tmp_path / "zh", **{**_world_kw(env), "categories": ["spatial"], "limit": 2,
                                                         "images_per_prompt": 1, "lang": "zh"})
    zh = (env["world"] / "prompts" / "zh" / "spatial_val.txt").read_text(encoding="utf-8").splitlines()[:2]
    assert [r["prompt"] for r in read_jsonl(tmp_path / "zh" / "scores.jsonl") if "control" not in r] == zh
    assert {r["table"] for r in read_jsonl(tmp_path / "zh" / "results.jsonl") if r["kind"] == "metric"} == {
        TABLE_ZH, CALIBRATION_TABLE}
    assert res["lang"] == "zh" and res["images_dirs"]["spatial"].endswith("spatial_zh")


def test_official_judges_generated_and_foreign_folder(env, tmp_path):
    judges = JudgePaths(blip_dir=env["blip"])
    kw = dict(categories=["color"], images_per_prompt=2, limit=2, judges=judges, score_options=OPTIONS,
              run=RunOptions(batch_size=2), progress=False)
    res = run_compbench(env["ckpt"], tmp_path / "gen", **kw)
    man = read_jsonl(tmp_path / "gen" / "images" / "color" / "manifest.jsonl")
    assert [m["prompt"] for m in man] == [COLOR[0], COLOR[0], COLOR[1], COLOR[1]]
    items = [ImageItem(tmp_path / "gen" / "images" / "color" / m["file"], m["prompt_index"], m["image_index"],
                     m["prompt"]) for m in man]
    direct = [s.score for s in score_images("color", items, judges, OPTIONS)]
    assert [r["score"] for r in read_jsonl(tmp_path / "gen" / "scores.jsonl") if "control" not in r] == direct
    assert res["scale"] == "real" and res["table_x100"]["Color"] == pytest.approx(100 * np.mean(direct))
    swapped = [ImageItem(it.path, it.prompt_index, it.image_index, COLOR[1 - it.prompt_index]) for it in items]
    control = [s.score for s in score_images("color", swapped, judges, OPTIONS)]  # two prompts: swapped
    assert res["control"]["table_x100"]["Color"] == pytest.approx(100 * np.mean(control))

    folder = tmp_path / "other_model" / "color" / "samples"  # the official repository's layout
    folder.mkdir(parents=True)
    for m in man:  # the same images under the official names, counters 10 * i + n as the official script
        shutil.copy(tmp_path / "gen" / "images" / "color" / m["file"],
                    folder / official_name(m["prompt"], 10 * m["prompt_index"] + m["image_index"]))
    foreign = run_compbench(None, tmp_path / "foreign", images=tmp_path / "other_model",
                            **{k: v for k, v in kw.items() if k not in ("categories", "run")})
    assert foreign["categories"] == ["color"] and foreign["generated"] == {"color": 0}
    assert [r["score"] for r in read_jsonl(tmp_path / "foreign" / "scores.jsonl") if "control" not in r] == direct
    grid = read_jsonl(tmp_path / "foreign" / "samples" / "color" / "manifest.jsonl")
    assert [g["prompt"] for g in grid] == [m["prompt"] for m in man]


@pytest.mark.timeout(120)  # a cache miss would train a VQ and judges for minutes
def test_recipe_default_finds_the_cached_world_and_judges(env, tmp_path):
    ckpt = recipe_bundle(env["ckpt"], tmp_path / "ckpt", tmp_path / "cache", env["world"], judges=env["judges"])
    kw = {k: v for k, v in _world_kw(env).items() if k not in ("world", "world_judges")}
    res = run_compbench(ckpt, tmp_path / "out", **{**kw, "categories": ["spatial"], "limit": 1})
    assert res["world"].startswith(str(tmp_path / "cache")) and res["n_images"] == {"spatial": 2}


def _err(fn, match):
    with pytest.raises(MarsEvalError, match=match):
        fn()


def test_bad_inputs_are_one_line_errors(env, tmp_path):
    ck, w, j = env["ckpt"], env["world"], env["judges"]
    quiet = dict(progress=False, calibration_n=0)
    _err(lambda: run_compbench(tmp_path / "nope", tmp_path / "o", world=w, world_judges=j, **quiet),
         "checkpoint directory not found")
    _err(lambda: run_compbench(ck, tmp_path / "o", **quiet), "records no recipe")
    _err(lambda: run_compbench(ck, tmp_path / "o", world=w, **quiet), "world judges")
    _err(lambda: run_compbench(ck, tmp_path / "o", categories=["colour"], world=w, world_judges=j, **quiet),
         "unknown world CompBench category 'colour'")
    _err(lambda: run_compbench(ck, tmp_path / "o", categories=["3d_spatial"], world=w, world_judges=j, **quiet),
         "unknown world CompBench category")
    _err(lambda: run_compbench(None, tmp_path / "o", world=w, world_judges=j, **quiet), "give a checkpoint")
    _err(lambda: run_compbench(ck, tmp_path / "o", images_per_prompt=0, world=w, world_judges=j, **quiet),
         "images-per-prompt")
    blip = JudgePaths(blip_dir=env["blip"])
    _err(lambda: run_compbench(ck, tmp_path / "o", judges=blip, lang="zh", **quiet), "English only")
    _err(lambda: run_compbench(ck, tmp_path / "o", judges=blip, categories=["spatial"], **quiet),
         "needs judge weights: give --detector-dir")
    _err(lambda: run_compbench(ck, tmp_path / "o", judges=blip, world=w, **quiet), "not both")
    empty = tmp_path / "empty"
    empty.mkdir()
    _err(lambda: run_compbench(None, tmp_path / "o", images=empty, judges=blip, **quiet), "no category sub-folders")
    _err(lambda: run_compbench(None, tmp_path / "o", images=empty, categories=["color"], judges=blip, **quiet),
         "no images for category color")
    part = tmp_path / "part"
    part.mkdir()
    for i, t in enumerate(COLOR):  # prompt 1 has one image of the two expected
        for k in range(2 - i):
            Image.new("RGB", (8, 8)).save(part / official_name(t, 10 * i + k))
    _err(lambda: run_compbench(None, tmp_path / "o", images=part, categories=["color"], images_per_prompt=2, limit=2,
                               judges=blip, score_options=OPTIONS, **quiet),
         r"prompt 1 .* has 1 images, expected 2")


def test_cli_prints_the_table_and_one_line_errors(env, tmp_path, capsys):
    from mars_eval.cli.main import main

    args = ["compbench", "--ckpt", str(env["ckpt"]), "--out", str(tmp_path / "cli"), "--world", str(env["world"]),
            "--judges", str(env["judges"]), "--categories", "complex,spatial", "--limit", "2",
            "--images-per-prompt", "1", "--batch-size", "2", "--calibration", "2"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "Spatial" in out and "Complex" in out and out.index("Spatial") < out.index("Complex")
    assert "Judge calibration" in out and TABLE in out
    assert main([*args, "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["generated"] == {"spatial": 0, "complex": 0} and set(res["table_x100"]) == {"Spatial", "Complex"}
    with pytest.raises(SystemExit) as e:
        main(["compbench", "--ckpt", str(env["ckpt"]), "--out", str(tmp_path / "x")])
    err = capsys.readouterr().err
    assert e.value.code == 1 and err.startswith("error: ") and err.count("\n") == 1 and "--world" in err


def test_compare_pairs_a_scored_run_with_its_control(run_a):
    from mars_eval.report.compare import paired_compare, score_rows

    _, out = run_a
    results = paired_compare(score_rows(out))
    assert [(r.category, r.n_prompts, r.n_images) for r in results] == [("complex", 3, 6), ("spatial", 3, 6)]
    same = paired_compare(score_rows(out), score_rows(out))
    assert all(r.diff == 0 for r in same)
