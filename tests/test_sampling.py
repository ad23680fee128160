"""Sampling engine: filters against independent reference computations, seeded sampling, batch-size invariance,
CFG, KV-cache generation against full recomputation, text generation against transformers' generate, and the
decoding shortcuts (static cache, logits of the allowed id range only) against the full-vocabulary loop they replace."""

import numpy as np
import pytest
import torch
import transformers

from mars_ref.config import MarsConfig
from mars_ref.model import MarsModel
from mars_ref.sampling import (
    apply_temperature,
    cfg_combine,
    codebook_ids,
    filter_logits,
    generate_image_tokens,
    generate_joint,
    generate_text,
    image_seed,
    make_generators,
    pad_left,
    restrict_to,
    restrict_to_codebook,
    sample_rows,
    split_segments,
    top_k_filter,
    top_p_filter,
)

torch.set_num_threads(1)


def tiny(seed=0) -> MarsModel:
    torch.manual_seed(seed)
    m = MarsModel(MarsConfig.from_preset("tiny")).eval()
    with torch.no_grad():  # image logits must depend on the context, not be the uniform init
        m.embed_visual.weight.normal_(0, 0.5)
        m.vision_head.weight.normal_(0, 0.5)
        for b in m.layers:
            b.mlp_vision.up_proj.weight.normal_(0, 0.1)
    return m


# ---- pure filters --------------------------------------------------------------------------------------------
def test_top_k_matches_numpy_reference():
    logits = torch.randn(4, 50, generator=torch.Generator().manual_seed(0))
    out = top_k_filter(logits, 7)
    for row, o in zip(logits.numpy(), out.numpy(), strict=True):
        keep = set(np.argsort(-row)[:7])
        assert {i for i in range(50) if np.isfinite(o[i])} == keep
        assert all(o[i] == row[i] for i in keep)
    assert torch.equal(top_k_filter(logits, None), logits) and torch.equal(top_k_filter(logits, 50), logits)


@pytest.mark.parametrize("p", [0.1, 0.5, 0.9, 0.99])
def test_top_p_matches_loop_reference(p):
    logits = torch.randn(5, 40, generator=torch.Generator().manual_seed(1)) * 2
    out = top_p_filter(logits, p)
    for row, o in zip(logits.double().numpy(), out.numpy(), strict=True):
        probs = np.exp(row - row.max())
        probs /= probs.sum()
        keep, total = set(), 0.0
        for i in np.argsort(-probs):
            keep.add(int(i))
            total += probs[i]
            if total >= p:
                break
        assert {i for i in range(40) if np.isfinite(o[i])} == keep


def test_temperature_cfg_and_restriction():
    a, b = torch.randn(3, 10), torch.randn(3, 10)
    torch.testing.assert_close(apply_temperature(a, 0.5), a * 2)
    torch.testing.assert_close(cfg_combine(a, b, 3.0), 3 * a - 2 * b)
    torch.testing.assert_close(cfg_combine(a, b, 1.0), a)
    cfg = MarsConfig.from_preset("tiny")
    r = restrict_to_codebook(torch.zeros(2, cfg.vocab_size), cfg)
    finite = torch.isfinite(r[0]).nonzero().flatten()
    assert finite.min() == cfg.text_vocab_size and finite.max() == cfg.text_vocab_size + cfg.codebook_size - 1
    assert finite.numel() == cfg.codebook_size


def test_sample_rows_distribution_and_seeding():
    logits = torch.log(torch.tensor([[0.1, 0.2, 0.0, 0.3, 0.4]]))
    draws = sample_rows(logits[:, None].expand(1, 20000, 5), make_generators([5]))[0]
    freq = torch.bincount(draws, minlength=5).float() / 20000
    assert freq[2] == 0  # probability 0 is never drawn
    torch.testing.assert_close(freq, torch.tensor([0.1, 0.2, 0.0, 0.3, 0.4]), atol=0.015, rtol=0)
    x = torch.randn(3, 30)
    assert torch.equal(sample_rows(x, make_generators([1, 2, 3])), sample_rows(x, make_generators([1, 2, 3])))
    assert torch.equal(sample_rows(x, None), x.argmax(-1))


def test_image_seed_stable_and_distinct():
    seeds = {image_seed(42, p, i) for p in range(50) for i in range(4)}
    assert len(seeds) == 200 and all(0 <= s < 2**63 for s in seeds)
    assert image_seed(42, 3, 1) == image_seed(42, 3, 1) != image_seed(43, 3, 1)


# ---- generation ----------------------------------------------------------------------------------------------
PROMPTS = [[(7 * i + j) % 200 + 3 for j in range(1 + i % 5)] for i in range(16)]  # 16 prompts, 1-5 tokens


def test_image_tokens_identical_at_batch_sizes_1_4_16():
    m = tiny()
    seeds = [image_seed(42, i, 0) for i in range(16)]
    kw = dict(grid_hw=(2, 3), cfg_scale=2.5, temperature=1.0, top_k=20, top_p=0.95)
    full = generate_image_tokens(m, PROMPTS, seeds=seeds, **kw)
    fours = torch.cat([generate_image_tokens(m, PROMPTS[i:i + 4], seeds=seeds[i:i + 4], **kw) for i in range(0, 16, 4)])
    ones = torch.cat([generate_image_tokens(m, PROMPTS[i:i + 1], seeds=seeds[i:i + 1], **kw) for i in range(16)])
    assert full.shape == (16, 6) and full.min() >= 0 and full.max() < m.config.codebook_size
    assert torch.equal(full, fours) and torch.equal(full, ones)
    assert len({tuple(r) for r in full.tolist()}) > 8  # different seeds/prompts give different images


def test_cfg_scale_one_equals_no_cfg():
    m = tiny()
    seeds = [image_seed(0, i) for i in range(4)]
    a = generate_image_tokens(m, PROMPTS[:4], (3, 3), seeds=seeds, cfg_scale=None)
    b = generate_image_tokens(m, PROMPTS[:4], (3, 3), seeds=seeds, cfg_scale=1.0)
    c = generate_image_tokens(m, PROMPTS[:4], (3, 3), seeds=seeds, cfg_scale=4.0)
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_kv_cache_generation_equals_full_recomputation_reference():
    """An independent loop that re-runs the whole sequence every step (no cache, no batching) must agree."""
    m = tiny()
    cfg = m.config
    seeds = [image_seed(7, i) for i in range(3)]
    scale, grid = 3.0, (2, 4)
    ours = generate_image_tokens(m, PROMPTS[:3], grid, seeds=seeds, cfg_scale=scale, top_k=30)
    for i in range(3):
        gen = make_generators([seeds[i]])
        cond, unc = list(PROMPTS[i]) + [cfg.boi_id], [cfg.boi_id]
        with torch.no_grad():
            for _ in range(8):
                lc = m(torch.tensor([cond])).logits[:, -1]
                lu = m(torch.tensor([unc])).logits[:, -1]
                logits = restrict_to_codebook(cfg_combine(lc, lu, scale), cfg)
                tok = int(sample_rows(filter_logits(logits, 1.0, 30, None), gen)[0])
                cond.append(tok)
                unc.append(tok)
        assert [t - cfg.codebook_offset for t in cond[-8:]] == ours[i].tolist()


def test_generate_text_matches_transformers_greedy(tmp_path):
    torch.manual_seed(0)
    hcfg = transformers.Qwen2Config(vocab_size=90, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                    num_attention_heads=4, num_key_value_heads=2)
    hf = transformers.Qwen2ForCausalLM(hcfg).eval()
    hf.save_pretrained(tmp_path)
    m = MarsModel.from_qwen2(tmp_path, 16).eval()
    with torch.no_grad():
        m.vision_head.weight.normal_(0, 5.0)  # large image logits must not leak into text generation
    prompts = [[3, 4, 5, 6, 7], [8, 9]]
    ours = generate_text(m, prompts, 10)
    for p, o in zip(prompts, ours, strict=True):
        ref = hf.generate(torch.tensor([p]), max_new_tokens=10, do_sample=False, use_cache=True,
                          pad_token_id=0, eos_token_id=None)[0, len(p):].tolist()
        assert o == ref
    # eos stops a row; the other continues
    stop = ours[0][2]
    out = generate_text(m, prompts, 10, eos_id=stop)
    assert out[0] == ours[0][:3]


def test_joint_generation_structure():
    m = tiny()
    cfg = m.config
    prompts = [[10, 11, 12, cfg.boi_id], [13, 14, cfg.boi_id, cfg.codebook_offset + 3]]
    out = generate_joint(m, prompts, 14, grid_hw=(2, 3), seeds=[1, 2], temperature=1.0)
    for row, already in zip(out, [0, 1], strict=True):
        n = 6 - already
        assert all(cfg.codebook_offset <= t < cfg.codebook_offset + cfg.codebook_size for t in row[:n])
        assert row[n] == cfg.eoi_id
        assert all(t < cfg.text_vocab_size or t == cfg.boi_id or
                   cfg.codebook_offset <= t < cfg.codebook_offset + cfg.codebook_size or t == cfg.eoi_id
                   for t in row[n + 1:])
    segs = split_segments(prompts[0] + out[0], cfg)
    assert segs[0] == ("text", [10, 11, 12]) and segs[1][0] == "image" and len(segs[1][1]) == 6


def test_split_segments():
    cfg = MarsConfig.from_preset("tiny")
    o = cfg.codebook_offset
    ids = [1, 2, cfg.boi_id, o + 1, o + 2, cfg.eoi_id, 3, cfg.boi_id, o + 5]
    assert split_segments(ids, cfg) == [("text", [1, 2]), ("image", [1, 2]), ("text", [3, cfg.boi_id, o + 5])]


def test_restrict_to_rows():
    allowed = torch.tensor([[True, False], [False, True]])
    out = restrict_to(torch.zeros(2, 2), allowed)
    assert torch.isinf(out[0, 1]) and torch.isinf(out[1, 0]) and out[0, 0] == 0


# ---- decoding over the allowed id range only ---------------------------------------------------------------------
@pytest.mark.parametrize("preset", ["tiny", "small"])
def test_sampling_an_id_range_equals_the_full_vocabulary_bit_for_bit(preset):
    """Decoding computes, filters and samples only the id range a row may emit. With the other ids at -inf the full
    joint vocabulary gives the same probabilities, bit for bit, and so the same tokens from the same uniforms."""
    cfg = MarsConfig.from_preset(preset)
    g = torch.Generator().manual_seed(0)
    seeds = [image_seed(1, i) for i in range(6)]
    for vocab in [codebook_ids(cfg), slice(0, cfg.text_vocab_size), slice(3, cfg.codebook_offset + 5)]:
        allowed = torch.zeros(cfg.vocab_size, dtype=torch.bool)
        allowed[vocab] = True
        for kw in [dict(temperature=1.0, top_k=None, top_p=None), dict(temperature=0.7, top_k=50, top_p=0.9),
                   dict(temperature=1.3, top_k=None, top_p=0.95)]:
            for shape in [(6, cfg.vocab_size), (6, 5, cfg.vocab_size)]:  # decoding steps; NKTP's (B, N, V)
                logits = torch.randn(shape, generator=g) * 3
                full = filter_logits(restrict_to(logits, allowed), **kw)
                part = filter_logits(logits[..., vocab], **kw)
                probs = torch.softmax(part, -1)
                assert torch.equal(torch.softmax(full, -1)[..., vocab], probs)
                drawn = sample_rows(full, make_generators(seeds))
                assert torch.equal(drawn, sample_rows(part, make_generators(seeds)) + vocab.start)
                assert torch.equal(drawn, sample_rows(part, make_generators(seeds), probs=probs) + vocab.start)
                assert torch.equal(sample_rows(full, None), sample_rows(part, None) + vocab.start)


def previous_image_loop(m, prompts, grid, seeds, scale, **kw):
    """generate_image_tokens as it was before the static cache: a cache grown by concatenation, logits over the whole
    joint vocabulary, the codebook picked out by a -inf mask."""
    cfg = m.config
    B, N = len(prompts), grid[0] * grid[1]
    gens = make_generators(seeds)
    rows = [list(p) + [cfg.boi_id] for p in prompts] + [[cfg.boi_id]] * B
    out = m(pad_left(rows, cfg.pad_id), use_cache=True, keep_last=1)
    tokens = []
    for _ in range(N):
        logits = restrict_to_codebook(cfg_combine(out.logits[:B, -1], out.logits[B:, -1], scale), cfg)
        tokens.append(sample_rows(filter_logits(logits, **kw), gens))
        out = m(tokens[-1].repeat(2)[:, None], cache=out.cache, keep_last=1)
    return torch.stack(tokens, 1) - cfg.codebook_offset


def test_image_generation_equals_the_previous_full_vocabulary_loop():
    m = tiny()
    seeds = [image_seed(3, i) for i in range(6)]
    kw = dict(temperature=0.9, top_k=20, top_p=0.9)
    with torch.no_grad():
        ref = previous_image_loop(m, PROMPTS[:6], (3, 3), seeds, 2.5, **kw)
    assert torch.equal(generate_image_tokens(m, PROMPTS[:6], (3, 3), seeds=seeds, cfg_scale=2.5, **kw), ref)


def test_joint_generation_equals_the_previous_full_vocabulary_loop():
    """Rows in text, image and <eoi> mode at once: the id range covers them all and each row's mask does the rest."""
    m = tiny()
    cfg = m.config
    prompts = [[10, 11, 12, cfg.boi_id], [13, 14], [15, cfg.boi_id, cfg.codebook_offset + 3], [16, 17, 18, 19]]
    seeds, N = [image_seed(2, i) for i in range(4)], 4
    with torch.no_grad():
        m.vision_head.weight[cfg.boi_id - cfg.codebook_offset] += 0.5  # text rows open images now and then
    ours = generate_joint(m, prompts, 14, grid_hw=(2, 2), seeds=seeds, temperature=1.0, top_k=40)
    gens, n_img = make_generators(seeds), torch.tensor([0, -1, 1, -1])
    text, image, eoi = (torch.zeros(cfg.vocab_size, dtype=torch.bool) for _ in range(3))
    text[:cfg.text_vocab_size] = text[cfg.boi_id] = True
    image[codebook_ids(cfg)] = eoi[cfg.eoi_id] = True
    with torch.no_grad():
        out = m(pad_left(prompts, cfg.pad_id), use_cache=True, keep_last=1)
        ref = []
        for _ in range(14):
            allowed = torch.where((n_img < 0)[:, None], text, torch.where((n_img < N)[:, None], image, eoi))
            tok = sample_rows(filter_logits(restrict_to(out.logits[:, -1], allowed), 1.0, 40, None), gens)
            ref.append(tok)
            n_img = torch.where(tok == cfg.boi_id, 0, torch.where(tok == cfg.eoi_id, -1, n_img + (n_img >= 0).long()))
            out = m(tok[:, None], cache=out.cache, keep_last=1)
    assert ours == torch.stack(ref, 1).tolist()
    assert any(cfg.boi_id in row for row in ours[1::2])  # a text-mode prompt did switch to an image


@pytest.mark.slow
def test_compiled_decoding_draws_the_same_tokens():
    """compile=True (torch.compile of the decoding steps; minutes to compile on a CPU) samples the same tokens here:
    its logits match the eager ones to float rounding, so equality is expected, not guaranteed, in general."""
    m = tiny()
    seeds = [image_seed(4, i) for i in range(4)]
    kw = dict(cfg_scale=2.0, top_k=30)
    eager = generate_image_tokens(m, PROMPTS[:4], (2, 3), seeds=seeds, **kw)
    assert torch.equal(generate_image_tokens(m, PROMPTS[:4], (2, 3), seeds=seeds, compile=True, **kw), eager)
    assert generate_text(m, PROMPTS[:4], 6, compile=True) == generate_text(m, PROMPTS[:4], 6)
