"""Prompt sets: the benchmark prompt lists shipped as package data, and any user file, read the same way.

Readers are strict about encoding and lenient about layout, because the public files are messy:
T2I-CompBench files mix CRLF and LF and often lack a final newline, some lists repeat prompts
(kept in order, counted and reported, never silently dropped), COCO-30k has 97 captions with line
breaks inside quotes (so it is read with a CSV reader, never line by line).
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import unicodedata
from collections import Counter
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from mars_eval.categories import NAMES
from mars_eval.errors import MarsEvalError


@dataclass(frozen=True)
class Prompt:
    index: int  # position in the set: image file names derive from this, never from the text
    text: str
    seed: int | None = None  # a per-prompt seed where the benchmark fixes one (COCO-30k `evaluation_seed`)
    meta: dict = field(default_factory=dict, compare=False, hash=False)


@dataclass(frozen=True)
class PromptSet:
    name: str
    prompts: tuple[Prompt, ...]
    source: str  # file path or package-data name

    def __len__(self) -> int:
        return len(self.prompts)

    def __iter__(self):
        return iter(self.prompts)

    def __getitem__(self, i: int) -> Prompt:
        return self.prompts[i]

    @property
    def texts(self) -> list[str]:
        return [p.text for p in self.prompts]

    @property
    def duplicates(self) -> dict[str, int]:
        """Prompts that occur more than once, with their counts (all occurrences are kept in the set)."""
        return {t: n for t, n in Counter(self.texts).items() if n > 1}

    @property
    def n_unique(self) -> int:
        return len(set(self.texts))

    @property
    def digest(self) -> str:
        """sha256 of the prompt texts in order: identifies the set in cache keys and manifests."""
        h = hashlib.sha256()
        for t in self.texts:
            h.update(t.encode("utf-8") + b"\0")
        return h.hexdigest()

    def head(self, n: int) -> PromptSet:
        return PromptSet(f"{self.name}[:{n}]", self.prompts[:n], self.source)

    def summary(self) -> str:
        dup = self.duplicates
        extra = sum(dup.values()) - len(dup)
        return f"{self.name}: {len(self)} prompts, {self.n_unique} unique" + (
            f" ({extra} repeats of {len(dup)} prompts kept)" if dup else ""
        )

    # ---------------------------------------------------------------- readers

    @classmethod
    def from_text(cls, text: str, name: str, source: str) -> PromptSet:
        """One prompt per line (T2I-CompBench / GenEval `generation_prompts.txt` format)."""
        text = text.removeprefix("\ufeff")
        prompts = []
        for lineno, line in enumerate(text.replace("\r\n", "\n").replace("\r", "\n").split("\n"), 1):
            line = line.strip()
            if not line:
                continue
            _check_text(line, source, lineno)
            prompts.append(Prompt(len(prompts), line))
        if not prompts:
            raise MarsEvalError(f"{source}: no prompts (the file is empty)")
        return cls(name, tuple(prompts), source)

    @classmethod
    def from_csv(cls, text: str, name: str, source: str) -> PromptSet:
        """COCO-30k layout: columns `prompt` (or `caption`), optional `evaluation_seed` and `image_id`."""
        reader = csv.DictReader(io.StringIO(text.removeprefix("\ufeff"), newline=""))
        cols = reader.fieldnames or []
        key = "prompt" if "prompt" in cols else "caption" if "caption" in cols else None
        if key is None:
            raise MarsEvalError(f"{source}: CSV has no 'prompt' or 'caption' column (columns: {cols})")
        prompts = []
        for row in reader:
            t = (row.get(key) or "").strip()
            if not t:
                continue
            _check_text(t, source, reader.line_num)
            seed = row.get("evaluation_seed")
            try:
                seed = int(seed) if seed not in (None, "") else None
            except ValueError:
                raise MarsEvalError(f"{source}:{reader.line_num}: evaluation_seed {seed!r} is not an integer") from None
            meta = {k: v for k, v in row.items() if k not in (key, "evaluation_seed") and k is not None}
            prompts.append(Prompt(len(prompts), t, seed, meta))
        if not prompts:
            raise MarsEvalError(f"{source}: no prompts")
        return cls(name, tuple(prompts), source)

    @classmethod
    def from_jsonl(cls, text: str, name: str, source: str) -> PromptSet:
        """GenEval `evaluation_metadata.jsonl` layout: one object per line with a `prompt` key."""
        prompts = []
        # split on "\n" only: str.splitlines would also break at U+2028 etc., which JSON strings may hold raw
        for lineno, line in enumerate(text.removeprefix("\ufeff").split("\n"), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                t = row["prompt"].strip()
            except (json.JSONDecodeError, KeyError, AttributeError, TypeError):
                raise MarsEvalError(f"{source}:{lineno}: not a JSON object with a 'prompt' string") from None
            _check_text(t, source, lineno)
            prompts.append(Prompt(len(prompts), t, None, {k: v for k, v in row.items() if k != "prompt"}))
        if not prompts:
            raise MarsEvalError(f"{source}: no prompts")
        return cls(name, tuple(prompts), source)

    @classmethod
    def from_file(cls, path: str | Path, name: str | None = None) -> PromptSet:
        path = Path(path)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise MarsEvalError(f"prompt file not found: {path}") from None
        except IsADirectoryError:
            raise MarsEvalError(f"prompt file is a directory: {path}") from None
        except OSError as e:
            raise MarsEvalError(f"cannot read prompt file {path}: {e.strerror or e}") from None
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as e:
            raise MarsEvalError(f"{path}: not UTF-8 text (byte {e.start})") from None
        reader = {".csv": cls.from_csv, ".jsonl": cls.from_jsonl}.get(path.suffix.lower(), cls.from_text)
        return reader(text, name or path.stem, str(path))

    @classmethod
    def builtin(cls, name: str) -> PromptSet:
        """A shipped prompt set by name: see `BUILTIN` (e.g. 'color_val', 'coco-30k', 'geneval')."""
        if name not in BUILTIN:
            raise MarsEvalError(f"unknown prompt set {name!r}; known: {', '.join(sorted(BUILTIN))}")
        rel = BUILTIN[name]
        res = resources.files("mars_eval.data").joinpath(rel)
        text = res.read_bytes().decode("utf-8")
        reader = {".csv": cls.from_csv, ".jsonl": cls.from_jsonl}.get(Path(rel).suffix, cls.from_text)
        return reader(text, name, f"mars_eval/data/{rel}")

    @classmethod
    def resolve(cls, spec: str | Path) -> PromptSet:
        """A built-in name or a path to a file."""
        if str(spec) in BUILTIN:
            return cls.builtin(str(spec))
        return cls.from_file(spec)


def _check_text(t: str, source: str, lineno: int) -> None:
    """Reject NUL and other control characters (a tab is allowed): they break file names, tokenizers and HTML."""
    for ch in t:
        if ch != "\t" and unicodedata.category(ch) == "Cc":
            raise MarsEvalError(f"{source}:{lineno}: prompt contains control character U+{ord(ch):04X}")


COMPBENCH_CATEGORIES = NAMES  # T2I-CompBench's categories, Table 1 order (mars_eval.categories)


def _builtin_table() -> dict[str, str]:
    table: dict[str, str] = {}
    for c in COMPBENCH_CATEGORIES:
        for split in ("", "_train", "_val"):
            table[f"{c}{split}"] = f"t2i_compbench/{c}{split}.txt"
    for c in ("color", "shape", "texture"):
        for s in ("seen", "unseen"):
            table[f"{c}_val_{s}"] = f"t2i_compbench/{c}_val_{s}.txt"
    for split in ("train", "val"):
        for k in ("action", "spatial", "spatialaction"):
            table[f"complex_{split}_{k}"] = f"t2i_compbench/complex_{split}_{k}.txt"
    table["new_objects"] = "t2i_compbench/new_objects.txt"
    table["coco-30k"] = "coco/coco_30k.csv"
    table["geneval"] = "geneval/evaluation_metadata.jsonl"
    table["geneval-prompts"] = "geneval/generation_prompts.txt"
    return table


BUILTIN: dict[str, str] = _builtin_table()

