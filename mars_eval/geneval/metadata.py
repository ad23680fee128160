"""GenEval prompt metadata: one prompt's task tag and the objects it asks for (`evaluation_metadata.jsonl`).

A line is `{"tag": TASK, "include": [CLAUSE, ...], "exclude": [...]?, "prompt": TEXT}`. Include clauses are
ANDed: each asks for at least `count` objects of `class`, optionally all of one `color`, optionally each in a
`position` relative to every object of an earlier clause (`[relation, clause index]`; GenEval writes the target
first: "a dog right of a teddy bear" = include [teddy bear, dog with position ["right of", 0]]). An exclude
clause fails the image when `count` or more objects of its class are found: counting prompts use it to ask for
exactly N. Parsing checks every field, so a malformed line is a one-line error instead of a silent 0.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from mars_eval.errors import MarsEvalError

# the six tasks in GenEval's order (its README table), with the report's column labels
TASKS: tuple[str, ...] = ("single_object", "two_object", "counting", "colors", "position", "color_attr")
TASK_LABELS: dict[str, str] = {"single_object": "Single Obj.", "two_object": "Two Obj.", "counting": "Counting",
                               "colors": "Colors", "position": "Position", "color_attr": "Color Attr."}
# the official colour classifier's classes, in its order (evaluation/evaluate_images.py COLORS)
COLORS: tuple[str, ...] = ("red", "orange", "yellow", "green", "blue", "purple", "pink", "brown", "black", "white")
RELATIONS: tuple[str, ...] = ("left of", "right of", "above", "below")
BUILTIN = "geneval/evaluation_metadata.jsonl"


@dataclass(frozen=True)
class Require:
    """An include clause: at least `count` objects of `cls` (all `color`; each `position[0]` of clause
    `position[1]`'s objects)."""

    cls: str
    count: int
    color: str | None = None
    position: tuple[str, int] | None = None


@dataclass(frozen=True)
class Exclude:
    """An exclude clause: the image fails when `count` or more objects of `cls` are found."""

    cls: str
    count: int


@dataclass(frozen=True)
class PromptSpec:
    tag: str
    prompt: str
    include: tuple[Require, ...]
    exclude: tuple[Exclude, ...] = ()

    @property
    def classes(self) -> tuple[str, ...]:
        """Every class name the prompt's clauses name, in order of first mention."""
        return tuple(dict.fromkeys([r.cls for r in self.include] + [e.cls for e in self.exclude]))

    def to_dict(self) -> dict:
        """The official line layout (tag, include, exclude when present, prompt)."""
        inc = []
        for r in self.include:
            d: dict = {"class": r.cls, "count": r.count}
            if r.color is not None:
                d["color"] = r.color
            if r.position is not None:
                d["position"] = [r.position[0], r.position[1]]
            inc.append(d)
        out: dict = {"tag": self.tag, "include": inc}
        if self.exclude:
            out["exclude"] = [{"class": e.cls, "count": e.count} for e in self.exclude]
        out["prompt"] = self.prompt
        return out

    @classmethod
    def from_dict(cls, d, where: str) -> PromptSpec:
        """Parse one metadata object; `where` names it in errors (e.g. "file.jsonl:12")."""
        if not isinstance(d, dict):
            raise MarsEvalError(f"{where}: GenEval metadata must be a JSON object, got {type(d).__name__}")
        tag, prompt = d.get("tag"), d.get("prompt")
        if tag not in TASKS:
            raise MarsEvalError(f"{where}: unknown GenEval tag {tag!r} (expected one of {', '.join(TASKS)})")
        if not isinstance(prompt, str) or not prompt.strip():
            raise MarsEvalError(f"{where}: 'prompt' must be a non-empty string")
        include = d.get("include")
        if not isinstance(include, list) or not include:
            raise MarsEvalError(f"{where}: 'include' must be a non-empty list of clauses")
        exclude = d.get("exclude", [])
        if not isinstance(exclude, list):
            raise MarsEvalError(f"{where}: 'exclude' must be a list of clauses")
        inc = tuple(_require(c, i, where) for i, c in enumerate(include))
        exc = tuple(Exclude(*_class_count(c, where, "exclude")) for c in exclude)
        return cls(tag, prompt.strip(), inc, exc)


def _class_count(c, where: str, part: str) -> tuple[str, int]:
    if not isinstance(c, dict):
        raise MarsEvalError(f"{where}: each {part} clause must be an object, got {c!r}")
    name, count = c.get("class"), c.get("count")
    if not isinstance(name, str) or not name:
        raise MarsEvalError(f"{where}: {part} clause without a 'class' name: {c!r}")
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise MarsEvalError(f"{where}: {part} clause for {name!r} needs an integer 'count' >= 1, got {count!r}")
    return name, count


def _require(c, i: int, where: str) -> Require:
    name, count = _class_count(c, where, "include")
    color = c.get("color")
    if color is not None and color not in COLORS:
        raise MarsEvalError(f"{where}: colour {color!r} of {name!r} is not one of GenEval's {', '.join(COLORS)}")
    pos = c.get("position")
    if pos is not None:
        ok = (isinstance(pos, list | tuple) and len(pos) == 2 and pos[0] in RELATIONS
              and isinstance(pos[1], int) and not isinstance(pos[1], bool) and 0 <= pos[1] < i)
        if not ok:
            raise MarsEvalError(f"{where}: position {pos!r} of {name!r} must be [relation, earlier clause index] "
                                f"with a relation in {', '.join(RELATIONS)}")
        pos = (pos[0], pos[1])
    return Require(name, count, color, pos)


def parse_lines(text: str, source: str) -> list[PromptSpec]:
    """Every non-empty line of an `evaluation_metadata.jsonl` text, in order."""
    out = []
    for lineno, line in enumerate(text.removeprefix("\ufeff").split("\n"), 1):
        if not line.strip():
            continue
        try:
            d = json.loads(line)
        except json.JSONDecodeError:
            raise MarsEvalError(f"{source}:{lineno}: not a JSON line") from None
        out.append(PromptSpec.from_dict(d, f"{source}:{lineno}"))
    if not out:
        raise MarsEvalError(f"{source}: no GenEval prompts")
    return out


def read_metadata(path: str | Path) -> list[PromptSpec]:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise MarsEvalError(f"cannot read {path}: {getattr(e, 'strerror', None) or e}") from None
    return parse_lines(text, str(path))


def builtin_metadata() -> list[PromptSpec]:
    """The 553 official prompts (package data, github.com/djghosh13/geneval `prompts/`)."""
    text = resources.files("mars_eval.data").joinpath(BUILTIN).read_bytes().decode("utf-8")
    return parse_lines(text, f"mars_eval/data/{BUILTIN}")


def metadata_jsonl(specs: list[PromptSpec], extra: list[dict] | None = None) -> str:
    """The lines of an `evaluation_metadata.jsonl` (each spec's official fields, then `extra[i]`'s keys)."""
    extra = extra or [{} for _ in specs]
    return "".join(json.dumps({**s.to_dict(), **e}, ensure_ascii=False) + "\n"
                   for s, e in zip(specs, extra, strict=True))
