"""Build the whole world into one directory: prompt sets and every training corpus, with JSONL manifests.

    OUT/world.json                     summary: seed, counts, resolutions (written last)
    OUT/prompts/                       T2I-CompBench-format prompt sets (see prompts.py)
    OUT/stage1/images/*.png            base-resolution image-caption corpus (32x32)
    OUT/stage1/manifest.jsonl          per image: captions en+zh, caption truth, full scene
    OUT/stage2/...                     several aspect ratios, captions start with "<res WxH> "
    OUT/stage3/{low,high}/*.png        the same scene at 32 and 64 px (super-resolution triplets)
    OUT/interleaved/...                multi-step sequences: a text step and the image after it
    OUT/text/train.txt                 LLM pre-training text: captions, EN<->ZH pairs, QA
    OUT/text/{translation,qa}_val.jsonl  held-out text evaluation sets

Everything is written into a hidden sibling directory and renamed into place at the end, so a killed build
never looks complete. Item i of a corpus is drawn from SeedSequence([seed, corpus, i]): it is the same
whatever n is, and two builds with the same arguments are byte-identical. No val prompt appears in any corpus.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from mars_ref.errors import MarsRefError
from mars_ref.world.captions import caption, caption_parts
from mars_ref.world.dense import dense_caption
from mars_ref.world.layout import LayoutError
from mars_ref.world.prompts import TRAIN_SIZE, VAL_SIZE, held_out_prompts, prompt_sets, write_prompt_sets
from mars_ref.world.qa import qa_lines, questions
from mars_ref.world.render import render
from mars_ref.world.sampling import CATEGORIES, realize, sample_scene, sample_spec
from mars_ref.world.scene import Scene
from mars_ref.world.sequences import sample_sequence, step_scene, step_text
from mars_ref.world.style import DEFAULT_STYLE, WorldStyle

FORMAT = "mars-world/8"  # bump when a change to the generator changes what a seed builds
MARKER = "world.json"
DENSE_TEXT_SHARE = 0.5  # share of text items that also give the dense captions of a realised scene
BASE_RES = 32
HIGH_RES = 64
STAGE2_SIZES: tuple[tuple[int, int], ...] = (
    (32, 32),
    (48, 32),
    (32, 48),
    (64, 32),
    (32, 64),
)  # (width, height)
TEXT_VAL_SIZE = 300
STREAMS = {"stage1": 1, "stage2": 2, "stage3": 3, "interleaved": 4, "text": 5, "text_val": 6}  # 7: prompts

Progress = Callable[[str, int, int], None]


# ---- staging: build in a hidden sibling, rename at the end -------------------------------------------------
def check_output_dir(out: str | os.PathLike, overwrite: bool = False) -> Path:
    """Fail early, with one line, when `out` cannot receive a world build; returns it as an absolute path."""
    out = Path(out).absolute()
    if out.exists() and not out.is_dir():
        raise MarsRefError(f"output path is not a directory: {out}")
    blocker = next((p for p in out.parents if p.exists()), None)
    if blocker is not None and not blocker.is_dir():
        raise MarsRefError(f"cannot create output directory {out}: {blocker} is a file, not a directory")
    if out.is_dir() and any(out.iterdir()):
        if not (out / MARKER).is_file():
            raise MarsRefError(f"output directory is not empty and holds no world build: {out}")
        if not overwrite:
            raise MarsRefError(
                f"output directory already holds a world build (use --overwrite to replace it): {out}"
            )
    if blocker is not None and not os.access(out if out.exists() else blocker, os.W_OK | os.X_OK):
        raise MarsRefError(f"output directory is not writable: {out if out.exists() else blocker}")
    return out


def staged_dir(out: str | os.PathLike, overwrite: bool = False):
    """Yield a fresh hidden directory beside `out`: on success it replaces `out`, on any error it goes."""
    from mars_eval.io import staged_dir as io_staged_dir

    return io_staged_dir(out, lambda p: check_output_dir(p, overwrite))


# ---- helpers -----------------------------------------------------------------------------------------------
def _rng(seed: int, corpus: str, i: int) -> np.random.Generator:
    return np.random.default_rng([seed, STREAMS[corpus], i])


def training_scene(rng, held_out: set[str], category: str | None = None, aspect=(1, 1),
                   style: WorldStyle = DEFAULT_STYLE) -> Scene:
    """A random training scene: its caption is not one of `held_out` (the val prompts)."""
    while True:
        cat = category or CATEGORIES[int(rng.integers(len(CATEGORIES)))]
        scene = sample_scene(cat, rng, aspect, style)
        if caption(scene, "en") not in held_out:
            return scene


def _save_png(img, path: Path) -> None:
    img.save(path, format="PNG", compress_level=6)


def _write_jsonl(path: Path, rows) -> None:
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False, sort_keys=True) + "\n")


def _caption_row(scene: Scene, res=None) -> dict:
    return {
        "category": scene.category,
        "caption_en": caption(scene, "en", res),
        "caption_zh": caption(scene, "zh", res),
        "truth": scene.truth(res),
        "scene": scene.to_dict(),
    }


def _tick(progress: Progress | None, stage: str, done: int, total: int) -> None:
    if progress is not None:
        progress(stage, done, total)


# ---- corpora -----------------------------------------------------------------------------------------------
def _stage1(root: Path, n: int, seed: int, held_out, progress, style: WorldStyle) -> int:
    (root / "images").mkdir(parents=True)
    rows = []
    for i in range(n):
        scene = training_scene(_rng(seed, "stage1", i), held_out, style=style)
        name = f"images/{i:06d}.png"
        _save_png(render(scene, BASE_RES, BASE_RES), root / name)
        rows.append({"id": i, "image": name, "width": BASE_RES, "height": BASE_RES, **_caption_row(scene)})
        _tick(progress, "stage1", i + 1, n)
    _write_jsonl(root / "manifest.jsonl", rows)
    return n


def _stage2(root: Path, n: int, seed: int, held_out, progress, style: WorldStyle) -> int:
    (root / "images").mkdir(parents=True)
    rows = []
    for i in range(n):
        rng = _rng(seed, "stage2", i)
        w, h = STAGE2_SIZES[int(rng.integers(len(STAGE2_SIZES)))]
        g = math.gcd(w, h)
        scene = training_scene(rng, held_out, aspect=(w // g, h // g), style=style)
        name = f"images/{i:06d}.png"
        _save_png(render(scene, w, h), root / name)
        rows.append({"id": i, "image": name, "width": w, "height": h, **_caption_row(scene, (w, h))})
        _tick(progress, "stage2", i + 1, n)
    _write_jsonl(root / "manifest.jsonl", rows)
    return n


def _stage3(root: Path, n: int, seed: int, held_out, progress, style: WorldStyle) -> int:
    (root / "low").mkdir(parents=True)
    (root / "high").mkdir()
    rows = []
    for i in range(n):
        scene = training_scene(_rng(seed, "stage3", i), held_out, style=style)
        low, high = f"low/{i:06d}.png", f"high/{i:06d}.png"
        _save_png(render(scene, BASE_RES, BASE_RES), root / low)
        _save_png(render(scene, HIGH_RES, HIGH_RES), root / high)
        rows.append(
            {
                "id": i,
                "low": low,
                "high": high,
                "low_size": [BASE_RES, BASE_RES],
                "high_size": [HIGH_RES, HIGH_RES],
                **_caption_row(scene),
            }
        )
        _tick(progress, "stage3", i + 1, n)
    _write_jsonl(root / "manifest.jsonl", rows)
    return 2 * n


def _interleaved(root: Path, n: int, seed: int, progress, style: WorldStyle) -> int:
    (root / "images").mkdir(parents=True)
    rows, images = [], 0
    for i in range(n):
        scene = sample_sequence(_rng(seed, "interleaved", i), style=style)
        steps = []
        for k in range(1, len(scene.groups) + 1):
            name = f"images/{i:06d}_{k}.png"
            _save_png(render(step_scene(scene, k), BASE_RES, BASE_RES), root / name)
            steps.append(
                {
                    "step": k,
                    "text_en": step_text(scene, k, "en"),
                    "text_zh": step_text(scene, k, "zh"),
                    "image": name,
                }
            )
            images += 1
        rows.append(
            {"id": i, "width": BASE_RES, "height": BASE_RES, "steps": steps, "scene": scene.to_dict()}
        )
        _tick(progress, "interleaved", i + 1, n)
    _write_jsonl(root / "manifest.jsonl", rows)
    return images


def _text(root: Path, n: int, seed: int, held_out: set[str], progress, style: WorldStyle) -> dict:
    """LLM text: captions in both languages, EN->ZH and ZH->EN pairs, QA; plus held-out translation/QA."""
    root.mkdir(parents=True)

    def spec_captions(rng):
        cat = CATEGORIES[int(rng.integers(len(CATEGORIES)))]
        groups, rels = sample_spec(cat, rng)
        one = cat == "numeracy"
        return (
            groups,
            rels,
            caption_parts(groups, rels, "en", numeral_one=one),
            caption_parts(groups, rels, "zh"),
            cat,
        )

    val_pairs, val_qa, seen = [], [], set(held_out)
    for i in range(TEXT_VAL_SIZE):
        rng = _rng(seed, "text_val", i)
        while True:
            groups, rels, en, zh, _ = spec_captions(rng)
            if en not in seen:
                break
        seen.add(en)
        val_pairs.append({"id": i, "en": en, "zh": zh})
        qs = questions(groups, rels)
        q = qs[int(rng.integers(len(qs)))]
        val_qa.append(
            {
                "id": i,
                "context_en": en,
                "context_zh": zh,
                "type": q["type"],
                "question_en": q["en"][0],
                "answer_en": q["en"][1],
                "question_zh": q["zh"][0],
                "answer_zh": q["zh"][1],
            }
        )
    excluded = seen  # val prompts and the held-out text sets
    lines = []
    for i in range(n):
        rng = _rng(seed, "text", i)
        while True:
            groups, rels, en, zh, cat = spec_captions(rng)
            if en not in excluded:
                break
        lines += [en, zh, f"EN: {en} ZH: {zh}" if rng.random() < 0.5 else f"ZH: {zh} EN: {en}"]
        lines += qa_lines(en, zh, groups, rels, rng)
        if rng.random() < DENSE_TEXT_SHARE:
            lines += _dense_lines(cat, groups, rels, rng, style)
        _tick(progress, "text", i + 1, n)
    (root / "train.txt").write_text("".join(line + "\n" for line in lines), encoding="utf-8", newline="\n")
    _write_jsonl(root / "translation_val.jsonl", val_pairs)
    _write_jsonl(root / "qa_val.jsonl", val_qa)
    return {"text_lines": len(lines), "translation_val": len(val_pairs), "qa_val": len(val_qa)}


def _dense_lines(category: str, groups, rels, rng, style: WorldStyle) -> list[str]:
    """Dense captions of one realisation of a caption spec (EN, ZH, a translation pair), so the text LLM and its
    tokenizer know the language of Stage I's dense captions; none when the spec cannot be laid out."""
    try:
        scene = realize(category, groups, rels, rng, style=style)
    except LayoutError:
        return []
    en, zh = dense_caption(scene, "en"), dense_caption(scene, "zh")
    return [en, zh, f"EN: {en} ZH: {zh}" if rng.random() < 0.5 else f"ZH: {zh} EN: {en}"]


# ---- entry points ------------------------------------------------------------------------------------------
def build_world(
    out_dir: str | os.PathLike,
    n: int,
    seed: int,
    *,
    n_stage2: int | None = None,
    n_stage3: int | None = None,
    n_sequences: int | None = None,
    n_text: int | None = None,
    val_size: int = VAL_SIZE,
    train_size: int = TRAIN_SIZE,
    style: WorldStyle = DEFAULT_STYLE,
    overwrite: bool = False,
    progress: Progress | None = None,
) -> dict:
    """Write the world for `seed` with `n` Stage I images (other corpora default to n, n/2, n/10 and 2n text
    items); returns a summary with counts and timing. `progress(stage, done, total)` is called per item."""
    counts = {
        "stage1": n,
        "stage2": n if n_stage2 is None else n_stage2,
        "stage3": max(1, n // 2) if n_stage3 is None else n_stage3,
        "interleaved": max(1, n // 10) if n_sequences is None else n_sequences,
        "text": 2 * n if n_text is None else n_text,
    }
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise MarsRefError(f"n must be a positive number of images, got {n!r}")
    for k, v in counts.items():
        if not isinstance(v, int) or v < 0:
            raise MarsRefError(f"the {k} size must be >= 0, got {v!r}")
    if not isinstance(seed, int) or seed < 0:
        raise MarsRefError(f"seed must be a non-negative integer, got {seed!r}")
    t0 = time.perf_counter()
    with staged_dir(out_dir, overwrite) as tmp:
        sets = prompt_sets(seed, val_size, train_size, style)
        _tick(progress, "prompts", 1, 1)
        prompt_files = write_prompt_sets(tmp / "prompts", sets)
        held_out = held_out_prompts(sets)
        images = _stage1(tmp / "stage1", counts["stage1"], seed, held_out, progress, style)
        images += _stage2(tmp / "stage2", counts["stage2"], seed, held_out, progress, style)
        images += _stage3(tmp / "stage3", counts["stage3"], seed, held_out, progress, style)
        images += _interleaved(tmp / "interleaved", counts["interleaved"], seed, progress, style)
        text = _text(tmp / "text", counts["text"], seed, held_out, progress, style)
        meta = {
            "format": FORMAT,
            "seed": seed,
            "style": style.to_dict(),
            "counts": counts,
            "images": images,
            **text,
            "prompt_sets": sorted(sets),
            "prompt_files": len(prompt_files),
            "resolutions": {
                "stage1": [BASE_RES, BASE_RES],
                "stage2": [list(s) for s in STAGE2_SIZES],
                "stage3": [[BASE_RES, BASE_RES], [HIGH_RES, HIGH_RES]],
                "interleaved": [BASE_RES, BASE_RES],
            },
            "categories": list(CATEGORIES),
            "val_size": val_size,
            "train_size": train_size,
        }
        (tmp / MARKER).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    seconds = time.perf_counter() - t0
    return {
        **meta,
        "out": str(Path(out_dir)),
        "seconds": round(seconds, 3),
        "images_per_s": round(images / seconds, 1) if seconds > 0 else None,
    }


def make_prompt_sets(
    out_dir: str | os.PathLike,
    seed: int,
    val_size: int = VAL_SIZE,
    train_size: int = TRAIN_SIZE,
    overwrite: bool = False,
) -> list[str]:
    """Write only the prompt sets (the `prompts/` part of a build) into `out_dir`; returns the files."""
    with staged_dir(out_dir, overwrite) as tmp:
        files = write_prompt_sets(tmp, prompt_sets(seed, val_size, train_size))
        (tmp / MARKER).write_text(
            json.dumps({"format": FORMAT, "seed": seed, "prompt_files": len(files)}, indent=2, sort_keys=True)
            + "\n",
            encoding="utf-8",
        )
    return files
