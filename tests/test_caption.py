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
    from mars_eval.bundle import Bundle

    b = Bundle.load(ckpt)
    want = evaluate.word_use(b.model, b.vq, b.tokenizer, "color", n=7, seed=12345 + 2)["gain"]
    assert res["color_word_gain"] == pytest.approx(want, abs=1e-9) and "kind_word_gain" in res


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


def test_prompt_use_matches_unpadded_sequences(ckpt):
    """prompt_use's batched, padded NLL equals one-sequence-at-a-time cross-entropy; the gain is their difference."""
    import torch

    from mars_eval.bundle import Bundle
    from mars_eval.recipe.sequences import t2i
    from mars_ref.vq_train import to_model_range
    from mars_ref.world import render

    b = Bundle.load(ckpt)
    cfg, n, seed = b.model.config, 5, 3
    res = evaluate.prompt_use(b.model, b.vq, b.tokenizer, n=n, seed=seed, batch=2)
    rng = np.random.default_rng(seed)
    scenes = [sample_scene(CATEGORIES[i % len(CATEGORIES)], rng) for i in range(n)]
    shift = int(rng.integers(1, n))
    x = torch.from_numpy(np.stack([np.asarray(render(s, 32, 32)) for s in scenes])).permute(0, 3, 1, 2)
    codes = b.vq.encode(to_model_range(x)).flatten(1)
    caps = [b.tokenizer(caption(s, "en"), add_special_tokens=False)["input_ids"] for s in scenes]

    def nll(pick):
        total = count = 0.0
        for i in range(n):
            ids, target = t2i(cfg, caps[pick(i)], codes[i].tolist())
            with torch.no_grad():
                logits = b.model(torch.tensor([ids])).logits[0, :-1].float()
            sel = torch.tensor(target[1:])
            ce = torch.nn.functional.cross_entropy(logits[sel], torch.tensor(ids[1:])[sel], reduction="sum")
            total, count = total + float(ce), count + int(sel.sum())
        return total / count, count / n

    own, per_image = nll(lambda i: i)
    other, _ = nll(lambda i: (i + shift) % n)
    assert res["t2i_nll"] == pytest.approx(own, rel=1e-4)
    assert res["t2i_nll_other_caption"] == pytest.approx(other, rel=1e-4)
    assert res["prompt_gain"] == pytest.approx((other - own) * per_image, rel=1e-3, abs=1e-3)

    def token_nll(pick):  # (n, h*w) NLL of each image token (without <eoi>)
        rows = []
        for i in range(n):
            ids, target = t2i(cfg, caps[pick(i)], codes[i].tolist())
            with torch.no_grad():
                logits = b.model(torch.tensor([ids])).logits[0, :-1].float()
            sel = torch.tensor(target[1:])
            rows.append(torch.nn.functional.cross_entropy(logits[sel], torch.tensor(ids[1:])[sel],
                                                          reduction="none")[:-1])
        return torch.stack(rows)

    from mars_ref.world.scene import box_overlap

    diff = token_nll(lambda i: (i + shift) % n) - token_nll(lambda i: i)
    side = int(codes.shape[1] ** 0.5)
    on = torch.tensor([[any(box_overlap(o.box, (c / side, r / side, (c + 1) / side, (r + 1) / side)) > 0
                            for o in s.objects) for r in range(side) for c in range(side)] for s in scenes])
    assert res["prompt_gain_objects"] == pytest.approx(float((diff * on).sum(1).mean()), abs=1e-3)
    assert res["prompt_gain_background"] == pytest.approx(float((diff * ~on).sum(1).mean()), abs=1e-3)


def test_prompt_use_is_zero_for_a_model_blind_to_the_prompt(ckpt):
    """A model whose logits at each position depend on that position's token only cannot use the caption."""
    import torch

    from mars_eval.bundle import Bundle

    b = Bundle.load(ckpt)

    class Bigram(torch.nn.Module):
        def __init__(self, config):
            super().__init__()
            self.config = config
            self.table = torch.nn.Embedding(config.vocab_size, config.vocab_size)

        def forward(self, ids):
            return type("Out", (), {"logits": self.table(ids)})

    res = evaluate.prompt_use(Bigram(b.model.config), b.vq, b.tokenizer, n=6, seed=0)
    # zero up to float32 summation order (batches of different padding): 1e-3 nats per image, where a model that
    # reads the prompt gains nats
    assert res["prompt_gain"] == pytest.approx(0.0, abs=1e-3)
    assert res["t2i_nll"] == pytest.approx(res["t2i_nll_empty_caption"], abs=1e-5)


@pytest.mark.parametrize("word", ["color", "kind"])
def test_word_use_swaps_one_word_and_scores_the_nll_difference(ckpt, word):
    """word_use's gain is the unbatched image NLL under the caption with one `word` changed minus under the true
    caption; the two captions differ in exactly that one word."""
    import dataclasses

    import torch

    from mars_eval.bundle import Bundle
    from mars_eval.recipe.sequences import t2i
    from mars_ref.vq_train import to_model_range
    from mars_ref.world import lexicon as L
    from mars_ref.world import render
    from mars_ref.world.sampling import swap_word

    b = Bundle.load(ckpt)
    n, seed = 4, 3
    res = evaluate.word_use(b.model, b.vq, b.tokenizer, word, n=n, seed=seed, batch=3)
    rng = np.random.default_rng(seed)
    scenes = [sample_scene("color", rng) for _ in range(n)]
    swapped = [dataclasses.replace(s, groups=swap_word(s.groups, int(rng.integers(len(s.groups))), word, rng))
               for s in scenes]
    vocab = set(L.COLORS) if word == "color" else {w for k in L.KINDS for w in (k, L.noun_en(k, 2))}
    for s, t in zip(scenes, swapped, strict=True):
        words = [[w.strip(",") for w in caption(x, "en").split()] for x in (s, t)]
        diff = [(a, c) for a, c in zip(*words, strict=True) if a != c and {a, c} != {"a", "an"}]  # the article follows
        assert len(diff) == 1 and set(diff[0]) <= vocab, diff
    x = torch.from_numpy(np.stack([np.asarray(render(s, 32, 32)) for s in scenes])).permute(0, 3, 1, 2)
    codes = b.vq.encode(to_model_range(x)).flatten(1)

    def image_nll(scene, i):
        ids, target = t2i(b.model.config, b.tokenizer(caption(scene, "en"), add_special_tokens=False)["input_ids"],
                          codes[i].tolist())
        with torch.no_grad():
            logits = b.model(torch.tensor([ids])).logits[0, :-1].float()
        sel = torch.tensor(target[1:])
        return float(torch.nn.functional.cross_entropy(logits[sel], torch.tensor(ids[1:])[sel], reduction="sum"))

    gains = [image_nll(t, i) - image_nll(s, i) for i, (s, t) in enumerate(zip(scenes, swapped, strict=True))]
    assert res["gain_per_image"] == pytest.approx(gains, abs=2e-3)
    assert res["gain"] == pytest.approx(float(np.mean(gains)), abs=2e-3)
