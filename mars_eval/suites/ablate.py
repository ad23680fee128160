"""`mars-eval ablate`: the paper's ablations at world scale, with 95 % confidence intervals across seeds.

For every seed the grid trains (or finds in the artifact cache) Stage I with and without the visual expert and the
expert chain Stage I -> II -> III, then evaluates each model the same way:

    Table 1  world T2I-CompBench x 100 (world judges), English prompts    w/o VE (I), w VE (I), Stage III
    Table 3  COCO-like FID / KID / world-CLIP score                        w/o VE, w VE, Stage I, II, III
    text     translation accuracy of the frozen LLM vs both variants (what SemVIE must preserve)
    caption  captioning accuracy against ground truth (Stage I's image-to-text task)
    EN/ZH    the same CompBench prompts in English and in Chinese (final model)
    NKTP     Stage III decoding in K tokens per step (NKTP) vs one token per step (the NTP order): score and time
    Fig. 5   per-step gradient norms, loss and max logit of Stage I with and without the expert (seed 0)

Shared artifacts (world, tokenizers, VQ, world CLIP, judges, Stage 0 LLM) are built once per preset; every trained
model and every evaluation is cached or resumable, so a killed `ablate` picks up where it stopped. Everything the
report needs goes to OUT/results.jsonl (rows of mars_eval.report.build), and the report is built from it. The
CompBench and CLIP-score tables carry each model's shuffled-prompt control row (suites/control.py) under
"<label> · shuffled-prompt control".
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from mars_eval.errors import MarsEvalError
from mars_eval.io import atomic_write_json, read_jsonl
from mars_eval.report.build import RESULTS as RESULTS_FILE
from mars_eval.results import append_rows, stamp
from mars_eval.suites.control import relabel
from mars_ref.world.style import world_style

# The [ablate] table of a preset: the evaluation budget of the grid.
DEFAULTS = {
    "seeds": 2,
    "compbench_prompts": 8,  # first N world val prompts per category
    "images_per_prompt": 2,
    "coco_n": 96,  # COCO-like captions per model (FID at this n is biased: see FID-infinity / the CI)
    "nktp_prompts": 8,  # Stage III decoding comparison: prompts (1 image each)
    "translation_pairs": 100,
    "captioning_images": 64,
    "batch_size": 16,
}

VE, NO_VE = "w Visual Expert", "w/o Visual Expert"
TABLE1 = "Table 1 (world): T2I-CompBench x 100, world judges, English prompts"
TABLE3 = "Table 3 (world): SemVIE and multi-stage training, COCO-like split"
TABLE_LANG = "English vs Chinese prompts: world T2I-CompBench x 100 (Stage III)"
TABLE_PROMPT_USE = "Prompt use (teacher-forced image NLL, fresh world renders, short captions)"
SHORT_ONLY = "w Visual Expert, short captions only"  # the caption-policy ablation of a dense+short preset


@dataclass(frozen=True)
class Model:
    """One trained model of the grid and where its generation bundle is."""

    key: str  # folder name: e.g. "I-expert-s0"
    label: str  # row label in the tables
    stage: str
    expert: bool
    seed: int
    bundle: Path


def budget(preset, **overrides) -> dict:
    t = {**DEFAULTS, **preset.tables.get("ablate", {}), **{k: v for k, v in overrides.items() if v is not None}}
    unknown = sorted(set(t) - set(DEFAULTS))
    if unknown:
        raise MarsEvalError(f"preset {preset.name} [ablate]: unknown keys {unknown}")
    for k, v in t.items():
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise MarsEvalError(f"ablate {k} must be an integer >= 1, got {v!r}")
    return t


class Ablation:
    def __init__(self, arts, out: Path, b: dict, nproc: int = 1, say: Callable[[str], None] = print):
        self.arts, self.out, self.b, self.nproc, self.say = arts, out, b, nproc, say
        self.results = out / RESULTS_FILE
        self.done_marks = out / "steps"  # one marker per finished evaluation: a resumed run skips it
        self._extractor = None

    # -- bookkeeping ------------------------------------------------------------------------------------------
    def _step(self, name: str, fn: Callable[[], list[dict]]) -> None:
        """Run an evaluation once: its rows are appended with a marker written after them (resume skips it).
        A crash between the two re-runs the step, which only re-reads its cached scores; rows of that step are
        then replaced, never duplicated."""
        mark = self.done_marks / f"{name}.json"
        if mark.is_file():
            return
        t0 = time.perf_counter()
        self.say(f"[ablate] {name}")
        rows = [stamp(r, step=name) for r in fn()]
        if self.results.is_file():  # drop rows of an earlier, interrupted attempt at this step
            keep = [r for r in read_jsonl(self.results) if r.get("step") != name]
            if len(keep) != len(read_jsonl(self.results)):
                from mars_eval.io import atomic_write_jsonl

                atomic_write_jsonl(self.results, keep)
        append_rows(self.results, rows)
        atomic_write_json(mark, {"rows": len(rows), "seconds": round(time.perf_counter() - t0, 2)})

    # -- models -----------------------------------------------------------------------------------------------
    def models(self, seed: int) -> list[Model]:
        """Train (or find) the grid's models for one seed and write their bundles."""
        a = self.arts
        exp = a.through("III", visual_expert=True, seed=seed)
        noexp = a.through("I", visual_expert=False, seed=seed)
        grid = [("I-noexpert", NO_VE, "I", False, noexp, a),
                ("I-expert", VE, "I", True, {k: exp[k] for k in "0 I".split()}, a),
                ("II-expert", "Stage II", "II", True, {k: exp[k] for k in ("0", "I", "II")}, a),
                ("III-expert", "Stage III", "III", True, exp, a)]
        short = self._short_captions_arts()
        if short is not None:
            grid.append(("I-expert-short", SHORT_ONLY, "I", True, short.through("I", visual_expert=True, seed=seed),
                         short))
        out = []
        for key, label, stage, expert, models, arts in grid:  # arts: the artifacts the models were trained with
            path = self.out / "bundles" / f"{key}-s{seed}"
            if not (path / "bundle.json").is_file():
                arts.bundle(models, path, "expert" if expert else "no-expert")
            out.append(Model(f"{key}-s{seed}", label, stage, expert, seed, path))
        return out

    def _short_captions_arts(self):
        """The same artifacts with Stage I on short captions only, when the preset trains on dense + short ones (the
        report's caption-policy ablation row); None otherwise."""
        from mars_eval.recipe.pipeline import Artifacts, Preset
        from mars_eval.recipe.stages import StageIData

        p = self.arts.preset
        if StageIData.from_table(p.tables.get("data")).captions == "short":
            return None
        tables = {**p.tables, "data": {**p.tables["data"], "captions": "short"}}
        return Artifacts(Preset(p.name, tables), self.arts.cache, progress=self.arts.progress,
                         from_scratch=self.arts.from_scratch)

    # -- evaluations ------------------------------------------------------------------------------------------
    def _imported(self, eval_dir: Path, label: str | None = None, samples: bool = True,
                  table: str | None = None) -> list[dict]:
        """The metric rows of a suite run (eval_dir/results.jsonl), relabelled (control rows keep their suffix);
        image paths re-rooted to OUT."""
        rows = []
        for r in read_jsonl(eval_dir / RESULTS_FILE):
            if r.get("kind", "metric") == "metric":
                rows.append({**(relabel(r, label) if label else r), "table": table or r["table"]})
            elif r.get("kind") == "samples" and samples:
                rows.append({**r, "images_dir": str((eval_dir / r["images_dir"]).relative_to(self.out))})
        return rows

    def compbench(self, m: Model, lang: str, table: str, calibration_n: int = 0) -> Path:
        from mars_eval.suites.compbench import run_compbench

        d = self.out / "evals" / m.key / f"compbench-{lang}"
        run_compbench(m.bundle, d, limit=self.b["compbench_prompts"], images_per_prompt=self.b["images_per_prompt"],
                      lang=lang, world=self.arts.world(), world_judges=self.arts.judges_dir(), label=m.label,
                      seed=m.seed, run=self._run(), progress=True, calibration_n=calibration_n, table=table)
        return d

    def coco(self, m: Model, table: str) -> Path:
        from mars_eval.suites.coco import run_coco

        d = self.out / "evals" / m.key / "coco"
        run_coco(m.bundle, d, n=self.b["coco_n"], world=self.arts.world(), clip=self.arts.clip_dir(), label=m.label,
                 seed=m.seed, run=self._run(), progress=True, extractor=self._inception(),
                 split_dir=self.out / "coco-reference", table=table)
        return d

    def _inception(self):
        if self._extractor is None:
            from mars_eval.metrics.inception import ExtractorConfig, InceptionExtractor

            self._extractor = InceptionExtractor(ExtractorConfig())
        return self._extractor

    def _run(self):
        from mars_eval.generate.runner import RunOptions

        # one process with 2 threads by default: the grid makes many small folders, and a worker process per
        # folder would spend more time starting than generating
        return RunOptions(batch_size=self.b["batch_size"], nproc=self.nproc, threads=2 if self.nproc == 1 else 1)

    def text_skill(self, model_dir: Path | None, label: str, seed: int, llm: bool = False) -> list[dict]:
        """Translation (exact and teacher-forced) of the Stage 0 LLM or a MARS model; + captioning and prompt use
        (how much the prompt informs the image tokens) for MARS."""
        import torch

        from mars_eval.recipe.evaluate import (
            captioning_accuracy,
            prompt_use,
            translation_accuracy,
            translation_teacher_forced,
            word_use,
        )

        tok, pairs = self.arts.tokenizer(), self.arts.world() / "text" / "translation_val.jsonl"
        if llm:
            from transformers import AutoModelForCausalLM

            model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32,
                                                         local_files_only=True).eval()
        else:
            from mars_ref.model import MarsModel

            model = MarsModel.load(model_dir).eval()
        n = self.b["translation_pairs"]
        res = {**translation_teacher_forced(model, tok, pairs, n), **translation_accuracy(model, tok, pairs, n)}
        row = {"kind": "metric", "table": "Text skill of the LLM (translation, held-out world pairs)", "label": label,
               "seed": seed, "scale": "world"}
        rows = [{**row, "metric": k, "value": float(res[k])} for k in
                ("translation_token_accuracy", "translation_nll", "translation_en2zh", "translation_zh2en")]
        if not llm:
            style = world_style(self.arts.world())  # fresh scenes are drawn the way the models' world draws them
            cap = captioning_accuracy(model, self.arts.vq(), tok, n=self.b["captioning_images"], seed=1000 + seed,
                                      style=style)
            row = {**row, "table": "Captioning (fresh world renders vs ground truth)"}
            rows += [{**row, "metric": k, "value": float(cap[k])} for k in
                     ("caption_exact", "caption_object_recall", "caption_kind_recall", "caption_parsed")]
            row = {**row, "table": TABLE_PROMPT_USE}
            for lang, suffix in (("en", ""), ("zh", " (ZH)")):
                use = prompt_use(model, self.arts.vq(), tok, n=self.b["captioning_images"], seed=2000 + seed,
                                 lang=lang, style=style)
                rows += [{**row, "metric": k + suffix, "value": float(use[k])} for k in
                         ("prompt_gain", "t2i_nll", "t2i_nll_other_caption", "t2i_nll_empty_caption")]
                # each image its own cluster (keyed by seed too): the report's interval over fresh images
                rows[-4]["per_prompt"] = {f"{seed}:{i}": g for i, g in enumerate(use["prompt_gain_per_image"])}
            for word in ("color", "kind"):  # which words it reads: one word of the caption swapped
                wu = word_use(model, self.arts.vq(), tok, word, n=self.b["captioning_images"], seed=3000 + seed,
                              style=style)
                rows.append({**row, "metric": f"{word}_word_gain", "value": wu["gain"],
                             "per_prompt": {f"{seed}:{i}": g for i, g in enumerate(wu["gain_per_image"])}})
        return rows

    def nktp(self, m: Model) -> list[dict]:
        """Stage III decoding: K tokens per step (NKTP, the bundle's schedule) vs one token per step (NTP order)."""
        from mars_eval.generate.runner import generate_folder
        from mars_eval.metrics.clip_score import clip_score, load_clip
        from mars_eval.prompts import PromptSet

        world = self.arts.world()
        k = max(1, self.b["nktp_prompts"] // 4)
        lines = [x for cat in ("color", "shape", "spatial", "complex")
                 for x in (world / "prompts" / f"{cat}_val.txt").read_text(encoding="utf-8").splitlines()[:k]]
        prompts = PromptSet.from_text("\n".join(lines), "nktp", str(world / "prompts"))
        clip = load_clip(self.arts.clip_dir())
        n_hi = 16 * 16  # the 64 px Stage III grid of the f4 world VQ
        rows = []
        for steps, name in ((8, "NKTP, 8 steps"), (n_hi, "one token per step (NTP order)")):
            d = self.out / "evals" / m.key / f"nktp-{steps}"
            t0 = time.perf_counter()
            summary = generate_folder(m.bundle, prompts, d, base_seed=m.seed, sampler={"nktp_steps": steps},
                                      run=self._run())
            secs = time.perf_counter() - t0 if summary["computed"] else summary.get("seconds", float("nan"))
            score = clip_score(d, prompts, "clip-b32-raw", clip)
            row = {"kind": "metric", "table": "Stage III decoding: NTP vs NKTP", "label": name, "seed": m.seed,
                   "scale": "world"}
            rows += [{**row, "metric": "world CLIP score", "value": float(score["clip_score"])},
                     {**row, "metric": "decoding steps", "value": float(steps)},
                     {**row, "metric": "seconds per image", "value": secs / max(1, summary["images"])}]
        return rows

    def diagnostics(self, seed: int) -> list[dict]:
        """The Fig. 5 logs: copied into OUT so that the report is built from OUT alone."""
        rows = []
        for expert, label in ((True, VE), (False, NO_VE)):
            log = self.arts.stage("I", self.arts.stage("0", None), visual_expert=expert, seed=seed).parent
            dst = self.out / "logs" / f"stageI-{'expert' if expert else 'noexpert'}-s{seed}.jsonl"
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(log / "train_log.jsonl", dst)
            rows.append({"kind": "diagnostics", "label": f"{label} (Stage I)", "path": str(dst.relative_to(self.out))})
        return rows

    # -- the grid ---------------------------------------------------------------------------------------------
    def run(self, seeds: list[int]) -> dict:
        a, t0 = self.arts, time.perf_counter()
        self.say("[ablate] shared artifacts: world, tokenizers, VQ, world CLIP, world judges, Stage 0 LLM")
        llm = a.stage("0", None)
        a.clip_dir()
        a.judges_dir()
        self._step("text-llm", lambda: self.text_skill(llm, "Stage 0 LLM (frozen in MARS)", 0, llm=True))
        for seed in seeds:
            models = self.models(seed)
            by = {m.key.rsplit("-s", 1)[0]: m for m in models}
            first = seed == seeds[0]
            for m in models:
                if m.stage in ("I", "III"):  # Table 1; the judge-calibration table comes with the first run
                    cal = self.b["compbench_prompts"] * 4 if first and m is models[0] else 0
                    self._step(f"compbench-{m.key}", lambda m=m, cal=cal, first=first: self._imported(
                        self.compbench(m, "en", TABLE1, cal), samples=first and m.stage == "III"))
                self._step(f"coco-{m.key}", lambda m=m, first=first: self._table3(
                    m, self._imported(self.coco(m, TABLE3), samples=first)))
            for key in [k for k in ("I-expert", "I-noexpert", "I-expert-short") if k in by]:
                m = by[key]
                self._step(f"text-{m.key}", lambda m=m: self.text_skill(m.bundle / "mars", f"{m.label} (Stage I)",
                                                                        m.seed))
            final = by["III-expert"]
            self._step(f"lang-{final.key}", lambda m=final, first=first: [
                *self._imported(self.out / "evals" / m.key / "compbench-en", "English prompts", samples=False,
                                table=TABLE_LANG),
                *self._imported(self.compbench(m, "zh", TABLE_LANG), "Chinese prompts", samples=first)])
            self._step(f"nktp-{final.key}", lambda m=final: self.nktp(m))
        self._step("diagnostics", lambda: self.diagnostics(seeds[0]))
        return {"seconds": round(time.perf_counter() - t0, 1), "results": str(self.results)}

    @staticmethod
    def _table3(m: Model, rows: list[dict]) -> list[dict]:
        """The paper's Table 3 lists the Stage I expert model twice: as "w Visual Expert" and as "Stage-I"."""
        if m.label != VE:
            return rows
        return rows + [relabel(r, "Stage I") for r in rows if r.get("kind", "metric") == "metric"]


def run_ablate(preset: str, out: Path, cache: Path, seeds: int | None = None, nproc: int = 1,
               say: Callable[[str], None] = print, from_scratch: bool = False, **budget_overrides) -> dict:
    """Train and evaluate the grid, then build the report (OUT/report/report.md + report.html).
    `from_scratch`: ignore the preset's pretrained kit and build every artifact (Artifacts)."""
    from mars_eval.recipe.pipeline import Artifacts, Preset
    from mars_eval.report.build import build_report

    p = Preset.load(preset)
    b = budget(p, seeds=seeds, **budget_overrides)
    out.mkdir(parents=True, exist_ok=True)
    spec = {"preset": p.name, "tables": p.tables, "budget": b}
    spec_file = out / "ablate.json"
    if spec_file.is_file():
        import json

        old = json.loads(spec_file.read_text(encoding="utf-8"))
        if old != spec:
            raise MarsEvalError(f"{out} holds an ablation with other settings ({spec_file}); use another --out")
    else:
        atomic_write_json(spec_file, spec)
    arts = Artifacts(p, cache, progress=True, nproc=1, from_scratch=from_scratch)
    summary = Ablation(arts, out, b, nproc=nproc, say=say).run(list(range(b["seeds"])))
    reads = p.tables["model"].get("caption_kv", "text")  # MarsConfig.caption_kv: how image queries read the caption
    title = f"MARS ablations on the world (preset {p.name}, {b['seeds']} seeds; w Visual Expert: caption_kv {reads})"
    rep = build_report([out], out / "report", title)
    return {**summary, **{f"report_{k}": v for k, v in rep.items()}, "seeds": b["seeds"], "preset": p.name}
