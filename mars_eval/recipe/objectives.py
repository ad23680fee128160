"""Batch sources and loss functions of each stage, in the engine's contract (mars_eval.train.contract).

Stage 0  TextData + TextLMLoss         the small Qwen2 LLM (transformers) on world text, incl. EN<->ZH pairs
Stage I  ImageTextData(p_caption=0.5)  text-to-image and captioning, next-token prediction
         FreshImageTextData             the same on scenes drawn afresh for every example
Stage II ImageTextData(p_caption=0)    variable aspect ratios, "<res WxH>" in the caption
Stage III SuperResData + NKTPLoss      (caption, low-res, high-res) triplets, suffix attention, masked prediction

Per-example randomness (task, language, caption dropout, Stage III mask) comes from the engine's per-example seeds,
so a batch is the same however it is split over processes.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from mars_eval.recipe import sequences
from mars_eval.recipe.data import Corpus, scenes_corpus, val_prompts
from mars_eval.train.contract import LossOutput
from mars_ref.config import MarsConfig
from mars_ref.losses import LossStats, ntp_loss, ntp_targets
from mars_ref.model import is_visual_param
from mars_ref.nktp import nktp_loss, random_mask
from mars_ref.world import training_scene

LANGS = ("en", "zh")


def _rng(seed) -> np.random.Generator:
    return np.random.default_rng(int(seed))


# ---- Stage 0: the text LLM ---------------------------------------------------------------------------------------
@dataclass
class TextData:
    lines: list[list[int]]  # token ids per line, eos appended
    pad_id: int

    def __len__(self) -> int:
        return len(self.lines)

    def collate(self, indices, seeds):
        rows = [(self.lines[i], [True] * len(self.lines[i])) for i in indices]
        ids, target = sequences.pad_right(rows, self.pad_id)
        return {"ids": ids, "target": target}


@dataclass
class TextLMLoss:
    """Next-token cross-entropy of a transformers causal LM (Qwen2ForCausalLM) on right-padded lines."""

    def __call__(self, model, batch) -> LossOutput:
        ids, target = batch["ids"], batch["target"]
        logits = model(input_ids=ids, attention_mask=target.long()).logits.float()  # (B, T, V)
        tgt, mask = ids[:, 1:], target[:, 1:]
        ce = F.cross_entropy(logits[:, :-1].flatten(0, 1), tgt.flatten(), reduction="none").view_as(tgt)
        n = int(mask.sum())
        return LossOutput(loss_sum=(ce * mask).sum(), n_tokens=n, n_input_tokens=int(target.sum()),
                          sums={"loss/text": ((ce * mask).sum().detach(), n)})

    def count_tokens(self, batch) -> int:
        return int(batch["target"][:, 1:].sum())

    def param_group(self, name: str) -> str:
        return "text"


# ---- Stage I / II: next-token prediction over the joint vocabulary ------------------------------------------------
@dataclass
class ImageTextData:
    corpus: Corpus
    cfg: MarsConfig
    eos_id: int
    p_caption: float = 0.5  # fraction of captioning (image-to-text) examples; the rest are text-to-image
    p_uncond: float = 0.1  # caption dropout for classifier-free guidance
    p_dense: float = 0.0  # share of text-to-image examples conditioned on the dense caption instead of the short one
    object_weight: float = 1.0  # loss weight of image tokens on an object (corpus.objects), background tokens 1

    def __len__(self) -> int:
        return len(self.corpus)

    def collate(self, indices, seeds):
        rows, tasks, grids = [], [], []  # grids: (row, first grid position, example) of text-to-image rows
        for i, s in zip(indices, seeds, strict=True):
            rng = _rng(s)
            lang = LANGS[int(rng.integers(2))]
            cap = self.corpus.captions[lang][i]
            codes = self.corpus.codes[i].tolist()
            if rng.random() < self.p_caption:
                rows.append(sequences.captioning(self.cfg, codes, cap, self.eos_id))
                tasks.append(1)
            else:
                if self.p_dense > 0 and rng.random() < self.p_dense:  # drawn only when on: short-only runs unchanged
                    cap = self.corpus.dense[lang][i]
                drop = rng.random() < self.p_uncond
                grids.append((len(rows), (0 if drop else len(cap)) + 1, i))  # the grid follows caption + <boi>
                rows.append(sequences.t2i(self.cfg, [] if drop else cap, codes))
                tasks.append(0)
        ids, target = sequences.pad_right(rows, self.cfg.pad_id)
        batch = {"ids": ids, "target": target, "task": torch.tensor(tasks)}
        if self.object_weight != 1.0:
            weight = torch.ones(ids.shape)  # (B, T) over target positions, like `target`
            for row, start, i in grids:
                obj = self.corpus.objects[i]
                weight[row, start : start + len(obj)] = torch.where(obj, self.object_weight, 1.0)
            batch["weight"] = weight
        return batch


FRESH_STREAM = 8  # numpy SeedSequence stream of fresh scenes, apart from the task draws of ImageTextData


@functools.lru_cache(maxsize=2)
def _scene_tools(world: str, vq_dir: str, tokenizer_dir: str):
    """(val prompts, VQ, text tokenizer) of a fresh-scene source, loaded once per process."""
    from mars_ref.text_tokenizer import load_text_tokenizer
    from mars_ref.vq_formats import load_vq

    return val_prompts(Path(world)), load_vq(Path(vq_dir)).eval(), load_text_tokenizer(Path(tokenizer_dir))


@dataclass
class FreshImageTextData:
    """Stage I on world scenes drawn afresh for every example: the world is procedural, so the model never sees
    an image twice and cannot memorise image-caption pairs. Scene i of a batch is a pure function of its
    per-example seed; the task mix is ImageTextData's. Holds paths only, so it pickles into spawned processes."""

    world: str
    vq_dir: str
    tokenizer_dir: str
    cfg: MarsConfig
    eos_id: int
    p_caption: float = 0.5
    p_uncond: float = 0.1
    p_dense: float = 0.0
    object_weight: float = 1.0
    size: int = 1 << 20  # nominal: the sampler's indices are not used, every seed draws a new scene

    def __len__(self) -> int:
        return self.size

    def collate(self, indices, seeds):
        held_out, vq, tokenizer = _scene_tools(self.world, self.vq_dir, self.tokenizer_dir)
        scenes = [training_scene(np.random.default_rng([int(s), FRESH_STREAM]), held_out) for s in seeds]
        batch = ImageTextData(scenes_corpus(scenes, vq, tokenizer), self.cfg, self.eos_id, self.p_caption,
                              self.p_uncond, self.p_dense, self.object_weight)
        return batch.collate(np.arange(len(seeds)), seeds)


def _output(st: LossStats, n_input: int, extra_sums: dict | None = None) -> LossOutput:
    """Engine form of a LossStats: the summed loss, plus loss / logit norm / max logit by target modality (Fig. 5)."""
    sums, maxes = dict(extra_sums or {}), {}
    for name in ("text", "image"):
        n = getattr(st, f"n_{name}")
        if n:
            sums[f"loss/{name}"] = (getattr(st, f"loss_{name}").detach() * n, n)
            sums[f"logit_norm/{name}"] = (getattr(st, f"logit_norm_{name}") * n, n)
            maxes[f"max_logit/{name}"] = getattr(st, f"max_logit_{name}")
    n_all = st.n_text + st.n_image
    return LossOutput(loss_sum=st.loss * n_all, n_tokens=n_all, n_input_tokens=n_input, sums=sums, maxes=maxes)


@dataclass
class NTPLoss:
    cfg: MarsConfig

    def __call__(self, model, batch) -> LossOutput:
        ids, target = batch["ids"], batch["target"]
        logits = model(ids).logits  # (B, T, V)
        tgt, mask = ntp_targets(ids, self.cfg.pad_id, target)  # (B, T) each
        st = ntp_loss(logits, tgt, mask, self.cfg.text_vocab_size)
        per_task = {}
        with torch.set_grad_enabled("weight" in batch and torch.is_grad_enabled()):
            ce = F.cross_entropy(logits.float().flatten(0, 1), tgt.flatten(), reduction="none").view_as(tgt)  # (B, T)
        for t, name in ((0, "t2i"), (1, "caption")):
            sel = mask & (batch["task"] == t)[:, None]
            if sel.any():
                per_task[f"loss/{name}"] = ((ce.detach() * sel).sum(), int(sel.sum()))
        out = _output(st, int((ids != self.cfg.pad_id).sum()), per_task)
        if "weight" in batch:  # object-token weighting: the weighted sum over the same tokens (diagnostics unweighted)
            w = torch.cat([batch["weight"][:, 1:], torch.ones_like(batch["weight"][:, :1])], dim=1)  # like the mask
            out.loss_sum = (ce * w * mask).sum()
        return out

    def count_tokens(self, batch) -> int:
        return int(ntp_targets(batch["ids"], self.cfg.pad_id, batch["target"])[1].sum())

    def param_group(self, name: str) -> str:
        return "vision" if is_visual_param(name.removeprefix("module.")) else "text"


# ---- Stage III: super-resolution with suffix attention, next-K-token (masked) prediction -------------------------
@dataclass
class SuperResData:
    corpus: Corpus  # codes = low-res grids, high = high-res grids
    cfg: MarsConfig
    p_uncond: float = 0.1

    def __len__(self) -> int:
        return len(self.corpus)

    def collate(self, indices, seeds):
        caps, masks = [], []
        n_hi = len(self.corpus.high[indices[0]])
        for i, s in zip(indices, seeds, strict=True):
            rng = _rng(s)
            cap = self.corpus.captions[LANGS[int(rng.integers(2))]][i]
            caps.append([] if rng.random() < self.p_uncond else cap)
            masks.append(random_mask(1, n_hi, torch.Generator().manual_seed(int(rng.integers(2**62))))[0])
        P = max(1, max(len(c) for c in caps))
        prefix = torch.full((len(caps), P), self.cfg.pad_id, dtype=torch.long)  # left-padded captions
        for j, c in enumerate(caps):
            if c:
                prefix[j, P - len(c):] = torch.tensor(c)
        low = torch.stack([self.corpus.codes[i] for i in indices])
        high = torch.stack([self.corpus.high[i] for i in indices])
        return {"prefix": prefix, "low": low, "high": high, "masked": torch.stack(masks)}


@dataclass
class NKTPLoss:
    cfg: MarsConfig

    def __call__(self, model, batch) -> LossOutput:
        st = nktp_loss(model, batch["prefix"], batch["low"], batch["high"], masked=batch["masked"])
        B = batch["low"].shape[0]
        n_suffix = B * (batch["low"].shape[1] + 3 + batch["high"].shape[1])  # <boi> low <eoi> <boh> high
        return _output(st, int((batch["prefix"] != self.cfg.pad_id).sum()) + n_suffix)

    def count_tokens(self, batch) -> int:
        return int(batch["masked"].sum())

    def param_group(self, name: str) -> str:
        return "vision" if is_visual_param(name.removeprefix("module.")) else "text"
