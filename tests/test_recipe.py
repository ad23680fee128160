"""Stage objectives: batches do not depend on how they are split, and losses match a direct cross-entropy."""

from dataclasses import replace

import numpy as np
import torch
import torch.nn.functional as F

from mars_eval.recipe import objectives, sequences
from mars_eval.recipe.data import Corpus
from mars_ref.config import MarsConfig
from mars_ref.model import MarsModel


def _setup(n=6, grid=(2, 2), hi=(4, 4)):
    torch.manual_seed(0)
    cfg = MarsConfig.from_preset("tiny")
    g = torch.Generator().manual_seed(1)
    codes = [torch.randint(0, cfg.codebook_size, (grid[0] * grid[1],), generator=g) for _ in range(n)]
    high = [torch.randint(0, cfg.codebook_size, (hi[0] * hi[1],), generator=g) for _ in range(n)]
    caps = {lang: [torch.randint(1, cfg.text_vocab_size, (3 + i % 3,), generator=g).tolist() for i in range(n)]
            for lang in ("en", "zh")}
    return cfg, Corpus(codes, [grid] * n, caps, high), MarsModel(cfg)


def _unpad(ids, pad):
    return [[t for t in row if t != pad] for row in ids.tolist()]


def test_sequence_layout():
    cfg = MarsConfig.from_preset("tiny")
    ids, tgt = sequences.t2i(cfg, [5, 6], [1, 2])
    assert ids == [5, 6, cfg.boi_id, 1 + cfg.codebook_offset, 2 + cfg.codebook_offset, cfg.eoi_id]
    assert tgt == [False, False, False, True, True, True]
    ids, tgt = sequences.captioning(cfg, [1], [7, 8], eos_id=0)
    assert ids == [cfg.boi_id, 1 + cfg.codebook_offset, cfg.eoi_id, 7, 8, 0]
    assert tgt == [False, False, False, True, True, True]


def test_batches_do_not_depend_on_the_split():
    cfg, corpus, _ = _setup()
    data = objectives.ImageTextData(corpus, cfg, eos_id=0, p_caption=0.5, p_uncond=0.3)
    idx, seeds = np.array([0, 1, 2, 3]), np.array([11, 12, 13, 14])
    whole = data.collate(idx, seeds)
    parts = [data.collate(idx[:2], seeds[:2]), data.collate(idx[2:], seeds[2:])]
    assert _unpad(whole["ids"], cfg.pad_id) == sum((_unpad(p["ids"], cfg.pad_id) for p in parts), [])
    assert whole["task"].tolist() == sum((p["task"].tolist() for p in parts), [])


def test_ntp_loss_equals_direct_cross_entropy():
    cfg, corpus, model = _setup()
    loss_fn = objectives.NTPLoss(cfg)
    batch = objectives.ImageTextData(corpus, cfg, eos_id=0).collate(np.arange(6), np.arange(6) + 100)
    out = loss_fn(model, batch)
    assert out.n_tokens == loss_fn.count_tokens(batch) > 0
    logits = model(batch["ids"]).logits  # independent: shift by hand, mask by target flags of the next token
    lg, tg, m = logits[:, :-1], batch["ids"][:, 1:], batch["target"][:, 1:] & (batch["ids"][:, 1:] != cfg.pad_id)
    ref = F.cross_entropy(lg[m], tg[m], reduction="sum")
    assert torch.allclose(out.loss_sum, ref, rtol=1e-5)


def test_nktp_loss_counts_masked_slots_only():
    cfg, corpus, model = _setup()
    loss_fn = objectives.NKTPLoss(cfg)
    batch = objectives.SuperResData(corpus, cfg).collate(np.arange(4), np.arange(4))
    out = loss_fn(model, batch)
    assert out.n_tokens == loss_fn.count_tokens(batch) == int(batch["masked"].sum()) > 0
    assert torch.isfinite(out.loss_sum)


def test_fresh_scenes_are_new_per_seed_and_independent_of_the_split(tmp_path):
    """FreshImageTextData: a scene is a pure function of its example seed (so batches do not depend on the split),
    different seeds draw different scenes, and no training caption is a val prompt."""
    from fixtures_suites import tiny_world

    from mars_eval.recipe.data import val_prompts
    from mars_ref.text_tokenizer import load_text_tokenizer, train_bpe
    from mars_ref.vq import VQModel, vq_preset
    from mars_ref.vq_formats import save_vq
    from mars_ref.world import caption, training_scene

    world = tiny_world(tmp_path / "world")
    lines = (world / "text" / "train.txt").read_text(encoding="utf-8").splitlines()
    train_bpe(lines, 300, tmp_path / "tok", min_frequency=1)
    torch.manual_seed(0)
    save_vq(VQModel(vq_preset("world-f4-local")), tmp_path / "vq")
    cfg = MarsConfig.from_preset("tiny").replace(text_vocab_size=len(load_text_tokenizer(tmp_path / "tok")),
                                                 codebook_size=512)  # the tokenizers' vocabularies
    data = objectives.FreshImageTextData(str(world), str(tmp_path / "vq"), str(tmp_path / "tok"), cfg, eos_id=0,
                                         p_caption=0.3, contrast=True)
    idx, seeds = np.zeros(6, dtype=np.int64), np.arange(6) + 40
    whole = data.collate(idx, seeds)
    parts = [data.collate(idx[:3], seeds[:3]), data.collate(idx[3:], seeds[3:])]
    for key in ("ids", "neg_ids"):
        assert _unpad(whole[key], cfg.pad_id) == sum((_unpad(p[key], cfg.pad_id) for p in parts if key in p), [])
    rows = _unpad(whole["ids"], cfg.pad_id)
    assert len({tuple(r) for r in rows}) == 6  # six seeds, six different examples
    grids = [[t for t in r if cfg.codebook_offset <= t < cfg.codebook_offset + cfg.codebook_size] for r in rows]
    assert all(len(g) == 64 for g in grids)  # 32 px scenes through an f4 tokenizer: an 8 x 8 grid
    held = val_prompts(world)
    assert len(held) == 6 * 7  # the tiny world's val prompts, which training_scene must avoid
    rng = np.random.default_rng(0)
    assert all(caption(training_scene(rng, held), "en") not in held for _ in range(200))

    # one-word negatives: each negative row is its positive row with the caption changed in one word, same grid
    tok = load_text_tokenizer(tmp_path / "tok")
    one = replace(data, negatives="one-word").collate(np.zeros(16, dtype=np.int64), np.arange(16) + 40)
    pos, neg = _unpad(one["ids"], cfg.pad_id), _unpad(one["neg_ids"], cfg.pad_id)
    assert len(neg) > 0
    for n, r in zip(neg, one["neg_of"].tolist(), strict=True):
        bo = pos[r].index(cfg.boi_id)
        assert n[n.index(cfg.boi_id):] == pos[r][bo:]  # the same image tokens
        a, b = tok.decode(pos[r][:bo]).split(), tok.decode(n[:n.index(cfg.boi_id)]).split()
        if len(a) == len(b):  # English: one word differs, besides a/an; Chinese captions have no spaces
            assert sum(x != y and {x, y} != {"a", "an"} for x, y in zip(a, b, strict=True)) == 1, (a, b)
        assert a != b


def test_object_tokens_are_the_cells_that_meet_an_object_box():
    from mars_eval.recipe.data import object_tokens
    from mars_ref.world import CATEGORIES, sample_scene
    from mars_ref.world.scene import box_overlap

    rng = np.random.default_rng(3)
    for k in range(20):
        scene = sample_scene(CATEGORIES[k % len(CATEGORIES)], rng)
        got = object_tokens(scene, 8, 8).view(8, 8)
        want = [[any(box_overlap(o.box, (c / 8, r / 8, (c + 1) / 8, (r + 1) / 8)) > 0 for o in scene.objects)
                 for c in range(8)] for r in range(8)]
        assert got.tolist() == want
        assert 0 < int(got.sum()) < 64


def test_object_weight_scales_the_loss_of_object_tokens_only():
    cfg, corpus, model = _setup()
    corpus.objects = [torch.tensor([True, False, False, True]) for _ in range(len(corpus))]
    plain = objectives.ImageTextData(corpus, cfg, eos_id=0, p_caption=0.5)
    weighted = objectives.ImageTextData(corpus, cfg, eos_id=0, p_caption=0.5, object_weight=3.0)
    idx, seeds = np.arange(6), np.arange(6) + 7
    b0, b1 = plain.collate(idx, seeds), weighted.collate(idx, seeds)
    assert torch.equal(b0["ids"], b1["ids"]) and "weight" not in b0
    loss_fn = objectives.NTPLoss(cfg)
    out0, out1 = loss_fn(model, b0), loss_fn(model, b1)
    assert out0.n_tokens == out1.n_tokens  # the same tokens, weighted
    logits = model(b1["ids"]).logits  # independent: weight 3 on grid tokens 0 and 3 of text-to-image rows
    ce = F.cross_entropy(logits[:, :-1].flatten(0, 1), b1["ids"][:, 1:].flatten(), reduction="none").view(6, -1)
    m = b1["target"][:, 1:] & (b1["ids"][:, 1:] != cfg.pad_id)
    w = torch.ones_like(ce)
    boi = (b1["ids"] == cfg.boi_id).nonzero().tolist()
    for row, pos in boi:
        if b1["task"][row] == 0:  # text-to-image: caption <boi> g0 g1 g2 g3 <eoi>
            w[row, pos] = w[row, pos + 3] = 3.0  # logits at t predict ids[t + 1]
    assert b1["task"].tolist().count(0) > 0
    assert torch.allclose(out1.loss_sum, (ce * w * m).sum(), rtol=1e-5)
    assert torch.allclose(out0.loss_sum, (ce * m).sum(), rtol=1e-5)


def test_contrastive_term_is_the_logistic_loss_of_the_per_token_margin():
    """NTPLoss with contrast: the NLL plus contrast * n * softplus(-beta * m) / beta per negative row, where m is the
    per-token NLL margin of the image under another example's caption; negative rows do not depend on the split."""
    cfg, corpus, model = _setup()
    data = objectives.ImageTextData(corpus, cfg, eos_id=0, p_caption=0.3, p_uncond=0.2, contrast=True)
    idx, seeds = np.arange(6), np.arange(6) + 21
    batch = data.collate(idx, seeds)
    parts = [data.collate(idx[:3], seeds[:3]), data.collate(idx[3:], seeds[3:])]
    assert _unpad(batch["neg_ids"], cfg.pad_id) == sum((_unpad(p["neg_ids"], cfg.pad_id) for p in parts
                                                         if "neg_ids" in p), [])
    plain = objectives.NTPLoss(cfg)(model, batch)
    out = objectives.NTPLoss(cfg, contrast=0.5, contrast_beta=4.0)(model, batch)

    def row_nll(ids, target):  # independent: per row, summed cross-entropy of the target tokens
        logits = model(ids).logits[:, :-1].float()
        m = target[:, 1:] & (ids[:, 1:] != cfg.pad_id)
        ce = F.cross_entropy(logits.flatten(0, 1), ids[:, 1:].flatten(), reduction="none").view_as(m)
        return (ce * m).sum(1), m.sum(1)

    pos, _ = row_nll(batch["ids"], batch["target"])
    neg, n = row_nll(batch["neg_ids"], batch["neg_target"])
    margin = (neg - pos[batch["neg_of"]]) / n
    assert len(margin) > 0
    want = plain.loss_sum + 0.5 * (n * F.softplus(-4.0 * margin) / 4.0).sum()
    assert torch.allclose(out.loss_sum, want, rtol=1e-5)
    for r, p in enumerate(batch["neg_of"].tolist()):  # the same image, another caption
        pos_ids, neg_ids = _unpad(batch["ids"][p:p + 1], cfg.pad_id)[0], _unpad(batch["neg_ids"][r:r + 1], cfg.pad_id)[0]
        boi = pos_ids.index(cfg.boi_id)
        assert neg_ids[neg_ids.index(cfg.boi_id):] == pos_ids[boi:]
