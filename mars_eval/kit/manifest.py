"""A kit's manifest: what each part was built from, its files with their sha256, and its figures.

The manifest is the kit's contract with `Artifacts`: a part is used in place of training only when the tables it
was built from equal the running preset's, and later stages key their caches by the part's digest, so a changed
kit retrains what depends on it.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from mars_eval.errors import MarsEvalError
from mars_eval.io import atomic_write_json
from mars_eval.suites.common import sha256_file

KIT_FORMAT = "mars-kit/1"
MANIFEST = "manifest.json"
PARTS = ("tokenizer", "vq", "llm", "clip", "judges")
# the preset tables each part is built from (the world table carries the world FORMAT, clip / judges theirs)
PART_TABLES = {
    "tokenizer": ("world", "tokenizer"),
    "vq": ("world", "vq"),
    "llm": ("world", "tokenizer", "model", "stage0"),
    "clip": ("world", "clip"),
    "judges": ("world", "vq", "judges"),
}
PART_INPUTS = {"llm": ("tokenizer",), "judges": ("vq",)}  # parts trained on another part's output
KIT_TABLES = ("world", "tokenizer", "vq", "model", "stage0", "clip", "judges")
# [model] keys that shape the visual expert, not the pretrained LLM: one kit serves every value of them
EXPERT_FIELDS = ("caption_kv",)


def kit_tables(preset_tables: dict) -> dict[str, dict]:
    """The tables a kit records and compares: the preset's, plus the format of each world-scale artifact whose
    generator code can change what the same table builds."""
    from mars_eval.judges.world_judges import FORMAT as JUDGES_FORMAT
    from mars_eval.world_clip.train import FORMAT as CLIP_FORMAT
    from mars_ref.world.build import FORMAT as WORLD_FORMAT

    formats = {"world": WORLD_FORMAT, "clip": CLIP_FORMAT, "judges": JUDGES_FORMAT}
    out = {t: dict(preset_tables.get(t, {})) for t in KIT_TABLES}
    out["model"] = {k: v for k, v in out["model"].items() if k not in EXPERT_FIELDS}
    for t, fmt in formats.items():
        out[t]["format"] = fmt
    return json.loads(json.dumps(out))  # plain JSON values, as they come back from manifest.json


def table_difference(kit: dict[str, dict], want: dict[str, dict], tables) -> str | None:
    """'[table] key: kit X, this run Y' for the first of `tables` that differs, else None. `want` comes from the
    running preset and code (formats), so a format bump reads as a difference too."""
    for t in tables:
        a, b = kit.get(t, {}), want.get(t, {})
        if a == b:
            continue
        key = next(k for k in sorted(set(a) | set(b)) if a.get(k, "<unset>") != b.get(k, "<unset>"))
        return f"[{t}] {key}: kit {a.get(key, '<unset>')!r}, this run {b.get(key, '<unset>')!r}"
    return None


@dataclass(frozen=True)
class KitFile:
    path: str  # relative to the kit directory, '/'-separated
    size: int
    sha256: str


@dataclass(frozen=True)
class KitPart:
    """One artifact of the kit: `files` live under DIR/<name>/, `sha256` is the part's identity."""

    name: str
    tables: dict[str, dict]  # the kit tables (preset table + format) it was built from, by table name
    files: tuple[KitFile, ...]
    sha256: str
    inputs: dict[str, str]  # part name -> sha256 of the kit part it was trained on
    seconds: float | None  # wall time the artifact took to build (as the artifact recorded it)
    figures: dict  # what the artifact recorded about itself (DONE.json, its own summary)
    checks: dict  # figures measured from the kit's files at build time; `kit verify` re-measures them
    commit: str
    command: str
    built: str  # local time the part was copied into the kit

    @classmethod
    def from_dict(cls, d: dict) -> KitPart:
        files = tuple(KitFile(str(f["path"]), int(f["size"]), str(f["sha256"])) for f in d["files"])
        return cls(name=d["name"], tables={k: dict(v) for k, v in d["tables"].items()}, files=files, sha256=d["sha256"],
                   inputs=dict(d["inputs"]), seconds=d["seconds"], figures=dict(d["figures"]),
                   checks=dict(d["checks"]), commit=d["commit"], command=d["command"], built=d["built"])


@dataclass(frozen=True)
class KitManifest:
    name: str
    preset: str
    tables: dict[str, dict]  # every kit table, for readers; each part records the ones it was built from
    world: dict  # the world build the parts were trained on: seconds, images
    parts: dict[str, KitPart] = field(default_factory=dict)
    format: str = KIT_FORMAT

    def to_dict(self) -> dict:
        d = asdict(self)
        d["parts"] = {k: asdict(p) for k, p in self.parts.items()}
        return d

    @classmethod
    def from_dict(cls, d: dict, source: str = MANIFEST) -> KitManifest:
        if not isinstance(d, dict) or d.get("format") != KIT_FORMAT:
            got = d.get("format") if isinstance(d, dict) else type(d).__name__
            raise MarsEvalError(f"{source}: not a kit manifest of format {KIT_FORMAT} (format {got!r})")
        try:
            parts = {k: KitPart.from_dict(p) for k, p in d["parts"].items()}
            return cls(name=str(d["name"]), preset=str(d["preset"]), tables=dict(d["tables"]),
                       world=dict(d["world"]), parts=parts)
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise MarsEvalError(f"{source}: malformed kit manifest ({type(e).__name__}: {e})") from None

    @classmethod
    def read(cls, kit_dir: Path) -> KitManifest:
        path = Path(kit_dir) / MANIFEST
        try:
            d = json.loads(path.read_text(encoding="utf-8"))
        except OSError as e:
            raise MarsEvalError(f"cannot read kit manifest {path}: {e.strerror or e}") from None
        except ValueError:
            raise MarsEvalError(f"{path}: not JSON") from None
        return cls.from_dict(d, str(path))

    def write(self, kit_dir: Path) -> Path:
        return atomic_write_json(Path(kit_dir) / MANIFEST, self.to_dict())

    def with_part(self, part: KitPart) -> KitManifest:
        return KitManifest(self.name, self.preset, self.tables, self.world, {**self.parts, part.name: part})


def hash_files(kit_dir: Path, part: str) -> tuple[KitFile, ...]:
    """Every file under kit_dir/part, sorted by path."""
    root = Path(kit_dir) / part
    files = sorted(p for p in root.rglob("*") if p.is_file())
    return tuple(KitFile(p.relative_to(kit_dir).as_posix(), p.stat().st_size, sha256_file(p)) for p in files)


def part_digest(files: tuple[KitFile, ...]) -> str:
    """The part's identity: sha256 over its sorted (path, sha256) pairs."""
    text = "".join(f"{f.path}\0{f.sha256}\n" for f in sorted(files, key=lambda f: f.path))
    return hashlib.sha256(text.encode()).hexdigest()


def first_bad_file(kit_dir: Path, part: KitPart) -> str | None:
    """A one-line reason naming the first file of `part` that is missing, resized, altered or unlisted."""
    kit_dir = Path(kit_dir)
    for f in part.files:
        p = kit_dir / f.path
        if not p.is_file():
            return f"{f.path} is missing"
        if p.stat().st_size != f.size:
            return f"{f.path} has {p.stat().st_size} bytes, the manifest says {f.size}"
        if sha256_file(p) != f.sha256:
            return f"{f.path} does not match its sha256 in the manifest"
    listed = {f.path for f in part.files}
    extra = sorted(p.relative_to(kit_dir).as_posix() for p in (kit_dir / part.name).rglob("*")
                   if p.is_file() and p.relative_to(kit_dir).as_posix() not in listed)
    return f"{extra[0]} is not in the manifest" if extra else None
