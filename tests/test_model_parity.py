"""SemVIE vs transformers' Qwen2ForCausalLM on the same weights: text-only logits must be the LLM's, before and after
training on image tokens (the paper's "preserves the NLP capabilities"); the no-expert ablation loses this."""

import pytest
import torch
import transformers

from mars_ref.losses import ntp_loss, ntp_targets
from mars_ref.model import MarsModel

torch.set_num_threads(1)
CODEBOOK = 32


def _hf_dir(tmp_path, tie=False, seed=0):
    torch.manual_seed(seed)
    cfg = transformers.Qwen2Config(vocab_size=97, hidden_size=64, intermediate_size=112, num_hidden_layers=2,
                                   num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=tie,
                                   rope_parameters={"rope_type": "default", "rope_theta": 5000.0})
    hf = transformers.Qwen2ForCausalLM(cfg).eval()
    hf.save_pretrained(tmp_path)
    return hf


def _image_step(model: MarsModel, lr=1e-2):
    """One AdamW step (paper betas/wd) on a text-to-image NTP loss over image targets only."""
    cfg = model.config
    g = torch.Generator().manual_seed(1)
    text = torch.randint(0, cfg.text_vocab_size, (2, 5), generator=g)
    img = torch.randint(0, cfg.codebook_size, (2, 6), generator=g) + cfg.codebook_offset
    ids = torch.cat([text, torch.full((2, 1), cfg.boi_id), img], 1)
    targets, mask = ntp_targets(ids, cfg.pad_id)
    mask &= targets >= cfg.codebook_offset
    model.train()
    opt = torch.optim.AdamW(model.trainable_parameters(), lr=lr, betas=(0.9, 0.95), weight_decay=0.1)
    stats = ntp_loss(model(ids).logits, targets, mask, cfg.text_vocab_size)
    assert stats.n_text == 0 and stats.n_image == 14  # <boi> + 6 codebook targets per row
    stats.loss.backward()
    opt.step()
    model.eval()
    return ids


@pytest.mark.parametrize("tie", [False, True])
def test_text_logits_equal_hf_before_and_after_image_training(tmp_path, tie):
    hf = _hf_dir(tmp_path, tie)
    model = MarsModel.from_qwen2(tmp_path, CODEBOOK).eval()
    assert model.config.vocab_size == 97 + CODEBOOK + 6 and model.config.rope_theta == 5000.0
    ids = torch.randint(0, 97, (3, 11), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        ref = hf(ids).logits
        before = model(ids).logits
    assert before.shape == (3, 11, model.config.vocab_size)
    torch.testing.assert_close(before[..., :97], ref, atol=1e-5, rtol=0)

    mixed = _image_step(model)
    with torch.no_grad():
        after = model(ids).logits
        mixed_after = model(mixed).logits
    torch.testing.assert_close(after[..., :97], ref, atol=1e-5, rtol=0)
    # the step did train the image path: image-position logits moved
    fresh = MarsModel.from_qwen2(tmp_path, CODEBOOK).eval()
    with torch.no_grad():
        assert (fresh(mixed).logits[:, 6:] - mixed_after[:, 6:]).abs().max() > 1e-3


def test_no_expert_ablation_loses_text_parity(tmp_path):
    hf = _hf_dir(tmp_path)
    model = MarsModel.from_qwen2(tmp_path, CODEBOOK, visual_expert=False).eval()
    assert len(model.trainable_parameters()) == len(list(model.parameters()))
    ids = torch.randint(0, 97, (2, 9), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        ref = hf(ids).logits
        torch.testing.assert_close(model(ids).logits[..., :97], ref, atol=1e-5, rtol=0)  # same at init
    _image_step(model)
    with torch.no_grad():
        drift = (model(ids).logits[..., :97] - ref).abs().max()
    assert drift > 1e-3


def test_left_padded_batch_matches_hf_per_prompt(tmp_path):
    """Left padding must neither shift RoPE positions nor leak into attention."""
    hf = _hf_dir(tmp_path)
    model = MarsModel.from_qwen2(tmp_path, CODEBOOK).eval()
    pad = model.config.pad_id
    prompts = [[5, 6, 7, 8, 9, 10], [11, 12], [13, 14, 15, 16]]
    ids = torch.full((3, 6), pad)
    for i, p in enumerate(prompts):
        ids[i, 6 - len(p):] = torch.tensor(p)
    with torch.no_grad():
        ours = model(ids).logits
        for i, p in enumerate(prompts):
            ref = hf(torch.tensor([p])).logits[0]
            torch.testing.assert_close(ours[i, 6 - len(p):, :97], ref, atol=1e-5, rtol=0)


def test_from_qwen2_bf16_weights(tmp_path):
    hf = _hf_dir(tmp_path)
    model = MarsModel.from_qwen2(tmp_path, CODEBOOK, dtype=torch.bfloat16).eval()
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    ids = torch.randint(0, 97, (2, 7), generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        ref = hf(ids).logits
        out = model(ids).logits.float()[..., :97]
    assert torch.isfinite(out).all() and (out - ref).abs().max() < 0.1
    assert torch.equal(model.embed_visual.weight[0], model.embed_text.weight.float().mean(0).bfloat16())
