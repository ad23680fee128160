"""`mars-eval caption`: the captioning score is checked against captions whose correctness is known."""

from __future__ import annotations

import json

import numpy as np
import pytest
from fixtures_bundle import build_tiny_bundle

from mars_eval.cli.main import main
from mars_eval.recipe import evaluate
from mars_ref.world import CATEGORIES, caption, sample_scene


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return build_tiny_bundle(tmp_path_factory.mktemp("cap") / "ckpt")


def _truth_captions(n: int, seed: int, lang: str) -> list[str]:
    """The captions of the scenes `captioning_accuracy` draws, rebuilt here from the same seed."""
    rng = np.random.default_rng(seed)
    return [caption(sample_scene(CATEGORIES[i % len(CATEGORIES)], rng), lang) for i in range(n)]


@pytest.mark.parametrize("lang", ["en", "zh"])
def test_true_captions_score_one_and_wrong_ones_zero(ckpt, monkeypatch, lang):
    from mars_eval.bundle import Bundle

    b = Bundle.load(ckpt)
    truth = _truth_captions(14, 7, lang)
    monkeypatch.setattr(evaluate, "_greedy", lambda model, tok, prompts, max_new: truth)
    res = evaluate.captioning_accuracy(b.model, b.vq, b.tokenizer, n=14, seed=7)
    assert res["caption_exact"] == 1.0 and res["caption_object_recall"] == 1.0 and res["caption_parsed"] == 1.0
    assert res["caption_kind_recall"] == 1.0
    assert all(res[f"caption_exact/{c}"] == 1.0 for c in CATEGORIES)
    shifted = truth[1:] + truth[:1]  # every caption belongs to another scene
    monkeypatch.setattr(evaluate, "_greedy", lambda model, tok, prompts, max_new: shifted)
    res = evaluate.captioning_accuracy(b.model, b.vq, b.tokenizer, n=14, seed=7)
    assert res["caption_exact"] < 0.2 and res["caption_parsed"] == 1.0 and res["caption_object_recall"] < 0.5
    monkeypatch.setattr(evaluate, "_greedy", lambda model, tok, prompts, max_new: ["not a caption"] * 14)
    res = evaluate.captioning_accuracy(b.model, b.vq, b.tokenizer, n=14, seed=7)
    assert res["caption_exact"] == 0.0 and res["caption_parsed"] == 0.0 and res["caption_object_recall"] == 0.0
    assert res["caption_kind_recall"] == 0.0


def test_cli_runs_a_bundle(ckpt, capsys):
    assert main(["caption", "--ckpt", str(ckpt), "--n", "7", "--json"]) in (0, None)
    res = json.loads(capsys.readouterr().out)
    assert res["n"] == 7 and len(res["examples"]) == 5 and len(res["checkpoint"]) == 16
    assert 0 <= res["caption_exact"] <= res["caption_parsed"] <= 1  # a random model rarely parses, never beyond


def test_cli_bad_checkpoint_is_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main(["caption", "--ckpt", str(tmp_path / "missing")])
    err = capsys.readouterr().err
    assert e.value.code == 1 and err.startswith("error:") and len(err.strip().splitlines()) == 1


def test_kind_recall_counts_the_named_kinds(ckpt, monkeypatch):
    """Hand-made captions for two known scenes: the right kinds with an unstated attribute count as named kinds
    (not as whole objects); a kind the scene lacks does not."""
    from mars_eval.bundle import Bundle

    b = Bundle.load(ckpt)
    rng = np.random.default_rng(3)
    scenes = [sample_scene(CATEGORIES[i % len(CATEGORIES)], rng) for i in range(2)]
    kinds = [[o["kind"] for o in s.truth()["objects"]] for s in scenes]
    other = next(k for k in ("ball", "kite", "car", "moon") if k not in kinds[1])
    made = [" and ".join(f"a striped {k}" for k in kinds[0]), f"a striped {kinds[1][0]} and a striped {other}"]
    monkeypatch.setattr(evaluate, "_greedy", lambda model, tok, prompts, max_new: made)
    res = evaluate.captioning_accuracy(b.model, b.vq, b.tokenizer, n=2, seed=3)
    assert res["caption_parsed"] == 1.0 and res["caption_object_recall"] == 0.0
    assert res["caption_kind_recall"] == pytest.approx((len(kinds[0]) + 1) / (len(kinds[0]) + len(kinds[1])))
