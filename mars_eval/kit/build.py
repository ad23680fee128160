"""`mars-eval kit build`: every part of a preset's kit, trained through `Artifacts` (cached, resumable), copied
into the kit directory with its hashes, figures and provenance; then manifest.json and README.md.

The manifest is rewritten after each part, so a killed build resumes: a part whose manifest entry was built from
the same tables and inputs and whose files still match their sha256 is kept without touching the cache.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from mars_eval.errors import MarsEvalError
from mars_eval.io import atomic_write_text
from mars_eval.kit.figures import calibration, measure, recorded
from mars_eval.kit.manifest import (
    PART_INPUTS,
    PART_TABLES,
    PARTS,
    KitManifest,
    KitPart,
    first_bad_file,
    hash_files,
    kit_tables,
    part_digest,
)

BUILDERS = {
    "tokenizer": lambda a: a.tokenizer_dir(),
    "vq": lambda a: a.vq_dir(),
    "llm": lambda a: a.stage("0", None),
    "clip": lambda a: a.clip_dir(),
    "judges": lambda a: a.judges_dir(),
}


def source_commit() -> str:
    """The commit of the code that builds the kit, '+dirty' when tracked files differ from it."""
    root = Path(__file__).resolve().parents[2]

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=30).stdout.strip()

    try:
        head = git("rev-parse", "HEAD")
        dirty = bool(git("status", "--porcelain", "--untracked-files=no"))
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{head}+dirty" if head and dirty else head or "unknown"


def build_kit(preset, out: Path, cache: Path, *, command: str, name: str | None = None, calibration_n: int = 0,
              say: Callable[[str], None] = print) -> KitManifest:
    """Build (or resume) the kit of `preset` in `out`; returns its manifest."""
    from mars_eval.recipe.pipeline import Artifacts

    out = Path(out)
    arts = Artifacts(preset, Path(cache), progress=True, from_scratch=True)
    say(f"[kit] world of preset {preset.name}")
    world = arts.world()
    built = Artifacts.done(world.parent) or {}
    tables = kit_tables(preset.tables)
    old = _previous(out)
    manifest = KitManifest(name or out.absolute().name, preset.name, tables,
                           {k: built[k] for k in ("seconds", "images") if k in built})
    commit = source_commit()
    for part in PARTS:
        want = {t: tables[t] for t in PART_TABLES[part]}
        inputs = {p: manifest.parts[p].sha256 for p in PART_INPUTS.get(part, ())}
        prev = old.parts.get(part) if old else None
        if prev is not None and _keep(prev, want, inputs, out, calibration_n):
            say(f"[kit] {part}: kept (built {prev.built}, files match the manifest)")
            manifest = manifest.with_part(prev)
            continue
        say(f"[kit] {part}: building")
        src = BUILDERS[part](arts)
        _copy_part(src, out / part)
        seconds, figures = recorded(part, Artifacts.done(src.parent) or {}, src)
        if part == "judges" and calibration_n > 0:
            say(f"[kit] judges: calibration on {calibration_n} val prompts per category")
            figures.update(calibration(out, world, calibration_n))
        files = hash_files(out, part)
        manifest = manifest.with_part(KitPart(
            name=part, tables=want, files=files, sha256=part_digest(files), inputs=inputs, seconds=seconds,
            figures=figures, checks=measure(part, out, world), commit=commit, command=command,
            built=time.strftime("%Y-%m-%dT%H:%M:%S")))
        manifest.write(out)
    manifest.write(out)
    atomic_write_text(out / "README.md", readme(manifest))
    return manifest


def _keep(prev: KitPart, tables: dict, inputs: dict, out: Path, calibration_n: int) -> bool:
    """Whether an earlier build's part stands: same tables, built on the same input parts, files intact (and,
    for the judges, calibrated when a calibration is asked for)."""
    if prev.tables != tables or prev.inputs != inputs:
        return False
    if prev.name == "judges" and calibration_n and not any(k.startswith("accuracy_clean/") for k in prev.figures):
        return False
    return first_bad_file(out, prev) is None


def _previous(out: Path) -> KitManifest | None:
    """The manifest of an earlier (possibly unfinished) build in `out`; an unreadable one is rebuilt over."""
    if not (out / "manifest.json").is_file():
        return None
    try:
        return KitManifest.read(out)
    except MarsEvalError:
        return None


TRAINING_STATE = ("train_state.*",)  # optimizer state to resume training: a kit ships finished parts only


def _copy_part(src: Path, dst: Path) -> None:
    """Replace dst with a copy of src (contents only, ordinary file modes, no training state), through a staging
    folder."""
    tmp = dst.parent / f".{dst.name}.partial-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        shutil.copytree(src, tmp, copy_function=shutil.copyfile, ignore=shutil.ignore_patterns(*TRAINING_STATE))
        shutil.rmtree(dst, ignore_errors=True)
        os.rename(tmp, dst)
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        raise MarsEvalError(f"cannot copy {src} to {dst}: {e.strerror or e}") from None


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "not recorded"
    m, s = divmod(round(seconds), 60)
    return f"{m} min {s} s" if m else f"{seconds:.1f} s"


def readme(m: KitManifest) -> str:
    """The kit's README: what it is, how it was built and checked, each part's wall time and figures."""
    parts = [m.parts[p] for p in PARTS if p in m.parts]
    commands = sorted({p.command for p in parts})
    commits = sorted({p.commit for p in parts})
    lines = [
        f"# World kit `{m.name}` (preset `{m.preset}`)", "",
        "The pretrained parts of the MARS recipe on the embedded world, as a real-scale user downloads Qwen2, a "
        "VQGAN, CLIP and judges: runs whose preset names this kit (`[kit]` table) use these parts and train only "
        "Stages I-III; `--from-scratch` ignores the kit. Generated by `mars-eval kit build` from manifest.json, "
        "which lists every file with its sha256.", "",
        "## Commands", "", "```bash", *commands, f"mars-eval kit verify {m.name}           # sha256 of every file, "
        "then the checks re-measured", f"mars-eval kit verify {m.name} --quick   # sha256 only", "```", "",
        f"Commit: {', '.join(f'`{c}`' for c in commits)}. World: "
        f"{', '.join(f'{k} {v}' for k, v in sorted(m.tables['world'].items()))} ({m.world.get('images', '?')} "
        f"images, built in {_duration(m.world.get('seconds'))}; every run builds it again).", "",
        "## Parts", "", "| part | built from | wall time | files | sha256 (part) |", "|---|---|---|---|---|",
    ]
    for p in parts:
        size = sum(f.size for f in p.files)
        lines.append(f"| `{p.name}/` | {', '.join(f'[{t}]' for t in p.tables)} | {_duration(p.seconds)} | "
                     f"{len(p.files)} ({size / 1e6:.1f} MB) | `{p.sha256[:16]}` |")
    lines += ["", "## Figures", "",
              "Recorded: what the artifact reported when it was trained. Checks: measured from the kit's files at "
              "build time; `kit verify` measures them again on a freshly built world.", ""]
    for p in parts:
        lines += [f"### {p.name}", "", "| figure | value |", "|---|---|"]
        lines += [f"| {k} | {_fmt(v)} |" for k, v in sorted(p.figures.items())]
        lines += [f"| check: {k} | {_fmt(v)} |" for k, v in sorted(p.checks.items())]
        lines.append("")
    return "\n".join(lines)
