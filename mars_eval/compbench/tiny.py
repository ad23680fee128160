"""Tiny, randomly initialised judges of the real architectures, saved the way real checkpoints are.

For tests and smoke runs of the real-judge code paths without downloads (no weights ship in any package).
Their scores mean nothing. Each builder writes a directory that the judge loaders read like a real one:
BLIP-VQA (`BlipForQuestionAnswering` + `BlipProcessor` with a BERT WordPiece vocabulary), DETR
(`DetrForObjectDetection` with a transformers ResNet backbone, no timm), OWL-ViT (`OwlViTForObjectDetection` +
a CLIP BPE tokenizer), DPT (`DPTForDepthEstimation`), and an open_clip ViT in open_clip's `local-dir` layout.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

import torch

WORDS = tuple(
    "a an the and of on to in is was near next left right top bottom side front behind photo red blue green "
    "yellow black white brown wooden metallic round square big small apple bench bowl dog cat girl man horse "
    "frog hat coat rack book table chair car bird person two three one".split()
)


def _spread(model: torch.nn.Module, std: float) -> torch.nn.Module:
    """Redraw every weight matrix from N(0, std): the default init (std 0.02) makes a one-layer detector give
    every query the same class and box, which would leave the scoring paths untested."""
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() >= 2:
                p.normal_(0.0, std)
    return model


def _words(extra: Iterable[str]) -> list[str]:
    return list(dict.fromkeys([*WORDS, *(w.lower() for w in extra)]))


def build_blip_vqa(out: str | Path, extra_words: Iterable[str] = (), image_size: int = 32, seed: int = 0) -> Path:
    from transformers import (
        BertTokenizer,
        BlipConfig,
        BlipForQuestionAnswering,
        BlipImageProcessor,
        BlipProcessor,
    )

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    # BERT layout of BLIP: ... vocabulary ..., then [DEC] (bos, decoder start) and [ENC] as the last two ids
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "?", ".", ",", "'", "yes", "no",
             *(w for w in _words(extra_words) if w not in ("yes", "no")), "[DEC]", "[ENC]"]
    (out / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    tok = BertTokenizer(str(out / "vocab.txt"), do_lower_case=True, bos_token="[DEC]")
    proc = BlipProcessor(image_processor=BlipImageProcessor(size={"height": image_size, "width": image_size}),
                         tokenizer=tok)
    v = len(vocab)
    cfg = BlipConfig(
        text_config=dict(vocab_size=v, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=64, encoder_hidden_size=32, max_position_embeddings=64,
                         bos_token_id=v - 2, pad_token_id=0, sep_token_id=3),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                           image_size=image_size, patch_size=8),
        projection_dim=32,
    )
    torch.manual_seed(seed)
    BlipForQuestionAnswering(cfg).eval().save_pretrained(out)
    proc.save_pretrained(out)
    return out


def build_detr(out: str | Path, labels: Iterable[str], seed: int = 0) -> Path:
    from transformers import DetrConfig, DetrForObjectDetection, DetrImageProcessor, ResNetConfig

    out = Path(out)
    labels = list(labels)
    backbone = ResNetConfig(embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1], layer_type="basic",
                            out_features=["stage2"])
    cfg = DetrConfig(use_timm_backbone=False, use_pretrained_backbone=False, backbone_config=backbone,
                     num_queries=12, d_model=32, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2,
                     decoder_attention_heads=2, encoder_ffn_dim=64, decoder_ffn_dim=64,
                     id2label=dict(enumerate(labels)), label2id={x: i for i, x in enumerate(labels)})
    torch.manual_seed(seed)
    _spread(DetrForObjectDetection(cfg), 0.3).eval().save_pretrained(out)
    DetrImageProcessor(size={"shortest_edge": 64, "longest_edge": 96}).save_pretrained(out)
    return out


def _clip_bpe(out: Path, words: list[str]) -> int:
    """A minimal CLIP BPE (vocab.json + merges.txt) that spells every word; the end-of-text id is the largest,
    as OWL-ViT's text pooling (argmax of the ids) expects."""
    letters = [chr(c) for c in range(ord("a"), ord("z") + 1)]
    vocab = letters + [c + "</w>" for c in letters]
    merges: list[str] = []
    for w in sorted({w for w in words if w.isalpha() and w.isascii()}):
        parts = [*w[:-1], w[-1] + "</w>"]
        while len(parts) > 1:
            a, b = parts[0], parts[1]
            if f"{a} {b}" not in merges:
                merges.append(f"{a} {b}")
            if a + b not in vocab:
                vocab.append(a + b)
            parts = [a + b, *parts[2:]]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    (out / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(vocab)}), encoding="utf-8")
    (out / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")
    return len(vocab)


def build_owlvit(out: str | Path, extra_words: Iterable[str] = (), image_size: int = 32, seed: int = 0) -> Path:
    from transformers import (
        CLIPTokenizer,
        OwlViTConfig,
        OwlViTForObjectDetection,
        OwlViTImageProcessor,
        OwlViTProcessor,
    )

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    v = _clip_bpe(out, _words(extra_words))
    tok = CLIPTokenizer(str(out / "vocab.json"), str(out / "merges.txt"))
    size = {"height": image_size, "width": image_size}
    proc = OwlViTProcessor(image_processor=OwlViTImageProcessor(size=size, crop_size=size), tokenizer=tok)
    cfg = OwlViTConfig(
        text_config=dict(vocab_size=v, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=2, max_position_embeddings=16, bos_token_id=v - 2,
                         eos_token_id=v - 1, pad_token_id=v - 1),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                           image_size=image_size, patch_size=8),
        projection_dim=32,
    )
    torch.manual_seed(seed)
    OwlViTForObjectDetection(cfg).eval().save_pretrained(out)
    proc.save_pretrained(out)
    return out


TINY_CLIP_CFG = {
    "embed_dim": 32,
    "quick_gelu": True,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 8, "head_width": 16},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}


def build_open_clip(out: str | Path, seed: int = 0) -> Path:
    """open_clip `local-dir:` layout: open_clip_config.json + open_clip_model.safetensors (CLIP's own BPE)."""
    import open_clip
    from safetensors.torch import save_file

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    model = open_clip.model.CLIP(**TINY_CLIP_CFG).eval()
    cfg = {"model_cfg": TINY_CLIP_CFG,
           "preprocess_cfg": {"mean": list(open_clip.OPENAI_DATASET_MEAN), "std": list(open_clip.OPENAI_DATASET_STD)}}
    (out / "open_clip_config.json").write_text(json.dumps(cfg), encoding="utf-8")
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(out / "open_clip_model.safetensors"))
    return out


def build_dpt(out: str | Path, image_size: int = 32, seed: int = 0) -> Path:
    """A four-layer DPT (the non-hybrid DPT architecture; the official uses DPT-hybrid MiDaS)."""
    from transformers import DPTConfig, DPTForDepthEstimation, DPTImageProcessor

    out = Path(out)
    cfg = DPTConfig(hidden_size=32, num_hidden_layers=4, num_attention_heads=2, intermediate_size=64,
                    image_size=image_size, patch_size=8, backbone_out_indices=[0, 1, 2, 3],
                    neck_hidden_sizes=[8, 16, 32, 32], reassemble_factors=[4, 2, 1, 0.5], fusion_hidden_size=16,
                    head_in_index=-1)
    torch.manual_seed(seed)
    _spread(DPTForDepthEstimation(cfg), 0.2).eval().save_pretrained(out)
    DPTImageProcessor(size={"height": image_size, "width": image_size}, keep_aspect_ratio=False).save_pretrained(out)
    return out
