"""Stage III: NKTP schedules, iterative masked decoding (counts per pass, no mask left), batch invariance, equality with
the full-vocabulary loop it replaced, and the masked-token / next-token losses against independent computations."""

import math

import pytest
import torch
import torch.nn.functional as F

from mars_ref.config import MarsConfig
from mars_ref.errors import MarsRefError
from mars_ref.losses import ntp_loss, ntp_targets
from mars_ref.model import MarsModel
from mars_ref.nktp import nktp_generate, nktp_loss, nktp_schedule, stage3_suffix, suffix_positions
from mars_ref.sampling import (
    cfg_combine,
    filter_logits,
    image_seed,
    make_generators,
    pad_left,
    restrict_to_codebook,
    sample_rows,
)

torch.set_num_threads(1)


def tiny(seed=0) -> MarsModel:
    torch.manual_seed(seed)
    m = MarsModel(MarsConfig.from_preset("tiny")).eval()
    with torch.no_grad():
        m.embed_visual.weight.normal_(0, 0.5)
        m.vision_head.weight.normal_(0, 0.5)
    return m


@pytest.mark.parametrize("n, steps, kind", [(16, 4, "cosine"), (64, 8, "cosine"), (10, 10, "linear"),
                                            (7, 3, "square"), (100, 1, "cosine")])
def test_schedule_sums_and_fills_every_pass(n, steps, kind):
    c = nktp_schedule(n, steps=steps, schedule=kind)
    assert len(c) == steps and sum(c) == n and min(c) >= 1


def test_cosine_schedule_values_and_constant_k():
    # remaining after pass t = floor(16 cos(pi/2 (t+1)/4)) = 14, 11, 6, 0 -> fills 2, 3, 5, 6
    assert nktp_schedule(16, steps=4) == [2, 3, 5, 6]
    assert [16 - sum(nktp_schedule(16, steps=4)[:t + 1]) for t in range(4)] == [
        math.floor(16 * math.cos(math.pi / 2 * (t + 1) / 4)) for t in range(4)]
    assert nktp_schedule(10, k=4) == [4, 4, 2] and nktp_schedule(9, k=1) == [1] * 9
    with pytest.raises(MarsRefError, match="steps must be in"):
        nktp_schedule(4, steps=5)
    with pytest.raises(MarsRefError, match="unknown NKTP schedule"):
        nktp_schedule(4, steps=2, schedule="zigzag")


@pytest.mark.parametrize("sched", [{"k": 3}, {"steps": 4, "schedule": "cosine"}, {"k": 1}])
def test_nktp_fills_scheduled_count_per_pass_and_ends_unmasked(sched):
    m = tiny()
    cfg = m.config
    seen = []  # number of <mask> tokens in each suffix forward pass
    hook = m.register_forward_pre_hook(
        lambda mod, args, kw: seen.append(int((args[0] == cfg.mask_id).sum(1)[0])), with_kwargs=True)
    lowres = torch.randint(0, cfg.codebook_size, (2, 4), generator=torch.Generator().manual_seed(0))
    res = nktp_generate(m, [[5, 6, 7], [8]], lowres, (3, 4), seeds=[1, 2], **sched)
    hook.remove()
    expected = nktp_schedule(12, **sched)
    assert res.counts == expected and res.forward_passes == 1 + len(expected)
    assert seen[0] == 0  # caption prefill
    assert seen[1:] == [12 - sum(expected[:t]) for t in range(len(expected))]
    assert res.tokens.shape == (2, 12) and res.tokens.min() >= 0 and res.tokens.max() < cfg.codebook_size


def test_nktp_batch_invariant_with_cfg():
    m = tiny()
    cfg = m.config
    prompts = [[3, 4, 5], [6], [7, 8], [9, 10, 11, 12]]
    lowres = torch.randint(0, cfg.codebook_size, (4, 4), generator=torch.Generator().manual_seed(1))
    seeds = [image_seed(1, i) for i in range(4)]
    kw = dict(steps=3, cfg_scale=2.0, top_k=16, choice_temperature=1.0)
    full = nktp_generate(m, prompts, lowres, (2, 3), seeds=seeds, **kw).tokens
    ones = torch.cat([nktp_generate(m, prompts[i:i + 1], lowres[i:i + 1], (2, 3), seeds=seeds[i:i + 1], **kw).tokens
                      for i in range(4)])
    assert torch.equal(full, ones)


def previous_nktp_loop(m, prompts, lowres, grid, seeds, counts, scale, top_k, choice_temperature):
    """nktp_generate as it was before the static cache: the caption's KVCache concatenated with the suffix every pass,
    logits, filters and softmax over the whole joint vocabulary with the codebook picked out by a -inf mask."""
    cfg = m.config
    B, N = len(prompts), grid[0] * grid[1]
    gens = make_generators(seeds)
    prefix = m(pad_left(prompts + [[]] * B, cfg.pad_id), use_cache=True, keep_last=1).cache
    suffix = stage3_suffix(cfg, lowres.repeat(2, 1), None, N)
    tokens = torch.full((B, N), -1)
    for step, n_fill in enumerate(counts):
        logits = m(suffix, cache=prefix, suffix_start=prefix.length, keep_last=N).logits
        logits = filter_logits(restrict_to_codebook(cfg_combine(logits[:B], logits[B:], scale), cfg), 1.0, top_k, None)
        sampled = sample_rows(logits, gens)
        conf = torch.softmax(logits, -1).gather(-1, sampled[..., None])[..., 0].clamp_min(1e-30).log()
        g = torch.stack([torch.rand(N, generator=g) for g in gens])
        conf = conf + choice_temperature * (1 - (step + 1) / len(counts)) * -torch.log(-torch.log(g.clamp(1e-20, 1)))
        pick = conf.masked_fill(tokens >= 0, float("-inf")).topk(n_fill, dim=-1).indices
        tokens.scatter_(1, pick, sampled.gather(1, pick) - cfg.codebook_offset)
        hi = torch.where(tokens >= 0, tokens.clamp(min=0) + cfg.codebook_offset, cfg.mask_id)
        suffix[:, -N:] = hi.repeat(2, 1)
    return tokens


def test_nktp_equals_the_previous_full_vocabulary_loop():
    m = tiny()
    prompts = [[3, 4, 5], [6], [7, 8]]
    lowres = torch.randint(0, m.config.codebook_size, (3, 4), generator=torch.Generator().manual_seed(4))
    seeds = [image_seed(5, i) for i in range(3)]
    ours = nktp_generate(m, prompts, lowres, (3, 3), seeds=seeds, steps=4, cfg_scale=2.0, top_k=20,
                         choice_temperature=1.5)
    with torch.no_grad():
        ref = previous_nktp_loop(m, prompts, lowres, (3, 3), seeds, ours.counts, 2.0, 20, 1.5)
    assert torch.equal(ours.tokens, ref)


def test_nktp_greedy_single_pass_is_argmax_of_all_masked_forward():
    """With K = all tokens, one pass fills the grid with the argmax of a full-sequence suffix-attention forward."""
    m = tiny()
    cfg = m.config
    lowres = torch.randint(0, cfg.codebook_size, (1, 4), generator=torch.Generator().manual_seed(2))
    res = nktp_generate(m, [[5, 6, 7]], lowres, (2, 2), seeds=None, k=4)
    ids = torch.cat([torch.tensor([[5, 6, 7]]), stage3_suffix(cfg, lowres, None, 4)], 1)
    with torch.no_grad():
        logits = m(ids, suffix_start=3).logits[0, -4:, cfg.codebook_offset:cfg.codebook_offset + cfg.codebook_size]
    assert res.tokens[0].tolist() == logits.argmax(-1).tolist()


def test_ntp_loss_matches_manual_per_modality():
    cfg = MarsConfig.from_preset("tiny")
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 6, cfg.vocab_size, generator=g, requires_grad=True)
    ids = torch.tensor([[1, 2, cfg.boi_id, cfg.codebook_offset + 1, cfg.codebook_offset + 2, cfg.eoi_id],
                        [cfg.pad_id, 3, 4, 5, 6, 7]])
    targets, mask = ntp_targets(ids, cfg.pad_id)
    assert mask.tolist() == [[True] * 5 + [False], [True] * 5 + [False]]
    s = ntp_loss(logits, targets, mask, cfg.text_vocab_size)
    ce = {(b, t): float(F.cross_entropy(logits[b, t][None].detach(), targets[b, t][None])) for b in range(2) for t in range(5)}
    image = [(0, 1), (0, 2), (0, 3), (0, 4)]  # targets <boi>, two codes, <eoi>
    text = [k for k in ce if k not in image]
    assert (s.n_text, s.n_image) == (len(text), 4)
    assert math.isclose(float(s.loss_image.detach()), sum(ce[k] for k in image) / 4, rel_tol=1e-5)
    assert math.isclose(float(s.loss_text.detach()), sum(ce[k] for k in text) / len(text), rel_tol=1e-5)
    assert math.isclose(float(s.loss.detach()), sum(ce.values()) / 10, rel_tol=1e-5)
    assert math.isclose(s.max_logit_image, float(torch.stack([logits[k] for k in image]).max().detach()), rel_tol=1e-6)
    assert math.isclose(s.logit_norm_text, float(torch.stack([logits[k].norm() for k in text]).mean().detach()), rel_tol=1e-5)
    s.loss_image.backward()
    assert logits.grad[1].abs().sum() == 0 and logits.grad[0, 1].abs().sum() > 0


def test_nktp_loss_counts_masked_only_and_trains_image_path():
    m = tiny()
    m.train()
    cfg = m.config
    g = torch.Generator().manual_seed(3)
    prefix = torch.tensor([[cfg.pad_id, 5, 6], [7, 8, 9]])
    lowres = torch.randint(0, cfg.codebook_size, (2, 4), generator=g)
    hires = torch.randint(0, cfg.codebook_size, (2, 16), generator=g)
    ratios = torch.tensor([0.25, 1.0])
    stats = nktp_loss(m, prefix, lowres, hires, generator=g, mask_ratio=lambda n, gen: ratios)
    assert (stats.n_text, stats.n_image) == (0, 4 + 16)
    stats.loss.backward()
    assert torch.isfinite(stats.loss)
    assert m.layers[0].mlp_vision.up_proj.weight.grad.abs().sum() > 0
    assert m.layers[0].mlp_text.up_proj.weight.grad is None


def aligned_tiny(seed=0) -> MarsModel:
    m = tiny(seed)
    m.config = m.config.replace(stage3_positions="aligned")
    return m


def test_aligned_positions_pinned():
    cfg = MarsConfig.from_preset("tiny", stage3_positions="aligned")
    pos = suffix_positions(cfg, 4, (4, 4)).tolist()  # low-res 2x2, high-res 4x4
    assert pos[:7] == [0, 1, 2, 3, 4, 5, 6]  # <boi>, 4 low-res tokens, <eoi>, <boh>
    hi = pos[7:]
    # slot (r, c) = 7 + index of low-res token (r // 2, c // 2) + (2 (r % 2) + c % 2) / 4
    assert hi[:4] == [7.0, 7.25, 8.0, 8.25] and hi[4:8] == [7.5, 7.75, 8.5, 8.75]
    assert hi[8:12] == [9.0, 9.25, 10.0, 10.25] and hi[12:] == [9.5, 9.75, 10.5, 10.75]
    assert suffix_positions(MarsConfig.from_preset("tiny"), 4, (4, 4)) is None
    with pytest.raises(MarsRefError, match="half the high-res sides"):
        suffix_positions(cfg, 6, (4, 4))
    with pytest.raises(MarsRefError, match="stage3_positions"):
        MarsConfig.from_preset("tiny", stage3_positions="2d")


def _manual_logits(m, prefix, lowres, hires_or_none, n_hi, positions):
    cfg = m.config
    ids = torch.cat([torch.tensor([prefix]), stage3_suffix(cfg, lowres, hires_or_none, n_hi)], 1)
    with torch.no_grad():
        return ids, m(ids, positions=positions, suffix_start=len(prefix)).logits[:, -n_hi:]


def test_aligned_generation_and_loss_use_the_documented_positions():
    """Greedy one-pass NKTP and the masked-token loss both equal a plain forward at the documented positions."""
    m = aligned_tiny()
    cfg = m.config
    g = torch.Generator().manual_seed(5)
    lowres = torch.randint(0, cfg.codebook_size, (1, 4), generator=g)
    hires = torch.randint(0, cfg.codebook_size, (1, 16), generator=g)
    prefix = [5, 6, 7]
    positions = torch.cat([torch.arange(3.0), 3 + suffix_positions(cfg, 4, (4, 4))])[None]  # (1, T)
    _, logits = _manual_logits(m, prefix, lowres, None, 16, positions)
    code = slice(cfg.codebook_offset, cfg.codebook_offset + cfg.codebook_size)
    res = nktp_generate(m, [prefix], lowres, (4, 4), seeds=None, k=16)
    assert res.tokens[0].tolist() == logits[0, :, code].argmax(-1).tolist()
    _, seq = _manual_logits(m, prefix, lowres, None, 16, None)  # the sequential layout predicts otherwise
    assert not torch.allclose(seq, logits)

    masked = torch.ones(1, 16, dtype=torch.bool)
    stats = nktp_loss(m, torch.tensor([prefix]), lowres, hires, masked=masked)
    ids = stage3_suffix(cfg, lowres, None, 16)  # all <mask>: what nktp_loss feeds with everything masked
    with torch.no_grad():
        logits = m(torch.cat([torch.tensor([prefix]), ids], 1), positions=positions, suffix_start=3).logits[:, -16:]
    ref = ntp_loss(logits, hires + cfg.codebook_offset, masked, cfg.text_vocab_size)
    assert math.isclose(float(stats.loss.detach()), float(ref.loss), rel_tol=1e-5)
