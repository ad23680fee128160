"""`run_geneval`: GenEval on a checkpoint (or on any model's folder in GenEval's layout).

Two scorers, one flow (prompts -> images -> per-image verdict -> task accuracy -> rows):
- official (detector and CLIP paths given): the 553 official prompts (package data), Mask2Former through
  transformers (geneval/detector.py) and CLIP ViT-L/14 colours (geneval/color.py) under the official rules;
- world (default): the world GenEval prompts (geneval/world.py, English or Chinese) scored by the world judges
  under the same rules.

A checkpoint generates 4 images per prompt (GenEval's protocol; image n uses seed 42 + n); `images` scores a
folder in GenEval's layout instead, with the metadata it holds (geneval/folder.py). Per-image verdicts are
resumable (suites/common.ScoreStore) and written to OUT/geneval_images.jsonl; the summary is GenEval's: task
accuracy over images, overall = mean of the task accuracies. With `control`, each task also gets a shuffled-
prompt control (suites/control.py): the same images judged against a fixed derangement of the task's prompts.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from PIL import Image

from mars_eval.errors import MarsEvalError
from mars_eval.generate.folder import read_manifest
from mars_eval.generate.runner import ProgressFn, RunOptions, generate_folder
from mars_eval.geneval.folder import load_image, read_folder
from mars_eval.geneval.metadata import TASK_LABELS, TASKS, PromptSpec, builtin_metadata, metadata_jsonl
from mars_eval.geneval.rules import RuleSettings, Verdict
from mars_eval.geneval.summary import ImageResult, Summary, summarize
from mars_eval.io import atomic_write_jsonl, atomic_write_text, writable_dir
from mars_eval.prompts import Prompt, PromptSet
from mars_eval.results import config_hash
from mars_eval.suites.common import (
    RESULTS,
    SCORES,
    Bars,
    ScoreStore,
    append_results,
    bundle_info,
    check_world,
    no_recipe,
    path_fingerprint,
    recipe_artifacts,
    relative_to,
    score_key,
    score_resumable,
    sha256_file,
    torch_threads,
    write_grid_view,
)
from mars_eval.suites.control import control_row, control_scores, per_prompt_means, prompt_ci

TABLE = "GenEval"
TABLE_WORLD = "GenEval (world)"
TABLE_WORLD_ZH = "GenEval (world, Chinese prompts)"
OVERALL = "Overall"
IMAGES_FILE = "geneval_images.jsonl"
BASE_SEED = 42
IMAGES_PER_PROMPT = 4
CHUNK = 16  # images held in memory at once
GRID_LIMIT = 24


@dataclass(frozen=True)
class OfficialPaths:
    detector: Path  # a transformers Mask2Former directory
    clip: Path  # an open_clip weights file or local-dir
    clip_model: str = "ViT-L-14-quickgelu"  # architecture of a weights file


@dataclass(frozen=True)
class Item:
    prompt_index: int
    image_index: int
    path: Path
    spec: PromptSpec
    sha256: str


@dataclass
class Scorer:
    """What differs between the official and the world benchmark."""

    scale: str  # "real" | "world"
    judge_id: str
    describe: str
    score: Callable[[list[Image.Image], list[PromptSpec]], list[Verdict]]
    unknown: Callable[[Sequence[PromptSpec]], list[str]]  # classes the scorer cannot detect


def official_scorer(paths: OfficialPaths, rules: RuleSettings, device: str = "cpu",
                    detector_settings=None) -> Scorer:
    from dataclasses import replace

    from mars_eval.geneval.color import ClipColorClassifier, ColorSettings
    from mars_eval.geneval.detector import DetectorSettings, Mask2FormerDetector
    from mars_eval.geneval.rules import judge

    ds = replace(detector_settings or DetectorSettings(), min_score=rules.lowest, device=device)
    detector = Mask2FormerDetector(paths.detector, ds)
    colors = ClipColorClassifier(paths.clip, ColorSettings(model_name=paths.clip_model, device=device))

    def score(images: list[Image.Image], specs: list[PromptSpec]) -> list[Verdict]:
        out = []
        for im, spec in zip(images, specs, strict=True):
            classify = lambda objs, cls, im=im: colors.classify(im, objs, cls)  # noqa: E731
            out.append(judge(detector.detect(im), spec, rules, classify))
        return out

    ident = {"detector": path_fingerprint(paths.detector), "clip": path_fingerprint(paths.clip),
             "clip_model": paths.clip_model, "rules": asdict(rules),
             "detector_settings": {k: v for k, v in asdict(ds).items() if k != "device"}}
    return Scorer("real", "geneval-official:" + config_hash(ident),
                  f"Mask2Former {detector.name} (transformers), colours by {colors.name}", score,
                  lambda specs: detector.missing(c for s in specs for c in s.classes))


def world_scorer(judges_dir: Path, rules: RuleSettings) -> Scorer:
    from mars_eval.geneval.world import WorldScorer, unknown_classes
    from mars_eval.judges.world_judges import WEIGHTS

    ws = WorldScorer(judges_dir, rules)
    jid = (f"world-judges:{sha256_file(Path(judges_dir) / WEIGHTS)[:16]}:{ws.judges.platt}:"
           + config_hash(asdict(rules)))
    return Scorer("world", jid, f"world judges ({Path(judges_dir).name})", ws.score, unknown_classes)


def _check_args(images_per_prompt, limit, lang) -> None:
    if isinstance(images_per_prompt, bool) or not isinstance(images_per_prompt, int) or images_per_prompt < 1:
        raise MarsEvalError(f"images-per-prompt must be an integer >= 1, got {images_per_prompt!r}")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise MarsEvalError(f"limit must be an integer >= 1, got {limit!r}")
    if lang not in ("en", "zh"):
        raise MarsEvalError(f"unknown prompt language {lang!r} (en or zh)")


def _world_judges(ckpt, world_judges, progress: bool) -> Path:
    """The world judge directory: the one given, else the bundle's recipe judges."""
    if world_judges is not None:
        return Path(world_judges)
    info = bundle_info(ckpt) if ckpt is not None else None
    arts = recipe_artifacts(ckpt, info, progress)
    if arts is None:
        raise no_recipe(ckpt, "world judges (--world-judges)")
    return arts.judges_dir()


def _world_specs(ckpt: Path, world: Path | None, lang: str, out: Path) -> list[PromptSpec]:
    """The world GenEval prompts in `lang`, also written to OUT/prompts/[zh/]evaluation_metadata.jsonl with one
    scene each, drawn in the style of `world` (else the bundle's recipe world, else the default style)."""
    from mars_eval.geneval.world import world_prompts
    from mars_ref.world.style import DEFAULT_STYLE, WorldStyle, world_style

    rec = (bundle_info(ckpt).extra or {}).get("recipe")
    if world is not None:
        style = world_style(check_world(Path(world)))
    elif rec and isinstance(rec.get("tables"), dict):
        style = WorldStyle.from_table(rec["tables"].get("world"))
    else:
        style = DEFAULT_STYLE
    lines = [p.line(lang) for p in world_prompts(style)]
    name = "evaluation_metadata.jsonl" if lang == "en" else "zh/evaluation_metadata.jsonl"
    atomic_write_text(out / "prompts" / name, metadata_jsonl([s for s, _ in lines], [e for _, e in lines]))
    return [s for s, _ in lines]


def _generated(ckpt: Path, specs: list[PromptSpec], folder: Path, ipp: int, sampler, run, on_progress) -> list[Item]:
    prompts = PromptSet(f"geneval[{len(specs)}]", tuple(Prompt(i, s.prompt) for i, s in enumerate(specs)), "geneval")
    generate_folder(ckpt, prompts, folder, images_per_prompt=ipp, base_seed=BASE_SEED, use_prompt_seeds=False,
                    sampler=sampler, run=run, on_progress=on_progress)
    rows = read_manifest(folder)
    return [Item(r["prompt_index"], r["image_index"], folder / r["file"], specs[r["prompt_index"]], r["sha256"])
            for r in rows]


def run_geneval(ckpt: Path | None, out: Path, *, images: Path | None = None, official: OfficialPaths | None = None,
                world: Path | None = None, world_judges: Path | None = None, lang: str = "en",
                images_per_prompt: int = IMAGES_PER_PROMPT, limit: int | None = None, label: str | None = None,
                seed: int = 0, run: RunOptions | None = None, progress: bool = True, sampler: dict | None = None,
                control: bool = True, rules: RuleSettings | None = None, detector_settings=None,
                on_generate: ProgressFn | None = None) -> dict:
    """Generate (resumably) and score GenEval; returns task accuracies in [0, 1], the overall score and paths.

    ckpt: a generation bundle (None with `images`: score a folder in GenEval's layout, with its metadata).
    official: detector / CLIP paths -> the official prompts and scorer; else the world scorer with
    `world_judges` (default: the bundle's recipe judges) and the world prompts in `lang` (`world` only sets the
    style of the scenes recorded beside them). limit: the first N prompts. seed: recorded in the rows.
    """
    _check_args(images_per_prompt, limit, lang)
    run = run or RunOptions()
    rules = rules or RuleSettings()
    if ckpt is None and images is None:
        raise MarsEvalError("give a checkpoint (--ckpt) or an image folder in GenEval's layout (--images)")
    if ckpt is not None and images is not None:
        raise MarsEvalError("give either a checkpoint (--ckpt) or an image folder (--images), not both")
    if official is not None and (world is not None or world_judges is not None):
        raise MarsEvalError("give either the official scorer (--detector / --clip) or the world one (--world / "
                            "--world-judges), not both")
    if official is not None and lang != "en":
        raise MarsEvalError("the official GenEval prompts are English only (--lang zh is for the world)")
    out = writable_dir(out)
    label = label or Path(ckpt if ckpt is not None else images).name
    if official is None:
        world_judges = _world_judges(ckpt, world_judges, progress)
        if world is not None:
            check_world(Path(world))
    bars = Bars(progress)
    try:  # the scorer loads first: a bad weights path fails before any image is generated
        scorer = official_scorer(official, rules, run.device, detector_settings) if official is not None \
            else world_scorer(world_judges, rules)
        if images is not None:
            got = read_folder(Path(images), images_per_prompt, limit)
            _check_classes(scorer, [g.spec for g in got], official is not None)
            items = [Item(g.prompt_index, g.image_index, g.path, g.spec, sha256_file(g.path)) for g in got]
            folder = out / "samples" / "geneval"
        else:
            specs = builtin_metadata() if official is not None else _world_specs(Path(ckpt), world, lang, out)
            specs = specs[:limit] if limit else specs
            _check_classes(scorer, specs, official is not None)
            folder = out / "images" / ("geneval_zh" if lang == "zh" else "geneval")
            items = _generated(Path(ckpt), specs, folder, images_per_prompt, sampler, run,
                               bars.generation("generate GenEval", on_generate))
        store = ScoreStore(out / SCORES)
        results, ctrl = _score(store, scorer, items, out, lang, run, control, bars)
        store.compact()
    finally:
        bars.close()
    return _finish(out, items, results, ctrl, scorer, label=label, lang=lang, seed=seed, ipp=images_per_prompt,
                   official=official is not None, foreign=images is not None, folder=folder)


def _check_classes(scorer: Scorer, specs: Sequence[PromptSpec], official: bool) -> None:
    """A prompt class the scorer cannot detect would fail every image silently: refuse it up front."""
    unknown = scorer.unknown(specs)
    if unknown:
        what = "the detector cannot name" if official else "the world cannot draw"
        hint = "" if official else " (score real-world folders with --detector and --clip)"
        raise MarsEvalError(f"the prompts ask for classes {what}: {', '.join(map(repr, unknown[:5]))}{hint}")


def _score(store: ScoreStore, scorer: Scorer, items: list[Item], out: Path, lang: str, run: RunOptions,
           control: bool, bars: Bars) -> tuple[dict[str, list[dict]], dict[str, list[dict] | str]]:
    """Per task: the score rows of its images and (with control) of its control, or why there is no control."""
    files = {id(it): relative_to(it.path, out) for it in items}
    results: dict[str, list[dict]] = {}
    ctrl: dict[str, list[dict] | str] = {}
    for tag in TASKS:
        task = [it for it in items if it.spec.tag == tag]
        if not task:
            continue
        by_text: dict[str, PromptSpec] = {}
        for it in task:
            if by_text.setdefault(it.spec.prompt, it.spec) != it.spec:
                raise MarsEvalError(f"prompt {it.spec.prompt!r} comes with two different metadata lines")
        parts = [dict(suite="geneval", judge=scorer.judge_id, tag=tag, lang=lang, spec=it.spec.to_dict(),
                      sha256=it.sha256, prompt_index=it.prompt_index, image_index=it.image_index) for it in task]

        def compute(pos: range, asked: list[str] | None = None, task=task, by_text=by_text,
                    tag=tag) -> list[dict]:
            part = [task[i] for i in pos]
            specs = [it.spec for it in part] if asked is None else [by_text[t] for t in asked]
            with torch_threads(run.threads):
                verdicts = scorer.score([load_image(it.path) for it in part], specs)
            return [{"suite": "geneval", "scale": scorer.scale, "tag": tag, "lang": lang,
                     "prompt_index": it.prompt_index, "image_index": it.image_index, "prompt": it.spec.prompt,
                     "file": files[id(it)], "sha256": it.sha256, "judge": scorer.judge_id,
                     "score": float(v.correct), "correct": v.correct, "reason": v.reason}
                    for it, v in zip(part, verdicts, strict=True)]

        results[tag], _ = score_resumable(store, [score_key(**k) for k in parts], CHUNK, compute,
                                          bars.task(f"score {tag}", len(parts)))
        if control:
            got = control_scores(store, [(it.prompt_index, it.spec.prompt) for it in task], parts, CHUNK, compute,
                                 bars.task(f"control {tag}", len(parts)))
            ctrl[tag] = got if isinstance(got, str) else got[0]
    return results, ctrl


def _summary(rows_by_task: dict[str, list[dict]]) -> Summary:
    return summarize([ImageResult(r["prompt_index"], r["image_index"], r["tag"], r["prompt"], r["file"],
                                  bool(r["correct"]), r["reason"]) for rows in rows_by_task.values() for r in rows])


def _finish(out: Path, items: list[Item], results, ctrl, scorer: Scorer, *, label: str, lang: str, seed: int,
            ipp: int, official: bool, foreign: bool, folder: Path) -> dict:
    rows = [r for tag in TASKS for r in results.get(tag, [])]
    keys = ("prompt_index", "image_index", "tag", "prompt", "file", "correct", "reason")
    atomic_write_jsonl(out / IMAGES_FILE, [{k: r[k] for k in keys} for r in rows])
    summary = _summary(results)
    ctrl_rows = {t: v for t, v in ctrl.items() if not isinstance(v, str)}
    ctrl_summary = _summary(ctrl_rows) if ctrl_rows else None
    skipped = {t: v for t, v in ctrl.items() if isinstance(v, str)}
    n_prompts = len({it.prompt_index for it in items})
    official_set = official and [it.spec for it in items if it.image_index == 0] == builtin_metadata()[:n_prompts]
    if official:
        table = TABLE
        prompts = f"{'the official' if official_set else 'custom'} GenEval prompts ({n_prompts})"
    else:
        table = TABLE_WORLD_ZH if lang == "zh" else TABLE_WORLD
        prompts = f"world GenEval prompts ({n_prompts}, {lang.upper()})"
    protocol = (f"{prompts}, {ipp} images/prompt; {scorer.describe}; GenEval rules (threshold 0.3, counting 0.9, "
                "position margin 0.1); task accuracy over images, overall = mean of the task accuracies")
    ckpt_digest = None
    if not foreign:
        ckpt_digest = (read_manifest(folder)[:1] or [{}])[0].get("ckpt")
    base = {"kind": "metric", "table": table, "label": label, "seed": seed, "scale": scorer.scale,
            "protocol": protocol, "lang": lang, "images_per_prompt": ipp, "judges": scorer.judge_id,
            "ckpt": ckpt_digest}
    task_rows = [{**base, "metric": TASK_LABELS[t.tag], "value": t.accuracy, "task": t.tag, "n_images": t.n,
                  "n_prompts": len({r["prompt_index"] for r in results[t.tag]}),
                  "per_prompt": per_prompt_means(results[t.tag])} for t in summary.tasks]
    overall = {**base, "metric": OVERALL, "value": summary.overall, "task": "overall",
               "n_images": summary.n_images, "n_prompts": summary.n_prompts}
    metric_rows = [overall, *task_rows]
    ctrl_acc = ctrl_summary.accuracy() if ctrl_summary else {}
    out_rows = list(metric_rows)
    out_rows += [control_row(r, ctrl_acc[r["task"]], per_prompt_means(ctrl_rows[r["task"]]))
                 for r in task_rows if r["task"] in ctrl_acc]
    if ctrl_summary is not None and not skipped:
        out_rows.append(control_row(overall, ctrl_summary.overall))
    out_rows.append({"kind": "samples", "label": f"{label}: GenEval" + (" (ZH)" if lang == "zh" else ""),
                     "images_dir": relative_to(folder, out), "limit": GRID_LIMIT})
    _grid(folder, foreign, items, rows)
    appended = append_results(out / RESULTS, out_rows)
    labels = {t.tag: TASK_LABELS[t.tag] for t in summary.tasks}
    return {"mode": "official" if official else "world", "scale": scorer.scale, "lang": lang, "label": label,
            "table": table, "overall": summary.overall, "tasks": summary.accuracy(),
            "table_values": {OVERALL: summary.overall, **{labels[t]: a for t, a in summary.accuracy().items()}},
            "ci": {labels[t]: prompt_ci(results[t]) for t in labels},
            "n_images": {t.tag: t.n for t in summary.tasks}, "n_prompts": summary.n_prompts,
            "image_accuracy": summary.image_accuracy, "prompt_accuracy": summary.prompt_accuracy,
            "control": {"overall": ctrl_summary.overall if ctrl_summary and not skipped else None,
                        "tasks": ctrl_acc, "ci": {labels[t]: prompt_ci(v) for t, v in ctrl_rows.items()},
                        "skipped": skipped} if ctrl else None,
            "images_per_prompt": ipp, "judges": scorer.judge_id, "protocol": protocol,
            "official_prompts": bool(official_set), "rows_appended": appended, "out": str(out),
            "results": str(out / RESULTS), "images_file": str(out / IMAGES_FILE), "scores_file": str(out / SCORES),
            "images_dir": str(folder)}


def _grid(folder: Path, foreign: bool, items: list[Item], rows: list[dict]) -> None:
    """Per-image verdicts for the report's image grid; a foreign folder gets a manifest under OUT/samples/."""
    if foreign:
        names = [str(it.path.resolve()) for it in items]
        manifest = [{"file": n, "prompt": it.spec.prompt, "prompt_index": it.prompt_index}
                    for n, it in zip(names, items, strict=True)]
    else:
        names, manifest = [it.path.name for it in items], None
    by_pos = {(r["prompt_index"], r["image_index"]): r["score"] for r in rows}
    scores = {n: by_pos[(it.prompt_index, it.image_index)] for n, it in zip(names, items, strict=True)}
    write_grid_view(folder, scores, manifest)
