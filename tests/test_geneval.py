"""GenEval end to end (mars_eval/suites/geneval.py, mars_eval/geneval/): the official scorer on a tiny random
Mask2Former and a tiny random open_clip model, the world scorer on the small world's trained judges, folder
validation, generation from a checkpoint (resumable), and the CLI's one-line errors.

The official run's numbers mean nothing (random weights); it is checked against the same verdicts computed
directly from the detector, the colour classifier and the rules. The world run uses true renders of world
GenEval prompts, which must score far above their shuffled-prompt control.
"""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from mars_eval.compbench import tiny
from mars_eval.errors import MarsEvalError
from mars_eval.geneval.color import TEMPLATES, ClipColorClassifier, color_texts, object_crop
from mars_eval.geneval.detector import (
    DetectorSettings,
    Mask2FormerDetector,
    geneval_name,
    mask_box,
    object_names,
    rescaled_size,
)
from mars_eval.geneval.folder import load_image, read_folder
from mars_eval.geneval.metadata import COLORS, TASK_LABELS, TASKS, PromptSpec, builtin_metadata
from mars_eval.geneval.rules import Detection, RuleSettings, judge
from mars_eval.geneval.world import WorldScorer, geneval_detections, world_prompts
from mars_eval.io import read_jsonl
from mars_eval.judges.world_decode import Detection as WorldDetection
from mars_eval.suites.control import CONTROL, control_label, derangement
from mars_eval.suites.geneval import TABLE, TABLE_WORLD, TABLE_WORLD_ZH, OfficialPaths, run_geneval
from mars_ref.world import lexicon as L
from mars_ref.world.parse import parse_caption
from mars_ref.world.render import render
from mars_ref.world.scene import Scene
from mars_ref.world.style import WorldStyle

JUDGES = Path(__file__).resolve().parents[1] / "examples" / "small-preset" / "judges"
SMALL = DetectorSettings(shortest_edge=64, longest_edge=64)


def write_prompt(root: Path, index: int, line: dict, images: list[Image.Image]) -> None:
    d = root / f"{index:05d}"
    (d / "samples").mkdir(parents=True)
    (d / "metadata.jsonl").write_text(json.dumps(line) + "\n", encoding="utf-8")
    for n, im in enumerate(images):
        im.save(d / "samples" / f"{n:04d}.png")


def noise(seed: int, size=(48, 40)) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 255, (*size[::-1], 3), dtype=np.uint8))


def build_mask2former(out: Path, labels: list[str], seed: int = 0) -> Path:
    """A tiny random Mask2Former (Swin backbone) + image processor, saved as a transformers directory; class
    logits spread so that some (query, class) pairs clear GenEval's 0.3 threshold."""
    from transformers import (
        Mask2FormerConfig,
        Mask2FormerForUniversalSegmentation,
        Mask2FormerImageProcessor,
        SwinConfig,
    )

    backbone = SwinConfig(image_size=64, patch_size=4, embed_dim=16, depths=[1, 1, 1, 1], num_heads=[1, 1, 1, 1],
                          window_size=4, out_features=["stage1", "stage2", "stage3", "stage4"])
    cfg = Mask2FormerConfig(backbone_config=backbone, feature_size=32, mask_feature_size=32, hidden_dim=32,
                            encoder_feedforward_dim=32, dim_feedforward=32, encoder_layers=1, decoder_layers=2,
                            num_attention_heads=2, num_queries=8, common_stride=4, use_pretrained_backbone=False,
                            id2label=dict(enumerate(labels)), label2id={x: i for i, x in enumerate(labels)})
    torch.manual_seed(seed)
    model = Mask2FormerForUniversalSegmentation(cfg).eval()
    with torch.no_grad():
        model.class_predictor.weight.normal_(0, 3.0)
    model.save_pretrained(out)
    Mask2FormerImageProcessor().save_pretrained(out)
    return out


# ---- detector and colour pieces on hand values ------------------------------------------------------------------
def test_mmdet_resize_label_names_and_mask_boxes():
    assert rescaled_size(512, 512, 1333, 800) == (800, 800)
    assert rescaled_size(640, 480, 1333, 800) == (1067, 800)  # scale 800 / 480
    assert rescaled_size(1000, 200, 1333, 800) == (1333, 267)  # scale 1333 / 1000
    names = object_names()
    assert len(names) == 80 and names[64] == "computer mouse"
    assert [geneval_name(x, names) for x in ("mouse", "remote", "keyboard", "dining_table", "Hair-Dryer", "tv",
                                             "giraffe", "banner")] == \
        ["computer mouse", "tv remote", "computer keyboard", "dining table", "hair drier", "tv", "giraffe", "banner"]
    m = torch.zeros((6, 9), dtype=torch.bool)
    m[2:5, 3:8] = True
    assert mask_box(m) == (3.0, 2.0, 8.0, 5.0)  # exclusive right / bottom edge, as mmdet's mask2bbox
    assert mask_box(torch.zeros((4, 4), dtype=torch.bool)) == (0.0, 0.0, 0.0, 0.0)


def test_instances_follow_mmdet_post_processing(tmp_path):
    det = Mask2FormerDetector(build_mask2former(tmp_path / "m2f", ["cat", "dog", "mouse"]),
                              DetectorSettings(max_per_image=3, min_score=0.1))
    cls = torch.tensor([[3.0, 0.0, 0.0, 0.0], [0.0, 0.0, 2.0, 0.0]])  # 2 queries, 3 classes + no-object
    masks = torch.full((2, 6, 9), -2.0)
    masks[0, 2:5, 3:8] = 2.0
    masks[1, :, :4] = 1.0
    got = det._instances(cls, masks, (6, 9), (6, 9), (6, 9))  # no resizing: the logits are the masks
    p0, p1 = np.exp(3) / (np.exp(3) + 3), np.exp(2) / (np.exp(2) + 3)
    s = 1 / (1 + np.exp(-2.0))
    want = [("cat", p0 * s, (3.0, 2.0, 8.0, 5.0)), ("computer mouse", p1 / (1 + np.exp(-1.0)), (0.0, 0.0, 4.0, 6.0))]
    assert len(got) == 2  # the third-best pair (query 1 as "cat": 1 / (e^2 + 3) = 0.096) is below min_score 0.1
    for d, (label, score, box) in zip(sorted(got, key=lambda d: -d.score), want, strict=True):
        assert d.label == label and d.score == pytest.approx(score, rel=1e-5) and d.box == box
    assert det.missing(["cat", "computer mouse", "zebra"]) == ["zebra"]


def test_colour_crop_and_zero_shot_classifier(tmp_path):
    import open_clip

    assert color_texts("car")[0] == ["a photo of a red car", "a photo of a red-colored car", "a photo of a red object"]
    assert len(TEMPLATES) == 3 and COLORS[-2:] == ("black", "white")
    im = Image.new("RGB", (6, 4), (255, 0, 0))
    mask = np.zeros((4, 6), dtype=bool)
    mask[1:3, 1:3] = True
    crop = np.asarray(object_crop(im, Detection("car", 0.9, (0.4, 0.6, 3.4, 3.0), mask=mask)))
    assert crop.shape == (2, 3, 3)  # box rounded to (0, 1, 3, 3)
    assert crop[:, 0].tolist() == [[153, 153, 153]] * 2 and crop[:, 1:].tolist() == [[[255, 0, 0]] * 2] * 2

    clip_dir = tiny.build_open_clip(tmp_path / "clip")
    clf = ClipColorClassifier(clip_dir)
    objs = [Detection("car", 0.9, (0, 0, 20, 20), mask=None), Detection("car", 0.8, (10, 5, 40, 30), mask=None)]
    image = noise(3, (48, 40))
    model, _, pre = open_clip.create_model_and_transforms(f"local-dir:{clip_dir}")
    tok = open_clip.get_tokenizer(f"local-dir:{clip_dir}")
    with torch.no_grad():
        cols = []
        for texts in color_texts("car"):
            e = model.encode_text(tok(texts))
            e = (e / e.norm(dim=-1, keepdim=True)).mean(0)
            cols.append(e / e.norm())
        feats = model.encode_image(torch.stack([pre(image.crop(d.box)) for d in objs]))
        logits = 100 * (feats / feats.norm(dim=-1, keepdim=True)) @ torch.stack(cols, 1)
    assert torch.allclose(clf.logits(image, objs, "car"), logits, atol=1e-4)
    assert clf.classify(image, objs, "car") == [COLORS[i] for i in logits.argmax(1).tolist()]


# ---- the official scorer end to end ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def official(tmp_path_factory):
    root = tmp_path_factory.mktemp("geneval_official")
    labels = [("mouse" if n == "computer mouse" else n) for n in object_names()]  # an HF-style label, mapped
    paths = OfficialPaths(build_mask2former(root / "m2f", labels), tiny.build_open_clip(root / "clip"))
    specs = builtin_metadata()
    picked = [next(s for s in specs if s.tag == t) for t in TASKS] + [specs[1], specs[200]]
    folder = root / "images"
    for i, s in enumerate(picked):
        write_prompt(folder, i, s.to_dict(), [noise(10 * i + n) for n in range(2)])
    res = run_geneval(None, root / "out", images=folder, official=paths, images_per_prompt=2, progress=False,
                      detector_settings=SMALL, label="tiny")
    return res, root, paths, picked


def test_official_run_equals_the_direct_verdicts(official):
    res, root, paths, picked = official
    det = Mask2FormerDetector(paths.detector, SMALL)
    clf = ClipColorClassifier(paths.clip)
    lines = read_jsonl(root / "out" / "geneval_images.jsonl")
    assert len(lines) == 2 * len(picked)
    direct, confident = {}, 0
    for i, s in enumerate(picked):
        for n in range(2):
            im = load_image(root / "images" / f"{i:05d}" / "samples" / f"{n:04d}.png")
            dets = det.detect(im)
            confident += sum(d.score > 0.3 for d in dets)
            direct[(i, n)] = judge(dets, s, RuleSettings(), lambda o, c, im=im: clf.classify(im, o, c))
    assert {(r["prompt_index"], r["image_index"]): (r["correct"], r["reason"]) for r in lines} == \
        {k: (v.correct, v.reason) for k, v in direct.items()}
    assert confident > 0  # the rules saw detections above GenEval's threshold, not an empty image
    by_task = {t: [v.correct for (i, _), v in direct.items() if picked[i].tag == t] for t in TASKS}
    acc = {t: sum(v) / len(v) for t, v in by_task.items()}
    assert res["tasks"] == pytest.approx(acc) and res["overall"] == pytest.approx(np.mean(list(acc.values())))
    assert res["official_prompts"] is False and res["mode"] == "official"

    rows = read_jsonl(root / "out" / "results.jsonl")
    model = [r for r in rows if r.get("table") == TABLE and "control" not in r]
    assert [r["metric"] for r in model] == ["Overall", *TASK_LABELS.values()]
    assert model[0]["value"] == pytest.approx(res["overall"]) and all(r["scale"] == "real" for r in model)
    ctrl = [r for r in rows if r.get("table") == TABLE and r.get("control") == CONTROL]
    two = {TASK_LABELS[t] for t in TASKS if sum(s.tag == t for s in picked) >= 2}  # a control needs 2 prompts
    assert {r["label"] for r in ctrl} == {control_label("tiny")} and {r["metric"] for r in ctrl} == two
    assert len(res["control"]["skipped"]) == len(TASKS) - len(two) and res["control"]["overall"] is None


def test_official_scorer_refuses_classes_the_detector_cannot_name(official, tmp_path):
    _, root, _, _ = official
    paths = OfficialPaths(build_mask2former(tmp_path / "m2f", ["cat", "dog"]), root / "clip")
    folder = tmp_path / "images"
    write_prompt(folder, 0, builtin_metadata()[0].to_dict(), [noise(0)])
    with pytest.raises(MarsEvalError, match="the detector cannot name: 'bench'"):
        run_geneval(None, tmp_path / "o", images=folder, official=paths, images_per_prompt=1, progress=False)


# ---- world prompts and the world scorer -------------------------------------------------------------------------
@pytest.fixture(scope="module")
def prompts():
    return world_prompts()


def test_world_prompts_cover_the_six_tasks_in_the_worlds_grammar(prompts):
    assert [sum(p.spec.tag == t for p in prompts) for t in TASKS] == [19, 99, 57, 94, 100, 100]
    assert len({p.spec.prompt for p in prompts}) == len(prompts)
    assert [p.spec.prompt for p in world_prompts(WorldStyle("slots", "plain"))] == [p.spec.prompt for p in prompts]
    for p in prompts:
        assert set(p.spec.classes) <= set(L.KINDS)
        assert parse_caption(p.zh, "zh") == parse_caption(p.spec.prompt, "en") == p.scene.truth()
    count = next(p for p in prompts if p.spec.tag == "counting" and p.spec.include[0].count == 3)
    assert count.spec.exclude[0].count == 4 and count.spec.prompt == f"three {L.noun_en(count.spec.classes[0], 3)}"
    pos = next(p for p in prompts if p.spec.tag == "position")
    rel = pos.scene.relations[0]
    assert pos.spec.include[0].cls == pos.scene.groups[rel.obj].kind  # GenEval lists the target first
    assert pos.spec.include[1].position == (rel.rel.replace("_of", " of"), 0)
    attr = [p for p in prompts if p.spec.tag == "color_attr"]
    assert all(p.spec.include[0].color != p.spec.include[1].color for p in attr)


def test_world_detections_become_geneval_detections():
    kind = np.zeros(len(L.KINDS))
    kind[L.KINDS.index("ball")], kind[L.KINDS.index("box")] = 0.75, 0.25
    color = np.zeros(len(L.COLORS))
    color[L.COLORS.index("blue")] = 1.0
    d = WorldDetection(0.8, (0.25, 0.5, 0.5, 0.75), kind, color, np.ones(4) / 4, np.ones(5) / 5)
    got = geneval_detections([d], 64, 32)  # shorter side 32 px = 1 canvas unit
    assert [(g.label, g.score, g.box, g.color) for g in got] == [
        ("ball", pytest.approx(0.6), (8.0, 16.0, 16.0, 24.0), "blue"),
        ("box", pytest.approx(0.2), (8.0, 16.0, 16.0, 24.0), "blue")]


def _true_folder(root: Path, prompts, per_task: int, lang: str = "en") -> list:
    chosen = [p for t in TASKS for p in [q for q in prompts if q.spec.tag == t][:per_task]]
    for i, p in enumerate(chosen):
        spec, extra = p.line(lang)
        write_prompt(root, i, spec.to_dict(), [render(Scene.from_dict(extra["scene"]), 32, 32)])
    return chosen


def test_true_renders_score_far_above_their_shuffled_prompt_control(prompts, tmp_path):
    chosen = _true_folder(tmp_path / "images", prompts, 8)
    res = run_geneval(None, tmp_path / "out", images=tmp_path / "images", world_judges=JUDGES, images_per_prompt=1,
                      progress=False, label="true renders")
    assert res["mode"] == "world" and res["n_prompts"] == len(chosen) == 48
    assert res["overall"] >= 0.9 and all(a >= 0.75 for a in res["tasks"].values())
    ctrl = res["control"]
    assert ctrl["skipped"] == {} and ctrl["overall"] <= 0.35
    for tag in ("two_object", "counting", "colors", "position", "color_attr"):
        assert res["tasks"][tag] - ctrl["tasks"][tag] >= 0.5, tag
    assert res["ci"]["Single Obj."][0] > ctrl["ci"]["Single Obj."][1]  # intervals apart

    # the control is the same scorer against the derangement's prompts: recompute one task by hand
    scorer = WorldScorer(JUDGES)
    task = [(i, p) for i, p in enumerate(chosen) if p.spec.tag == "colors"]
    sigma = derangement([p.spec.prompt for _, p in task])
    images = [load_image(tmp_path / "images" / f"{i:05d}" / "samples" / "0000.png") for i, _ in task]
    direct = scorer.score(images, [task[s][1].spec for s in sigma])
    assert ctrl["tasks"]["colors"] == pytest.approx(np.mean([v.correct for v in direct]))

    rows = read_jsonl(tmp_path / "out" / "results.jsonl")
    world = [r for r in rows if r.get("table") == TABLE_WORLD]
    assert len(world) == 14 and {r["scale"] for r in world} == {"world"}
    assert sum(r.get("control") == CONTROL for r in world) == 7
    assert any(r["kind"] == "samples" for r in rows)
    lines = read_jsonl(tmp_path / "out" / "geneval_images.jsonl")
    assert [(r["prompt_index"], r["tag"]) for r in lines] == [(i, p.spec.tag) for i, p in enumerate(chosen)]
    assert all(r["correct"] == (r["reason"] == "") for r in lines)


def test_world_scorer_refuses_classes_the_world_cannot_draw(tmp_path):
    write_prompt(tmp_path / "images", 0, builtin_metadata()[0].to_dict(), [noise(0, (32, 32))])
    with pytest.raises(MarsEvalError, match="the world cannot draw: 'bench'"):
        run_geneval(None, tmp_path / "o", images=tmp_path / "images", world_judges=JUDGES, images_per_prompt=1,
                    progress=False)


def test_generation_from_a_checkpoint_in_chinese_resumes(tmp_path):
    from fixtures_bundle import build_tiny_bundle

    from mars_eval.generate.runner import RunOptions

    ckpt = build_tiny_bundle(tmp_path / "ckpt")
    kw = dict(world_judges=JUDGES, lang="zh", images_per_prompt=2, limit=3, progress=False,
              run=RunOptions(batch_size=2))
    res = run_geneval(ckpt, tmp_path / "out", **kw)
    manifest = read_jsonl(tmp_path / "out" / "images" / "geneval_zh" / "manifest.jsonl")
    meta = read_jsonl(tmp_path / "out" / "prompts" / "zh" / "evaluation_metadata.jsonl")
    assert len(meta) == 469 and meta[0]["prompt"] == "一个球" and meta[0]["prompt_en"] == "a ball"
    assert [r["prompt"] for r in manifest] == [m["prompt"] for m in meta[:3] for _ in range(2)]
    assert [r["seed"] for r in manifest] == [42, 43] * 3  # GenEval: 4 images per prompt by default, seeds 42 + n
    assert res["table"] == TABLE_WORLD_ZH and res["n_images"] == {"single_object": 6} and res["rows_appended"] > 0
    assert res["control"]["tasks"]["single_object"] is not None
    again = run_geneval(ckpt, tmp_path / "out", **kw)
    assert again["rows_appended"] == 0 and again["tasks"] == res["tasks"]


# ---- folder validation and the CLI -------------------------------------------------------------------------------
def _good(root: Path, n: int = 2, k: int = 2) -> Path:
    line = {"tag": "single_object", "include": [{"class": "ball", "count": 1}], "prompt": "a ball"}
    for i in range(n):
        write_prompt(root, i, line, [noise(i * 10 + j, (8, 8)) for j in range(k)])
    return root


def test_folder_layout_errors_show_an_expected_and_a_found_name(tmp_path):
    root = _good(tmp_path / "a")
    assert [(x.prompt_index, x.image_index, x.path.name) for x in read_folder(root, 2)] == \
        [(0, 0, "0000.png"), (0, 1, "0001.png"), (1, 0, "0000.png"), (1, 1, "0001.png")]
    assert isinstance(read_folder(root, 2, limit=1)[0].spec, PromptSpec) and len(read_folder(root, 2, limit=1)) == 2

    def err(root: Path, ipp: int, match: str):
        with pytest.raises(MarsEvalError, match=match) as e:
            read_folder(root, ipp)
        assert "\n" not in str(e.value)

    err(root, 3, r"no image 2 \(expected 0002.png; found 0000.png, 0001.png")
    err(root, 1, r"0001.png is beyond the 1 images per prompt .*--images-per-prompt 2")
    (root / "00001" / "samples" / "0001.png").rename(root / "00001" / "samples" / "img1.jpg")
    err(root, 2, r"unexpected entry 'img1.jpg' \(expected images named 0000.png")
    root = _good(tmp_path / "b", 3)
    (root / "00001").rename(root / "gone")
    err(root, 2, r"no folder for prompt 1 \(expected 00001, found e.g. 00000")
    root = _good(tmp_path / "c", 1)
    (root / "00000" / "metadata.jsonl").unlink()
    err(root, 2, "no metadata.jsonl")
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "x.png").write_bytes(b"")
    err(tmp_path / "d", 2, r"no GenEval prompt folders \(expected 00000/metadata.jsonl .* found 'x.png'")


def test_cli_errors_are_one_line(tmp_path, capsys):
    from mars_eval.cli.main import main

    for argv, message in ((["geneval", "--out", str(tmp_path / "o")], "give a checkpoint"),
                          (["geneval", "--out", str(tmp_path / "o"), "--images", str(tmp_path),
                            "--detector", str(tmp_path)], "needs both --detector"),
                          (["geneval", "--out", str(tmp_path / "o"), "--images", str(tmp_path / "none"),
                            "--world-judges", str(JUDGES)], "image folder not found"),
                          (["geneval", "--out", str(tmp_path / "o"), "--images", str(tmp_path), "--lang", "zh",
                            "--detector", str(tmp_path), "--clip", str(tmp_path)], "English only")):
        with pytest.raises(SystemExit) as e:
            main(argv)
        err = capsys.readouterr().err
        assert e.value.code == 1 and err.startswith("error: ") and err.count("\n") == 1 and message in err, err


def test_cli_scores_a_world_folder_as_json(prompts, tmp_path, capsys):
    from mars_eval.cli.main import main

    _true_folder(tmp_path / "images", prompts, 2)
    assert main(["geneval", "--out", str(tmp_path / "o"), "--images", str(tmp_path / "images"), "--world-judges",
                 str(JUDGES), "--images-per-prompt", "1", "--no-control", "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["control"] is None and res["n_prompts"] == 12 and res["table"] == TABLE_WORLD
    assert set(res["table_values"]) == {"Overall", *TASK_LABELS.values()}
