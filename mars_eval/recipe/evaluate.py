"""World-scale skill measurements of a trained model, against the world's ground truth.

- translation accuracy: the text skill the frozen LLM must keep ("EN: <caption> ZH:" -> the Chinese caption, and
  the reverse), exact match after whitespace normalisation; the paper's claim is that SemVIE preserves it exactly;
- captioning accuracy: caption fresh renders (never in a training corpus), parse the caption with the world's
  parser and compare with the scene's ground truth: exact match of the whole parse, and per-object match;
- prompt use: how much the prompt helps the model predict the image (teacher-forced image NLL with the true
  caption vs another scene's caption): a model whose samples ignore the prompt shows it here first, and in
  nats, without a judge in between;
- word use: the same for one word (a colour, shape, texture or kind swapped): which words the model reads.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from mars_ref.sampling import generate_text
from mars_ref.vq_train import to_model_range
from mars_ref.world import CATEGORIES, DEFAULT_STYLE, WorldStyle, caption, parse_caption, render, sample_scene


def _norm(s: str) -> str:
    return " ".join(s.split())


@torch.inference_mode()
def _greedy(model, tokenizer, prompts: list[list[int]], max_new: int, batch: int = 32) -> list[str]:
    """Greedy text continuations; works for a MarsModel and for a transformers causal LM."""
    eos = tokenizer.eos_token_id
    outs: list[list[int]] = []
    for i in range(0, len(prompts), batch):
        part = prompts[i : i + batch]
        if hasattr(model, "generate") and not hasattr(model, "vision_head"):  # transformers LM (Stage 0)
            for p in part:  # unbatched: no padding subtleties, small model
                ids = torch.tensor([p])
                g = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new, do_sample=False,
                                   eos_token_id=eos, pad_token_id=eos)
                outs.append(g[0, len(p):].tolist())
        else:
            outs += generate_text(model, part, max_new, eos_id=eos)
    return [tokenizer.decode([t for t in o if t != eos], skip_special_tokens=True) for o in outs]


def translation_accuracy(model, tokenizer, pairs_file: Path, limit: int = 200) -> dict:
    pairs = [json.loads(x) for x in pairs_file.read_text(encoding="utf-8").splitlines() if x.strip()][:limit]
    out = {}
    for src, dst in (("en", "zh"), ("zh", "en")):
        prompts = [tokenizer(f"{src.upper()}: {p[src]} {dst.upper()}:", add_special_tokens=False)["input_ids"]
                   for p in pairs]
        gen = _greedy(model, tokenizer, prompts, max_new=48)
        out[f"translation_{src}2{dst}"] = float(np.mean([_norm(g) == _norm(p[dst]) for g, p in zip(gen, pairs,
                                                                                                 strict=True)]))
    return {**out, "n": len(pairs)}


@torch.inference_mode()
def translation_teacher_forced(model, tokenizer, pairs_file: Path, limit: int = 200) -> dict:
    """Per-token accuracy and NLL of the reference translation under teacher forcing, both directions.

    A continuous measure of the same text skill: a small LLM that rarely translates a whole caption exactly still
    shows whether image training moved its text predictions (the no-expert ablation) or left them alone (SemVIE).
    """
    pairs = [json.loads(x) for x in pairs_file.read_text(encoding="utf-8").splitlines() if x.strip()][:limit]
    n_text = len(tokenizer)
    hits = nll = total = 0.0
    for p in pairs:
        for src, dst in (("en", "zh"), ("zh", "en")):
            prefix = tokenizer(f"{src.upper()}: {p[src]} {dst.upper()}:", add_special_tokens=False)["input_ids"]
            target = tokenizer(f" {p[dst]}", add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
            ids = torch.tensor([prefix + target])  # (1, T)
            logits = model(ids).logits[0, len(prefix) - 1 : -1, :n_text].float()  # (len(target), V_text)
            tgt = torch.tensor(target)
            hits += (logits.argmax(-1) == tgt).sum().item()
            nll += torch.nn.functional.cross_entropy(logits, tgt, reduction="sum").item()
            total += len(target)
    return {"translation_token_accuracy": hits / total, "translation_nll": nll / total, "n": len(pairs)}


def _fresh_renders(vq, n: int, rng: np.random.Generator, px: int = 32, style: WorldStyle = DEFAULT_STYLE,
                   categories: tuple[str, ...] = CATEGORIES) -> tuple[list, torch.Tensor]:
    """n new world scenes (drawn in `style`) spread over `categories`, and the VQ codes (n, h*w) of their px x px
    renders."""
    scenes = [sample_scene(categories[i % len(categories)], rng, style=style) for i in range(n)]
    x = torch.from_numpy(np.stack([np.asarray(render(s, px, px)) for s in scenes])).permute(0, 3, 1, 2)  # uint8
    return scenes, vq.encode(to_model_range(x)).flatten(1)


def _image_nll(model, codes: torch.Tensor, captions: list[list[int]], batch: int) -> torch.Tensor:
    """Teacher-forced NLL (n, h*w + 1) of each image's tokens and <eoi> given its caption token ids."""
    from mars_eval.recipe.sequences import pad_right, t2i
    from mars_ref.losses import ntp_targets

    cfg, rows = model.config, []
    for i in range(0, len(captions), batch):
        ids, target = pad_right([t2i(cfg, c, k.tolist()) for c, k in zip(captions[i:i + batch], codes[i:i + batch],
                                                                         strict=True)], cfg.pad_id)
        tgt, mask = ntp_targets(ids, cfg.pad_id, target)  # (B, T)
        logits = model(ids).logits.float()  # (B, T, V)
        ce = torch.nn.functional.cross_entropy(logits.flatten(0, 1), tgt.flatten(), reduction="none")
        ce = ce.view_as(tgt).double()
        rows += [ce[j][mask[j]] for j in range(len(ids))]  # the image tokens and <eoi>, in order
    return torch.stack(rows)


# the scenes each word's probe draws: every group of a scene of that category states the word
WORD_SCENES = {"color": "color", "shape": "shape", "texture": "texture", "kind": "color"}


@torch.inference_mode()
def word_use(model, vq, tokenizer, word: str, n: int = 96, seed: int = 12345, batch: int = 32, lang: str = "en",
             px: int = 32, style: WorldStyle = DEFAULT_STYLE) -> dict:
    """How much the model reads one kind of word: NLL of n fresh renders under their caption with one `word`
    (colour, shape, texture or kind) of one group changed, minus under their own caption, in nats per image.

    prompt_gain swaps the whole caption, so a model that reads kinds and ignores colours scores well on it; this
    probe isolates a word, on scenes in which every group states it. ~0 = the word is not read."""
    from mars_ref.world.sampling import swap_word

    if word not in WORD_SCENES:
        raise ValueError(f"word must be one of {', '.join(WORD_SCENES)}, got {word!r}")
    rng = np.random.default_rng(seed)
    scenes, codes = _fresh_renders(vq, n, rng, px, style, categories=(WORD_SCENES[word],))
    swapped = [replace(s, groups=swap_word(s.groups, int(rng.integers(len(s.groups))), word, rng)) for s in scenes]
    ids = [[tokenizer(caption(s, lang), add_special_tokens=False)["input_ids"] for s in x] for x in (scenes, swapped)]
    gain = (_image_nll(model, codes, ids[1], batch) - _image_nll(model, codes, ids[0], batch)).sum(1)  # (n,)
    return {"word": word, "gain": float(gain.mean()), "gain_se": float(gain.std() / n**0.5) if n > 1 else 0.0,
            "gain_per_image": [float(g) for g in gain], "n": n, "lang": lang}


@torch.inference_mode()
def prompt_use(model, vq, tokenizer, n: int = 140, seed: int = 12345, batch: int = 32, lang: str = "en",
               px: int = 32, style: WorldStyle = DEFAULT_STYLE) -> dict:
    """Teacher-forced NLL of the image tokens of n fresh px x px renders (nats per token) given their own short
    caption in `lang`, another scene's caption (a derangement of the same captions) and the empty caption.

    `prompt_gain` = NLL(other caption) - NLL(own caption), summed over an image's tokens: the information the
    model takes from the prompt, in nats per image (an estimate of the pointwise mutual information of image and
    prompt under the model). Objects, colours and relations of a world scene carry tens of nats (19 kinds, 10
    colours ...); a model that draws backgrounds and blobs regardless of the prompt scores about 0."""
    from mars_eval.recipe.data import object_tokens

    rng = np.random.default_rng(seed)
    scenes, codes = _fresh_renders(vq, n, rng, px, style)
    side = int(round(codes.shape[1] ** 0.5))
    on_object = torch.stack([object_tokens(s, side, side) for s in scenes])  # (n, h*w)
    own = [tokenizer(caption(s, lang), add_special_tokens=False)["input_ids"] for s in scenes]
    shift = int(rng.integers(1, n)) if n > 1 else 0
    other = own[shift:] + own[:shift]  # every image gets another scene's caption
    per_token = {name: _image_nll(model, codes, caps, batch)  # name -> (n, h*w + 1)
                 for name, caps in (("own", own), ("other", other), ("empty", [[]] * n))}
    per_image = {k: v.sum(1) for k, v in per_token.items()}
    tokens = codes.shape[1] + 1  # image tokens + <eoi> per image
    gain = per_image["other"] - per_image["own"]  # (n,)
    token_gain = (per_token["other"] - per_token["own"])[:, :-1]  # (n, h*w)
    return {"t2i_nll": float(per_image["own"].mean()) / tokens,
            "t2i_nll_other_caption": float(per_image["other"].mean()) / tokens,
            "t2i_nll_empty_caption": float(per_image["empty"].mean()) / tokens,
            "prompt_gain": float(gain.mean()), "prompt_gain_se": float(gain.std() / n**0.5) if n > 1 else 0.0,
            "prompt_gain_per_image": [float(g) for g in gain],
            "prompt_gain_objects": float((token_gain * on_object).sum(1).mean()),
            "prompt_gain_background": float((token_gain * ~on_object).sum(1).mean()),
            "n": n, "lang": lang}


def _parse_any(text: str) -> dict | None:
    for lang in ("en", "zh"):
        try:
            return parse_caption(text, lang)
        except Exception:  # the world parser rejects malformed captions with its own errors
            continue
    return None


@torch.inference_mode()
def captioning_accuracy(model, vq, tokenizer, n: int = 140, seed: int = 12345,
                        style: WorldStyle = DEFAULT_STYLE) -> dict:
    """Caption n fresh 32 px renders (spread over the categories) and score the parses against ground truth.

    A world caption states only its category's attributes (a colour scene's caption names colours, a texture
    scene's textures), which the image alone does not tell; so next to the exact and whole-object matches,
    `caption_kind_recall` counts the stated object kinds the caption names."""
    cfg = model.config
    rng = np.random.default_rng(seed)
    scenes, codes = _fresh_renders(vq, n, rng, style=style)
    prompts = [[cfg.boi_id] + (c + cfg.codebook_offset).tolist() + [cfg.eoi_id] for c in codes]
    texts = _greedy(model, tokenizer, prompts, max_new=40)
    exact, obj_hits, obj_total, parsed, kind_hits = 0, 0, 0, 0, 0
    per_cat: dict[str, list[bool]] = {}
    for s, t in zip(scenes, texts, strict=True):
        truth, got = s.truth(), _parse_any(t)
        parsed += got is not None
        ok = got is not None and got["objects"] == truth["objects"] and got["relations"] == truth["relations"]
        exact += ok
        per_cat.setdefault(s.category, []).append(ok)
        got_objs = got["objects"] if got else []
        obj_total += len(truth["objects"])
        obj_hits += sum(o in got_objs for o in truth["objects"])
        got_kinds = [o["kind"] for o in got_objs]
        for o in truth["objects"]:  # each stated kind matched at most once
            if o["kind"] in got_kinds:
                got_kinds.remove(o["kind"])
                kind_hits += 1
    return {"caption_exact": exact / n, "caption_object_recall": obj_hits / max(obj_total, 1),
            "caption_kind_recall": kind_hits / max(obj_total, 1),
            "caption_parsed": parsed / n, "n": n,
            **{f"caption_exact/{c}": float(np.mean(v)) for c, v in per_cat.items()},
            "examples": [{"truth_en": caption(s, "en"), "model": t} for s, t in list(zip(scenes, texts, strict=True))[:5]]}
