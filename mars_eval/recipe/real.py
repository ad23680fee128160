"""Stage I of MARS on a user's own Qwen2 checkpoint, VQ checkpoint and image-caption data (real scale).

The data are first VQ-encoded once (`mars-eval encode`: code shards + JSONL index); Stage I then trains exactly as on
the world - the same batch source (ImageTextData: text-to-image and captioning, caption dropout for CFG), loss
(NTPLoss), engine (single process or DeepSpeed ZeRO-3, resumable) and bundle - with the captions tokenised by the
LLM's own tokenizer. A record with one caption language serves both (ImageTextData draws a language per example).
Stages II and III on user data (aspect buckets, low/high-resolution triplets) are not built yet.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

from mars_eval.errors import MarsEvalError
from mars_eval.recipe.data import Corpus
from mars_eval.train.config import TrainConfig

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "merges.txt", "special_tokens_map.json",
                   "added_tokens.json", "generation_config.json")


def codes_corpus(encoded: str | Path, tokenizer) -> Corpus:
    """The Stage I corpus of an encode folder: codes and both captions tokenised (no special tokens)."""
    from mars_eval.encode import read_codes

    codes, rows = read_codes(encoded)
    done = json.loads((Path(encoded) / "encode.json").read_text(encoding="utf-8"))
    h, w = done["grid"]
    captions: dict[str, list[list[int]]] = {"en": [], "zh": []}
    for r in rows:
        en, zh = r.get("caption_en") or r.get("caption_zh"), r.get("caption_zh") or r.get("caption_en")
        captions["en"].append(tokenizer(en, add_special_tokens=False)["input_ids"])
        captions["zh"].append(tokenizer(zh, add_special_tokens=False)["input_ids"])
    return Corpus(codes=[c.long() for c in codes], grids=[(h, w)] * len(rows), captions=captions)


def _tokenizer_copy(llm: Path, into: Path) -> Path:
    into.mkdir(parents=True)
    for name in TOKENIZER_FILES:
        if (llm / name).is_file():
            shutil.copy2(llm / name, into / name)
    return into


def train_stage_one(llm: str | Path, vq: str | Path, encoded: str | Path, out: str | Path, cfg: TrainConfig, *,
                    visual_expert: bool = True, p_caption: float = 0.5, nproc: int = 1, bundle: Path | None = None,
                    progress: bool = True) -> dict:
    """Train Stage I into OUT (resumes a killed run), and write a generation bundle when `bundle` is given."""
    from mars_eval.bundle import Bundle, BundleInfo
    from mars_eval.encode import vq_digest
    from mars_eval.recipe.objectives import ImageTextData, NTPLoss
    from mars_eval.recipe.stages import FromQwen2, trained_model
    from mars_eval.train.launch import run_training
    from mars_ref.config import MarsConfig
    from mars_ref.text_tokenizer import load_text_tokenizer
    from mars_ref.vq_formats import load_any_vq

    llm, out = Path(llm), Path(out)
    vq_model = load_any_vq(vq).eval()
    tokenizer = load_text_tokenizer(llm)
    model_cfg = MarsConfig.from_hf_qwen2(llm, vq_model.cfg.codebook_size, visual_expert)
    if len(tokenizer) > model_cfg.text_vocab_size:
        raise MarsEvalError(f"{llm}: the tokenizer has {len(tokenizer)} tokens, the model's vocabulary "
                            f"{model_cfg.text_vocab_size}")
    corpus = codes_corpus(encoded, tokenizer)
    done = json.loads((Path(encoded) / "encode.json").read_text(encoding="utf-8"))
    if done["vq_sha256"] != vq_digest(Path(vq)):
        raise MarsEvalError(f"{encoded} was encoded with another VQ than {vq}")
    data = ImageTextData(corpus, model_cfg, tokenizer.eos_token_id, p_caption=p_caption)
    build = FromQwen2(str(llm), model_cfg.codebook_size, visual_expert)
    result = run_training(cfg, build, NTPLoss(model_cfg), data, out, nproc=nproc, resume=(out / "ckpt").is_dir(),
                          progress=progress)
    if bundle is not None:
        px = done["px"]
        with tempfile.TemporaryDirectory() as tmp:
            tok_dir = _tokenizer_copy(llm, Path(tmp) / "tokenizer")
            Bundle.write(Path(bundle), BundleInfo(stage="I", variant="expert" if visual_expert else "no-expert",
                                                  image_px=(px, px)),
                         trained_model(build, out), vq_model, tok_dir)
        result = {**result, "bundle": str(bundle)}
    return result


def load_real_config(path: str | Path | None, **overrides) -> TrainConfig:
    """The shipped real-scale recipe (mars_eval/recipe/configs/real_stage1.toml) or a user's TOML, with overrides."""
    import tomllib

    path = Path(path) if path is not None else Path(__file__).parent / "configs" / "real_stage1.toml"
    if not path.is_file():
        raise MarsEvalError(f"train config not found: {path}")
    try:
        table = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as e:
        raise MarsEvalError(f"{path}: not valid TOML ({e})") from None
    table = table.get("stageI", table)
    return TrainConfig.from_dict({**table, **{k: v for k, v in overrides.items() if v is not None}}, source=str(path))

