"""`mars-eval world build`: a small build through the CLI, and user errors as one line with exit code 1."""

import json

import pytest

from mars_eval.cli.main import main

SMALL = [
    "--n-stage2",
    "2",
    "--n-stage3",
    "1",
    "--n-sequences",
    "1",
    "--n-text",
    "3",
    "--val-size",
    "4",
    "--train-size",
    "2",
]


def _fails(capsys, argv, needle):
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert needle in err
    return err


def test_build_writes_manifest_and_reports_json(tmp_path, capsys):
    out = tmp_path / "w"
    assert main(["world", "build", "--out", str(out), "--n", "3", "--seed", "5", *SMALL, "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["n_stage1"] == 3 and result["images"] >= 3 + 2 + 2 + 2
    rows = [json.loads(x) for x in (out / "stage1" / "manifest.jsonl").read_text().splitlines()]
    assert [r["image"] for r in rows] == ["images/000000.png", "images/000001.png", "images/000002.png"]
    assert all(r["caption_en"] and r["caption_zh"] for r in rows)
    assert (out / "prompts" / "color_val.txt").read_text().count("\n") == 4


def test_out_under_a_regular_file(tmp_path, capsys):
    (tmp_path / "f").write_text("x")
    _fails(capsys, ["world", "build", "--out", str(tmp_path / "f" / "w"), "--n", "2", *SMALL], "is a file")


def test_out_is_a_regular_file(tmp_path, capsys):
    (tmp_path / "f").write_text("x")
    _fails(capsys, ["world", "build", "--out", str(tmp_path / "f"), "--n", "2", *SMALL], "not a directory")


@pytest.mark.parametrize("n", ["0", "-3"])
def test_bad_n(tmp_path, capsys, n):
    _fails(capsys, ["world", "build", "--out", str(tmp_path / "w"), "--n", n], "--n")
    assert not (tmp_path / "w").exists()


def test_non_integer_n(tmp_path, capsys):
    _fails(capsys, ["world", "build", "--out", str(tmp_path / "w"), "--n", "many"], "--n")


def test_missing_out(capsys):
    _fails(capsys, ["world", "build", "--n", "2"], "--out")


def test_non_empty_directory_is_refused(tmp_path, capsys):
    (tmp_path / "keep.txt").write_text("mine")
    _fails(capsys, ["world", "build", "--out", str(tmp_path), "--n", "2", *SMALL], "not empty")
    assert (tmp_path / "keep.txt").read_text() == "mine"


def test_help_explains_world_build(capsys):
    assert main(["world", "build", "--help"]) == 0
    out = capsys.readouterr().out
    assert "--seed" in out and "byte-identical" in out
