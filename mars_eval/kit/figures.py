"""A kit part's figures: what the artifact recorded when it was trained, and the checks that can be measured
again from the kit's files on a freshly built world (cheaply: seconds at the `xs` scale), so `kit verify` shows
whether the shipped weights still do what the manifest says.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from mars_eval.errors import MarsEvalError

LLM_TRANSLATION_PAIRS = 32  # held-out world translation pairs for the Stage 0 LLM check
VQ_HELD_OUT = 200  # as `Artifacts.vq_dir`: the last rows of the Stage I corpus (at most a tenth)


def _json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        raise MarsEvalError(f"cannot read {path} as JSON") from None


def _scalars(d: dict, prefix: str = "") -> dict:
    return {f"{prefix}{k}": v for k, v in d.items() if isinstance(v, int | float | str) and not isinstance(v, bool)}


def recorded(part: str, done: dict, part_dir: Path) -> tuple[float | None, dict]:
    """(seconds to build, key figures) of an artifact, from its cache DONE.json and its own summary file."""
    seconds = done.get("seconds")
    if part == "tokenizer":
        return seconds, {k: v for k, v in _scalars(done).items() if k != "seconds"}
    if part == "vq":
        return seconds, _scalars(done.get("eval_held_out", {}), "held_out/")
    if part == "llm":
        r = done.get("results", {})
        keep = ("final_loss", "steps", "wall_s", "tokens_per_s", "dtype", "engine", "git_commit")
        return seconds if seconds is not None else r.get("wall_s"), {k: r[k] for k in keep if k in r}
    if part == "clip":
        return seconds, {k: done[k] for k in ("top1_en", "top1_zh", "n_held_out") if k in done}
    if part == "judges":
        meta = _json(part_dir / "world_judges.json")
        figures = {"platt_a": meta["platt"][0], "platt_b": meta["platt"][1],
                   **_scalars(meta.get("held_out_detector", {}), "held_out_detector/")}
        return seconds, figures
    raise MarsEvalError(f"unknown kit part {part!r}")


def measure(part: str, kit_dir: Path, world: Path) -> dict:
    """The part's checks, measured from kit_dir/<part> (the LLM also reads kit_dir/tokenizer) on `world`."""
    return {"tokenizer": _tokenizer, "vq": _vq, "llm": _llm, "clip": _clip, "judges": _judges}[part](
        Path(kit_dir), Path(world))


def _pairs(world: Path) -> Path:
    return world / "text" / "translation_val.jsonl"


def _tokenizer(kit: Path, world: Path) -> dict:
    """Vocabulary size and characters per token on the held-out translation pairs."""
    from mars_ref.text_tokenizer import load_text_tokenizer

    tok = load_text_tokenizer(kit / "tokenizer")
    rows = [json.loads(r) for r in _pairs(world).read_text(encoding="utf-8").splitlines() if r.strip()]
    lines = [row[lang] for row in rows for lang in ("en", "zh")]
    n_tokens = sum(len(ids) for ids in tok(lines, add_special_tokens=False)["input_ids"])
    return {"vocab_size": len(tok), "chars_per_token": sum(map(len, lines)) / max(1, n_tokens)}


def _vq(kit: Path, world: Path) -> dict:
    """Held-out reconstruction PSNR and codebook statistics, as `train vq` reports them."""
    from mars_eval.recipe.data import load_world_images
    from mars_ref.vq_formats import load_vq
    from mars_ref.vq_train import evaluate_vq

    _, held, _, _ = load_world_images(world / "stage1", held_out=VQ_HELD_OUT)
    res = evaluate_vq(load_vq(kit / "vq").eval(), held)
    return _scalars(res, "held_out/")


def _llm(kit: Path, world: Path) -> dict:
    """Teacher-forced translation of held-out world pairs: the text skill the later stages must keep."""
    from transformers import AutoModelForCausalLM

    from mars_eval.recipe.evaluate import translation_teacher_forced
    from mars_ref.text_tokenizer import load_text_tokenizer

    model = AutoModelForCausalLM.from_pretrained(kit / "llm", dtype=torch.float32, local_files_only=True).eval()
    with torch.inference_mode():
        res = translation_teacher_forced(model, load_text_tokenizer(kit / "tokenizer"), _pairs(world),
                                         LLM_TRANSLATION_PAIRS)
    return {"translation_nll": res["translation_nll"],
            "translation_token_accuracy": res["translation_token_accuracy"], "translation_pairs": res["n"]}


def _clip(kit: Path, world: Path) -> dict:
    """Held-out in-batch caption retrieval on the same held-out images the world CLIP was scored on."""
    from mars_eval.world_clip.config import WorldClipConfig
    from mars_eval.world_clip.data import LANGS, PairSet, load_images, read_pairs
    from mars_eval.world_clip.train import (
        MARKER,
        _tokenizer,
        evaluate_retrieval,
        load_world_clip,
        split_sizes,
    )

    d = kit / "clip"
    cfg = WorldClipConfig(**_json(d / MARKER)["config"])
    paths, captions = read_pairs(world)
    n_train, _ = split_sizes(len(paths), cfg)
    caps = {lang: captions[lang][n_train:] for lang in LANGS}
    tok = _tokenizer(d, cfg.context_length)
    held = PairSet(load_images(paths[n_train:], cfg.image_size), {lang: tok(caps[lang]).long() for lang in LANGS},
                   caps)
    res = evaluate_retrieval(load_world_clip(d)[0], held, cfg.eval_batch)
    return {f"top1_{lang}": res[lang]["top1"] for lang in LANGS}


def _judges(kit: Path, world: Path) -> dict:
    """The detector's figures on the world images held out from judge training (as `train judges` reports)."""
    from mars_eval.judges.world_detector_eval import evaluate_detector
    from mars_eval.judges.world_detector_train import load_training_scenes
    from mars_eval.judges.world_judges import MAX_CALIBRATION_IMAGES, WorldJudges

    judges = WorldJudges.load(kit / "judges")
    images, scenes = load_training_scenes(world, judges.meta.get("train", {}).get("max_images"))
    n_cal = max(1, min(MAX_CALIBRATION_IMAGES, len(scenes) // 10))
    platt, held = evaluate_detector(judges.detector, images[-n_cal:], scenes[-n_cal:])
    return {"platt_a": platt[0], "platt_b": platt[1], **_scalars(held, "held_out_detector/")}


def calibration(kit: Path, world: Path, n: int) -> dict:
    """Accuracy per category on up to n val prompts each, on clean renders and on their round trips through the
    kit's VQ (what a generator's images look like), the table `mars-eval world calibrate --vq` prints (slow:
    minutes per category at n=25 on two busy cores)."""
    from mars_eval.judges.world_calibration import calibration_metrics, judge_calibration

    return calibration_metrics(judge_calibration(world, n, 0, judges=kit / "judges", vq=kit / "vq"))
