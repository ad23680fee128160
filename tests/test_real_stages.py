"""Stages I -> II -> III on a user's data: a tiny random Qwen2 with its own tokenizer saved by transformers, a tiny
VQ, world renders exported as a JSONL source and encoded in each stage's layout; the bundle generates."""

import json
from pathlib import Path

import pytest
import torch
from fixtures_real import build_user_corpus

from mars_eval.cli.main import main
from mars_ref.vq import VQModel, vq_preset
from mars_ref.vq_formats import save_vq


@pytest.fixture(scope="module")
def user(tmp_path_factory):
    return build_user_corpus(tmp_path_factory.mktemp("user"))


def test_stage_one_trains_on_user_data_and_the_bundle_generates(user, tmp_path, capsys):
    from mars_eval.generate.runner import RunOptions, generate_folder
    from mars_eval.prompts import PromptSet

    args = ["train", "stage", "I", "--llm", str(user / "qwen2"), "--vq", str(user / "vq"), "--data",
            str(user / "enc"), "--engine", "single", "--steps", "3", "--global-batch", "4", "--micro-batch", "2",
            "--cache", str(tmp_path / "cache"), "--bundle", str(tmp_path / "bundle"), "--json"]
    assert main(args) == 0
    res = json.loads(capsys.readouterr().out)
    log = [json.loads(x) for x in (tmp_path / "cache").glob("real-stageI-*/train_log.jsonl").__next__()
           .read_text().splitlines()]
    assert [r["step"] for r in log if "loss" in r][-1] == 2 and res["bundle"] == str(tmp_path / "bundle")
    out = generate_folder(tmp_path / "bundle", PromptSet.from_text("a red ball\n一个红色的球", "p", "t"),
                          tmp_path / "img", run=RunOptions(batch_size=2))
    assert out["images"] == 2 and sorted(p.name for p in (tmp_path / "img").glob("*.png")) == [
        "00000_000.png", "00001_000.png"]


def test_stage_one_on_unencoded_data_or_another_vq_is_a_one_line_error(user, tmp_path, capsys):
    save_vq(VQModel(vq_preset("tiny")), tmp_path / "vq2")  # fresh random weights: another VQ
    base = ["train", "stage", "I", "--llm", str(user / "qwen2"), "--engine", "single", "--steps", "1",
            "--global-batch", "2", "--micro-batch", "2", "--cache", str(tmp_path / "c")]
    for extra, needle in ((["--vq", str(user / "vq"), "--data", str(user / "j")], "complete encode folder"),
                          (["--vq", str(tmp_path / "vq2"), "--data", str(user / "enc")], "encoded with another VQ")):
        with pytest.raises(SystemExit) as e:
            main([*base, *extra])
        assert e.value.code == 1
        err = capsys.readouterr().err
        assert err.startswith("error: ") and err.count("\n") == 1 and needle in err, err


def test_stages_two_and_three_continue_the_previous_stage_and_the_bundle_super_resolves(user, tmp_path, capsys):
    from PIL import Image

    from mars_eval.generate.runner import RunOptions, generate_folder
    from mars_eval.prompts import PromptSet
    from mars_eval.recipe.real import codes_corpus
    from mars_ref.model import MarsModel
    from mars_ref.text_tokenizer import load_text_tokenizer

    common = ["--llm", str(user / "qwen2"), "--vq", str(user / "vq"), "--engine", "single", "--steps", "2",
              "--global-batch", "4", "--micro-batch", "2", "--cache", str(tmp_path / "cache"), "--json"]
    runs = {}
    for stage, data, init in (("I", "enc", None), ("II", "enc2", "I"), ("III", "enc3", "II")):
        extra = ["--init", runs[init]] if init else []
        extra += ["--bundle", str(tmp_path / "bundle")] if stage == "III" else []
        assert main(["train", "stage", stage, *common, "--data", str(user / data), *extra]) == 0
        res = json.loads(capsys.readouterr().out)
        runs[stage] = res["run"]
        log = [json.loads(x) for x in (tmp_path / res["run"] / "train_log.jsonl").read_text().splitlines()]
        assert [r["step"] for r in log if "loss" in r][-1] == 1 and all(r["loss"] > 0 for r in log if "loss" in r)
    one, two = MarsModel.load(f"{runs['I']}/model"), MarsModel.load(f"{runs['II']}/model")
    frozen = [k for k, p in two.named_parameters() if not p.requires_grad]
    assert frozen and all(torch.equal(dict(one.named_parameters())[k], dict(two.named_parameters())[k])
                          for k in frozen)  # Stage II continued Stage I's model (text weights frozen)
    tok = load_text_tokenizer(user / "qwen2")
    corpus = codes_corpus(user / "enc2", tok)
    tags = {tok.decode(c).split(">")[0] for c in corpus.captions["en"]}
    assert tags == {"<res 16x16", "<res 24x16"}  # the bucket's resolution starts the caption, as in the world

    info = json.loads((tmp_path / "bundle" / "bundle.json").read_text())
    assert info["stage"] == "III" and info["image_px"] == [8, 8] and info["hires_px"] == [16, 16]
    out = generate_folder(tmp_path / "bundle", PromptSet.from_text("a red ball", "p", "t"), tmp_path / "img",
                          run=RunOptions(batch_size=1))
    assert out["images"] == 1 and Image.open(tmp_path / "img" / "00000_000.png").size == (16, 16)


def test_a_stage_on_the_wrong_layout_or_without_init_is_a_one_line_error(user, tmp_path, capsys):
    (tmp_path / "gpt2").mkdir()
    (tmp_path / "gpt2" / "config.json").write_text('{"model_type": "gpt2", "vocab_size": 300}')
    with pytest.raises(SystemExit) as e:
        main(["train", "stage", "I", "--llm", str(tmp_path / "gpt2"), "--vq", str(user / "vq"), "--data",
              str(user / "enc"), "--engine", "single", "--steps", "1", "--cache", str(tmp_path / "c")])
    err = capsys.readouterr().err
    assert e.value.code == 1 and err.count("\n") == 1 and "model_type is 'gpt2', expected 'qwen2'" in err, err
    base = ["train", "stage", "II", "--llm", str(user / "qwen2"), "--vq", str(user / "vq"), "--engine", "single",
            "--steps", "1", "--global-batch", "2", "--micro-batch", "2", "--cache", str(tmp_path / "c")]
    for extra, needle in ((["--data", str(user / "enc")], "trains on `encode --layout buckets` codes"),
                          (["--data", str(user / "enc2")], "give --init"),
                          (["--data", str(user / "enc2"), "--init", str(tmp_path)], "not a MARS model directory")):
        with pytest.raises(SystemExit) as e:
            main([*base, *extra])
        assert e.value.code == 1
        err = capsys.readouterr().err
        assert err.startswith("error: ") and err.count("\n") == 1 and needle in err, err


@pytest.mark.slow
def test_stage_one_on_two_zero3_processes_matches_one_process(user, tmp_path, capsys):
    from mars_eval.train.diagnostics import read_rows

    cfg = tmp_path / "s1.toml"
    cfg.write_text('[stageI]\nsteps = 4\nglobal_batch = 4\nmicro_batch = 2\nlr = 2e-3\ndtype = "fp32"\n'
                   'warmup_ratio = 0.0\nckpt_every = 2\n')
    runs = {}
    for name, extra in (("single", ["--engine", "single"]), ("zero3", ["--engine", "deepspeed", "--nproc", "2"])):
        assert main(["train", "stage", "I", "--llm", str(user / "qwen2"), "--vq", str(user / "vq"), "--data",
                     str(user / "enc"), "--config", str(cfg), "--cache", str(tmp_path / name), "--json", *extra]) == 0
        runs[name] = read_rows(Path(json.loads(capsys.readouterr().out)["run"]) / "train_log.jsonl")
    a, b = runs["single"], runs["zero3"]
    assert [r["step"] for r in a] == [r["step"] for r in b] == [0, 1, 2, 3]
    for x, y in zip(a, b, strict=True):  # ZeRO-3 over 2 gloo processes: the same losses as one process
        assert x["tokens"] == y["tokens"] and x["loss"] == pytest.approx(y["loss"], rel=1e-5)
        assert x["grad_norm"] == pytest.approx(y["grad_norm"], rel=1e-4)


def test_a_stages_model_config_is_the_built_models_without_building_it(user, tmp_path):
    from mars_eval.recipe.stages import STAGE3_POSITIONS, FromMars, FromQwen2

    one = FromQwen2(str(user / "qwen2"), 64, True)
    model = one()
    assert one.model_config() == model.config
    model.save(tmp_path / "m")
    for positions in (None, STAGE3_POSITIONS):
        later = FromMars(str(tmp_path / "m"), positions)
        assert later.model_config() == later().config
