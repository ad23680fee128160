"""Official T2I-CompBench file naming: prompts with '_', repeated prompts, CRLF prompt files."""

from pathlib import Path

import pytest
from PIL import Image

from mars_eval.compbench.files import match_folder, match_paths, official_name, parse_name
from mars_eval.errors import MarsEvalError
from mars_eval.prompts import PromptSet


def _touch(folder: Path, names: list[str]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for n in names:
        Image.new("RGB", (4, 4)).save(folder / n)


def test_parse_name_keeps_underscores_that_split_would_lose():
    name = official_name("a snake_case sign_2 and a red_apple", 123)
    assert name == "a snake_case sign_2 and a red_apple_000123.png"
    assert parse_name(name) == ("a snake_case sign_2 and a red_apple", 123)
    assert name.split("_")[0] == "a snake"  # what the official scripts recover


@pytest.mark.parametrize("bad", ["no_counter.png", "prompt_12a.png", "prompt_000001.txt", "prompt000001.png"])
def test_parse_name_rejects_other_names(bad):
    with pytest.raises(MarsEvalError, match="not an official"):
        parse_name(bad)


def test_official_name_rejects_slash():
    with pytest.raises(MarsEvalError, match="/"):
        official_name("a cat/dog", 0)


def test_match_folder_crlf_duplicates_and_underscores(tmp_path):
    # CRLF, no final newline, a prompt with '_' and a repeated prompt (index 0 and 2)
    pfile = tmp_path / "p.txt"
    pfile.write_bytes(b"a red apple\r\na blue_green bowl\r\na red apple\r\na cat_1")
    prompts = PromptSet.from_file(pfile)
    assert prompts.texts == ["a red apple", "a blue_green bowl", "a red apple", "a cat_1"]
    n = 2
    names = [official_name(p.text, p.index * n + k) for p in prompts for k in range(n)]
    _touch(tmp_path / "imgs", names[::-1])  # creation order must not matter
    items = match_folder(tmp_path / "imgs", prompts, images_per_prompt=n)
    got = [(it.prompt_index, it.image_index, it.counter) for it in items]
    assert got == [(0, 0, 0), (0, 1, 1), (1, 0, 2), (1, 1, 3), (2, 0, 4), (2, 1, 5), (3, 0, 6), (3, 1, 7)]
    assert [it.prompt for it in items] == [prompts[i].text for i, _, _ in got]


def test_duplicates_dealt_in_counter_order_when_counters_do_not_follow_layout(tmp_path):
    prompts = PromptSet.from_text("x y\na red apple\na red apple", "p", "mem")
    # a generator that wrote only the duplicated prompt with counters starting at 100
    names = [official_name("a red apple", 100 + k) for k in range(4)] + [official_name("x y", 7), official_name("x y", 9)]
    items = match_paths([tmp_path / n for n in names], prompts, images_per_prompt=2)
    assert [(it.prompt_index, it.image_index, it.counter) for it in items] == [
        (0, 0, 7), (0, 1, 9), (1, 0, 100), (1, 1, 101), (2, 0, 102), (2, 1, 103)]


def test_per_prompt_counters_restarting_at_zero(tmp_path):
    prompts = PromptSet.from_text("a dog\na cat", "p", "mem")
    names = [official_name(t, k) for t in ("a dog", "a cat") for k in range(3)]
    items = match_paths([tmp_path / n for n in names], prompts, images_per_prompt=3)
    assert [(it.prompt, it.image_index) for it in items] == [
        ("a dog", 0), ("a dog", 1), ("a dog", 2), ("a cat", 0), ("a cat", 1), ("a cat", 2)]


def test_lenient_match_on_case_space_and_final_period(tmp_path):
    prompts = PromptSet.from_text("The Red hat was on top of the coat rack.", "p", "mem")
    items = match_paths([tmp_path / "the red  hat was on top of the coat rack_000000.png"], prompts, 1)
    assert items[0].prompt == "The Red hat was on top of the coat rack."


def test_errors_name_the_problem(tmp_path):
    prompts = PromptSet.from_text("a dog\na cat", "p", "mem")
    with pytest.raises(MarsEvalError, match="matches no prompt"):
        match_paths([tmp_path / "a horse_000000.png"], prompts, 1)
    with pytest.raises(MarsEvalError, match=r"prompt 1 \('a cat'\) has 0 images, expected 1"):
        match_paths([tmp_path / "a dog_000000.png"], prompts, 1)
    assert len(match_paths([tmp_path / "a dog_000000.png"], prompts, 1, strict=False)) == 1
    with pytest.raises(MarsEvalError, match="not found"):
        match_folder(tmp_path / "missing", prompts)
    (tmp_path / "empty").mkdir()
    with pytest.raises(MarsEvalError, match="no images"):
        match_folder(tmp_path / "empty", prompts)


def test_builtin_val_set_round_trips_through_official_names(tmp_path):
    prompts = PromptSet.builtin("color_val")
    names = [official_name(p.text, p.index * 10 + k) for p in prompts for k in range(10)]
    items = match_paths([tmp_path / n for n in names], prompts, 10)
    assert len(items) == 3000
    assert all(it.counter == it.prompt_index * 10 + it.image_index for it in items)
