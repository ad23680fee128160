"""The recipe's artifacts on the embedded world, each built once and cached by everything that determines it.

    world -> tokenizer -> Stage 0 LLM ----------\
          -> VQ tokenizer ---------------------- Stage I (expert | no-expert, seed) -> Stage II -> Stage III
A cached artifact is a folder `CACHE/<kind>-<hash>/` whose `DONE.json` is written last; a folder without it is
unfinished work (training stages resume from their last checkpoint, other artifacts are rebuilt).

A preset with a `[kit]` table takes the tokenizer, VQ, Stage 0 LLM, world CLIP and world judges from that
pretrained world kit (mars_eval.kit) instead, when the kit was built from the same tables; the world is still
built here (deterministic, cheap). `from_scratch=True` ignores the kit and builds everything.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import time
import tomllib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

from mars_eval.errors import MarsEvalError
from mars_eval.io import atomic_write_json
from mars_eval.kit.manifest import EXPERT_FIELDS
from mars_eval.results import config_hash
from mars_eval.train.config import TrainConfig

if TYPE_CHECKING:
    from mars_eval.kit.store import Kit

DONE = "DONE.json"
# what the VQ trains on ([vq] images): the preset's world, or the same world drawn in the default (rich) style - a
# broad image corpus, as a real VQGAN is trained on ImageNet / OpenImages rather than on the T2I data it serves
VQ_IMAGES = ("world", "default-style")
TABLES = ("world", "tokenizer", "model", "vq", "stage0", "stageI", "stageII", "stageIII")
# world CLIP / judges settings, the ablation's evaluation budget, the pretrained kit (mars_eval.kit.store), and
# Stage I's caption policy and task mix (mars_eval.recipe.stages.StageIData)
OPTIONAL_TABLES = ("clip", "judges", "ablate", "kit", "data")


@dataclass(frozen=True)
class Preset:
    name: str
    tables: dict

    @classmethod
    def load(cls, spec: str) -> Preset:
        """A shipped preset name (mars_eval/recipe/presets/NAME.toml) or a path to a TOML file."""
        path = Path(spec)
        if not path.suffix:
            res = resources.files("mars_eval.recipe").joinpath(f"presets/{spec}.toml")
            if not res.is_file():
                known = sorted(p.name.removesuffix(".toml") for p in resources.files("mars_eval.recipe")
                               .joinpath("presets").iterdir() if p.name.endswith(".toml"))
                raise MarsEvalError(f"unknown preset {spec!r}; known: {', '.join(known)}")
            text, source = res.read_text(encoding="utf-8"), f"preset {spec}"
        else:
            try:
                text, source = path.read_text(encoding="utf-8"), str(path)
            except OSError as e:
                raise MarsEvalError(f"cannot read preset {path}: {e.strerror or e}") from None
            except UnicodeDecodeError:
                raise MarsEvalError(f"cannot read preset {path}: not UTF-8 text") from None
        try:
            tables = tomllib.loads(text)
        except tomllib.TOMLDecodeError as e:
            raise MarsEvalError(f"{source}: invalid TOML ({e})") from None
        unknown = sorted(set(tables) - set(TABLES) - set(OPTIONAL_TABLES))
        missing = sorted(set(TABLES) - set(tables))
        if unknown or missing:
            raise MarsEvalError(f"{source}: unknown tables {unknown}, missing tables {missing}")
        if "kit" in tables:
            from mars_eval.kit.store import check_kit_table

            tables["kit"] = check_kit_table(tables["kit"], path.parent if path.suffix else None, source)
        preset = cls(path.stem if path.suffix else spec, tables)
        _check_tables(tables, source)  # validate now, not an hour into a run
        if "data" in tables:
            from mars_eval.recipe.stages import StageIData

            try:
                StageIData.from_table(tables["data"])
            except MarsEvalError as e:
                raise MarsEvalError(f"{source}: {e}") from None
        for st in ("stage0", "stageI", "stageII", "stageIII"):
            try:
                preset.train_config(st)
            except MarsEvalError as e:
                raise MarsEvalError(f"{source}: {e}") from None
        return preset

    def train_config(self, table: str, **overrides) -> TrainConfig:
        return TrainConfig.from_dict({**self.tables[table], **overrides}, source=f"preset {self.name} [{table}]")


def _since(t0: float) -> float:
    """Seconds since `t0` (time.perf_counter), as DONE.json records an artifact's build time."""
    return round(time.perf_counter() - t0, 2)


def _check_tables(tables: dict, source: str) -> None:
    """The world, tokenizer, VQ and model tables, checked the way the artifacts will use them."""
    from mars_ref.config import MarsConfig
    from mars_ref.errors import MarsRefError
    from mars_ref.vq import vq_preset
    from mars_ref.vq_train import VQTrainConfig
    from mars_ref.world import WorldStyle

    def check(table: str, fn) -> None:
        try:
            fn(dict(tables[table]))
        except (MarsRefError, TypeError, ValueError, KeyError) as e:
            msg = f"missing key {e}" if isinstance(e, KeyError) else str(e)
            raise MarsEvalError(f"{source} [{table}]: {msg}") from None

    def ints(**bounds):
        def fn(t: dict) -> None:
            for k, low in bounds.items():
                if not isinstance(t[k], int) or isinstance(t[k], bool) or t[k] < low:
                    raise ValueError(f"{k} must be an integer >= {low}, got {t[k]!r}")
        return fn

    def vq(t: dict) -> None:
        vq_preset(t.pop("preset"))
        VQTrainConfig(**t)

    check("world", ints(n=1, seed=0))
    check("world", WorldStyle.from_table)
    check("tokenizer", ints(vocab_size=1))
    check("vq", vq)
    check("model", lambda t: MarsConfig(name="check", text_vocab_size=tables["tokenizer"]["vocab_size"],
                                        codebook_size=vq_preset(tables["vq"]["preset"]).codebook_size, **t))


class Artifacts:
    """Builds (or finds in the cache, or takes from the preset's kit) each artifact of a preset."""

    def __init__(self, preset: Preset, cache: Path, progress: bool = True, nproc: int = 1, engine: str | None = None,
                 from_scratch: bool = False):
        self.preset, self.cache, self.progress, self.nproc = preset, cache, progress, nproc
        self.overrides = {"engine": engine} if engine else {}
        self.from_scratch = from_scratch
        self._tok = self._vq = self._kit = None

    # -- the pretrained kit -------------------------------------------------------------------------------------
    def kit(self) -> Kit | None:
        """The preset's kit (mars_eval.kit.Kit), checked against the preset's tables, or None: no `[kit]` table,
        or `from_scratch`. A kit built from other tables is a one-line error, before anything is built."""
        if self.from_scratch or "kit" not in self.preset.tables:
            return None
        if self._kit is None:
            from mars_eval.kit.store import Kit, kit_dir_of

            kit = Kit(kit_dir_of(self.preset.tables["kit"]))
            kit.check_preset(self.preset)
            self._kit = kit
        return self._kit

    def _kit_part(self, part: str) -> Path | None:
        kit = self.kit()
        return kit.part_dir(part) if kit is not None else None

    def _ident(self, path: Path | None) -> str:
        """A cache key's name for an input folder: its path, or a kit part's content digest (a changed kit
        retrains what was built on it)."""
        kit = self.kit()
        ident = kit.identity_of(path) if kit is not None and path is not None else None
        return ident or str(path)

    # -- cache mechanics --------------------------------------------------------------------------------------
    def _dir(self, kind: str, key: dict) -> Path:
        return self.cache / f"{kind}-{config_hash(key)}"

    @staticmethod
    def done(d: Path) -> dict | None:
        f = d / DONE
        return json.loads(f.read_text(encoding="utf-8")) if f.is_file() else None

    @staticmethod
    def _finish(d: Path, info: dict) -> dict:
        atomic_write_json(d / DONE, info)
        return info

    # -- artifacts ----------------------------------------------------------------------------------------------
    def world(self, default_style: bool = False) -> Path:
        """The preset's world; default_style: the same n and seed drawn in the default (rich) style."""
        from mars_ref.world import WorldStyle, build_world
        from mars_ref.world.build import FORMAT

        self.kit()  # a kit built from other tables fails here, before the world is built
        t = self.preset.tables["world"]
        if default_style:
            t = {k: v for k, v in t.items() if k not in ("layout", "backgrounds")}
        d = self._dir("world", {**t, "format": FORMAT})
        if not self.done(d):
            shutil.rmtree(d, ignore_errors=True)
            info = build_world(d / "world", n=int(t["n"]), seed=int(t["seed"]), style=WorldStyle.from_table(t))
            self._finish(d, {"seconds": info["seconds"], "images": info["images"]})
        return d / "world"

    def tokenizer_dir(self) -> Path:
        from mars_ref.text_tokenizer import train_bpe

        if (kit := self._kit_part("tokenizer")) is not None:
            return kit
        world = self.world()
        t = self.preset.tables["tokenizer"]
        d = self._dir("tokenizer", {**t, "world": str(world)})
        if not self.done(d):
            shutil.rmtree(d, ignore_errors=True)
            t0 = time.perf_counter()
            lines = (world / "text" / "train.txt").read_text(encoding="utf-8").splitlines()
            train_bpe(lines, int(t["vocab_size"]), d / "tokenizer")
            self._finish(d, {"vocab_size": int(t["vocab_size"]), "seconds": _since(t0)})
        return d / "tokenizer"

    def tokenizer(self):
        from mars_ref.text_tokenizer import load_text_tokenizer

        if self._tok is None:
            self._tok = load_text_tokenizer(self.tokenizer_dir())
        return self._tok

    def vq_dir(self) -> Path:
        from mars_eval.recipe.data import load_world_images
        from mars_ref.vq import vq_preset
        from mars_ref.vq_train import VQTrainConfig, evaluate_vq, train_vq

        if (kit := self._kit_part("vq")) is not None:
            return kit
        t = dict(self.preset.tables["vq"])
        images = t.pop("images", "world")
        if images not in VQ_IMAGES:
            raise MarsEvalError(f"[vq] images must be one of {', '.join(VQ_IMAGES)}, got {images!r}")
        world = self.world(default_style=images == "default-style")
        d = self._dir("vq", {**t, "world": str(world)})
        if not self.done(d):
            t0 = time.perf_counter()
            train, held, _, _ = load_world_images(world / "stage1", held_out=200)
            cfg = VQTrainConfig(**{k: v for k, v in t.items() if k != "preset"})
            model = train_vq(train, vq_preset(t["preset"]), cfg, d / "vq", resume=(d / "vq").is_dir())
            self._finish(d, {"eval_held_out": evaluate_vq(model, held), "seconds": _since(t0)})
        return d / "vq"

    def vq(self):
        from mars_ref.vq_formats import load_vq

        if self._vq is None:
            self._vq = load_vq(self.vq_dir()).eval()
        return self._vq

    def clip_dir(self) -> Path:
        """The world CLIP (open_clip local format) behind the world CLIP score."""
        from mars_eval.world_clip import train_world_clip

        if (kit := self._kit_part("clip")) is not None:
            return kit
        world = self.world()
        d, cfg = self.clip_cache()
        if not self.done(d):
            shutil.rmtree(d, ignore_errors=True)
            summary = train_world_clip(world, d / "clip", cfg)
            self._finish(d, {k: summary[k] for k in ("top1_en", "top1_zh", "n_held_out", "seconds")})
        return d / "clip"

    def clip_cache(self):
        """(cache directory, WorldClipConfig) of the world CLIP: the whole config, defaults included, keys the
        cache, so a changed default retrains."""
        from mars_eval.world_clip import WorldClipConfig
        from mars_eval.world_clip.train import FORMAT as CLIP_FORMAT

        cfg = WorldClipConfig(**self.preset.tables.get("clip", {}))
        return self._dir("clip", {**cfg.to_dict(), "world": str(self.world()), "format": CLIP_FORMAT}), cfg

    def judges_cache(self):
        """(cache directory, DetectorTrainConfig) of the world judges, keyed like `clip_cache`."""
        from mars_eval.judges.world_detector import DetectorConfig
        from mars_eval.judges.world_detector_train import DetectorTrainConfig
        from mars_eval.judges.world_judges import FORMAT as JUDGES_FORMAT

        t = dict(self.preset.tables.get("judges", {}))
        width = t.pop("width", DetectorConfig().width)
        cfg = DetectorTrainConfig(detector=DetectorConfig(width=width), **t)
        key = {**cfg.to_dict(), "world": str(self.world()), "vq": self._ident(self.vq_dir()),
               "format": JUDGES_FORMAT}
        return self._dir("judges", key), cfg

    def judges_dir(self) -> Path:
        """The world judges (world detector), trained on clean renders and on this preset's VQ reconstructions."""
        from mars_eval.judges.world_judges import train_world_judges

        if (kit := self._kit_part("judges")) is not None:
            return kit
        world = self.world()
        d, cfg = self.judges_cache()
        if not self.done(d):
            shutil.rmtree(d, ignore_errors=True)
            summary = train_world_judges(world, d / "judges", seed=cfg.seed, cfg=cfg, vq=self.vq())
            self._finish(d, {"seconds": summary["seconds"]})
        return d / "judges"

    def recipe_info(self) -> dict:
        """What a bundle records so `coco` / `compbench` can find its world, CLIP and judges by default."""
        return {"preset": self.preset.name, "tables": self.preset.tables, "cache": str(self.cache.absolute()),
                "world": str(self.world().absolute()), **({"from_scratch": True} if self.from_scratch else {})}

    @classmethod
    def from_recipe_info(cls, info: dict, progress: bool = True) -> Artifacts:
        return cls(Preset(info["preset"], info["tables"]), Path(info["cache"]), progress=progress,
                   from_scratch=bool(info.get("from_scratch", False)))

    def model_config(self):
        from mars_ref.config import MarsConfig

        return MarsConfig(name=f"world-{self.preset.name}", text_vocab_size=len(self.tokenizer()),
                          codebook_size=self.vq().cfg.codebook_size, **self.preset.tables["model"])

    def stage(self, stage: str, init: Path | None, visual_expert: bool = True, seed: int = 0) -> Path:
        """Train a stage (resuming an unfinished run) and return its exported model directory."""
        from mars_eval.recipe.stages import StageIData, run_stage

        table = {"0": "stage0", "I": "stageI", "II": "stageII", "III": "stageIII"}[stage]
        cfg = self.preset.train_config(table, seed=seed, **self.overrides)
        if stage == "0" and seed == 0 and (kit := self._kit_part("llm")) is not None:  # the kit's LLM: seed 0
            return kit
        data = StageIData.from_table(self.preset.tables.get("data"))
        d = self._dir(f"stage{stage}", self.stage_key(stage, cfg, init, visual_expert))
        if not self.done(d):
            t0 = time.perf_counter()
            resume = (d / "ckpt").is_dir() and any((d / "ckpt").iterdir())
            results, _ = run_stage(stage, cfg, d, nproc=self.nproc, resume=resume, progress=self.progress,
                                   world=self.world(), model_cfg=self.model_config(), tokenizer=self.tokenizer(),
                                   tokenizer_dir=self.tokenizer_dir(), vq=self.vq() if stage != "0" else None,
                                   vq_dir=self.vq_dir() if stage != "0" else None, cache_dir=self.cache,
                                   init_dir=init, visual_expert=visual_expert, data=data)
            self._finish(d, {"stage": stage, "expert": visual_expert, "seed": seed, "results": results,
                             "seconds": _since(t0)})
        return d / "model"

    def stage_key(self, stage: str, cfg: TrainConfig, init: Path | None, visual_expert: bool) -> dict:
        """What a stage's cache folder is keyed by: everything that changes what it computes (`cfg`: its
        TrainConfig, seed included)."""
        from mars_eval.recipe.stages import STAGE3_POSITIONS, StageIData

        how = ("engine", "device", "ckpt_every", "log_every", "keep_last_ckpts")  # how it runs, not what it computes
        model = self.preset.tables["model"]
        if stage == "0":  # the LLM does not depend on the expert's fields
            model = {k: v for k, v in model.items() if k not in EXPERT_FIELDS}
        key = {"stage": stage, "train": {k: v for k, v in cfg.to_dict().items() if k not in how},
               "model": model, "init": self._ident(init), "expert": visual_expert,
               "world": str(self.world()), "tok": self._ident(self.tokenizer_dir()),
               "vq": self._ident(self.vq_dir()) if stage != "0" else None}
        if stage == "I" and "data" in self.preset.tables:  # presets without [data] keep their cache keys
            key["data"] = dataclasses.asdict(StageIData.from_table(self.preset.tables["data"]))
        if stage == "III":
            key["stage3_positions"] = STAGE3_POSITIONS
        return key

    def through(self, last: str, visual_expert: bool = True, seed: int = 0) -> dict[str, Path]:
        """Train Stage 0 and every stage up to `last`; returns each stage's model directory."""
        from mars_eval.recipe.stages import STAGES

        if last not in STAGES:
            raise MarsEvalError(f"unknown stage {last!r}; choose one of {', '.join(STAGES)}")
        models = {"0": self.stage("0", None, seed=0)}  # the LLM is shared by every variant and seed
        prev = models["0"]
        for st in STAGES[1 : STAGES.index(last) + 1]:
            prev = models[st] = self.stage(st, prev, visual_expert=visual_expert, seed=seed)
        return models

    def bundle(self, models: dict[str, Path], out: Path, variant: str) -> Path:
        """A generation bundle (mars_eval.bundle) of the last trained stage: Stage III adds the super-res model."""
        from mars_eval.bundle import Bundle, BundleInfo
        from mars_ref.model import MarsModel

        last = max(models, key=lambda s: ("0", "I", "II", "III").index(s))
        if last == "0":
            raise MarsEvalError("a bundle needs an image stage (I, II or III)")
        base = models["II"] if last == "III" else models[last]
        hires = MarsModel.load(models["III"]) if last == "III" else None
        info = BundleInfo(stage=last, variant=variant, image_px=(32, 32), hires_px=(64, 64) if hires else None,
                          extra={"recipe": self.recipe_info()})
        return Bundle.write(out, info, MarsModel.load(base), self.vq(), self.tokenizer_dir(), hires=hires)
