"""Run one training stage of the recipe on a world: build its job, train with the engine, export the model.

Stage 0  the small Qwen2 text LLM (transformers), saved with save_pretrained: it is the "pre-trained LLM" that the
         later stages freeze, exactly as a real Qwen2 checkpoint directory would be.
Stage I  MarsModel.from_qwen2(stage-0 LLM) with or without the visual expert; T2I + captioning.
Stage II continues from Stage I's model on the variable-aspect-ratio corpus (T2I only).
Stage III continues from Stage II's model on super-resolution triplets (suffix attention, NKTP objective).

Model builders are module-level dataclasses so the engine can pickle them into spawned processes; they are
deterministic, so "build, then load the trained weights of the last checkpoint" reconstructs the trained model.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path

import torch
from torch import nn

from mars_eval.errors import MarsEvalError
from mars_eval.recipe import objectives
from mars_eval.recipe.data import load_corpus
from mars_eval.train.checkpoint import find_latest, read_tensors
from mars_eval.train.config import TrainConfig
from mars_eval.train.launch import run_training
from mars_ref.config import MarsConfig
from mars_ref.model import MarsModel

STAGES = ("0", "I", "II", "III")
STAGE3_POSITIONS = "aligned"  # Stage III suffix layout (mars_ref/nktp.py); "sequential" erased objects at world scale
CORPUS = {"I": "stage1", "II": "stage2", "III": "stage3"}


CAPTION_POLICIES = ("short", "dense+short")
IMAGE_SOURCES = ("corpus", "fresh")
NEGATIVES = ("other-scene", "one-word")  # the contrastive term's negative captions


@dataclass(frozen=True)
class StageIData:
    """What Stage I trains on (a preset's optional `[data]` table; recorded with every result).

    captions   "short": the T2I-CompBench-style captions only; "dense+short": a share `p_dense` of the text-to-image
               examples is conditioned on the scene's dense caption (mars_ref.world.dense) instead
    p_caption  share of captioning (image-to-text) examples, on short captions (what the captioning probe parses)
    p_uncond   caption dropout of the text-to-image examples (the unconditional model classifier-free guidance needs)
    images     "corpus": the world build's n Stage I images, seen once per epoch; "fresh": a new scene for every
               example (objectives.FreshImageTextData), so nothing can be memorised
    object_weight  loss weight of the image tokens that meet an object (background tokens 1; "fresh" images only):
               short captions say nothing about the background, whose tokens are most of the loss
    contrast   weight of the contrastive conditioning term (objectives.NTPLoss): each captioned image is also
               scored under a negative caption, and the likelihood ratio is pushed up; 0 = off
    negatives  the contrastive term's negative caption: "other-scene" (another fresh scene's caption, which mostly
               differs in kinds) or "one-word" (the caption with one stated attribute, or a kind, changed:
               mars_ref.world.sampling.one_word_counterfactual; "fresh" images only)
    """

    captions: str = "short"
    p_dense: float = 0.5
    p_caption: float = 0.5
    p_uncond: float = 0.1
    images: str = "corpus"
    object_weight: float = 1.0
    contrast: float = 0.0
    negatives: str = "other-scene"

    def __post_init__(self):
        if self.captions not in CAPTION_POLICIES:
            raise MarsEvalError(f"[data] captions must be one of {', '.join(CAPTION_POLICIES)}, got {self.captions!r}")
        if self.images not in IMAGE_SOURCES:
            raise MarsEvalError(f"[data] images must be one of {', '.join(IMAGE_SOURCES)}, got {self.images!r}")
        w = self.object_weight
        if isinstance(w, bool) or not isinstance(w, int | float) or w <= 0:
            raise MarsEvalError(f"[data] object_weight must be a number > 0, got {w!r}")
        c = self.contrast
        if isinstance(c, bool) or not isinstance(c, int | float) or c < 0:
            raise MarsEvalError(f"[data] contrast must be a number >= 0, got {c!r}")
        if self.negatives not in NEGATIVES:
            raise MarsEvalError(f"[data] negatives must be one of {', '.join(NEGATIVES)}, got {self.negatives!r}")
        if self.negatives != "other-scene" and self.images != "fresh":
            raise MarsEvalError('[data] negatives = "one-word" needs images = "fresh" (the scenes say what to change)')
        if w != 1 and self.images != "fresh":
            raise MarsEvalError('[data] object_weight needs images = "fresh" (the scenes say where the objects are)')
        for name in ("p_dense", "p_caption", "p_uncond"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int | float) or not 0 <= v <= 1:
                raise MarsEvalError(f"[data] {name} must be a number in [0, 1], got {v!r}")

    @classmethod
    def from_table(cls, table: dict | None) -> StageIData:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(table or {}) - known)
        if unknown:
            raise MarsEvalError(f"[data]: unknown keys {unknown}; known: {', '.join(sorted(known))}")
        return cls(**(table or {}))

    @property
    def dense_share(self) -> float:
        return self.p_dense if self.captions == "dense+short" else 0.0


@dataclass(frozen=True)
class TextLLM:
    """Stage 0 model: a randomly initialised transformers Qwen2ForCausalLM with the preset's dimensions."""

    config: dict  # MarsConfig fields

    def __call__(self) -> nn.Module:
        from transformers import Qwen2ForCausalLM

        hf = MarsConfig.from_dict(self.config).to_hf_qwen2()
        hf._attn_implementation = "sdpa"
        return Qwen2ForCausalLM(hf)


@dataclass(frozen=True)
class FromQwen2:
    """Stage I model: SemVIE over a local Qwen2 directory (text weights frozen unless visual_expert is False)."""

    llm_dir: str
    codebook_size: int
    visual_expert: bool
    caption_kv: str = "text"  # MarsConfig.caption_kv

    def __call__(self) -> nn.Module:
        return MarsModel.from_qwen2(self.llm_dir, self.codebook_size, visual_expert=self.visual_expert,
                                    caption_kv=self.caption_kv)

    def model_config(self) -> MarsConfig:
        """The built model's config, without building it."""
        return MarsConfig.from_hf_qwen2(self.llm_dir, self.codebook_size, self.visual_expert,
                                        caption_kv=self.caption_kv)


@dataclass(frozen=True)
class FromMars:
    """Stage II / III model: continue from the previous stage's exported model."""

    mars_dir: str
    stage3_positions: str | None = None  # Stage III: switch the suffix layout (MarsConfig.stage3_positions)

    def __call__(self) -> nn.Module:
        m = MarsModel.load(self.mars_dir)
        if self.stage3_positions is not None:
            m.config = m.config.replace(stage3_positions=self.stage3_positions)
        m.set_trainable()
        return m

    def model_config(self) -> MarsConfig:
        """The built model's config, without building it."""
        from mars_ref.checkpoint import load_config

        cfg = load_config(self.mars_dir)
        return cfg if self.stage3_positions is None else cfg.replace(stage3_positions=self.stage3_positions)


def trained_model(build, run_dir: Path) -> nn.Module:
    """Rebuild the model and load the trained (trainable) weights of the run's last checkpoint."""
    ckpt = find_latest(run_dir / "ckpt")
    if ckpt is None:
        raise MarsEvalError(f"no checkpoint in {run_dir / 'ckpt'}: the stage has not finished")
    model = build()
    weights = read_tensors(ckpt / "model.safetensors")
    missing = [k for k, p in model.named_parameters() if p.requires_grad and k not in weights]
    if missing:
        raise MarsEvalError(f"{ckpt}: checkpoint lacks trained tensors {missing[:3]}")
    with torch.no_grad():
        params = dict(model.named_parameters())
        for k, t in weights.items():
            if k not in params or params[k].shape != t.shape:
                raise MarsEvalError(f"{ckpt}: tensor {k!r} does not fit the model")
            params[k].copy_(t)
    return model.eval()


def text_lines(world: Path, tokenizer, max_len: int = 96) -> list[list[int]]:
    lines = (world / "text" / "train.txt").read_text(encoding="utf-8").splitlines()
    eos = tokenizer.eos_token_id
    return [ids[: max_len - 1] + [eos] for ids in tokenizer(lines, add_special_tokens=False)["input_ids"]]


def stage_job(stage: str, world: Path, model_cfg: MarsConfig, tokenizer, tokenizer_dir: Path, vq, vq_dir: Path,
              cache_dir: Path, init_dir: Path | None, visual_expert: bool = True,
              data: StageIData = StageIData()):
    """(build_model, loss_fn, data) for a stage; `data` sets Stage I's caption policy and task mix."""
    if stage == "0":
        text = objectives.TextData(text_lines(world, tokenizer), tokenizer.pad_token_id)
        return TextLLM(model_cfg.to_dict()), objectives.TextLMLoss(), text
    if init_dir is None:
        raise MarsEvalError(f"stage {stage} needs the previous stage's model (--init)")
    if stage == "I":
        build = FromQwen2(str(init_dir), model_cfg.codebook_size, visual_expert, model_cfg.caption_kv)
    else:
        build = FromMars(str(init_dir), STAGE3_POSITIONS if stage == "III" else None)
    cfg = build.model_config()
    if stage == "I" and data.images == "fresh":
        examples = objectives.FreshImageTextData(
            str(world), str(vq_dir), str(tokenizer_dir), cfg, tokenizer.eos_token_id, p_caption=data.p_caption,
            p_uncond=data.p_uncond, p_dense=data.dense_share, object_weight=float(data.object_weight),
            contrast=data.contrast > 0, negatives=data.negatives)
        return build, objectives.NTPLoss(cfg, contrast=float(data.contrast)), examples
    corpus = load_corpus(world, CORPUS[stage], vq, vq_dir, tokenizer, tokenizer_dir, cache_dir)
    if stage == "III":
        return build, objectives.NKTPLoss(cfg), objectives.SuperResData(corpus, cfg)
    if stage == "II":
        return build, objectives.NTPLoss(cfg), objectives.ImageTextData(corpus, cfg, tokenizer.eos_token_id, p_caption=0.0)
    examples = objectives.ImageTextData(corpus, cfg, tokenizer.eos_token_id, p_caption=data.p_caption,
                                        p_uncond=data.p_uncond, p_dense=data.dense_share, contrast=data.contrast > 0)
    return build, objectives.NTPLoss(cfg, contrast=float(data.contrast)), examples


def run_stage(stage: str, train_cfg: TrainConfig, out_dir: Path, *, nproc: int = 1, resume: bool = False,
              progress: bool = True, **job_kwargs) -> tuple[dict, nn.Module]:
    """Train a stage and export its model to out_dir/model (HF directory for Stage 0, MARS format otherwise)."""
    if stage not in STAGES:
        raise MarsEvalError(f"unknown stage {stage!r}; choose one of {', '.join(STAGES)}")
    build, loss_fn, data = stage_job(stage, **job_kwargs)
    results = run_training(train_cfg, build, loss_fn, data, out_dir, nproc=nproc, resume=resume, progress=progress)
    model = trained_model(build, out_dir)
    if stage == "0":
        model.save_pretrained(out_dir / "model", safe_serialization=True)
    else:
        model.save(out_dir / "model")
    return results, model
