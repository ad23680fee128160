"""PromptSet reads every shipped file with the right counts and survives the public files' quirks."""

import csv
import io
import json
import re
from importlib import resources

import pytest

from mars_eval.errors import MarsEvalError
from mars_eval.prompts import BUILTIN, COMPBENCH_CATEGORIES, PromptSet

DATA = resources.files("mars_eval.data")


@pytest.mark.parametrize("cat", COMPBENCH_CATEGORIES)
def test_compbench_val_has_300(cat):
    ps = PromptSet.builtin(f"{cat}_val")
    assert len(ps) == 300


def test_compbench_known_counts():
    # Counts from the upstream files (PROVENANCE.md): repeats are kept, and counted.
    color = PromptSet.builtin("color")
    assert len(color) == 860 and color.n_unique == 842
    assert sum(color.duplicates.values()) - len(color.duplicates) == 18
    assert (len(PromptSet.builtin("color_train")), PromptSet.builtin("color_train").n_unique) == (700, 679)
    assert PromptSet.builtin("shape").n_unique == 985
    assert len(PromptSet.builtin("complex_val_action")) == 212
    assert len(PromptSet.builtin("complex_val_spatial")) == 58
    assert len(PromptSet.builtin("complex_val_spatialaction")) == 30
    for c in ("color", "shape", "texture"):
        assert len(PromptSet.builtin(f"{c}_val_seen")) == 200
        assert len(PromptSet.builtin(f"{c}_val_unseen")) == 100


def test_every_builtin_loads_and_matches_an_independent_count():
    for name, rel in BUILTIN.items():
        ps = PromptSet.builtin(name)
        raw = DATA.joinpath(rel).read_bytes().decode("utf-8")
        if rel.endswith(".txt"):
            # independent count: universal-newline split, non-empty lines
            expected = [ln.strip() for ln in raw.splitlines() if ln.strip()]
        elif rel.endswith(".csv"):
            expected = [r["prompt"].strip() for r in csv.DictReader(io.StringIO(raw, newline=""))]
        else:
            expected = [json.loads(ln)["prompt"].strip() for ln in raw.splitlines() if ln.strip()]
        assert ps.texts == expected, name


def test_coco30k_has_30000_with_multiline_captions_intact():
    ps = PromptSet.builtin("coco-30k")
    assert len(ps) == 30_000
    raw = DATA.joinpath("coco/coco_30k.csv").read_bytes().decode("utf-8")
    fields = [r["prompt"] for r in csv.DictReader(io.StringIO(raw, newline=""))]
    assert sum("\n" in f for f in fields) == 97  # quoted captions with a line break inside
    assert len(raw.splitlines()) > 30_001  # so a line-by-line reader would get them wrong
    assert ps.texts == [f.strip() for f in fields]
    assert all(p.seed is not None for p in ps)
    assert len({p.meta["image_id"] for p in ps}) == 30_000


def test_geneval_553():
    ps = PromptSet.builtin("geneval")
    assert len(ps) == 553
    tags = {}
    for p in ps:
        tags[p.meta["tag"]] = tags.get(p.meta["tag"], 0) + 1
    assert tags == {"position": 100, "color_attr": 100, "two_object": 99, "colors": 94,
                    "single_object": 80, "counting": 80}
    assert len(PromptSet.builtin("geneval-prompts")) == 553


def test_crlf_bom_no_final_newline_and_repeats(tmp_path):
    p = tmp_path / "p.txt"
    p.write_bytes("\ufeffa red ball\r\na_blue box\r\n\r\na red ball\r\n一只红色的球".encode())
    ps = PromptSet.from_file(p)
    assert ps.texts == ["a red ball", "a_blue box", "a red ball", "一只红色的球"]
    assert [q.index for q in ps] == [0, 1, 2, 3]
    assert ps.duplicates == {"a red ball": 2}
    assert "1 repeats" in ps.summary()


@pytest.mark.parametrize("content, msg", [
    (b"", "empty"),
    (b"\r\n\r\n", "empty"),
    (b"ok\nbad\x00nul\n", "U+0000"),
    (b"ok\nbell\x07\n", "U+0007"),
    (b"\xff\xfe bad", "UTF-8"),
])
def test_bad_prompt_files(tmp_path, content, msg):
    p = tmp_path / "bad.txt"
    p.write_bytes(content)
    with pytest.raises(MarsEvalError, match=re.escape(msg)) as e:
        PromptSet.from_file(p)
    assert str(p) in str(e.value) and "\n" not in str(e.value)


def test_missing_file_and_unknown_builtin(tmp_path):
    with pytest.raises(MarsEvalError, match="not found"):
        PromptSet.resolve(tmp_path / "nope.txt")
    with pytest.raises(MarsEvalError, match="unknown prompt set"):
        PromptSet.builtin("nope")


def test_digest_depends_on_order_and_text(tmp_path):
    a = PromptSet.from_text("x\ny", "a", "a")
    b = PromptSet.from_text("y\nx", "b", "b")
    assert a.digest != b.digest
    assert a.digest == PromptSet.from_text("x\r\ny\r\n", "c", "c").digest
