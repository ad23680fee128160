"""`mars-eval kit build|verify`: the pretrained world kit of a preset (mars_eval.kit)."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Annotated

import typer

from mars_eval.cli.common import JsonOpt, console, emit, progress, writable_dir
from mars_eval.cli.main import app
from mars_eval.errors import MarsEvalError

kit_app = typer.Typer(help="World kits: the pretrained tokenizer, VQ, Stage 0 LLM, world CLIP and judges of a "
                           "preset, built once and shipped (mars_eval/kits/NAME/).", no_args_is_help=True)
app.add_typer(kit_app, name="kit")


@kit_app.command("build")
def build_cmd(
    preset: Annotated[str, typer.Option(help="Recipe preset the kit is built from: a shipped name or a TOML file.")],
    out: Annotated[Path, typer.Option(help="Kit directory (a shipped kit: mars_eval/kits/NAME).")],
    cache: Annotated[Path, typer.Option(help="Artifact cache shared with `train stage` and `ablate`.")] = Path(
        "runs/cache"),
    name: Annotated[str | None, typer.Option(help="Kit name in the manifest (default: the --out folder's name).")]
    = None,
    calibration_n: Annotated[int, typer.Option(help="Also record the judges' calibration (clean renders and VQ "
                                                    "round trips) on up to N val prompts per category (slow; 0: "
                                                    "skip).")] = 0,
    as_json: JsonOpt = False,
) -> None:
    """Train (or find in the cache) every part, copy it into OUT with manifest.json and README.md; resumable."""
    from mars_eval.kit.build import build_kit
    from mars_eval.recipe.pipeline import Preset

    if calibration_n < 0:
        raise MarsEvalError(f"--calibration-n must be >= 0, got {calibration_n}")
    p = Preset.load(preset)
    writable_dir(out)
    writable_dir(cache)
    args = ["mars-eval", "kit", "build", "--preset", preset, "--out", str(out), "--cache", str(cache)]
    args += ["--name", name] if name else []
    args += ["--calibration-n", str(calibration_n)] if calibration_n else []
    m = build_kit(p, out, cache, command=shlex.join(args), name=name, calibration_n=calibration_n,
                  say=lambda s: console.print(s, style="bold", markup=False))
    res = {"kit": m.name, "out": str(out), "preset": m.preset,
           **{f"{part}/sha256": m.parts[part].sha256 for part in m.parts},
           **{f"{part}/seconds": m.parts[part].seconds for part in m.parts}}
    emit(res, as_json, "kit")


@kit_app.command("verify")
def verify_cmd(
    kit: Annotated[str | None, typer.Argument(help="A kit directory or the name of a shipped kit (default: every "
                                                   "shipped kit).")] = None,
    quick: Annotated[bool, typer.Option("--quick", help="Only check every file's sha256 against the manifest.")]
    = False,
    cache: Annotated[Path, typer.Option(help="Artifact cache for the world the checks are measured on.")] = Path(
        "runs/cache"),
    as_json: JsonOpt = False,
) -> None:
    """Check every file's sha256 against the manifest, then re-measure each part's checks on a fresh world.

    The re-measured figures are printed beside the values the manifest recorded when the kit was built."""
    from mars_eval.kit.store import find_kit, known_kits

    names = [kit] if kit is not None else known_kits()
    if not names:
        raise MarsEvalError("no kit given and none shipped in mars_eval/kits/; give a kit directory")
    results = [_verify_one(find_kit(n), quick, cache, as_json) for n in names]
    if as_json:
        emit(results[0] if kit is not None else {"kits": results}, True)


def _verify_one(kit_dir: Path, quick: bool, cache: Path, as_json: bool) -> dict:
    from mars_eval.kit.manifest import PARTS, KitManifest
    from mars_eval.kit.verify import kit_world, remeasure, verify_files

    m = KitManifest.read(kit_dir)
    with progress() as bar:
        task = bar.add_task(f"sha256 {m.name}", total=len(PARTS), rate="")
        n_files = verify_files(kit_dir, m, advance=lambda part: bar.advance(task))
    res = {"kit": m.name, "dir": str(kit_dir), "files": n_files, "sha256": "ok", "preset": m.preset}
    if not quick:
        writable_dir(cache)
        with console.status(f"building the world of kit {m.name} (cached in {cache})"):
            world = kit_world(m, cache)
        with progress() as bar:
            task = bar.add_task(f"checks {m.name}", total=len(PARTS), rate="")
            checks = remeasure(kit_dir, m, world, advance=lambda part: bar.advance(task))
        res["checks"] = [c.to_dict() for c in checks]
    if not as_json:
        emit({k: v for k, v in res.items() if k != "checks"}, False, f"kit {m.name}")
        if not quick:
            _print_checks(res["checks"], m.name)
    return res


def _print_checks(checks: list[dict], name: str) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"kit {name}: checks, manifest vs measured now")
    for col in ("part", "figure", "manifest", "measured", "delta"):
        table.add_column(col)

    def fmt(v) -> str:
        return "-" if v is None else f"{v:.4f}" if isinstance(v, float) else str(v)

    for c in checks:
        table.add_row(c["part"], c["figure"], fmt(c["kit"]), fmt(c["measured"]), fmt(c["delta"]))
    Console().print(table)
