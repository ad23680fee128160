"""A user's real-scale inputs in miniature: a tiny random Qwen2 with its own BPE tokenizer saved by transformers, a
tiny VQ, and 24 world renders (a quarter at 3:2) exported as a JSONL source and encoded in each stage's layout."""

from pathlib import Path

import numpy as np
import torch
from test_sources import write_jsonl
from transformers import Qwen2Config, Qwen2ForCausalLM

from mars_eval.encode import encode_source
from mars_ref.text_tokenizer import train_bpe
from mars_ref.vq import VQModel, vq_preset
from mars_ref.vq_formats import save_vq
from mars_ref.world import CATEGORIES, caption, render, sample_scene


def build_user_corpus(root: Path) -> Path:
    """root/qwen2, root/vq, root/j (the JSONL source), root/enc (square, 16 px), root/enc2 (buckets, 16 px),
    root/enc3 (superres, 8 -> 16 px)."""
    rng = np.random.default_rng(2)
    scenes = [sample_scene(CATEGORIES[i % 7], rng, aspect=(3, 2) if i % 4 == 3 else (1, 1)) for i in range(24)]
    records = [(f"{i:04d}", render(s, 24 if s.aspect == (3, 2) else 16, 16), caption(s, "en"), caption(s, "zh"))
               for i, s in enumerate(scenes)]
    tok = train_bpe([c for *_, en, zh in records for c in (en, zh)], 300, root / "qwen2", min_frequency=1)
    cfg = Qwen2Config(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256)
    torch.manual_seed(0)
    Qwen2ForCausalLM(cfg).save_pretrained(root / "qwen2")
    save_vq(VQModel(vq_preset("tiny")), root / "vq")
    source = str(write_jsonl(root / "j", records))
    encode_source(source, root / "vq", root / "enc", px=16, shard_size=10)
    encode_source(source, root / "vq", root / "enc2", px=16, shard_size=10, layout="buckets")
    encode_source(source, root / "vq", root / "enc3", px=8, shard_size=10, layout="superres")
    return root
