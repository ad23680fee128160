"""A small complete job for tests and benchmarks, shaped like a MARS stage: a tiny transformers Qwen2ForCausalLM
whose "text path" (embeddings + first layer) can be frozen while the "vision path" (later layers, norm, head) trains,
and a bimodal task mix (text->image tokens "t2i", image->text tokens "caption") with per-task / per-modality losses.

Token ids [0, V/2) are "text", [V/2, V) are "image". Each example i has a deterministic text part; its image part is
a fixed function of the text, so both directions are learnable. Per-example seeds pick the lengths (variable token
counts per example exercise the global-token normalisation).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from transformers import Qwen2Config, Qwen2ForCausalLM

from mars_eval.train.contract import Job, LossOutput

PAD = 0  # a text id that never appears in examples (text ids start at 1)


@dataclass(frozen=True)
class ToyModel:
    """Builds the model (a picklable callable: `build_model()`)."""

    vocab: int = 64
    hidden: int = 32
    layers: int = 2
    heads: int = 4
    kv_heads: int = 2
    intermediate: int = 64
    max_len: int = 64
    freeze_text: bool = True

    def config(self) -> Qwen2Config:
        return Qwen2Config(vocab_size=self.vocab, hidden_size=self.hidden, num_hidden_layers=self.layers,
                           num_attention_heads=self.heads, num_key_value_heads=self.kv_heads,
                           intermediate_size=self.intermediate, max_position_embeddings=self.max_len,
                           tie_word_embeddings=False, attn_implementation="sdpa")

    def __call__(self) -> nn.Module:
        model = Qwen2ForCausalLM(self.config())
        if self.freeze_text:
            for name, p in model.named_parameters():
                p.requires_grad_(toy_param_group(name) != "text")
        return model


def toy_param_group(name: str) -> str:
    return "text" if name.startswith(("model.embed_tokens.", "model.layers.0.")) else "vision"


@dataclass(frozen=True)
class ToyData:
    n: int = 256
    vocab: int = 64
    min_text: int = 3
    max_text: int = 8
    fixed_len: int | None = None  # every sequence exactly this long (benchmarks); else variable lengths
    collate_delay_s: float = 0.0  # simulated slow input pipeline (the kill test needs steps that take a while)

    def __len__(self) -> int:
        return self.n

    def _example(self, i: int, seed: int) -> tuple[list[int], list[int], str]:
        half = self.vocab // 2
        rng = np.random.default_rng([int(seed)])
        if self.fixed_len:
            lt = self.fixed_len // 2
            li = self.fixed_len - lt
        else:
            lt = int(rng.integers(self.min_text, self.max_text + 1))
            li = lt + 1
        content = np.random.default_rng([7, int(i)]).integers(1, half, size=max(lt, li))
        text = content[:lt].tolist()
        image = [half + int((content[j % lt] * 5 + j) % half) for j in range(li)]
        task = "t2i" if i % 2 == 0 else "caption"
        return text, image, task

    def collate(self, indices: np.ndarray, seeds: np.ndarray) -> dict:
        if self.collate_delay_s:
            time.sleep(self.collate_delay_s)
        seqs, targets_from, tasks = [], [], []
        for i, s in zip(indices.tolist(), seeds.tolist(), strict=True):
            text, image, task = self._example(i, s)
            first, second = (text, image) if task == "t2i" else (image, text)
            seqs.append(first + second)
            targets_from.append(len(first))  # loss on the second part only (conditional generation)
            tasks.append(0 if task == "t2i" else 1)
        T = max(map(len, seqs))
        ids = torch.full((len(seqs), T), PAD, dtype=torch.long)  # (B, T)
        labels = torch.full((len(seqs), T), -100, dtype=torch.long)  # (B, T) target of position t is ids[t+1]
        mask = torch.zeros((len(seqs), T), dtype=torch.long)
        for b, (seq, k) in enumerate(zip(seqs, targets_from, strict=True)):
            ids[b, :len(seq)] = torch.tensor(seq)
            mask[b, :len(seq)] = 1
            labels[b, k - 1:len(seq) - 1] = torch.tensor(seq[k:])
        return {"input_ids": ids, "attention_mask": mask, "labels": labels, "task": torch.tensor(tasks)}


@dataclass(frozen=True)
class ToyLoss:
    """Next-token cross-entropy with the diagnostics a MARS stage reports (per task, per target modality)."""

    vocab: int = 64

    def count_tokens(self, batch: dict) -> int:
        return int((batch["labels"] != -100).sum())

    def param_group(self, name: str) -> str:
        return toy_param_group(name)

    def __call__(self, model: nn.Module, batch: dict) -> LossOutput:
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits.float()  # (B,T,V)
        labels = batch["labels"]  # (B, T)
        valid = labels != -100
        ce = F.cross_entropy(logits.flatten(0, 1), labels.clamp_min(0).flatten(), reduction="none").view_as(labels)
        ce = ce * valid
        sums: dict = {}
        maxes: dict = {}
        is_image = labels >= self.vocab // 2
        with torch.no_grad():
            for t, name in enumerate(("t2i", "caption")):
                sel = valid & (batch["task"] == t)[:, None]
                sums[f"loss/{name}"] = (ce[sel].sum(), int(sel.sum()))
            norms = logits.norm(dim=-1)  # (B, T)
            for name, sel in (("text", valid & ~is_image), ("vision", valid & is_image)):
                n = int(sel.sum())
                sums[f"loss/{name}"] = (ce[sel].sum(), n)
                sums[f"logit_norm/{name}"] = (norms[sel].sum(), n)
                if n:
                    maxes[f"logit_max/{name}"] = logits[sel].max()
        return LossOutput(loss_sum=ce.sum(), n_tokens=int(valid.sum()),
                          n_input_tokens=int(batch["attention_mask"].sum()), sums=sums, maxes=maxes)


def toy_job(vocab: int = 64, hidden: int = 32, layers: int = 2, heads: int = 4, kv_heads: int = 2,
            intermediate: int = 64, n: int = 256, freeze_text: bool = True, fixed_len: int | None = None,
            collate_delay_s: float = 0.0) -> Job:
    max_len = max(64, fixed_len or 0)
    return Job(ToyModel(vocab, hidden, layers, heads, kv_heads, intermediate, max_len, freeze_text),
               ToyLoss(vocab), ToyData(n, vocab, fixed_len=fixed_len, collate_delay_s=collate_delay_s))
