"""Stages I-III of MARS on a user's own Qwen2 checkpoint, VQ checkpoint and image-caption data (real scale).

The data are first VQ-encoded once per stage (`mars-eval encode --layout square | buckets | superres`: code
shards + JSONL index); each stage then trains exactly as on the world - the same batch sources, losses, engine
(single process or DeepSpeed ZeRO-3, resumable) and bundle - with the captions tokenised by the LLM's own
tokenizer. A record with one caption language serves both (the batch source draws a language per example).

    Stage I    square codes     ImageTextData (text-to-image + captioning, caption dropout)  NTPLoss   from --llm
    Stage II   bucket codes     ImageTextData (text-to-image, "<res WxH> " + caption)         NTPLoss   from --init
    Stage III  superres codes   SuperResData (caption, low-res, high-res)                    NKTPLoss  from --init

A stage's run folder holds its exported model (RUN/model, MARS format), the next stage's --init.
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
    """The corpus of an encode folder: codes (and high-res codes), both captions tokenised (no special tokens);
    a buckets folder's captions start with the image's resolution tag, as the world's Stage II captions do."""
    from mars_eval.encode import read_encoded
    from mars_ref.world.captions import res_tag

    enc = read_encoded(encoded)
    f = enc.done["downsample"]
    buckets = enc.done.get("layout", "square") == "buckets"
    captions: dict[str, list[list[int]]] = {"en": [], "zh": []}
    for r, (h, w) in zip(enc.rows, enc.grids, strict=True):
        tag = res_tag((w * f, h * f)) if buckets else ""
        en, zh = r.get("caption_en") or r.get("caption_zh"), r.get("caption_zh") or r.get("caption_en")
        captions["en"].append(tokenizer(tag + en, add_special_tokens=False)["input_ids"])
        captions["zh"].append(tokenizer(tag + zh, add_special_tokens=False)["input_ids"])
    return Corpus(codes=enc.codes, grids=enc.grids, captions=captions, high=enc.high)


def _tokenizer_copy(llm: Path, into: Path) -> Path:
    into.mkdir(parents=True)
    for name in TOKENIZER_FILES:
        if (llm / name).is_file():
            shutil.copy2(llm / name, into / name)
    return into


LAYOUT_OF = {"I": "square", "II": "buckets", "III": "superres"}


def init_model_dir(init: str | Path) -> Path:
    """A previous stage's exported model: a real-stage run folder (RUN/model) or a MARS model directory."""
    init = Path(init)
    for d in (init / "model", init):
        if (d / "config.json").is_file() and (d / "model.safetensors").is_file():
            return d
    raise MarsEvalError(f"--init {init}: not a MARS model directory or a stage run folder with model/")


def train_real_stage(stage: str, llm: str | Path, vq: str | Path, encoded: str | Path, out: str | Path,
                     cfg: TrainConfig, *, init: str | Path | None = None, visual_expert: bool = True,
                     p_caption: float = 0.5, nproc: int = 1, bundle: Path | None = None,
                     progress: bool = True) -> dict:
    """Train one stage into OUT (resumes a killed run), export OUT/model, and write a generation bundle when
    `bundle` is given (Stage III: the --init Stage II model generates, this one super-resolves)."""
    from mars_eval.bundle import Bundle, BundleInfo
    from mars_eval.encode import vq_digest
    from mars_eval.recipe import objectives
    from mars_eval.recipe.stages import STAGE3_POSITIONS, FromMars, FromQwen2, trained_model
    from mars_eval.train.launch import run_training
    from mars_ref.model import MarsModel
    from mars_ref.text_tokenizer import load_text_tokenizer
    from mars_ref.vq_formats import load_any_vq

    llm, out, encoded = Path(llm), Path(out), Path(encoded)
    done = json.loads((encoded / "encode.json").read_text(encoding="utf-8"))
    if done["vq_sha256"] != vq_digest(Path(vq)):
        raise MarsEvalError(f"{encoded} was encoded with another VQ than {vq}")
    layout = done.get("layout", "square")
    if layout != LAYOUT_OF[stage]:
        raise MarsEvalError(f"Stage {stage} trains on `encode --layout {LAYOUT_OF[stage]}` codes; {encoded} holds "
                            f"layout {layout}")
    vq_model = load_any_vq(vq).eval()
    stage_one = FromQwen2(str(llm), vq_model.cfg.codebook_size, visual_expert)
    stage_one.model_config()  # --llm must be a Qwen2 directory (one-line error), whatever the stage
    tokenizer = load_text_tokenizer(llm)
    if stage == "I":
        build = stage_one
    elif init is None:
        raise MarsEvalError(f"Stage {stage} continues a trained stage: give --init (the Stage "
                            f"{'I' if stage == 'II' else 'II'} run folder)")
    else:
        build = FromMars(str(init_model_dir(init)), STAGE3_POSITIONS if stage == "III" else None)
    model_cfg = build.model_config()
    if model_cfg.codebook_size != vq_model.cfg.codebook_size:
        raise MarsEvalError(f"--init has a {model_cfg.codebook_size}-code image vocabulary, the VQ "
                            f"{vq_model.cfg.codebook_size} codes")
    if len(tokenizer) > model_cfg.text_vocab_size:
        raise MarsEvalError(f"{llm}: the tokenizer has {len(tokenizer)} tokens, the model's vocabulary "
                            f"{model_cfg.text_vocab_size}")
    corpus = codes_corpus(encoded, tokenizer)
    if stage == "III":
        loss, data = objectives.NKTPLoss(model_cfg), objectives.SuperResData(corpus, model_cfg)
    else:
        loss = objectives.NTPLoss(model_cfg)
        data = objectives.ImageTextData(corpus, model_cfg, tokenizer.eos_token_id,
                                        p_caption=p_caption if stage == "I" else 0.0)
    result = run_training(cfg, build, loss, data, out, nproc=nproc, resume=(out / "ckpt").is_dir(),
                          progress=progress)
    model = trained_model(build, out)
    model.save(out / "model")
    result = {**result, "model": str(out / "model")}
    if bundle is not None:
        px = done["px"]
        base, hires = (MarsModel.load(init_model_dir(init)), model) if stage == "III" else (model, None)
        with tempfile.TemporaryDirectory() as tmp:
            tok_dir = _tokenizer_copy(llm, Path(tmp) / "tokenizer")
            Bundle.write(Path(bundle), BundleInfo(stage=stage, variant="expert" if visual_expert else "no-expert",
                                                  image_px=(px, px), hires_px=(2 * px, 2 * px) if hires else None),
                         base, vq_model, tok_dir, hires=hires)
        result = {**result, "bundle": str(bundle)}
    return result


def load_real_config(path: str | Path | None, stage: str = "I", **overrides) -> TrainConfig:
    """The shipped real-scale recipe (mars_eval/recipe/configs/real_stage1.toml) or a user's TOML, with overrides:
    the file's [stageII] / [stageIII] table for those stages where it has one, else its [stageI] recipe."""
    import tomllib

    path = Path(path) if path is not None else Path(__file__).parent / "configs" / "real_stage1.toml"
    if not path.is_file():
        raise MarsEvalError(f"train config not found: {path}")
    try:
        table = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as e:
        raise MarsEvalError(f"{path}: not valid TOML ({e})") from None
    table = table.get(f"stage{stage}", table.get("stageI", table))
    return TrainConfig.from_dict({**table, **{k: v for k, v in overrides.items() if v is not None}}, source=str(path))

