"""T2I-CompBench judges end to end with tiny randomly initialised models of the real architectures."""

import math

import numpy as np
import pytest
import torch
from PIL import Image

from mars_eval.compbench import complex3in1, tiny
from mars_eval.compbench.blip_vqa import BlipVqaConfig, BlipVqaJudge, pre_question
from mars_eval.compbench.clip_nonspatial import complex_text
from mars_eval.compbench.detector import DetectorConfig, HFDetector
from mars_eval.compbench.detector_spatial import SpatialRule, objects_complex, objects_simple, spatial_score
from mars_eval.compbench.files import ImageItem, match_folder, official_name
from mars_eval.compbench.noun_phrases import PromptParser, noun_phrases
from mars_eval.compbench.numeracy import numeracy_score, numeracy_targets
from mars_eval.compbench.score import JudgePaths, Judges, ScoreOptions, score_images, table_x100
from mars_eval.errors import MarsEvalError
from mars_eval.prompts import PromptSet

P = PromptParser()
BLIP32 = BlipVqaConfig(image_size=32)  # the tiny BLIP's native size (the official 480 is slow for a test)
COLOR = PromptSet.builtin("color_val").texts[:2]  # "a green bench and a blue bowl", ...
SPATIAL = PromptSet.builtin("spatial_val").texts[:3]  # "a giraffe next to a lamp", ...
NUMERACY = PromptSet.builtin("numeracy_val").texts[:2]  # "two boys", "six airplanes"
SPATIAL3D = PromptSet.builtin("3d_spatial_val").texts[:2]  # "a dog in front of a desk", ...
COMPLEX_ALL = PromptSet.builtin("complex_val").texts
COMPLEX = [next(t for t in COMPLEX_ALL if complex3in1.prompt_kind(t) == k) for k in complex3in1.KINDS]


def _words(texts):
    return {w.strip(".,'").lower() for t in texts for w in t.split()}


@pytest.fixture(scope="module")
def paths(tmp_path_factory):
    root = tmp_path_factory.mktemp("judges")
    words = _words(COLOR + SPATIAL + NUMERACY + COMPLEX + SPATIAL3D)
    nouns = {o for t in SPATIAL for o in objects_simple(P(t))} | {o for t in COMPLEX for o in objects_complex(P(t)) if o}
    return {
        "blip": tiny.build_blip_vqa(root / "blip", words),
        "detr": tiny.build_detr(root / "detr", sorted(nouns)),
        "owl": tiny.build_owlvit(root / "owl", words | {"boy", "airplane"}),
        "clip": tiny.build_open_clip(root / "clip"),
        "dpt": tiny.build_dpt(root / "dpt"),
    }


def _image(seed: int, size=(40, 52)) -> Image.Image:
    return Image.fromarray((np.random.RandomState(seed).rand(size[1], size[0], 3) * 255).astype("uint8"))


def _items(tmp_path, prompts, n=2):
    out = []
    for i, t in enumerate(prompts):
        for k in range(n):
            p = tmp_path / official_name(t, i * n + k)
            _image(100 * i + k, (40 + 8 * k, 52)).save(p)
            out.append(ImageItem(p, i, k, t, i * n + k))
    return out


# ---------------------------------------------------------------- BLIP-VQA


def test_blip_ratio_equals_hf_forward_likelihoods(paths):
    """P(yes)/(P(yes)+P(no)) from our decoder call == from transformers' own forward + loss (exp(-CE))."""
    from transformers import BlipForQuestionAnswering

    judge = BlipVqaJudge(paths["blip"], BlipVqaConfig(image_size=48))
    model = BlipForQuestionAnswering.from_pretrained(paths["blip"]).eval()
    im, q = _image(1), "a green bench?"
    got = judge.p_yes([im], [[q]])[0][0]
    pix = judge.pixel_values([im])
    ids = judge.processor.tokenizer([pre_question(q)], return_tensors="pt").input_ids
    ids[:, 0] = judge.enc_id  # official BLIP: [ENC] replaces [CLS]
    probs = []
    with torch.no_grad():
        for ans in (judge.yes_id, judge.no_id):
            out = model(input_ids=ids, pixel_values=pix, labels=torch.tensor([[judge.bos_id, ans]]),
                        interpolate_pos_encoding=True)
            probs.append(math.exp(-out.loss.item()))
    assert got == pytest.approx(probs[0] / (probs[0] + probs[1]), abs=1e-6)
    # the [ENC]/[CLS] choice reaches the model
    cls = BlipVqaJudge(paths["blip"], BlipVqaConfig(image_size=48, question_start="cls")).p_yes([im], [[q]])[0][0]
    assert cls != pytest.approx(got, abs=1e-9)


def test_blip_batching_and_padding_do_not_change_answers(paths):
    judge = BlipVqaJudge(paths["blip"], BlipVqaConfig(image_size=32, batch_size=2))
    ims = [_image(i) for i in range(3)]
    # different token lengths in one batch: padding would leak through HF BLIP's unmasked cross-attention
    qs = [["The red hat?", "the brown coat rack?"], [], ["The blue water bottle?", "a big wooden table and a red apple?"]]
    batched = judge.p_yes(ims, qs)
    single = [[judge.p_yes([im], [[q]])[0][0] for q in ql] for im, ql in zip(ims, qs, strict=True)]
    assert [len(b) for b in batched] == [2, 0, 2]
    for b, s in zip(batched, single, strict=True):
        assert b == pytest.approx(s, abs=1e-6)


def test_blip_preprocessing_matches_the_hf_pil_processor(paths):
    from transformers.models.blip.image_processing_pil_blip import BlipImageProcessorPil

    judge = BlipVqaJudge(paths["blip"], BlipVqaConfig(image_size=48))
    im = _image(3, (61, 37))
    ref = BlipImageProcessorPil(size={"height": 48, "width": 48})(im, return_tensors="pt").pixel_values
    assert torch.allclose(judge.pixel_values([im]), ref, atol=1e-4)


def test_color_scores_are_products_over_noun_phrases(paths, tmp_path):
    items = _items(tmp_path, COLOR)
    rows = score_images("color", items, JudgePaths(blip_dir=paths["blip"]), ScoreOptions(blip=BLIP32))
    judge = BlipVqaJudge(paths["blip"], BLIP32)
    for r, it in zip(rows, items, strict=True):
        phrases = noun_phrases(P(it.prompt))
        assert r.sub["phrases"] == phrases and len(phrases) == 2
        with Image.open(it.path) as im:
            per = [judge.p_yes([im.convert("RGB")], [[f"{p}?"]])[0][0] for p in phrases]
        assert r.score == pytest.approx(per[0] * per[1], abs=1e-6)
        assert (r.prompt_index, r.image_index, r.category) == (it.prompt_index, it.image_index, "color")
        assert r.sub["parser"].startswith("table:")


# ---------------------------------------------------------------- detectors


@pytest.mark.parametrize("detector", ["detr", "owl"])
def test_spatial_end_to_end(paths, tmp_path, detector):
    items = _items(tmp_path, SPATIAL)
    rule = SpatialRule(score_floor=0.0)  # a random detector rarely passes 0.5: check the raw combination
    opts = ScoreOptions(detector=DetectorConfig(threshold=0.0), spatial=rule)
    rows = score_images("spatial", items, JudgePaths(detector_dir=paths[detector]), opts)
    det = HFDetector(paths[detector], DetectorConfig(threshold=0.0))
    assert det.open_vocab == (detector == "owl")
    for r, it in zip(rows, items, strict=True):
        with Image.open(it.path) as im:
            im = im.convert("RGB")
            o1, o2 = objects_simple(P(it.prompt))
            expected = spatial_score(it.prompt, o1, o2, det.detect([im], [o1, o2])[0], im.size, rule)
        assert (r.sub["obj1"], r.sub["obj2"]) == (o1, o2)
        assert r.score == pytest.approx(expected.score, abs=1e-6)
        assert (r.sub["conf1"], r.sub["conf2"], r.sub["position"]) == pytest.approx(
            (expected.conf1, expected.conf2, expected.position))
    if detector == "owl":  # open vocabulary: both queried objects are found, so the position term is used
        assert all(r.sub["position"] is not None and r.score > 0 for r in rows)
    # with the official floor every score is 0 or >= 0.5
    floored = score_images("spatial", items, JudgePaths(detector_dir=paths[detector]),
                           ScoreOptions(detector=DetectorConfig(threshold=0.0)))
    assert all(r.score == 0.0 or r.score >= 0.5 for r in floored)


def test_numeracy_end_to_end_with_owlvit(paths, tmp_path):
    items = _items(tmp_path, NUMERACY)
    opts = ScoreOptions(detector=DetectorConfig(threshold=0.0))
    rows = score_images("numeracy", items, JudgePaths(detector_dir=paths["owl"]), opts)
    det = HFDetector(paths["owl"], DetectorConfig(threshold=0.0))
    assert det.open_vocab
    for r, it in zip(rows, items, strict=True):
        targets = numeracy_targets(P(it.prompt))
        with Image.open(it.path) as im:
            im = im.convert("RGB")
            dets = det.detect([im], [o for o, _ in targets])[0]
        assert {d.label for d in dets} <= {o for o, _ in targets}
        assert r.score == pytest.approx(numeracy_score(targets, dets, im.size).score)
        assert r.sub["targets"] == [list(t) for t in targets]


def test_3d_spatial_end_to_end_with_owlvit_and_dpt(paths, tmp_path):
    from mars_eval.compbench.depth3d import DepthJudge, spatial3d_score

    items = _items(tmp_path, SPATIAL3D)
    judges = JudgePaths(detector_dir=paths["owl"], depth_dir=paths["dpt"])
    rows = score_images("3d_spatial", items, judges, ScoreOptions(detector=DetectorConfig(threshold=0.0)))
    det, depth = HFDetector(paths["owl"], DetectorConfig(threshold=0.0)), DepthJudge(paths["dpt"])
    for r, it in zip(rows, items, strict=True):
        with Image.open(it.path) as im:
            im = im.convert("RGB")
        o1, o2 = objects_simple(P(it.prompt))
        near = depth.nearness([im])[0]
        assert near.shape == (im.height, im.width) and near.min() == 0.0 and near.max() == 1.0
        expected = spatial3d_score(it.prompt, o1, o2, det.detect([im], [o1, o2])[0], near)
        assert r.score == pytest.approx(expected.score, abs=1e-6) and r.sub["relation"] == expected.relation
        assert r.sub["position"] is not None


# ---------------------------------------------------------------- CLIP


def test_non_spatial_equals_direct_open_clip(paths, tmp_path):
    import open_clip

    prompts = PromptSet.builtin("non_spatial_val").texts[:2]
    items = _items(tmp_path, prompts)
    rows = score_images("non_spatial", items, JudgePaths(clip_ckpt=paths["clip"]))
    spec = f"local-dir:{paths['clip']}"
    model, _, preprocess = open_clip.create_model_and_transforms(spec)
    tok = open_clip.get_tokenizer(spec)
    with torch.no_grad():
        for r, it in zip(rows, items, strict=True):
            with Image.open(it.path) as im:
                f_img = model.encode_image(preprocess(im).unsqueeze(0))[0]
            f_txt = model.encode_text(tok([it.prompt]))[0]
            cos = torch.nn.functional.cosine_similarity(f_img, f_txt, dim=0).item()
            assert r.score == pytest.approx(cos, abs=1e-5)
            assert r.sub["variant"] == "raw-cosine"


# ---------------------------------------------------------------- complex 3-in-1


def test_complex_is_the_mean_of_its_judges(paths, tmp_path):
    items = _items(tmp_path, COMPLEX, n=1)
    judges = Judges(JudgePaths(blip_dir=paths["blip"], detector_dir=paths["detr"], clip_ckpt=paths["clip"]),
                    ScoreOptions(blip=BLIP32, detector=DetectorConfig(threshold=0.0), spatial=SpatialRule(score_floor=0.0)))
    rows = score_images("complex", items, judges)
    assert [r.sub["kind"] for r in rows] == list(complex3in1.KINDS)
    for r, it in zip(rows, items, strict=True):
        with Image.open(it.path) as im:
            im = im.convert("RGB")
        parse = P(it.prompt)
        parts = {"blip": math.prod(judges.blip.p_yes([im], [[f"{p}?" for p in noun_phrases(parse)]])[0])}
        if "detector" in complex3in1.judges_for(r.sub["kind"]):
            o1, o2 = objects_complex(parse)
            parts["detector"] = spatial_score(it.prompt, o1, o2, judges.detector.detect([im])[0], im.size,
                                              judges.options.spatial).score
        if "clip" in complex3in1.judges_for(r.sub["kind"]):
            parts["clip"] = judges.clip.cosine([im], [complex_text(parse)])[0]
            assert r.sub["clip"]["text"] == complex_text(parse)  # adjectives removed
        assert set(parts) == set(complex3in1.judges_for(r.sub["kind"]))
        for name, value in parts.items():
            assert r.sub[name]["score"] == pytest.approx(value, abs=1e-6), name
        assert r.score == pytest.approx(sum(parts.values()) / len(parts), abs=1e-6)


# ---------------------------------------------------------------- folder in, table out; errors


def test_folder_to_table(paths, tmp_path):
    prompts = PromptSet.builtin("color_val").head(2)
    for p in prompts:
        for k in range(3):
            _image(p.index * 7 + k).save(tmp_path / official_name(p.text, p.index * 3 + k))
    items = match_folder(tmp_path, prompts, images_per_prompt=3)
    rows = score_images("color", items, JudgePaths(blip_dir=paths["blip"]), ScoreOptions(blip=BLIP32))
    assert [(r.prompt_index, r.image_index) for r in rows] == [(i, k) for i in range(2) for k in range(3)]
    assert table_x100(rows)["color"] == pytest.approx(100 * sum(r.score for r in rows) / 6)
    assert all(set(r.as_row()) >= {"category", "prompt_index", "image_index", "prompt", "path", "score", "sub"}
               for r in rows)


def test_errors_are_one_line_and_name_the_problem(paths, tmp_path):
    items = _items(tmp_path, COLOR[:1], n=1)
    with pytest.raises(MarsEvalError, match="needs the BLIP-VQA judge"):
        score_images("color", items, JudgePaths())
    with pytest.raises(MarsEvalError, match="unknown T2I-CompBench category"):
        score_images("colour", items, JudgePaths())
    with pytest.raises(MarsEvalError, match="needs the depth judge"):
        score_images("3d_spatial", items, JudgePaths(detector_dir=paths["detr"]))
    with pytest.raises(MarsEvalError, match="BLIP-VQA directory not found"):
        score_images("color", items, JudgePaths(blip_dir=tmp_path / "nope"))
    bad = tmp_path / "broken_000000.png"
    bad.write_bytes(b"not a png")
    with pytest.raises(MarsEvalError, match="cannot read image .*broken_000000.png"):
        score_images("color", [ImageItem(bad, 0, 0, COLOR[0])], JudgePaths(blip_dir=paths["blip"]))
    with pytest.raises(MarsEvalError, match="no '<number> <object>'"):
        score_images("numeracy", [ImageItem(bad, 0, 0, "many clouds")], JudgePaths(detector_dir=paths["owl"]))
