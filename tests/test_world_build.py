"""World builds: prompt sets in T2I-CompBench's format, corpora with manifests, determinism, atomic output."""

import hashlib
import json
from pathlib import Path

import pytest
from PIL import Image

from mars_ref.errors import MarsRefError
from mars_ref.world import CATEGORIES, parse_caption
from mars_ref.world.build import build_world, make_prompt_sets
from mars_ref.world.prompts import COMPLEX_JUDGES, prompt_sets
from mars_ref.world.sequences import parse_step

SMALL = dict(n_stage2=5, n_stage3=3, n_sequences=2, n_text=6, val_size=9, train_size=4)


@pytest.fixture(scope="module")
def full_sets():
    return prompt_sets(0)  # the real sizes: 300 val, 700 train per category


def test_prompt_counts_per_category(full_sets):
    for cat in CATEGORIES:
        assert len(full_sets[f"{cat}_val"]) == 300
        assert len(full_sets[f"{cat}_train"]) == 700
    subs = [full_sets[f"complex_val_{k}"] for k in ("spatial", "action", "spatialaction")]
    assert [len(s) for s in subs] == [100, 100, 100]
    assert [p.en for s in subs for p in s] == [p.en for p in full_sets["complex_val"]]
    assert sum(len(full_sets[f"complex_train_{k}"]) for k in COMPLEX_JUDGES) == 700


def test_prompts_are_unique_held_out_and_parse_to_their_truth(full_sets):
    val = {p.en for name, items in full_sets.items() if "_val" in name for p in items}
    for name, items in full_sets.items():
        texts = [p.en for p in items]
        assert len(set(texts)) == len(texts), name
        if "_train" in name:
            assert not val & set(texts), name
    for name in [f"{c}_val" for c in CATEGORIES]:
        for p in full_sets[name]:
            truth = p.scene.truth()
            assert parse_caption(p.en, "en") == truth == parse_caption(p.zh, "zh")


def test_complex_split_says_which_judges_apply(full_sets):
    for sub, judges in COMPLEX_JUDGES.items():
        for p in full_sets[f"complex_val_{sub}"]:
            assert p.judges == judges
            rels = {r.rel for r in p.scene.relations}
            assert bool(rels & {"left_of", "right_of", "above", "below"}) == ("spatial" in judges)


def _digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_build_writes_every_corpus(tmp_path):
    out = tmp_path / "world"
    summary = build_world(out, 6, seed=1, **SMALL)
    meta = json.loads((out / "world.json").read_text())
    seqs = [json.loads(x) for x in (out / "interleaved" / "manifest.jsonl").read_text().splitlines()]
    assert meta["counts"]["stage1"] == 6 and len(seqs) == 2
    assert summary["images"] == meta["images"] == 6 + 5 + 2 * 3 + sum(len(r["steps"]) for r in seqs)
    assert len(list(out.rglob("*.png"))) == meta["images"]
    # prompt sets: T2I-CompBench format, LF only, final newline, zh beside en, ground truth beside each
    for cat in CATEGORIES:
        raw = (out / "prompts" / f"{cat}_val.txt").read_bytes()
        assert b"\r" not in raw and raw.endswith(b"\n") and raw.count(b"\n") == 9
        assert (out / "prompts" / "zh" / f"{cat}_val.txt").read_text(encoding="utf-8").count("\n") == 9
        rows = [json.loads(x) for x in (out / "prompts" / f"{cat}_val.jsonl").read_text().splitlines()]
        assert [r["prompt"] for r in rows] == raw.decode().splitlines()
    for name in ("complex_val_spatial", "complex_val_action", "complex_val_spatialaction"):
        assert (out / "prompts" / f"{name}.txt").is_file() and (out / "prompts" / f"{name}.jsonl").is_file()
    # stage I: 32x32 images, captions in both languages that parse to the stored truth
    rows = [json.loads(x) for x in (out / "stage1" / "manifest.jsonl").read_text().splitlines()]
    assert len(rows) == 6
    for r in rows:
        assert Image.open(out / "stage1" / r["image"]).size == (32, 32)
        assert parse_caption(r["caption_en"], "en") == r["truth"] == parse_caption(r["caption_zh"], "zh")
    # stage II: the resolution is in the caption and matches the image
    for r in (json.loads(x) for x in (out / "stage2" / "manifest.jsonl").read_text().splitlines()):
        size = Image.open(out / "stage2" / r["image"]).size
        assert parse_caption(r["caption_en"], "en")["res"] == list(size) == [r["width"], r["height"]]
        assert size[0] % 16 == 0 and size[1] % 16 == 0
    # stage III: the same scene at 32 and 64 px
    for r in (json.loads(x) for x in (out / "stage3" / "manifest.jsonl").read_text().splitlines()):
        assert Image.open(out / "stage3" / r["low"]).size == (32, 32)
        assert Image.open(out / "stage3" / r["high"]).size == (64, 64)
    # interleaved: one image per step, steps numbered from 1
    for r in seqs:
        for k, step in enumerate(r["steps"], 1):
            assert (
                parse_step(step["text_en"], "en")["step"] == k
                and (out / "interleaved" / step["image"]).is_file()
            )
    # LLM text: 5 lines per text item (+ 3 dense-caption lines for some), both directions of translation pairs,
    # held-out sets beside
    lines = (out / "text" / "train.txt").read_text(encoding="utf-8").splitlines()
    dense = [line for line in lines if line.endswith(" background") or line.endswith("背景")]
    assert len(lines) == 5 * 6 + len(dense) and len(dense) % 3 == 0
    for line in lines:
        if line.startswith("EN: ") and " ZH: " in line:
            en, zh = line[4:].split(" ZH: ")
        elif line.startswith("ZH: ") and " EN: " in line:
            zh, en = line[4:].split(" EN: ")
        else:
            continue
        if en.endswith(" background"):  # a dense-caption pair: the same objects in both languages
            assert zh.endswith("背景") and en.count(", ") == zh.count("，")
        else:
            assert parse_caption(en, "en") == parse_caption(zh, "zh")
    val_en = {json.loads(x)["en"] for x in (out / "text" / "translation_val.jsonl").read_text().splitlines()}
    assert len(val_en) == 300 and not val_en & set(lines)
    assert not list(tmp_path.glob(".*partial*"))


def test_same_seed_is_byte_identical_and_item_i_ignores_n(tmp_path):
    build_world(tmp_path / "a", 4, seed=7, **SMALL)
    build_world(tmp_path / "b", 4, seed=7, **SMALL)
    build_world(tmp_path / "c", 4, seed=8, **SMALL)
    build_world(tmp_path / "d", 6, seed=7, **SMALL)
    a, b, c, d = (_digest(tmp_path / x) for x in "abcd")
    assert a == b
    assert a["stage1/images/000000.png"] != c["stage1/images/000000.png"]
    assert a["prompts/color_val.txt"] != c["prompts/color_val.txt"]
    assert all(a[f"stage1/images/{i:06d}.png"] == d[f"stage1/images/{i:06d}.png"] for i in range(4))


def test_output_directory_rules(tmp_path):
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    with pytest.raises(MarsRefError, match="not empty"):
        build_world(tmp_path / "busy", 2, seed=0, **SMALL)
    assert (tmp_path / "busy" / "notes.txt").read_text() == "mine"
    (tmp_path / "file").write_text("x")
    with pytest.raises(MarsRefError, match="is a file"):
        build_world(tmp_path / "file" / "world", 2, seed=0, **SMALL)
    (tmp_path / "empty").mkdir()
    build_world(tmp_path / "empty", 2, seed=0, **SMALL)
    with pytest.raises(MarsRefError, match="--overwrite"):
        build_world(tmp_path / "empty", 2, seed=0, **SMALL)
    build_world(tmp_path / "empty", 3, seed=0, overwrite=True, **SMALL)
    assert json.loads((tmp_path / "empty" / "world.json").read_text())["counts"]["stage1"] == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["busy", "empty", "file"]  # no partial dirs left


def test_interrupted_build_leaves_nothing_that_looks_complete(tmp_path):
    calls = []

    def stop(stage, done, total):
        calls.append(stage)
        if stage == "stage2":
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        build_world(tmp_path / "w", 3, seed=0, progress=stop, **SMALL)
    assert "stage1" in calls and list(tmp_path.iterdir()) == []


def test_make_prompt_sets_alone(tmp_path):
    files = make_prompt_sets(tmp_path / "p", seed=2, val_size=6, train_size=3)
    assert "color_val.txt" in files and "zh/complex_val_action.txt" in files
    assert (tmp_path / "p" / "numeracy_val.txt").read_text().count("\n") == 6


@pytest.mark.parametrize("bad", [dict(n=0), dict(n=-2), dict(n=2, seed=-1), dict(n=2, n_text=-1)])
def test_bad_sizes_are_errors(tmp_path, bad):
    kwargs = {"seed": 0, **SMALL, **bad}
    n = kwargs.pop("n")
    with pytest.raises(MarsRefError):
        build_world(tmp_path / "w", n, **kwargs)
