"""What both suites share: a bundle's recipe artifacts, resumable per-image scoring, results rows, progress.

Per-image scores are computed in canonical chunks: the chunks of the whole item list, each always scored whole,
because a judge's float rounding can depend on the batch it runs in (as for generation, runner.py). A resumed
run recomputes exactly the chunks that miss a score, so it ends with the same scores as an uninterrupted run.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from mars_eval.bundle import BUNDLE, BundleInfo
from mars_eval.errors import MarsEvalError
from mars_eval.io import atomic_write_jsonl, read_jsonl
from mars_eval.results import append_rows, config_hash, stamp

SCORES = "scores.jsonl"
RESULTS = "results.jsonl"


# ---- the checkpoint and its recipe -----------------------------------------------------------------------
def bundle_info(ckpt: str | Path) -> BundleInfo:
    ckpt = Path(ckpt)
    if not ckpt.is_dir():
        raise MarsEvalError(f"checkpoint directory not found: {ckpt}")
    return BundleInfo.from_json(ckpt / BUNDLE)


def output_px(ckpt: Path, info: BundleInfo) -> tuple[int, int]:
    """(height, width) of the images the bundle generates (Stage III: the super-resolved size)."""
    if (Path(ckpt) / "hires").is_dir() and info.hires_px is not None:
        return tuple(info.hires_px)
    return tuple(info.image_px)


def recipe_artifacts(ckpt: Path | None, info: BundleInfo | None, progress: bool = True):
    """The recipe's `Artifacts` recorded in bundle.json (extra.recipe), or None for a bundle without one."""
    rec = (info.extra or {}).get("recipe") if info is not None else None
    if not rec:
        return None
    from mars_eval.recipe.pipeline import Artifacts

    try:
        return Artifacts.from_recipe_info(rec, progress=progress)
    except (KeyError, TypeError, AttributeError):
        raise MarsEvalError(f"{Path(ckpt) / BUNDLE}: malformed extra.recipe (needs preset, tables, cache)") from None


def no_recipe(ckpt: Path | None, what: str) -> MarsEvalError:
    where = f"{ckpt}: the bundle records no recipe" if ckpt is not None else "no --ckpt with a recipe"
    return MarsEvalError(f"{where} (bundle.json extra.recipe), so the world default cannot find its {what}; "
                         f"give {what} explicitly")


def check_world(world: Path) -> Path:
    world = Path(world)
    if not (world / "world.json").is_file():
        raise MarsEvalError(f"not a built world (no world.json): {world}")
    return world


# ---- fingerprints ---------------------------------------------------------------------------------------
def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    except OSError as e:
        raise MarsEvalError(f"cannot read {path}: {e.strerror or e}") from None
    return h.hexdigest()


def path_fingerprint(path: Path | None) -> list | None:
    """(name, size, mtime) of a file or of every file under a directory: cheap identity of judge weights."""
    if path is None:
        return None
    path = Path(path)
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    out = []
    for f in files:
        st = f.stat()
        out.append([f.relative_to(path).as_posix() if path.is_dir() else f.name, st.st_size, st.st_mtime_ns])
    return out


# ---- resumable per-image scores -------------------------------------------------------------------------
def jsonable(obj):
    """Round-trip through JSON (numpy scalars and arrays become plain numbers and lists)."""
    def default(o):
        if hasattr(o, "tolist"):
            return o.tolist()
        if isinstance(o, tuple | set):
            return list(o)
        return str(o)
    return json.loads(json.dumps(obj, default=default, ensure_ascii=False))


def score_key(**parts) -> str:
    """Everything that determines one image's score: judge, category, prompt, image bytes, position."""
    return config_hash(parts)


class ScoreStore:
    """OUT/scores.jsonl: score rows by key. Each scored chunk is appended in one write and fsynced (rewriting
    the whole file per chunk would cost O(n^2) on a 24,000-image run); a crash can only tear the last line,
    which loading drops, so those images are scored again. `compact` rewrites the file atomically (at load
    when it held a torn or superseded line, and at the end of a run)."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.rows: dict[str, dict] = {}
        if self.path.is_file():
            try:
                text = self.path.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as e:
                raise MarsEvalError(f"cannot read {self.path}: {e}") from None
            lines = text.split("\n")
            if lines[-1]:  # no final newline: a torn append from a killed run
                lines = lines[:-1]
            for i, line in enumerate(lines, 1):
                if not line.strip():
                    continue
                try:
                    r = json.loads(line)
                except json.JSONDecodeError:
                    raise MarsEvalError(f"{self.path}:{i}: not a JSON line; move the file away") from None
                if not isinstance(r, dict) or "key" not in r:
                    raise MarsEvalError(f"{self.path}:{i}: not a score row (no 'key'); move the file away")
                self.rows[r["key"]] = r
            if lines != text.split("\n") or len(self.rows) != sum(1 for x in lines if x.strip()):
                self.compact()

    def __contains__(self, key: str) -> bool:
        return key in self.rows

    def put(self, rows: Sequence[dict]) -> None:
        for r in rows:
            self.rows[r["key"]] = r
        data = "".join(json.dumps(r, ensure_ascii=False, sort_keys=True) + "\n" for r in rows).encode()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view):]
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as e:
            raise MarsEvalError(f"cannot write {self.path}: {e.strerror or e}") from None

    def compact(self) -> None:
        """One row per key, written atomically (drops superseded rows and a torn tail)."""
        atomic_write_jsonl(self.path, self.rows.values())


def score_resumable(store: ScoreStore, keys: Sequence[str], chunk: int,
                    compute: Callable[[range], list[dict]],
                    on_chunk: Callable[[int], None] | None = None) -> tuple[list[dict], int]:
    """Rows for every key, computing the canonical chunks (`range`s of `chunk` positions) that miss one.
    `compute(positions)` returns one row per position; returns (rows in key order, images newly scored)."""
    out, computed = [], 0
    for s in range(0, len(keys), chunk):
        pos = range(s, min(s + chunk, len(keys)))
        if not all(keys[i] in store for i in pos):
            rows = compute(pos)
            if len(rows) != len(pos):
                raise MarsEvalError(f"scorer returned {len(rows)} rows for {len(pos)} images")
            store.put([{**jsonable(r), "key": keys[i]} for i, r in zip(pos, rows, strict=True)])
            computed += len(pos)
        out += [store.rows[keys[i]] for i in pos]
        if on_chunk is not None:
            on_chunk(len(pos))
    return out, computed


@contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Score with a fixed thread count (like generation: it can change the rounding)."""
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


# ---- results rows ---------------------------------------------------------------------------------------
def _row_identity(row: dict) -> str:
    return json.dumps({k: v for k, v in row.items() if k not in ("commit", "time")}, sort_keys=True,
                      ensure_ascii=False, default=str)


def append_results(path: Path, rows: Sequence[dict]) -> int:
    """Append the rows not already in the file (ignoring commit and time), so rerunning a finished command
    adds nothing; returns how many were appended."""
    path = Path(path)
    have = {_row_identity(r) for r in read_jsonl(path)} if path.is_file() else set()
    new = [stamp(r) for r in map(jsonable, rows) if _row_identity(r) not in have]
    if new:
        append_rows(path, new)
    return len(new)


def write_grid_view(folder: Path, scores: dict[str, float], manifest: list[dict] | None = None) -> None:
    """`scores.jsonl` ({file, score}) beside a folder's manifest, which the report's image grid reads; with
    `manifest`, also write that manifest (for folders that are not generate folders)."""
    folder.mkdir(parents=True, exist_ok=True)
    if manifest is not None:
        atomic_write_jsonl(folder / "manifest.jsonl", manifest)
    atomic_write_jsonl(folder / SCORES, [{"file": f, "score": s} for f, s in scores.items()])


def relative_to(path: Path, root: Path) -> str:
    try:
        return Path(path).resolve().relative_to(Path(root).resolve()).as_posix()
    except ValueError:
        return str(Path(path).resolve())


# ---- progress -------------------------------------------------------------------------------------------
class Bars:
    """Progress bars (mars_eval.progress) on an interactive stderr; silent otherwise."""

    def __init__(self, enabled: bool):
        self.bar = None
        if enabled:
            from mars_eval.progress import console, progress

            if console.is_terminal:
                self.bar = progress()
        self.started = False

    def task(self, description: str, total: int | None) -> Callable[[int], None]:
        if self.bar is None:
            return lambda n: None
        if not self.started:
            self.bar.start()
            self.started = True
        tid = self.bar.add_task(description, total=total, rate="")
        return lambda n: self.bar.advance(tid, n)

    def generation(self, description: str, then: Callable[[int, int], None] | None = None):
        """A generate_folder progress callback (n, total) that opens its bar on the first report."""
        state: dict = {}

        def on_progress(n: int, total: int) -> None:
            if "advance" not in state:
                state["advance"] = self.task(description, total)
            state["advance"](n)
            if then is not None:
                then(n, total)
        return on_progress

    def close(self) -> None:
        if self.bar is not None and self.started:
            self.bar.stop()
