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
from mars_ref.world import training_scene, world_style
from mars_ref.world.captions import caption_parts
from mars_ref.world.sampling import one_word_counterfactual

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
FRESH_STREAM = 8  # numpy SeedSequence stream of fresh scenes, apart from the task draws of ImageTextData
NEGATIVE_STREAM = 9  # ... of the negative captions of the contrastive term


@dataclass
class ImageTextData:
    corpus: Corpus
    cfg: MarsConfig
    eos_id: int
    p_caption: float = 0.5  # fraction of captioning (image-to-text) examples; the rest are text-to-image
    p_uncond: float = 0.1  # caption dropout for classifier-free guidance
    p_dense: float = 0.0  # share of text-to-image examples conditioned on the dense caption instead of the short one
    object_weight: float = 1.0  # loss weight of image tokens on an object (corpus.objects), background tokens 1
    contrast: bool = False  # also emit each captioned text-to-image row with another example's caption (NTPLoss)
    negatives: dict[str, list[list[int]]] | None = None  # lang -> per example negative caption (default: drawn)

    def __len__(self) -> int:
        return len(self.corpus)

    def _negative(self, i: int, lang: str, seed) -> list[int]:
        """Another example's caption for example i, a function of its seed (split-invariant)."""
        if self.negatives is not None:
            return self.negatives[lang][i]
        j = int(np.random.default_rng([int(seed), NEGATIVE_STREAM]).integers(len(self.corpus) - 1))
        return self.corpus.captions[lang][j + (j >= i)]

    def collate(self, indices, seeds):
        rows, tasks, grids = [], [], []  # grids: (row, first grid position, example) of text-to-image rows
        negs, neg_of = [], []  # contrast: the negative rows and the row each one is the negative of
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
                if self.contrast and not drop:
                    negs.append(sequences.t2i(self.cfg, self._negative(i, lang, s), codes))
                    neg_of.append(len(rows))
                rows.append(sequences.t2i(self.cfg, [] if drop else cap, codes))
                tasks.append(0)
        ids, target = sequences.pad_right(rows, self.cfg.pad_id)
        batch = {"ids": ids, "target": target, "task": torch.tensor(tasks)}
        if negs:
            batch["neg_ids"], batch["neg_target"] = sequences.pad_right(negs, self.cfg.pad_id)
            batch["neg_of"] = torch.tensor(neg_of)
        if self.object_weight != 1.0:
            weight = torch.ones(ids.shape)  # (B, T) over target positions, like `target`
            for row, start, i in grids:
                obj = self.corpus.objects[i]
                weight[row, start : start + len(obj)] = torch.where(obj, self.object_weight, 1.0)
            batch["weight"] = weight
        return batch


@functools.lru_cache(maxsize=2)
def _scene_tools(world: str, vq_dir: str, tokenizer_dir: str):
    """(val prompts, world style, VQ, text tokenizer) of a fresh-scene source, loaded once per process."""
    from mars_ref.text_tokenizer import load_text_tokenizer
    from mars_ref.vq_formats import load_vq

    return (val_prompts(Path(world)), world_style(world), load_vq(Path(vq_dir)).eval(),
            load_text_tokenizer(Path(tokenizer_dir)))


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
    contrast: bool = False
    negatives: str = "other-scene"  # or "one-word": the scene's caption with one word changed (StageIData)
    px: int = 32  # render size: the grid is px / f codes a side for an f-times downsampling VQ
    size: int = 1 << 20  # nominal: the sampler's indices are not used, every seed draws a new scene

    def __len__(self) -> int:
        return self.size

    def collate(self, indices, seeds):
        held_out, style, vq, tokenizer = _scene_tools(self.world, self.vq_dir, self.tokenizer_dir)
        scenes = [training_scene(np.random.default_rng([int(s), FRESH_STREAM]), held_out, style=style)
                  for s in seeds]
        negatives = None
        if self.contrast:  # the caption of another fresh scene, or of this one with one word changed (not rendered)
            rngs = [np.random.default_rng([int(s), NEGATIVE_STREAM]) for s in seeds]
            if self.negatives == "one-word":
                specs = [(one_word_counterfactual(sc.groups, r), sc.relations, sc.category == "numeracy")
                         for sc, r in zip(scenes, rngs, strict=True)]
            else:
                others = [training_scene(r, held_out, style=style) for r in rngs]
                specs = [(o.groups, o.relations, o.category == "numeracy") for o in others]
            negatives = {lang: tokenizer([caption_parts(g, rel, lang, numeral_one=one) for g, rel, one in specs],
                                         add_special_tokens=False)["input_ids"] for lang in LANGS}
        batch = ImageTextData(scenes_corpus(scenes, vq, tokenizer, self.px), self.cfg, self.eos_id, self.p_caption,
                              self.p_uncond, self.p_dense, self.object_weight, self.contrast, negatives)
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
    """Next-token cross-entropy (optionally object-weighted, see ImageTextData) plus, when the batch carries
    negative rows, a contrastive conditioning term: per captioned image, the per-token margin
    m = (NLL(image | another caption) - NLL(image | its caption)) / tokens enters as
    contrast * tokens * softplus(-beta * m) / beta, a logistic loss on the likelihood ratio (as in CCA, without a
    reference model) whose pull fades once the margin passes ~1/beta nats per token."""

    cfg: MarsConfig
    contrast: float = 0.0
    contrast_beta: float = 20.0

    def __call__(self, model, batch) -> LossOutput:
        ids, target = batch["ids"], batch["target"]
        logits = model(ids).logits  # (B, T, V)
        tgt, mask = ntp_targets(ids, self.cfg.pad_id, target)  # (B, T) each
        st = ntp_loss(logits, tgt, mask, self.cfg.text_vocab_size)
        per_task = {}
        contrast = self.contrast > 0 and "neg_ids" in batch
        with torch.set_grad_enabled(("weight" in batch or contrast) and torch.is_grad_enabled()):
            ce = F.cross_entropy(logits.float().flatten(0, 1), tgt.flatten(), reduction="none").view_as(tgt)  # (B, T)
        for t, name in ((0, "t2i"), (1, "caption")):
            sel = mask & (batch["task"] == t)[:, None]
            if sel.any():
                per_task[f"loss/{name}"] = ((ce.detach() * sel).sum(), int(sel.sum()))
        out = _output(st, int((ids != self.cfg.pad_id).sum()), per_task)
        if "weight" in batch:  # object-token weighting: the weighted sum over the same tokens (diagnostics unweighted)
            w = torch.cat([batch["weight"][:, 1:], torch.ones_like(batch["weight"][:, :1])], dim=1)  # like the mask
            out.loss_sum = (ce * w * mask).sum()
        if contrast:
            term, margin = self._contrast(model, batch, (ce * mask).sum(1))
            out.loss_sum = out.loss_sum + self.contrast * term
            out.sums["contrast/margin"] = (margin.detach().sum(), len(margin))
        return out

    def _contrast(self, model, batch, nll_pos):
        """(summed contrastive term, (R,) per-token margins) of the negative rows; nll_pos (B,) per-row NLL."""
        tgt, mask = ntp_targets(batch["neg_ids"], self.cfg.pad_id, batch["neg_target"])  # (R, T')
        logits = model(batch["neg_ids"]).logits.float()  # (R, T', V)
        ce = F.cross_entropy(logits.flatten(0, 1), tgt.flatten(), reduction="none").view_as(tgt)
        n = mask.sum(1)  # (R,) image tokens + <eoi>: the same images as their positive rows
        margin = ((ce * mask).sum(1) - nll_pos[batch["neg_of"]]) / n
        return (n * F.softplus(-self.contrast_beta * margin) / self.contrast_beta).sum(), margin

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
