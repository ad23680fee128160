"""`mars-eval train stage`: the MARS recipe, Stage 0 -> I -> II -> III, on the embedded world (cached by config) or on
a user's Qwen2 + VQ + encoded data (--llm / --vq / --data)."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from mars_eval.cli.common import JsonOpt, emit, writable_dir
from mars_eval.cli.train import train_app


class Stage(StrEnum):
    s0 = "0"
    s1 = "I"
    s2 = "II"
    s3 = "III"


class Engine(StrEnum):
    single = "single"
    deepspeed = "deepspeed"


@train_app.command("stage")
def train_stage(
    stage: Annotated[Stage, typer.Argument(help="Train up to this stage: 0 (text LLM), I (T2I + captioning), "
                                                 "II (aspect ratios), III (super-resolution, NKTP).")],
    preset: Annotated[str, typer.Option(help="Recipe preset: a shipped name (xs, small) or a TOML file.")] = "xs",
    cache: Annotated[Path, typer.Option(help="Artifact cache: world, tokenizers, LLM and stage runs.")] = Path(
        "runs/cache"),
    no_expert: Annotated[bool, typer.Option("--no-expert", help="The ablation without the visual expert: all "
                                                                 "weights shared and trained.")] = False,
    seed: Annotated[int, typer.Option(help="Training seed of Stages I-III.")] = 0,
    nproc: Annotated[int, typer.Option(help="Training processes (2 on this CPU: gloo; GPUs: NCCL).")] = 1,
    engine: Annotated[Engine | None, typer.Option(help="Override the preset's engine (deepspeed = ZeRO-3).")] = None,
    bundle: Annotated[Path | None, typer.Option(help="Also write a generation bundle (for `generate`, `coco`, "
                                                      "`compbench`) of the trained stage here.")] = None,
    from_scratch: Annotated[bool, typer.Option("--from-scratch", help="Ignore the preset's pretrained world kit "
                                                                       "([kit] table) and train the tokenizer, VQ "
                                                                       "and Stage 0 LLM here.")] = False,
    llm: Annotated[Path | None, typer.Option(help="Real scale: a local Hugging Face Qwen2 directory (with --vq, "
                                                  "--dry-run).")] = None,
    vq: Annotated[Path | None, typer.Option(help="Real scale: a VQ checkpoint (ours, LlamaGen VQ-16 or taming).")] = None,
    data: Annotated[str | None, typer.Option(help="Real scale: an encode folder (`mars-eval encode`, --layout square "
                                                  "/ buckets / superres for Stage I / II / III; --dry-run also "
                                                  "takes a raw source).")] = None,
    init: Annotated[Path | None, typer.Option(help="Real scale, Stages II and III: the previous stage's run folder "
                                                   "(or its model/ directory).")] = None,
    config: Annotated[Path | None, typer.Option(help="Real scale: train config TOML (default: the paper's Stage I "
                                                     "recipe, mars_eval/recipe/configs/real_stage1.toml).")] = None,
    steps: Annotated[int | None, typer.Option(help="Real scale: override the config's steps.", min=1)] = None,
    micro_batch: Annotated[int | None, typer.Option(help="Real scale: override the config's micro_batch.",
                                                    min=1)] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Real scale: print the plan (parameters per group, "
                                                             "tokens per step, ZeRO-3 memory per GPU, records) and "
                                                             "train nothing.")] = False,
    px: Annotated[int, typer.Option(help="Real scale: image resolution.")] = 256,
    caption_tokens: Annotated[int, typer.Option(help="Real scale: caption tokens per sequence (the plan's "
                                                     "sequence length).", min=1)] = 120,
    global_batch: Annotated[int | None, typer.Option(help="Real scale: sequences per optimizer step (default: the "
                                                          "config's).", min=1)] = None,
    gpus_per_node: Annotated[int, typer.Option(help="Real scale: GPUs per node.", min=1)] = 1,
    nodes: Annotated[int, typer.Option(help="Real scale: nodes.", min=1)] = 1,
    as_json: JsonOpt = False,
) -> None:
    """Train the reference MARS on the embedded world; every finished artifact is reused, an unfinished stage resumes.

    A preset that names a world kit takes the tokenizer, VQ and Stage 0 LLM from it (see `mars-eval kit`).
    With --llm, --vq and --data: Stage I, II or III on your own data (II and III continue --init); --dry-run: the
    real-scale plan."""
    from mars_eval.errors import MarsEvalError
    from mars_eval.recipe.pipeline import Artifacts, Preset

    if llm is not None or vq is not None or data is not None or dry_run:
        if llm is None or vq is None:
            raise MarsEvalError("real scale needs both --llm (a Qwen2 directory) and --vq (a VQ checkpoint)")
        from mars_eval.recipe.real import load_real_config

        cfg = load_real_config(config, stage.value, steps=steps, micro_batch=micro_batch, global_batch=global_batch,
                               engine=engine.value if engine else None)
        if dry_run:
            from mars_eval.recipe.plan import training_plan

            emit(training_plan(llm, vq, data=data, visual_expert=not no_expert, image_px=px,
                               caption_tokens=caption_tokens, global_batch=cfg.global_batch,
                               gpus_per_node=gpus_per_node, nodes=nodes), as_json, "plan")
            return
        emit(_train_real(stage, llm, vq, data, init, cfg, cache, not no_expert, nproc, bundle), as_json, "trained")
        return

    p = Preset.load(preset)
    writable_dir(cache)
    if bundle is not None:
        writable_dir(bundle.parent if bundle.parent != Path("") else Path("."))
    arts = Artifacts(p, cache, nproc=nproc, engine=engine.value if engine else None, from_scratch=from_scratch)
    models = arts.through(stage.value, visual_expert=not no_expert, seed=seed)
    out = {f"stage_{k}": str(v) for k, v in models.items()}
    if bundle is not None:
        out["bundle"] = str(arts.bundle(models, bundle, "no-expert" if no_expert else "expert"))
    emit(out, as_json, "trained")


def _train_real(stage: Stage, llm: Path, vq: Path, data: str | None, init: Path | None, cfg, cache: Path,
                expert: bool, nproc: int, bundle: Path | None) -> dict:
    """A stage on a user's Qwen2 + VQ + encoded data, in a run folder under the cache named by what it trains."""
    from mars_eval.encode import DONE
    from mars_eval.errors import MarsEvalError
    from mars_eval.recipe.real import train_real_stage
    from mars_eval.results import config_hash

    if stage == Stage.s0:
        raise MarsEvalError("real scale starts from your pre-trained LLM (--llm): train Stage I, II or III")
    if data is None or not (Path(data) / DONE).is_file():
        raise MarsEvalError(f"--data must be a complete encode folder (run `mars-eval encode --data SOURCE --vq "
                            f"{vq} --out DIR` first); got {data}")
    writable_dir(cache)
    key = {"llm": str(Path(llm).resolve()), "vq": str(Path(vq).resolve()), "data": str(Path(data).resolve()),
           "expert": expert, "cfg": cfg.to_dict()}
    if init is not None:
        key["init"] = str(Path(init).resolve())
    run = cache / (f"real-stage{stage.value}-" + config_hash(key))
    res = train_real_stage(stage.value, llm, vq, data, run, cfg, init=init, visual_expert=expert, nproc=nproc,
                           bundle=bundle)
    return {"run": str(run), **{k: v for k, v in res.items() if isinstance(v, int | float | str)}}
