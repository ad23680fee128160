"""`run_compbench`: T2I-CompBench on a checkpoint (or on any model's image folder), as the paper's Table 1.

Two suites, one flow (prompts -> generate_folder -> per-image judge scores -> category mean -> rows):
- world (default): WORLD/prompts/{category}_val.txt (or zh/ for Chinese prompts) scored by the world judges
  (a detector trained on the world + T2I-CompBench's rules); the judge-calibration table (judge accuracy
  against ground truth on true vs corrupted renders, clean and through this checkpoint's VQ) goes with it.
- official (judge paths given): the official val prompts (package data) scored by the real-architecture judges
  (BLIP-VQA, detector, CLIP ViT-B/32, depth), mars_eval.compbench.

Category score = mean over images (official protocol), reported x 100. Images n of every prompt use seed 42 + n.
With `control` (default), each category also gets a shuffled-prompt control row (suites/control.py): the same
images scored by the same judges against a fixed derangement of the category's prompts.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from mars_eval.categories import BY_NAME, LABELS, NAMES, WORLD_NAMES
from mars_eval.compbench.files import IMAGE_EXTS, ImageItem, match_folder
from mars_eval.compbench.score import CHUNK, JudgePaths, Judges, ScoreOptions, score_images
from mars_eval.errors import MarsEvalError
from mars_eval.generate.folder import read_manifest
from mars_eval.generate.runner import ProgressFn, RunOptions, generate_folder
from mars_eval.io import atomic_write_json, writable_dir
from mars_eval.prompts import PromptSet
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

TABLE = "T2I-CompBench (x100)"
TABLE_ZH = "T2I-CompBench, Chinese prompts (x100)"
CALIBRATION_TABLE = "Judge calibration (accuracy %)"
COLUMNS = LABELS  # category -> the report's column label
BASE_SEED = 42  # T2I-CompBench: image n of every prompt uses seed 42 + n
GRID_LIMIT = 24


@dataclass
class Suite:
    """What differs between the world and the official benchmark."""

    scale: str  # "world" | "real"
    judge_id: str
    describe: str
    prompts: Callable[[str], PromptSet]
    score: Callable[[str, list[ImageItem]], list[tuple[float, dict]]]


def _load_images(items: Sequence[ImageItem]) -> list[Image.Image]:
    out = []
    for it in items:
        try:
            with Image.open(it.path) as im:
                out.append(im.convert("RGB"))
        except (OSError, UnidentifiedImageError) as e:
            raise MarsEvalError(f"cannot read image {it.path}: {e}") from None
    return out


def world_suite(world: Path, judges_dir: Path, lang: str) -> Suite:
    from mars_eval.judges.world_judges import WEIGHTS, WorldJudges

    judges = WorldJudges.load(judges_dir)
    sub = "zh/" if lang == "zh" else ""

    def prompts(cat: str) -> PromptSet:
        path = world / "prompts" / f"{sub}{cat}_val.txt"
        if not path.is_file():
            raise MarsEvalError(f"no {cat} val prompts in {world} ({path} missing)")
        return PromptSet.from_file(path, name=f"world-{cat}_val" + ("-zh" if lang == "zh" else ""))

    def score(cat: str, items: list[ImageItem]) -> list[tuple[float, dict]]:
        return judges.score_batch(cat, _load_images(items), [it.prompt for it in items], lang)

    jid = f"world-judges:{sha256_file(Path(judges_dir) / WEIGHTS)[:16]}:{judges.platt}"
    return Suite("world", jid, f"world judges ({Path(judges_dir).name}), {lang.upper()} world val prompts",
                 prompts, score)


def official_suite(paths: JudgePaths, options: ScoreOptions | None) -> Suite:
    options = options or ScoreOptions()
    judges = Judges(paths, options)

    def prompts(cat: str) -> PromptSet:
        return PromptSet.builtin(f"{cat}_val")

    def score(cat: str, items: list[ImageItem]) -> list[tuple[float, dict]]:
        return [(s.score, s.sub) for s in score_images(cat, items, judges)]

    ident = {k: path_fingerprint(getattr(paths, k)) for k in ("blip_dir", "detector_dir", "clip_ckpt", "depth_dir")}
    jid = "official:" + config_hash({**ident, "clip_model": paths.clip_model_name, "options": asdict(options)})
    return Suite("real", jid, "official val prompts, real-architecture judges", prompts, score)


def _categories(categories: Sequence[str] | None, official: bool, paths: JudgePaths | None,
                images: Path | None) -> list[str]:
    known = NAMES if official else WORLD_NAMES
    if categories is not None:
        cats = list(dict.fromkeys(categories))
        if not cats:
            raise MarsEvalError("no categories given")
        for c in cats:
            if c not in known:
                raise MarsEvalError(f"unknown {'T2I-CompBench' if official else 'world CompBench'} category {c!r}; "
                                    f"known: {', '.join(known)}")
            if official:
                missing = [k for k in BY_NAME[c].judges if getattr(paths, k) is None]
                if missing:
                    raise MarsEvalError(f"category {c} needs judge weights: give "
                                        + ", ".join("--" + k.replace("_", "-") for k in missing))
        return [c for c in known if c in cats]  # the paper's Table 1 order
    cats = [c for c in known if not official or all(getattr(paths, k) is not None for k in BY_NAME[c].judges)]
    if images is not None:  # a folder of sub-folders: the categories it holds
        cats = [c for c in cats if _category_dir(images, c) is not None]
        if not cats:
            raise MarsEvalError(f"{images}: no category sub-folders (e.g. {images}/color/); give --categories CAT "
                                "to score a folder of one category")
    if not cats:
        raise MarsEvalError("no category can be scored with the judge paths given")
    return cats


def _category_dir(root: Path, cat: str) -> Path | None:
    for d in (root / cat / "samples", root / cat, root / f"{cat}_val" / "samples", root / f"{cat}_val"):
        if d.is_dir():
            return d
    return None


def _folder_items(root: Path, cat: str, single: bool, prompts: PromptSet, ipp: int,
                  limit: int | None) -> list[ImageItem]:
    """Items of a folder in the official naming (`{prompt}_{000000}.png`), complete for the scored prompts."""
    folder = _category_dir(root, cat)
    if folder is None:
        has_images = root.is_dir() and any(p.suffix.lower() in IMAGE_EXTS for p in root.iterdir() if p.is_file())
        if not (single and has_images):
            raise MarsEvalError(f"{root}: no images for category {cat} (expected {root}/{cat}/, or the images "
                                "directly in the folder when one category is scored)")
        folder = root
    if limit is None:
        return match_folder(folder, prompts, ipp)
    items = [it for it in match_folder(folder, prompts, ipp, strict=False) if it.prompt_index < limit]
    count = {i: 0 for i in range(min(limit, len(prompts)))}
    for it in items:
        count[it.prompt_index] += 1
    bad = [(i, c) for i, c in count.items() if c != ipp]
    if bad:
        i, c = bad[0]
        raise MarsEvalError(f"{folder}: prompt {i} ({prompts[i].text!r}) has {c} images, expected {ipp} "
                            f"({len(bad)} prompts incomplete)")
    return items


def _generated_items(folder: Path) -> tuple[list[ImageItem], list[str], str | None]:
    rows = read_manifest(folder)
    items = [ImageItem(folder / r["file"], r["prompt_index"], r["image_index"], r["prompt"]) for r in rows]
    return items, [r["sha256"] for r in rows], (rows[0].get("ckpt") if rows else None)


def _check_args(images_per_prompt: int, limit: int | None, lang: str) -> None:
    if isinstance(images_per_prompt, bool) or not isinstance(images_per_prompt, int) or images_per_prompt < 1:
        raise MarsEvalError(f"images-per-prompt must be an integer >= 1, got {images_per_prompt!r}")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise MarsEvalError(f"limit must be an integer >= 1, got {limit!r}")
    if lang not in ("en", "zh"):
        raise MarsEvalError(f"unknown prompt language {lang!r} (en or zh)")


def run_compbench(ckpt: Path | None, out: Path, *, categories: Sequence[str] | None = None,
                  images_per_prompt: int = 10, limit: int | None = None, lang: str = "en",
                  judges: JudgePaths | None = None, world: Path | None = None, world_judges: Path | None = None,
                  label: str | None = None, seed: int = 0, run: RunOptions | None = None, progress: bool = True,
                  images: Path | None = None, score_options: ScoreOptions | None = None,
                  sampler: dict | None = None, calibration_n: int = 100, table: str | None = None,
                  on_generate: ProgressFn | None = None, control: bool = True) -> dict:
    """Generate (resumably) and score T2I-CompBench val prompts; returns per-category scores in [0, 1] + paths.

    ckpt: a generation bundle (None with `images`: score another model's folder in the official naming, one
    sub-folder per category or, for one category, the images directly). limit: the first N val prompts per
    category. lang: world prompts in "en" or "zh". judges: official judge paths -> the official suite; else the
    world suite with `world` / `world_judges` (default: the bundle's recipe artifacts, built once and cached).
    seed: recorded in the rows (the checkpoint's training seed); sampling seeds follow the protocol (42 + n).
    calibration_n: held-out prompts per category for the judge-calibration table (world; 0 = none).
    on_generate(n, total): called with generate_folder's progress (tests interrupt a run with it).
    control: also score the shuffled-prompt control (suites/control.py), rows with `control: "shuffled_prompts"`.
    """
    _check_args(images_per_prompt, limit, lang)
    run = run or RunOptions()
    if ckpt is None and images is None:
        raise MarsEvalError("give a checkpoint (--ckpt) or an image folder (--images)")
    info = bundle_info(ckpt) if ckpt is not None else None
    if images is not None:
        images = Path(images)
        if not images.is_dir():
            raise MarsEvalError(f"image folder not found: {images}")
    official = judges is not None
    if official and (world is not None or world_judges is not None):
        raise MarsEvalError("give either official judge paths or a world (--world / --world-judges), not both")
    if official and lang != "en":
        raise MarsEvalError("the official T2I-CompBench prompts are English only (--lang zh is for the world)")
    cats = _categories(categories, official, judges, images)
    out = writable_dir(out)
    label = label or (Path(ckpt).name if ckpt is not None else images.name)

    bars = Bars(progress)
    try:
        world_dir = judges_dir = None
        if official:
            suite = official_suite(judges, score_options)
        else:
            arts = recipe_artifacts(ckpt, info, progress)
            if world is None and arts is None:
                raise no_recipe(ckpt, "world (--world) and world judges (--world-judges)")
            if world_judges is None and arts is None:
                raise no_recipe(ckpt, "world judges (--world-judges)")
            world_dir = check_world(Path(world) if world is not None else arts.world())
            judges_dir = Path(world_judges) if world_judges is not None else arts.judges_dir()
            suite = world_suite(world_dir, judges_dir, lang)
        store = ScoreStore(out / SCORES)
        per_cat, folders, n_prompts, generated, scored, ckpt_digest = {}, {}, {}, {}, 0, None
        ctrl_cat, ctrl_skipped, ctrl_scored = {}, {}, 0
        for cat in cats:
            prompts = suite.prompts(cat)
            if images is not None:
                items = _folder_items(images, cat, categories is not None and len(cats) == 1, prompts,
                                      images_per_prompt, limit)
                shas = [sha256_file(it.path) for it in items]
                folder = out / "samples" / (cat + ("_zh" if lang == "zh" else ""))
                generated[cat] = 0
            else:
                if limit is not None:
                    prompts = prompts.head(limit)
                folder = out / "images" / (cat + ("_zh" if lang == "zh" else ""))
                summary = generate_folder(ckpt, prompts, folder, images_per_prompt=images_per_prompt,
                                          base_seed=BASE_SEED, use_prompt_seeds=False, sampler=sampler, run=run,
                                          on_progress=bars.generation(f"generate {cat}", on_generate))
                generated[cat] = summary["computed"]
                items, shas, ckpt_digest = _generated_items(folder)
            n_prompts[cat] = len({it.prompt_index for it in items})
            files = [relative_to(it.path, out) for it in items]
            parts = [dict(judge=suite.judge_id, category=cat, lang=lang, prompt=it.prompt, file=f, sha256=h,
                          prompt_index=it.prompt_index, image_index=it.image_index)
                     for it, f, h in zip(items, files, shas, strict=True)]

            def compute(pos: range, asked: list[str] | None = None, cat=cat, items=items, files=files,
                        shas=shas) -> list[dict]:
                part = [items[i] for i in pos]  # asked: other prompt texts to score them against (the control)
                with torch_threads(run.threads):
                    res = suite.score(cat, part if asked is None else
                                      [replace(it, prompt=t) for it, t in zip(part, asked, strict=True)])
                return [{"suite": "compbench", "scale": suite.scale, "category": cat, "lang": lang,
                         "prompt_index": it.prompt_index, "image_index": it.image_index, "prompt": it.prompt,
                         "file": files[i], "sha256": shas[i], "judge": suite.judge_id, "score": float(s), "sub": sub}
                        for i, it, (s, sub) in zip(pos, part, res, strict=True)]

            rows, n_new = score_resumable(store, [score_key(**k) for k in parts], CHUNK, compute,
                                          bars.task(f"score {cat}", len(parts)))
            scored += n_new
            if control:
                got = control_scores(store, [(it.prompt_index, it.prompt) for it in items], parts, CHUNK, compute,
                                     bars.task(f"control {cat}", len(parts)))
                if isinstance(got, str):
                    ctrl_skipped[cat] = got
                else:
                    ctrl_cat[cat], n_new = got
                    ctrl_scored += n_new
            per_cat[cat] = rows
            folders[cat] = folder
            _grid(folder, images is not None, items, rows)
        store.compact()
        calibration = None
        if not official and calibration_n > 0:
            calibration = _calibration(out, world_dir, judges_dir, Path(ckpt) / "vq" if ckpt is not None else None,
                                       cats, lang, calibration_n)
    finally:
        bars.close()

    scores = {c: sum(r["score"] for r in rows) / len(rows) for c, rows in per_cat.items()}
    table = table or (TABLE_ZH if lang == "zh" else TABLE)
    protocol = (f"{suite.describe}; {images_per_prompt} images/prompt"
                + (f", first {limit} prompts" if limit else "") + "; mean over images")
    result_rows = [{"kind": "metric", "table": table, "label": label, "metric": COLUMNS[c], "value": 100 * s,
                    "seed": seed, "scale": suite.scale, "protocol": protocol, "category": c, "lang": lang,
                    "n_images": len(per_cat[c]), "n_prompts": n_prompts[c], "images_per_prompt": images_per_prompt,
                    "judges": suite.judge_id, "ckpt": ckpt_digest, "per_prompt": per_prompt_means(per_cat[c], scale=100)}
                   for c, s in scores.items()]
    ctrl = {c: sum(r["score"] for r in rows) / len(rows) for c, rows in ctrl_cat.items()}
    result_rows += [control_row(r, 100 * ctrl[r["category"]], per_prompt_means(ctrl_cat[r["category"]], scale=100))
                    for r in result_rows if r["category"] in ctrl]
    result_rows += [{"kind": "samples", "label": f"{label}: {COLUMNS[c]}" + (" (ZH)" if lang == "zh" else ""),
                     "images_dir": relative_to(folders[c], out), "limit": GRID_LIMIT} for c in scores]
    if calibration:
        result_rows += calibration_rows(calibration["rows"], calibration["n"], lang)
    appended = append_results(out / RESULTS, result_rows)
    return {"mode": "official" if official else "world", "scale": suite.scale, "lang": lang, "label": label,
            "categories": list(scores), "scores": scores,
            "table_x100": {COLUMNS[c]: 100 * s for c, s in scores.items()},
            "ci_x100": {COLUMNS[c]: prompt_ci(rows, scale=100) for c, rows in per_cat.items()},
            "control": {"table_x100": {COLUMNS[c]: 100 * s for c, s in ctrl.items()},
                        "ci_x100": {COLUMNS[c]: prompt_ci(rows, scale=100) for c, rows in ctrl_cat.items()},
                        "scored": ctrl_scored, "skipped": ctrl_skipped} if control else None,
            "n_images": {c: len(r) for c, r in per_cat.items()}, "n_prompts": n_prompts,
            "images_per_prompt": images_per_prompt, "judges": suite.judge_id, "protocol": protocol,
            "world": str(world_dir) if world_dir else None,
            "calibration": calibration["rows"] if calibration else None,
            "generated": generated, "scored": scored, "rows_appended": appended,
            "out": str(out), "results": str(out / RESULTS), "scores_file": str(out / SCORES),
            "images_dirs": {c: str(f) for c, f in folders.items()}}


def _grid(folder: Path, foreign: bool, items: list[ImageItem], rows: list[dict]) -> None:
    """Per-folder scores for the report's image grid; a foreign folder gets a manifest under OUT/samples/."""
    if foreign:
        names = [str(it.path.resolve()) for it in items]
        manifest = [{"file": n, "prompt": it.prompt, "prompt_index": it.prompt_index} for n, it in zip(names, items,
                                                                                                     strict=True)]
    else:
        names, manifest = [it.path.name for it in items], None
    write_grid_view(folder, {n: r["score"] for n, r in zip(names, rows, strict=True)}, manifest)


def _calibration(out: Path, world: Path, judges_dir: Path, vq: Path | None, cats: list[str], lang: str,
                 n: int) -> dict:
    """Judge accuracy vs ground truth (world_calibration), cached in OUT/calibration.json by its inputs."""
    import json

    from mars_eval.judges.world_calibration import judge_calibration
    from mars_eval.judges.world_judges import WEIGHTS

    vq_id = path_fingerprint(vq) if vq is not None and vq.is_dir() else None
    key = config_hash({"judges": sha256_file(judges_dir / WEIGHTS), "world": sha256_file(world / "world.json"),
                       "vq": vq_id, "categories": cats, "lang": lang, "n": n, "seed": 0})
    path = out / "calibration.json"
    if path.is_file():
        try:
            cached = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            cached = {}
        if cached.get("key") == key:
            return cached
    rows = judge_calibration(world, n, 0, judges=judges_dir, vq=vq if vq_id is not None else None,
                             categories=tuple(cats), lang=lang)
    data = {"key": key, "n": n, "lang": lang, "rows": rows}
    atomic_write_json(path, data)
    return data


def calibration_rows(rows: list[dict], n: int, lang: str) -> list[dict]:
    """The judge-calibration table: accuracy (%) per category on clean renders and through the VQ."""
    suffix = " (ZH prompts)" if lang == "zh" else ""
    protocol = f"{n} held-out val prompts per category: true vs corrupted scene, judge right when it scores them " \
               "on the correct side of 0.5"
    out = []
    for r in rows:
        for col, label in (("accuracy_clean", "world judges, clean renders"), ("accuracy_vq", "world judges, VQ round trip")):
            if r.get(col) is not None:
                out.append({"kind": "metric", "table": CALIBRATION_TABLE, "label": label + suffix,
                            "metric": COLUMNS[r["category"]], "value": 100 * r[col], "scale": "world",
                            "protocol": protocol, "n": r["n"], "lang": lang})
    return out
