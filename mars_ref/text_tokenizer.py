"""Text tokenizers: train a small Qwen2-style byte-level BPE, or load any local Qwen/Qwen2 tokenizer directory.

Both end up as the same object (a Hugging Face fast tokenizer loaded with `AutoTokenizer`), so the model and the
samplers have one code path for the embedded world and for a real Qwen checkpoint. The trained tokenizer copies
Qwen2's pipeline exactly (NFC, Qwen2's pre-tokenisation regex, byte-level BPE without unknown tokens) and is saved
with `tokenizer_class = Qwen2Tokenizer`, so a loader cannot tell it from a (very small) Qwen vocabulary.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path

from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

from mars_ref.errors import MarsRefError

# Qwen2's end-of-text token; it is both the end-of-sequence and the padding token, as in Qwen's own files.
EOS_TOKEN = "<|endoftext|>"

# Qwen2's pre-tokenisation regex (transformers' `tokenization_qwen2.PRETOKENIZE_REGEX`, the `Split` pattern in
# Qwen's tokenizer.json): letters of any script form words, digits split one by one.
QWEN2_PRETOKENIZE_REGEX = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""
)

# 256 byte symbols + the special token: the smallest vocabulary that can encode every string.
MIN_VOCAB_SIZE = 257


def _qwen2_style_bpe() -> Tokenizer:
    """An untrained tokenizer with Qwen2's normaliser, pre-tokeniser and decoder."""
    tok = Tokenizer(models.BPE(unk_token=None, fuse_unk=False, byte_fallback=False))
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN2_PRETOKENIZE_REGEX), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    return tok


def train_bpe(texts: Iterable[str], vocab_size: int, out_dir: str | os.PathLike, min_frequency: int = 2):
    """Train a byte-level BPE on `texts` and save it as a Hugging Face tokenizer directory; return the loaded tokenizer.

    The full byte alphabet is always in the vocabulary, so any text (even a script never seen in training) encodes
    and decodes back exactly (up to NFC normalisation). The directory is written to a temporary sibling first
    and its files moved in one by one with atomic renames, `tokenizer_config.json` last.
    """
    if vocab_size < MIN_VOCAB_SIZE:
        raise MarsRefError(f"vocab_size {vocab_size} is below {MIN_VOCAB_SIZE} (256 bytes + {EOS_TOKEN})")
    from transformers import Qwen2Tokenizer

    tok = _qwen2_style_bpe()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=[EOS_TOKEN],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    n = 0

    def counted():
        nonlocal n
        for t in texts:
            if not isinstance(t, str):
                raise MarsRefError(f"train_bpe expects strings, got {type(t).__name__}")
            n += 1
            yield t

    tok.train_from_iterator(counted(), trainer)
    if n == 0:
        raise MarsRefError("train_bpe got no texts")
    wrapped = Qwen2Tokenizer(tokenizer_object=tok, eos_token=EOS_TOKEN, pad_token=EOS_TOKEN, unk_token=None,
                             bos_token=None)
    _save_dir_atomically(wrapped, Path(out_dir))
    return load_text_tokenizer(out_dir)


def _save_dir_atomically(tokenizer, out_dir: Path) -> None:
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}.", suffix=".tmp"))
    try:
        tokenizer.save_pretrained(tmp)
        out_dir.mkdir(exist_ok=True)
        names = sorted(p.name for p in tmp.iterdir())
        # the config is what makes a directory look like a tokenizer: move it last
        names.sort(key=lambda name: name == "tokenizer_config.json")
        for name in names:
            os.replace(tmp / name, out_dir / name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def load_text_tokenizer(path: str | os.PathLike):
    """Load a local tokenizer directory (ours or any Qwen/Qwen2 one) as a fast Hugging Face tokenizer.

    Never touches the network. Requires a fast (Rust) tokenizer and an end-of-sequence token, which the
    samplers use to stop text generation; a missing padding token falls back to it.
    """
    path = Path(path)
    if not path.is_dir():
        raise MarsRefError(f"tokenizer directory not found: {path}")
    if not (path / "tokenizer.json").is_file() and not (path / "vocab.json").is_file():
        raise MarsRefError(f"{path} has neither tokenizer.json nor vocab.json: not a tokenizer directory")
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    except Exception as e:  # transformers raises many types (OSError, ValueError, KeyError, json errors)
        raise MarsRefError(f"cannot load tokenizer from {path}: {type(e).__name__}: {e}") from None
    if not getattr(tok, "is_fast", False):
        raise MarsRefError(f"tokenizer in {path} is not a fast (tokenizers-backed) tokenizer")
    if tok.eos_token_id is None:
        raise MarsRefError(f"tokenizer in {path} has no eos_token")
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    return tok
