"""MarsConfig validation, paper initialisation, modality routing, KV caches (growing and static), vocabulary-restricted
logits, attention masks and bf16 autocast."""

import json

import pytest
import torch

from mars_ref.config import SPECIAL_TOKENS, MarsConfig
from mars_ref.errors import MarsRefError
from mars_ref.kv_cache import StaticKVCache
from mars_ref.model import MarsModel, causal_mask

torch.set_num_threads(1)


def tiny(**kw) -> MarsModel:
    """Tiny model whose visual rows are randomised, so image logits depend on the input (not the uniform init).
    With caption_kv "expert" the experts' K/V projections are perturbed too, so the image queries' view of the
    caption differs from the text queries' (at the paper init they are equal)."""
    torch.manual_seed(kw.pop("seed", 0))
    m = MarsModel(MarsConfig.from_preset("tiny", **kw)).eval()
    with torch.no_grad():
        m.embed_visual.weight.normal_(0, 0.5)
        m.vision_head.weight.normal_(0, 0.5)
        if m.config.image_view:
            for b in m.layers:
                for w in (b.attn_vision.k_proj.weight, b.attn_vision.v_proj.weight):
                    w.add_(0.3 * torch.randn_like(w))
    return m


def mixed_ids(cfg: MarsConfig, B=2, n_text=5, n_img=6, seed=1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    text = torch.randint(0, cfg.text_vocab_size, (B, n_text), generator=g)
    img = torch.randint(0, cfg.codebook_size, (B, n_img), generator=g) + cfg.codebook_offset
    tail = torch.randint(0, cfg.text_vocab_size, (B, 3), generator=g)
    return torch.cat([text, torch.full((B, 1), cfg.boi_id), img, torch.full((B, 1), cfg.eoi_id), tail], 1)


# ---- config --------------------------------------------------------------------------------------------------
def test_vocab_layout_and_special_ids():
    cfg = MarsConfig.from_preset("tiny")
    assert cfg.vocab_size == cfg.text_vocab_size + cfg.codebook_size + 6
    ids = [cfg.special_id(t) for t in SPECIAL_TOKENS]
    assert ids == list(range(cfg.text_vocab_size + cfg.codebook_size, cfg.vocab_size))
    assert (cfg.boi_id, cfg.pad_id) == (ids[0], ids[-1])
    with pytest.raises(MarsRefError, match="<nope>"):
        cfg.special_id("<nope>")


@pytest.mark.parametrize("bad, msg", [
    ({"hidden_size": 60, "num_attention_heads": 8}, "not divisible"),
    ({"num_key_value_heads": 3}, "multiple of num_key_value_heads"),
    ({"n_special": 4}, "n_special must be 6"),
    ({"codebook_size": 0}, "codebook_size must be a positive integer"),
    ({"visual_expert": "yes"}, "visual_expert must be true or false"),
    ({"caption_kv": "both"}, "caption_kv must be one of text, expert"),
])
def test_config_validation(bad, msg):
    with pytest.raises(MarsRefError, match=msg):
        MarsConfig.from_preset("tiny", **bad)


def test_config_json_round_trip_and_unknown_fields():
    cfg = MarsConfig.from_preset("small")
    assert MarsConfig.from_json(cfg.to_json()) == cfg
    with pytest.raises(MarsRefError, match="unknown MarsConfig field"):
        MarsConfig.from_dict({**cfg.to_dict(), "hiden_size": 3})
    with pytest.raises(MarsRefError, match="unknown model preset 'huge'"):
        MarsConfig.from_preset("huge")


def test_small_preset_llm_size():
    cfg = MarsConfig.from_preset("small")
    with torch.device("meta"):
        m = MarsModel(cfg)
    llm = sum(p.numel() for n, p in m.named_parameters() if not m.is_trainable_name(n))
    assert 5e6 <= llm <= 20e6, llm


def test_from_hf_qwen2_config(tmp_path):
    d = {"model_type": "qwen2", "vocab_size": 100, "hidden_size": 32, "num_hidden_layers": 1,
         "num_attention_heads": 4, "num_key_value_heads": 1, "intermediate_size": 48, "rope_theta": 1e6,
         "tie_word_embeddings": True}
    (tmp_path / "config.json").write_text(json.dumps(d))
    cfg = MarsConfig.from_hf_qwen2(tmp_path, codebook_size=16)
    assert (cfg.rope_theta, cfg.tie_word_embeddings, cfg.num_key_value_heads) == (1e6, True, 1)
    (tmp_path / "config.json").write_text(json.dumps({**d, "model_type": "llama"}))
    with pytest.raises(MarsRefError, match="model_type is 'llama'"):
        MarsConfig.from_hf_qwen2(tmp_path, codebook_size=16)
    with pytest.raises(MarsRefError, match="no config.json"):
        MarsConfig.from_hf_qwen2(tmp_path / "nowhere", codebook_size=16)


# ---- initialisation and trainable set ------------------------------------------------------------------------
def test_paper_initialisation():
    m = MarsModel(MarsConfig.from_preset("tiny"))
    mean = m.embed_text.weight.mean(0)
    assert torch.allclose(m.embed_visual.weight, mean.expand_as(m.embed_visual.weight))
    assert torch.allclose(m.vision_head.weight, m.lm_head.weight.mean(0).expand_as(m.vision_head.weight))
    for b in m.layers:
        for a, c in zip(b.attn_text.parameters(), b.attn_vision.parameters(), strict=True):
            assert torch.equal(a, c) and a.data_ptr() != c.data_ptr()  # copies, not shared
        for a, c in zip(b.mlp_text.parameters(), b.mlp_vision.parameters(), strict=True):
            assert torch.equal(a, c)


def test_trainable_parameters_follow_paper():
    m = MarsModel(MarsConfig.from_preset("tiny"))
    trainable = {n for n, p in m.named_parameters() if p.requires_grad}
    assert {n for n, _ in m.named_parameters() if n in trainable} == {
        n for n, _ in m.named_parameters() if "vision" in n or n.startswith("embed_visual")}
    assert not any(n.startswith(("embed_text", "lm_head", "norm")) or "layernorm" in n or "_text." in n
                   for n in trainable)
    assert len(m.trainable_parameters()) == len(trainable)
    ablation = MarsModel(MarsConfig.from_preset("tiny", visual_expert=False))
    assert all(p.requires_grad for p in ablation.parameters())
    assert not any("vision." in n for n, _ in ablation.named_parameters() if "_vision" in n)


# ---- routing -------------------------------------------------------------------------------------------------
def test_perturbing_expert_changes_only_image_positions():
    m = tiny()
    ids = mixed_ids(m.config)  # 5 text, <boi> at 5, image 6..11, <eoi> 12, text 13..15
    with torch.no_grad():
        base = m(ids).logits
        for b in m.layers:
            b.mlp_vision.up_proj.weight.add_(0.3 * torch.randn_like(b.mlp_vision.up_proj.weight))
        out = m(ids).logits
    assert torch.equal(out[:, :5], base[:, :5])  # text before the first image position: bit-identical
    assert ((out[:, 5:13] - base[:, 5:13]).abs().amax(-1) > 1e-4).all()  # every image position moved


def test_perturbing_text_weights_changes_text_positions():
    m = tiny()
    ids = mixed_ids(m.config)
    with torch.no_grad():
        base = m(ids).logits
        m.layers[0].attn_text.v_proj.weight.add_(0.3 * torch.randn_like(m.layers[0].attn_text.v_proj.weight))
        out = m(ids).logits
    assert ((out[:, :5] - base[:, :5]).abs().amax(-1) > 1e-4).all()
    assert ((out[:, 13:] - base[:, 13:]).abs().amax(-1) > 1e-4).all()
    # an image-only sequence never touches text weights
    img_only = ids[:, 5:13]
    m2 = tiny()
    with torch.no_grad():
        ref = m2(img_only).logits
        m2.layers[0].attn_text.v_proj.weight.add_(1.0)
        m2.layers[1].mlp_text.down_proj.weight.add_(1.0)
        assert torch.equal(m2(img_only).logits, ref)


def test_is_image_override_routes_by_mask():
    m = tiny()
    ids = mixed_ids(m.config)
    with torch.no_grad():
        for b in m.layers:  # make the experts differ from the text weights they were copied from
            b.attn_vision.k_proj.weight.add_(0.3 * torch.randn_like(b.attn_vision.k_proj.weight))
        default = m(ids).logits
        explicit = m(ids, is_image=ids >= m.config.text_vocab_size).logits
        all_text = m(ids, is_image=torch.zeros_like(ids, dtype=torch.bool)).logits
    assert torch.equal(default, explicit)
    assert not torch.allclose(default[:, 5:], all_text[:, 5:])
    torch.testing.assert_close(default[:, :5], all_text[:, :5], atol=1e-6, rtol=0)


# ---- attention masks and KV cache ----------------------------------------------------------------------------
def _reference_mask(valid, q_len, s=None):
    B, Tk = valid.shape
    out = torch.zeros(B, 1, q_len, Tk, dtype=torch.bool)
    for b in range(B):
        for i in range(q_len):
            qi = Tk - q_len + i
            for j in range(Tk):
                ok = valid[b, j] and (j <= qi or (s is not None and qi >= s[b] and j >= s[b]))
                out[b, 0, i, j] = bool(ok) or j == qi
    return out


def test_causal_and_suffix_masks_match_reference():
    valid = torch.tensor([[False, False, True, True, True, True, True, True],
                          [True, True, True, True, True, True, True, True]])
    assert torch.equal(causal_mask(valid, 8), _reference_mask(valid, 8))
    assert torch.equal(causal_mask(valid, 3), _reference_mask(valid, 3))
    s = torch.tensor([4, 5])
    sm = causal_mask(valid, 8, s)
    assert torch.equal(sm, _reference_mask(valid, 8, s))
    # causal on the text prefix, bidirectional among suffix positions, text never sees the suffix
    assert not sm[1, 0, 2, 3] and sm[1, 0, 5, 7] and sm[1, 0, 7, 5] and not sm[1, 0, 4, 6] and sm[1, 0, 6, 0]


def test_suffix_attention_in_model():
    m = tiny()
    ids = mixed_ids(m.config)[:, :12]  # text(5) <boi> img(6)
    changed = ids.clone()
    changed[:, 11] = m.config.codebook_offset + (ids[:, 11] - m.config.codebook_offset + 1) % m.config.codebook_size
    with torch.no_grad():
        a, b = m(ids, suffix_start=5).logits, m(changed, suffix_start=5).logits
        c, d = m(ids).logits, m(changed).logits
    assert torch.equal(a[:, :5], b[:, :5])  # text is causal: never sees the image suffix
    assert ((a[:, 5:11] - b[:, 5:11]).abs().amax(-1) > 1e-5).all()  # earlier image positions see a later token
    assert torch.equal(c[:, :11], d[:, :11])  # while causal attention does not


@pytest.mark.parametrize("caption_kv", ["text", "expert", "stream"])
def test_kv_cache_decode_equals_full_recomputation(caption_kv):
    m = tiny(caption_kv=caption_kv)
    cfg = m.config
    ids = mixed_ids(cfg, B=3)
    ids[0, :3] = cfg.pad_id  # left padding in one row
    with torch.no_grad():
        full = m(ids).logits
        out = m(ids[:, :6], use_cache=True)
        steps = [out.logits]
        for t in range(6, ids.shape[1]):
            out = m(ids[:, t:t + 1], cache=out.cache)
            steps.append(out.logits)
        # a 2-token chunk after the prefill also works
        chunk = m(ids[:, 6:8], cache=m(ids[:, :6], use_cache=True).cache).logits
    torch.testing.assert_close(torch.cat(steps, 1), full, atol=1e-5, rtol=0)
    torch.testing.assert_close(chunk, full[:, 6:8], atol=1e-5, rtol=0)
    assert out.cache.length == ids.shape[1] and out.cache.next_pos.tolist() == [13, 16, 16]


def test_prefix_cache_plus_suffix_equals_full_suffix_forward():
    m = tiny()
    ids = mixed_ids(m.config)[:, :12]
    with torch.no_grad():
        full = m(ids, suffix_start=5).logits[:, 5:]
        cache = m(ids[:, :5], use_cache=True).cache
        part = m(ids[:, 5:], cache=cache, suffix_start=5).logits
        again = m(ids[:, 5:], cache=cache, suffix_start=5).logits  # the cache was not mutated
    torch.testing.assert_close(part, full, atol=1e-5, rtol=0)
    assert torch.equal(part, again)


@pytest.mark.parametrize("caption_kv", ["text", "expert", "stream"])
def test_static_cache_decode_equals_growing_cache_bit_for_bit(caption_kv):
    """Prefill, one-token steps and a 2-token chunk written in place give the growing cache's logits exactly."""
    m = tiny(caption_kv=caption_kv)
    cfg = m.config
    ids = mixed_ids(cfg, B=3)
    ids[0, :3] = cfg.pad_id  # left padding in one row
    static = StaticKVCache(cfg, 3, 18)  # ids has 16 positions
    with torch.no_grad():
        grow = m(ids[:, :6], use_cache=True)
        fixed = m(ids[:, :6], cache=static)
        assert fixed.cache is static and static.length == 6 and torch.equal(fixed.logits, grow.logits)
        for t in range(6, 10):
            grow, fixed = m(ids[:, t:t + 1], cache=grow.cache), m(ids[:, t:t + 1], cache=static)
            assert torch.equal(fixed.logits, grow.logits)
        grow, fixed = m(ids[:, 10:12], cache=grow.cache), m(ids[:, 10:12], cache=static)
        assert torch.equal(fixed.logits, grow.logits)
    assert static.length == 12 and torch.equal(static.valid, grow.cache.valid)
    assert torch.equal(static.next_pos, grow.cache.next_pos)
    views = [(static.keys, grow.cache.keys), (static.values, grow.cache.values)]
    if caption_kv != "text":
        views += [(static.image_keys, grow.cache.image_keys), (static.image_values, grow.cache.image_values)]
    for fixed_view, grow_view in views:
        for i in range(cfg.num_hidden_layers):
            assert torch.equal(fixed_view[i][:, :, :12], grow_view[i])
    per_view = 2 * cfg.num_hidden_layers * 3 * cfg.num_key_value_heads * 18 * cfg.head_dim * 4
    assert static.nbytes == per_view * (1 if caption_kv == "text" else 2) + 3 * 18
    with pytest.raises(MarsRefError, match="holds 18 positions; 19 needed"):
        m(ids[:, :7], cache=static)


def test_static_cache_scratch_reruns_a_suffix_on_one_prefix():
    m = tiny()
    ids = mixed_ids(m.config)[:, :12]
    static = StaticKVCache(m.config, 2, 12)
    with torch.no_grad():
        full = m(ids, suffix_start=5).logits[:, 5:]
        m(ids[:, :5], cache=static)
        for _ in range(2):  # the second pass sees only the prefix again, not the first pass's suffix
            with static.scratch():
                part = m(ids[:, 5:], cache=static, suffix_start=5).logits
                assert static.length == 12
            assert static.length == 5
            torch.testing.assert_close(part, full, atol=1e-5, rtol=0)


@pytest.mark.parametrize("caption_kv", ["expert", "stream"])
def test_caption_kv_variants_equal_the_paper_model_at_the_paper_init(caption_kv):
    torch.manual_seed(0)
    paper = MarsModel(MarsConfig.from_preset("tiny")).eval()
    ours = MarsModel(MarsConfig.from_preset("tiny", caption_kv=caption_kv)).eval()
    ours.load_state_dict(paper.state_dict())
    ids = mixed_ids(paper.config)
    with torch.no_grad():
        torch.testing.assert_close(ours(ids).logits, paper(ids).logits, atol=1e-6, rtol=0)


@pytest.mark.parametrize("caption_kv", ["text", "expert", "stream"])
def test_caption_kv_decides_which_projections_image_queries_read(caption_kv):
    """One layer: perturbing the text V projection moves image positions only if image queries read the caption
    through it (the paper); text-only positions never see the expert."""
    m = tiny(caption_kv=caption_kv, num_hidden_layers=1)
    ids = mixed_ids(m.config)  # 5 text, <boi> at 5, image 6..11, <eoi> 12, text 13..15
    with torch.no_grad():
        base = m(ids).logits
        m.layers[0].attn_text.v_proj.weight.add_(0.3 * torch.randn_like(m.layers[0].attn_text.v_proj.weight))
        text_moved = m(ids).logits
        m.layers[0].attn_vision.k_proj.weight.add_(0.3 * torch.randn_like(m.layers[0].attn_vision.k_proj.weight))
        both_moved = m(ids).logits
    image_moved = (text_moved[:, 5:13] - base[:, 5:13]).abs().amax(-1) > 1e-4  # (B, 8)
    assert bool(image_moved.all()) == (caption_kv == "text") and bool(image_moved.any()) == (caption_kv == "text")
    assert ((text_moved[:, :5] - base[:, :5]).abs().amax(-1) > 1e-4).all()
    assert torch.equal(both_moved[:, :5], text_moved[:, :5])  # text queries never read the expert's projections


def test_caption_kv_stream_images_never_depend_on_text_weights():
    """In the vision stream the expert reads the caption with its own weights at every layer: perturbing every text
    weight leaves the image positions bit-identical (and moves the text positions)."""
    m = tiny(caption_kv="stream")
    ids = mixed_ids(m.config)  # 5 text, <boi> at 5, image 6..11, <eoi> 12, text 13..15
    with torch.no_grad():
        base = m(ids).logits
        for b in m.layers:
            for w in (b.attn_text.q_proj.weight, b.attn_text.v_proj.weight, b.mlp_text.down_proj.weight):
                w.add_(0.3 * torch.randn_like(w))
        out = m(ids).logits
    assert torch.equal(out[:, 5:13], base[:, 5:13])
    assert ((out[:, :5] - base[:, :5]).abs().amax(-1) > 1e-4).all()


def test_vocab_slice_gives_those_columns_of_the_joint_logits():
    m = tiny()
    cfg = m.config
    ids = mixed_ids(cfg)
    with torch.no_grad():
        full = m(ids).logits
        for lo, hi in [(0, cfg.text_vocab_size), (cfg.codebook_offset, cfg.codebook_offset + cfg.codebook_size),
                       (cfg.eoi_id, cfg.eoi_id + 1), (0, cfg.boi_id + 1), (7, cfg.vocab_size), (0, cfg.vocab_size)]:
            part = m(ids, vocab=slice(lo, hi)).logits
            assert part.shape == (*ids.shape, hi - lo)
            torch.testing.assert_close(part, full[..., lo:hi], atol=1e-5, rtol=0)  # other GEMM shapes: float rounding


def test_uniform_routing_hint_equals_the_token_rule():
    m = tiny()
    cfg = m.config
    img = mixed_ids(cfg)[:, 5:12]  # <boi> and codebook tokens only
    text = mixed_ids(cfg)[:, :5]
    with torch.no_grad():
        assert torch.equal(m(img, is_image=True).logits, m(img).logits)
        assert torch.equal(m(text, is_image=False).logits, m(text).logits)


def test_keep_last_logits():
    m = tiny()
    ids = mixed_ids(m.config)
    with torch.no_grad():
        full = m(ids).logits
        torch.testing.assert_close(m(ids, keep_last=1).logits, full[:, -1:], atol=1e-5, rtol=0)
        torch.testing.assert_close(m(ids, keep_last=4).logits, full[:, -4:], atol=1e-5, rtol=0)


def test_bf16_autocast_forward_backward_on_cpu():
    m = tiny()
    m.train()
    ids = mixed_ids(m.config)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = m(ids).logits
        loss = torch.nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1).float(), ids[:, 1:].flatten())
    loss.backward()
    assert torch.isfinite(loss)
    assert m.layers[0].attn_vision.q_proj.weight.grad is not None
    assert m.layers[0].attn_text.q_proj.weight.grad is None
    assert m.embed_visual.weight.grad.abs().sum() > 0
