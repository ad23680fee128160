"""World judges: detector targets and augmentation geometry, the per-category rules, corruptions, calibration.

The rules and corruptions are tested against the world's own ground truth with an *oracle* detector (exact
detections built from the scene): with perfect detections every true scene must pass and every corrupted scene
must fail, which ties the judges' semantics to the world's geometry. The spatial rule is checked against the
T2I-CompBench implementation in `mars_eval.compbench.detector_spatial`. The trained detector is only smoke-tested
here (a few steps); its accuracy is the slow test and the calibration table.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace

import numpy as np
import pytest
import torch
from PIL import Image

from mars_eval.errors import MarsEvalError
from mars_eval.judges.world_calibration import calibration_items, judge_calibration
from mars_eval.judges.world_corrupt import corrupt
from mars_eval.judges.world_decode import IDENTITY, Detection, calibrate_score, prepare
from mars_eval.judges.world_detector import (
    HEADS,
    READ_HEADS,
    STRIDE,
    DetectorConfig,
    WorldDetector,
    normalise,
)
from mars_eval.judges.world_detector_eval import fit_platt, match
from mars_eval.judges.world_detector_train import DetectorTrainConfig, detector_loss, make_batch
from mars_eval.judges.world_judges import CATEGORIES, FORMAT, WorldJudges, train_world_judges
from mars_eval.judges.world_rules import passes, position, relation_prob, score_parse
from mars_eval.judges.world_targets import COLOR_INDEX, KIND_INDEX, SHAPE_INDEX, TEXTURE_INDEX, scene_objects
from mars_ref.world import lexicon as L
from mars_ref.world import parse_caption, sample_scene
from mars_ref.world.build import build_world
from mars_ref.world.render import render
from mars_ref.world.scene import Scene, box_overlap, relation_holds, scene_relations_hold


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    out = tmp_path_factory.mktemp("w") / "world"
    build_world(out, 30, 5, n_stage2=1, n_stage3=6, n_sequences=1, n_text=2, val_size=12, train_size=1)
    return out


def _onehot(n: int, i: int | None) -> np.ndarray:
    v = np.zeros(n)
    if i is not None:
        v[i] = 1.0
    return v


def oracle_detections(scene: Scene) -> list[Detection]:
    """Exact detections from the scene's ground truth (what a perfect detector would report); `over` from the
    drawing order where boxes overlap."""
    objs = scene_objects(scene)
    n = len(objs)
    over = np.full((n, n), 0.5)
    for i in range(n):
        for k in range(n):
            if i != k and box_overlap(objs[i][4], objs[k][4]) > 0:
                over[i, k] = float(i > k)  # later in the drawing order = on top
    return [
        Detection(1.0, box, _onehot(len(L.KINDS), KIND_INDEX[kind]), _onehot(len(L.COLORS), COLOR_INDEX[color]),
                  _onehot(len(L.TEXTURES), TEXTURE_INDEX[tex]), _onehot(len(L.SHAPES), SHAPE_INDEX.get(shape)),
                  index=i, over=over[i])
        for i, (kind, color, tex, shape, box) in enumerate(objs)
    ]


class OracleJudges(WorldJudges):
    """Judges whose detector looks the rendered image up in a table of known scenes."""

    def __init__(self, scenes: list[Scene]):
        super().__init__(WorldDetector(DetectorConfig(width=4)))
        self.table = {self._key(render(s, 32, 32)): s for s in scenes}

    @staticmethod
    def _key(image: Image.Image) -> str:
        return hashlib.sha1(image.tobytes()).hexdigest()

    def detect(self, images):
        return [oracle_detections(self.table[self._key(im)]) for im in images]


def true_for_scene(scene: Scene, truth: dict) -> bool:
    """Ground truth: does the scene satisfy a caption-level truth (counts, stated attributes, relations)?"""
    objs = list(scene.objects)
    members = []
    for g in truth["objects"]:
        ms = [i for i, o in enumerate(objs) if o.kind == g["kind"]]
        if len(ms) != g["count"]:
            return False
        for i in ms:
            o = objs[i]
            if any(g[a] is not None and getattr(o, a) != g[a] for a in ("color", "shape", "texture", "size")):
                return False
        members.append(ms)
    return all(relation_holds(objs[i], objs[j], r["rel"], i, j)
               for r in truth["relations"] for i in members[r["subj"]] for j in members[r["obj"]])


def sample(category: str, rng) -> Scene:
    """A world scene of a judge category (3d_spatial: a non_spatial scene with an occlusion relation)."""
    if category != "3d_spatial":
        return sample_scene(category, rng)
    while True:
        scene = sample_scene("non_spatial", rng)
        if any(r.rel in ("in_front_of", "behind") for r in scene.relations):
            return scene


# ---- corruptions ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("category", CATEGORIES)
def test_corruptions_make_the_prompt_false_and_keep_the_truth_true(category):
    rng = np.random.default_rng([7, CATEGORIES.index(category)])
    for _ in range(25):
        scene = sample(category, rng)
        bad = corrupt(scene, category, rng)
        assert bad is not None
        assert true_for_scene(scene, scene.truth())
        assert not true_for_scene(bad, scene.truth()), (category, scene.truth(), bad.to_dict())


def test_complex_corruption_falls_back_when_a_size_swap_cannot_be_laid_out(monkeypatch):
    """A swapped bigger/smaller relation is re-laid out, which can fail; the complex category then corrupts another
    stated attribute or relation instead of leaving the prompt without a false image."""
    import mars_eval.judges.world_corrupt as wc
    from mars_ref.world.layout import LayoutError
    from mars_ref.world.sampling import SIZE_RELATIONS

    def no_layout(*args, **kwargs):
        raise LayoutError("no room")

    monkeypatch.setattr(wc, "realize", no_layout)
    rng = np.random.default_rng(11)
    seen = 0
    while seen < 8:
        scene = sample_scene("complex", rng)
        size_rels = [r for r in scene.relations if r.rel in SIZE_RELATIONS]
        if not size_rels:
            continue
        seen += 1
        assert wc.corrupt_relation(scene, size_rels[0], rng) is None  # the layout failure this test is about
        assert true_for_scene(scene, scene.truth())
        for _ in range(4):  # whichever option the permutation tries first
            bad = corrupt(scene, "complex", rng)
            assert bad is not None
            assert not true_for_scene(bad, scene.truth()), (scene.truth(), bad.to_dict())


def test_attribute_corruption_is_a_minimal_pair():
    rng = np.random.default_rng(1)
    scene = sample_scene("color", rng)
    bad = corrupt(scene, "color", rng)
    assert bad.background == scene.background
    assert [(o.kind, o.cx, o.cy, o.s) for o in bad.objects] == [(o.kind, o.cx, o.cy, o.s) for o in scene.objects]


# ---- rules with an oracle detector ----------------------------------------------------------------------------
def test_oracle_judges_are_right_on_every_calibration_pair(world):
    items = {c: calibration_items(world, c, 12, 0) for c in CATEGORIES}
    judges = OracleJudges([s for its in items.values() for _, _, t, b in its for s in (t, b)])
    rows = judge_calibration(world, 12, 0, judges=judges)
    assert [r["category"] for r in rows] == list(CATEGORIES)
    for r in rows:
        assert r["n"] == (12 if r["category"] != "3d_spatial" else len(items["3d_spatial"])) >= 1
        assert r["accuracy_vq"] is None and r["accuracy_clean"] == 1.0, r
    rels = [{r.rel for r in t.relations} for _, _, t, _ in items["3d_spatial"]]
    assert all(r & {"in_front_of", "behind"} for r in rels)  # the non_spatial val prompts that state one


def test_fresh_calibration_items_are_new_scenes_never_val_prompts(world):
    """source="fresh" (a dev set): exactly n pairs per category, no val prompt among them, the true scene true and
    the corrupted one false for a perfect judge, 3D-spatial scenes all stating an occlusion, reproducible by seed."""
    from mars_eval.judges.world_calibration import fresh_items
    from mars_eval.world_clip.scenes import val_prompts
    from mars_ref.world.captions import caption

    val = val_prompts(world)
    items = {c: fresh_items(world, c, 6, 0) for c in CATEGORIES}
    for cat, its in items.items():
        assert len(its) == 6, cat
        for en, zh, true, bad in its:
            assert en not in val and en == caption(true, "en") and zh == caption(true, "zh")
            assert scene_relations_hold(true) and bad != true
    assert all({r.rel for r in t.relations} & {"in_front_of", "behind"} for _, _, t, _ in items["3d_spatial"])
    assert fresh_items(world, "color", 6, 0) == items["color"] != fresh_items(world, "color", 6, 1)
    judges = OracleJudges([s for its in items.values() for _, _, t, b in its for s in (t, b)])
    rows = judge_calibration(world, 6, 0, judges=judges, source="fresh")
    assert all(r["accuracy_clean"] == 1.0 and r["n"] == 6 and r["source"] == "fresh" for r in rows), rows
    with pytest.raises(MarsEvalError, match="source must be one of val, fresh"):
        judge_calibration(world, 6, 0, judges=judges, source="test")


def test_english_and_chinese_prompts_get_the_same_scores(world):
    for cat in CATEGORIES:
        for en, zh, scene, bad in calibration_items(world, cat, 4, 1):
            for s in (scene, bad):
                dets = oracle_detections(s)
                assert score_parse(cat, dets, parse_caption(en, "en")) == score_parse(cat, dets, parse_caption(zh, "zh"))


def test_spatial_position_rule_matches_t2i_compbench_implementation():
    from mars_eval.compbench.detector_spatial import relation_score

    names = {"left_of": "on the left of", "right_of": "on the right of", "above": "on the top of",
             "below": "on the bottom of"}
    rng = np.random.default_rng(0)
    for _ in range(400):
        a = tuple(np.sort(rng.uniform(0, 1, 2)).tolist())
        b = tuple(np.sort(rng.uniform(0, 1, 2)).tolist())
        c = tuple(np.sort(rng.uniform(0, 1, 2)).tolist())
        d = tuple(np.sort(rng.uniform(0, 1, 2)).tolist())
        box1, box2 = (a[0], b[0], a[1], b[1]), (c[0], d[0], c[1], d[1])
        for rel, name in names.items():
            assert position(rel, box1, box2) == pytest.approx(relation_score(name, box1, box2))


def test_spatial_score_formula_and_missing_objects():
    scene = sample_scene("spatial", np.random.default_rng(3))
    truth = scene.truth()
    dets = oracle_detections(scene)
    dets = [replace(d, score=0.8) for d in dets]
    score, sub = score_parse("spatial", dets, truth)
    assert score == pytest.approx(0.25 * 0.8 + 0.25 * 0.8 + 0.5 * sub["spatial"][0]["position"])
    score, sub = score_parse("spatial", dets[:1], truth)  # one object missing: 0.25 * conf
    assert score == pytest.approx(0.2) and sub["spatial"][0]["position"] is None
    assert score_parse("spatial", [], truth)[0] == 0.0


def test_relation_probabilities():
    box = (0.1, 0.1, 0.3, 0.3)
    k, c = np.ones(len(L.KINDS)) / len(L.KINDS), _onehot(len(L.COLORS), 0)
    t, s = np.ones(len(L.TEXTURES)) / 4, np.ones(len(L.SHAPES)) / 5
    small = Detection(1.0, box, k, c, t, s)
    big = Detection(1.0, (0.4, 0.4, 0.8, 0.8), k, _onehot(len(L.COLORS), 3), t, s)
    assert relation_prob("bigger_than", big, small) > 0.99 and relation_prob("smaller_than", big, small) < 0.01
    assert relation_prob("same_color_as", big, small) == 0.0 and relation_prob("same_color_as", small, small) == 1.0
    # detections 0, 1, 2 of one image: front is drawn over back (P 0.97); far overlaps neither
    front = Detection(1.0, (0.15, 0.15, 0.35, 0.35), k, c, t, s, index=0, over=np.array([0.5, 0.97, 0.5]))
    back = Detection(1.0, box, k, c, t, s, index=1, over=np.array([0.03, 0.5, 0.5]))
    far = Detection(1.0, (0.7, 0.7, 0.9, 0.9), k, c, t, s, index=2, over=np.array([0.5, 0.5, 0.5]))
    assert relation_prob("in_front_of", front, back) > 0.95 and relation_prob("behind", front, back) < 0.05
    assert relation_prob("behind", back, front) > 0.95 and relation_prob("in_front_of", back, front) < 0.05
    assert relation_prob("in_front_of", front, far) < 0.01  # no overlap: nothing is in front of anything


def test_numeracy_counts_and_t2i_compbench_partial_credit():
    scene = sample_scene("numeracy", np.random.default_rng(11))
    truth = scene.truth()
    dets = oracle_detections(scene)
    score, sub = score_parse("numeracy", dets, truth)
    assert score == 1.0 and sub["counts"] == sub["stated"]
    score, sub = score_parse("numeracy", dets[1:], truth)  # one object missing
    assert score == 0.0
    assert 0.0 <= sub["t2i_compbench_partial"] < 1.0


def test_complex_passes_needs_every_part():
    assert passes("complex", 0.75, {"parts": {"attribute": 1.0, "spatial": 0.5}}) is False
    assert passes("complex", 0.8, {"parts": {"attribute": 0.9, "spatial": 0.7}}) is True
    assert passes("color", 0.51, {}) and not passes("color", 0.5, {})


def test_unknown_category_and_unparsable_prompt_are_errors():
    judges = WorldJudges(WorldDetector(DetectorConfig(width=4)))
    img = Image.new("RGB", (32, 32))
    with pytest.raises(MarsEvalError, match="unknown world judge category"):
        judges.score("colour", img, "a red ball")
    with pytest.raises(MarsEvalError, match="not a world prompt"):
        judges.score("color", img, "a photo of a dog")


# ---- detector: targets, augmentation, decoding ---------------------------------------------------------------
def _centroid_cell(img: torch.Tensor, bg: torch.Tensor) -> tuple[float, float]:
    diff = (img.float() - bg.float()).abs().sum(0)  # (H, W)
    ys, xs = torch.nonzero(diff > 60, as_tuple=True)
    return (float(ys.float().mean()) + 0.5) / STRIDE, (float(xs.float().mean()) + 0.5) / STRIDE  # in grid cells


def test_augmented_targets_follow_the_pixels():
    """Flip + shift: the heatmap peak of a lone object sits where its pixels are in the augmented image."""
    rng = np.random.default_rng(4)
    scene = sample_scene("color", rng)
    scene = Scene(scene.category, scene.aspect, scene.background, scene.groups[:1], (),
                  tuple(o for o in scene.objects if o.group == 0))
    empty = Scene(scene.category, scene.aspect, scene.background, scene.groups[:1], (), ())
    img = torch.from_numpy(np.asarray(render(scene, 32, 32)).copy()).permute(2, 0, 1)[None]
    bg = torch.from_numpy(np.asarray(render(empty, 32, 32)).copy()).permute(2, 0, 1)[None]
    cfg = DetectorTrainConfig(max_shift=3)
    gen = torch.Generator().manual_seed(0)
    for _ in range(12):
        seed = int(torch.randint(0, 10**6, (1,), generator=gen))
        x, heat, objs = make_batch(img, [scene], cfg, torch.Generator().manual_seed(seed))
        xb, _, _ = make_batch(bg, [empty], cfg, torch.Generator().manual_seed(seed))
        cy, cx = _centroid_cell(x[0] * 64, xb[0] * 64)  # undo the normalisation's scale
        (t,) = objs[0]
        assert heat[0, t.cy, t.cx] == 1.0
        assert abs(t.cy + t.offset[1] - cy) < 1.2 and abs(t.cx + t.offset[0] - cx) < 1.2


def test_detector_shapes_loss_and_prepare():
    model = WorldDetector(DetectorConfig(width=8, reader_width=4))
    out = model(torch.zeros(2, 3, 32, 48))
    assert {k: tuple(v.shape) for k, v in out.items()} == {k: (2, c, 32, 48) for k, c in HEADS.items()}
    read = model.read(torch.zeros(2, 3, 32, 48), torch.tensor([0, 1, 1]), torch.tensor([[5.0, 5, 6, 8]] * 3))
    assert {k: tuple(v.shape) for k, v in read.items()} == {k: (3, c) for k, c in READ_HEADS.items()}
    scenes = [sample(c, np.random.default_rng(i)) for i, c in enumerate(CATEGORIES)]
    imgs = torch.stack([torch.from_numpy(np.asarray(render(s, 32, 32)).copy()).permute(2, 0, 1) for s in scenes])
    x, heat, objs = make_batch(imgs, scenes, DetectorTrainConfig(), torch.Generator())
    loss, parts = detector_loss(model, x, heat, objs, torch.Generator(), 0.15)
    loss.backward()
    assert set(parts) == set(HEADS) | set(READ_HEADS) and torch.isfinite(loss)
    assert tuple(prepare(Image.new("RGB", (64, 96))).shape) == (3, 48, 32)
    assert tuple(prepare(Image.new("RGB", (30, 30))).shape) == (3, 32, 32)
    with pytest.raises(MarsEvalError, match="multiple of 4"):
        model(torch.zeros(1, 3, 30, 30))


def _decoded_at(maps: dict, j: int, cells: list[tuple[int, int]]) -> dict:
    """{(x, y) cell: box} that `world_decode._peaks` reports for image j when its only peaks are at `cells`."""
    from mars_eval.judges.world_decode import _peaks

    maps["center"][j] = -10.0
    for cx, cy in cells:
        maps["center"][j, 0, cy, cx] = 10.0
    return {(int(b[0] // STRIDE), int(b[1] // STRIDE)): b for _, b in _peaks(maps, j, 0.5, 24)}


def test_readers_also_train_at_the_boxes_decoding_gives():
    """With finder_boxes the reader reads each object twice: at its (jittered) true box and at the box that
    decoding (`world_decode._peaks`) reports for a heatmap peak at the object's centre cell; the order reader
    reads each minimal pair at both too."""
    model = WorldDetector(DetectorConfig(width=8, reader_width=4))
    scenes = [sample("non_spatial", np.random.default_rng(i)) for i in range(3)]
    imgs = torch.stack([torch.from_numpy(np.asarray(render(s, 32, 32)).copy()).permute(2, 0, 1) for s in scenes])
    x, heat, objs = make_batch(imgs, scenes, DetectorTrainConfig(), torch.Generator())
    seen = []
    read = model.read
    model.read = lambda x, index, boxes: seen.append((index, boxes)) or read(x, index, boxes)
    detector_loss(model, x, heat, objs, torch.Generator(), 0.15, finder_boxes=True)
    (index, boxes), = seen
    n = sum(len(ts) for ts in objs)
    assert len(boxes) == 2 * n and index[:n].tolist() == index[n:].tolist()
    with torch.no_grad():
        maps = {k: v.clone() for k, v in model(x).items()}
    k = 0
    for j, ts in enumerate(objs):
        decoded = _decoded_at(maps, j, [(t.cx, t.cy) for t in ts])
        for t in ts:
            assert torch.allclose(boxes[n + k], torch.tensor(decoded[t.cx, t.cy]), atol=1e-4)
            k += 1

    # the order reader likewise, on minimal pairs, at the boxes decoding gives for the two objects (eval mode)
    from mars_eval.judges.world_detector_train import order_loss
    from mars_eval.judges.world_order import MinimalPairs

    p_imgs, _, box_a, box_b, labels = MinimalPairs(0, exclude=set()).batch(2)
    calls, order = [], model.order
    model.order = lambda x, index, a, b: calls.append((a, b)) or order(x, index, a, b)
    assert torch.isfinite(order_loss(model, p_imgs, box_a, box_b, labels, torch.Generator(), 0.15, finder_boxes=True))
    assert model.training  # order_loss leaves the model in the mode it found it in
    (a, b), = calls
    model.eval()
    with torch.no_grad():
        maps = {k: v.clone() for k, v in model(normalise(p_imgs)).items()}
    for j in range(len(p_imgs)):
        cell_a, cell_b = ((int(t[0] // STRIDE), int(t[1] // STRIDE)) for t in (box_a[j], box_b[j]))
        decoded = _decoded_at(maps, j, [cell_a, cell_b])
        assert torch.allclose(a[len(p_imgs) + j], torch.tensor(decoded[cell_a]), atol=1e-4)
        assert torch.allclose(b[len(p_imgs) + j], torch.tensor(decoded[cell_b]), atol=1e-4)


def test_reader_views_are_the_objects_pixels():
    """The original-pixel window copies pixels exactly (no resampling) with the box as a mask; the scaled crop
    centres the box."""
    from mars_eval.judges.world_detector import crop_boxes, pixel_windows

    img = torch.arange(2 * 3 * 32 * 32, dtype=torch.float32).reshape(2, 3, 32, 32)
    box = torch.tensor([[10.2, 12.7, 6.0, 4.0], [1.0, 30.0, 4.0, 4.0]])
    w = pixel_windows(img, torch.tensor([1, 0]), box, 16)
    assert w.shape == (2, 4, 16, 16)
    # window corner (round(10.2 - 8), round(12.7 - 8)) = (2, 5)
    assert torch.equal(w[0, :3], img[1, :, 5:21, 2:18])
    rows, cols = torch.nonzero(w[0, 3], as_tuple=True)  # pixel centres inside x 7.2..13.2, y 10.7..14.7
    assert rows.unique().tolist() == [6, 7, 8, 9] and cols.unique().tolist() == [5, 6, 7, 8, 9, 10]
    assert (w[1, :3, 15, 15] == 0).all()  # outside the image
    dot = torch.zeros(1, 3, 32, 32)
    dot[0, :, 20:22, 8:10] = 1.0  # a 2 x 2 px square centred at (9, 21)
    c = crop_boxes(dot, torch.tensor([0]), torch.tensor([[9.0, 21.0, 4.0, 4.0]]), 16)[0, 0]  # side 7 px
    ys, xs = torch.nonzero(c > 0.5, as_tuple=True)
    assert abs(ys.float().mean() - 7.5) < 0.6 and abs(xs.float().mean() - 7.5) < 0.6


def test_platt_fit_and_matching():
    rng = np.random.default_rng(0)
    raw = rng.uniform(0.01, 0.99, 4000)
    labels = (rng.uniform(size=4000) < raw ** 2).astype(int)  # under-confident scores
    a, b = fit_platt(raw.tolist(), labels.tolist())
    for p in (0.2, 0.5, 0.8):
        cal = calibrate_score(p, (a, b))
        assert abs(cal - p ** 2) < 0.12
    assert fit_platt([0.3, 0.4], [1, 1]) == IDENTITY
    scene = sample_scene("numeracy", np.random.default_rng(2))
    dets = oracle_detections(scene)
    assert all(obj is not None for _, obj in match(dets, scene))
    moved = [replace(d, score=0.5, box=(d.box[0] + 0.3, d.box[1], d.box[2] + 0.3, d.box[3])) for d in dets[:1]]
    assert match(moved, scene)[0][1] is None


# ---- training, saving, CLI -----------------------------------------------------------------------------------
def test_train_save_load_and_score(world, tmp_path):
    cfg = DetectorTrainConfig(steps=3, batch_size=8, detector=DetectorConfig(width=8))
    summary = train_world_judges(world, tmp_path / "judges", seed=1, cfg=cfg)
    assert summary["train"]["steps"] == 3 and len(summary["platt"]) == 2
    assert set(summary["train"]["loss_last"]) >= {"center", "kind", "order"}  # the order reader trains too
    judges = WorldJudges.load(tmp_path / "judges")
    assert judges.platt == tuple(summary["platt"])
    (en, zh, scene, _), = calibration_items(world, "spatial", 1, 0)
    img = render(scene, 32, 32)
    s_en, sub = judges.score("spatial", img, en)
    s_zh, _ = judges.score("spatial", img, zh, lang="zh")
    assert 0 <= s_en <= 1 and s_en == pytest.approx(s_zh)
    big = render(scene, 64, 64)
    assert 0 <= judges.score("spatial", big, en)[0] <= 1  # any size is brought to the detector's scale
    reloaded = WorldJudges.load(tmp_path / "judges")
    assert reloaded.score("spatial", img, en)[0] == pytest.approx(s_en)
    meta = json.loads((tmp_path / "judges" / "world_judges.json").read_text())
    assert meta["format"] == FORMAT and "held_out_detector" in meta


def test_vq_reconstructions_in_training_and_calibration(world, tmp_path):
    """A (random, tiny) VQ tokenizer: training shows reconstructions, calibration adds the VQ column; a checkpoint
    path works as well as a loaded model."""
    from mars_eval.judges.world_detector_train import vq_roundtrip
    from mars_ref.vq import VQModel, vq_preset
    from mars_ref.vq_formats import save_vq

    torch.manual_seed(0)
    vq = VQModel(vq_preset("tiny")).eval()
    save_vq(vq, tmp_path / "vq")
    imgs = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8)
    rec = vq_roundtrip(vq, imgs)
    assert rec.shape == imgs.shape and rec.dtype == torch.uint8 and not torch.equal(rec, imgs)
    cfg = DetectorTrainConfig(steps=2, batch_size=8, detector=DetectorConfig(width=8))
    summary = train_world_judges(world, tmp_path / "judges", cfg=cfg, vq=tmp_path / "vq")
    assert summary["train"]["vq_augmented"] is True
    rows = judge_calibration(world, 2, 0, judges=tmp_path / "judges", vq=tmp_path / "vq", categories=("color",))
    assert rows[0]["accuracy_vq"] is not None and 0 <= rows[0]["accuracy_vq"] <= 1


def test_load_rejects_other_directories(tmp_path):
    with pytest.raises(MarsEvalError, match="not a world judge directory"):
        WorldJudges.load(tmp_path)


def test_cli_trains_and_prints_calibration(world, tmp_path, capsys):
    from mars_eval.cli.main import main

    out = tmp_path / "judges"
    rc = main(["train", "judges", "--world", str(world), "--out", str(out), "--steps", "2", "--calibrate", "3",
               "--swapped-pairs", "--json"])
    assert rc == 0
    res = json.loads(capsys.readouterr().out)
    assert {f"accuracy_clean/{c}" for c in CATEGORIES} <= set(res)
    meta = json.loads((out / "world_judges.json").read_text())
    assert meta["train"]["swapped_in_batch"] is True
    assert [r["category"] for r in meta["calibration"]] == list(CATEGORIES)


def test_cli_calibrates_a_judge_directory(world, tmp_path, capsys):
    """`world calibrate`: the calibration table of saved judges on val prompts or fresh scenes; a bad source or
    a directory that is not a judge directory is a one-line error with exit code 1."""
    from mars_eval.cli.main import main

    cfg = DetectorTrainConfig(steps=1, batch_size=8, detector=DetectorConfig(width=8))
    train_world_judges(world, tmp_path / "judges", cfg=cfg)
    expected = {c: len(calibration_items(world, c, 3, 0)) for c in CATEGORIES}
    for source in ("val", "fresh"):
        rc = main(["world", "calibrate", "--world", str(world), "--judges", str(tmp_path / "judges"), "--n", "3",
                   "--source", source, "--json"])
        res = json.loads(capsys.readouterr().out)
        assert rc == 0 and res["source"] == source
        assert {c: res[f"n/{c}"] for c in CATEGORIES} == (expected if source == "val" else dict.fromkeys(CATEGORIES, 3))
        assert all(0 <= res[f"accuracy_clean/{c}"] <= 1 for c in CATEGORIES)
    for args, message in ((["--judges", str(tmp_path / "judges"), "--source", "test"], "source must be one of"),
                          (["--judges", str(tmp_path)], "not a world judge directory")):
        with pytest.raises(SystemExit) as e:
            main(["world", "calibrate", "--world", str(world), *args])
        assert e.value.code == 1
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1


def test_init_continues_from_a_judge_directory(world, tmp_path):
    """`--init`: training starts from the saved weights with the saved detector config (its width, not --width's),
    records where it came from, and a directory that is not a judge directory is a one-line error."""
    from safetensors.torch import load_file

    from mars_eval.cli.main import main

    first = tmp_path / "first"
    cfg = DetectorTrainConfig(steps=2, batch_size=8, detector=DetectorConfig(width=8))
    train_world_judges(world, first, seed=1, cfg=cfg)
    second = tmp_path / "second"
    rc = main(["train", "judges", "--world", str(world), "--out", str(second), "--init", str(first), "--steps", "1",
               "--lr", "1e-12", "--calibrate", "0", "--width", "16", "--json"])
    assert rc == 0
    meta = json.loads((second / "world_judges.json").read_text())
    assert meta["detector"]["width"] == 8 and meta["init"]["from"] == str(first.absolute())
    assert meta["init"]["train"]["steps"] == 2 and meta["train"]["lr"] == 1e-12
    before = load_file(str(first / "world_detector.safetensors"))
    after = load_file(str(second / "world_detector.safetensors"))
    weights = [k for k in before if k.endswith(".weight")]
    # lr ~ 0: the first run's weights, not a new initialisation (which its 2 steps moved by ~1e-4)
    assert weights and all(torch.allclose(before[k], after[k], atol=1e-6) for k in weights)
    with pytest.raises(SystemExit) as e:
        main(["train", "judges", "--world", str(world), "--out", str(tmp_path / "x"), "--init", str(tmp_path),
              "--steps", "1"])
    assert e.value.code == 1 and not (tmp_path / "x").exists()


@pytest.mark.parametrize("swapped", [False, True])
def test_swapped_pair_images_join_the_detector_batch(world, tmp_path, monkeypatch, swapped):
    """`swapped_in_batch`: both drawing orders of each minimal pair are in the detector's batch, on top of
    batch_size; without it only the first, in place of a fresh scene."""
    import mars_eval.judges.world_detector_train as wdt
    from mars_eval.judges.world_order import occlusion_pair

    seen = []

    def spy(images, scenes, cfg, gen):
        seen.append(list(scenes))
        return make_batch(images, scenes, cfg, gen)

    monkeypatch.setattr(wdt, "make_batch", spy)
    cfg = DetectorTrainConfig(steps=1, batch_size=8, order_pairs=2, swapped_in_batch=swapped,
                              detector=DetectorConfig(width=8))
    train_world_judges(world, tmp_path / "judges", cfg=cfg)
    scenes = seen[0]
    assert len(scenes) == 8 + 2 * swapped
    drawn = {}  # scene content (order-free) -> the drawing orders of its occlusion pair seen in the batch
    for s in scenes:
        pair = occlusion_pair(s)
        if pair is not None:
            key = tuple(sorted(repr(o) for o in s.objects))
            drawn.setdefault(key, set()).add(s.objects.index(pair[0]) > s.objects.index(pair[1]))
    both = [k for k, orders in drawn.items() if orders == {True, False}]
    assert len(both) == (2 if swapped else 0)


@pytest.mark.slow
def test_trained_judges_beat_a_constant_judge(tmp_path):
    """Default training on a 2,500-image world: spatial, colour and shape judges are accurate; every category,
    3D-spatial included (the pairwise order reader, format 4), beats the constant judge (0.5). The issue's 95 %
    target takes the full recipe of examples/small-preset/judges/README.md (16,000 steps)."""
    world = tmp_path / "world"
    build_world(world, 2500, 0, n_stage2=1, n_stage3=1250, n_sequences=1, n_text=2)
    train_world_judges(world, tmp_path / "judges")
    rows = {r["category"]: r for r in judge_calibration(world, 100, 0, judges=tmp_path / "judges")}
    for cat in ("spatial", "color", "shape"):
        assert rows[cat]["accuracy_clean"] >= 0.85, rows[cat]
    for r in rows.values():
        assert r["accuracy_clean"] > 0.55 and r["clean"]["pair_accuracy"] > 0.5, r


# ---- occlusion order -------------------------------------------------------------------------------------------
def test_order_reader_is_antisymmetric_and_detect_fills_over():
    from mars_eval.judges.world_decode import detect

    model = WorldDetector(DetectorConfig(width=8, reader_width=4, order_width=4)).eval()
    x = torch.randn(2, 3, 32, 32)
    a = torch.tensor([[10.0, 10, 8, 8], [20.0, 15, 6, 10]])
    b = torch.tensor([[14.0, 12, 8, 6], [18.0, 18, 9, 9]])
    with torch.no_grad():
        ab, ba = model.order(x, torch.tensor([0, 1]), a, b), model.order(x, torch.tensor([0, 1]), b, a)
    assert ab.shape == (2,) and torch.allclose(ab, -ba)
    scene = sample("3d_spatial", np.random.default_rng(4))
    dets = detect(model, [render(scene, 32, 32)] * 2, threshold=0.0, max_dets=6)
    for ds in dets:
        over = np.stack([d.over for d in ds])  # (n, n)
        assert [d.index for d in ds] == list(range(len(ds))) and over.shape == (len(ds), len(ds))
        np.testing.assert_allclose(over + over.T, 1.0, atol=1e-6)
        for i, d in enumerate(ds):
            for k, e in enumerate(ds):
                if box_overlap(d.box, e.box) == 0 or i == k:
                    assert over[i, k] == 0.5


def test_minimal_pairs_differ_only_in_drawing_order():
    from mars_eval.judges.world_order import MinimalPairs, is_over, occlusion_pair

    pairs = MinimalPairs(0, exclude=set())
    images, scenes, box_a, box_b, labels = pairs.batch(3)
    assert images.shape == (6, 3, 32, 32) and images.dtype == torch.uint8
    for k in range(0, 6, 2):
        s, t = scenes[k], scenes[k + 1]
        assert sorted(map(repr, s.objects)) == sorted(map(repr, t.objects)) and s.objects != t.objects
        assert labels[k] + labels[k + 1] == 1 and torch.equal(box_a[k], box_a[k + 1])
        a, b = occlusion_pair(s)
        assert bool(labels[k]) == is_over(s, a, b)
        assert not torch.equal(images[k], images[k + 1])  # the overlap region shows the other object on top
