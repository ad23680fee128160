"""Where kits live, how a preset's `[kit]` table names one, and the opened kit `Artifacts` reads its parts from.

A shipped kit is the directory `mars_eval/kits/NAME/` (package data, found in an installed package too); a
preset may instead give any kit directory by path:

    [kit]
    name = "xs"          # mars_eval/kits/xs/
    # path = "my-kit"    # or a kit directory, relative to the preset file
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from mars_eval.errors import MarsEvalError
from mars_eval.kit.manifest import (
    MANIFEST,
    PART_TABLES,
    PARTS,
    KitManifest,
    first_bad_file,
    kit_tables,
    table_difference,
)

KIT_KEYS = ("name", "path")


def kits_root() -> Path:
    """The folder of shipped kits, `mars_eval/kits/`."""
    return Path(str(resources.files("mars_eval").joinpath("kits")))


def known_kits() -> list[str]:
    root = kits_root()
    return sorted(p.name for p in root.iterdir() if (p / MANIFEST).is_file()) if root.is_dir() else []


def unknown_kit(name: str) -> MarsEvalError:
    known = ", ".join(known_kits()) or "none shipped yet (a kit is a folder mars_eval/kits/NAME/ written by " \
                                      "`mars-eval kit build`)"
    return MarsEvalError(f"unknown kit {name!r}; known kits: {known}")


def find_kit(spec: str) -> Path:
    """A kit directory or the name of a shipped kit -> the kit directory."""
    path = Path(spec)
    if (path / MANIFEST).is_file():
        return path.absolute()
    if path.name == spec and spec in known_kits():
        return kits_root() / spec
    if path.is_dir():
        raise MarsEvalError(f"{path} is not a kit directory (no {MANIFEST})")
    raise unknown_kit(spec)


def check_kit_table(table, base: Path | None, source: str) -> dict:
    """Validate a preset's `[kit]` table; returns it with a relative `path` resolved against `base` (the preset
    file's folder), so the table names the same kit wherever it is read later (bundle.json, ablate.json)."""
    if not isinstance(table, dict) or len(table) != 1 or set(table) - set(KIT_KEYS):
        got = sorted(table) if isinstance(table, dict) else table
        raise MarsEvalError(f"{source} [kit]: give exactly one of name = \"NAME\" (a shipped kit) or "
                            f"path = \"DIR\" (a kit directory), got {got!r}")
    (key, value), = table.items()
    if not isinstance(value, str) or not value:
        raise MarsEvalError(f"{source} [kit]: {key} must be a non-empty string, got {value!r}")
    if key == "name":
        if value not in known_kits():
            raise MarsEvalError(f"{source} [kit]: {unknown_kit(value)}")
        return {"name": value}
    path = Path(value).expanduser()
    if not path.is_absolute() and base is not None:
        path = base / path
    if not (path / MANIFEST).is_file():
        raise MarsEvalError(f"{source} [kit]: {path} is not a kit directory (no {MANIFEST})")
    return {"path": str(path.absolute())}


def kit_dir_of(table: dict) -> Path:
    """The directory a (checked) `[kit]` table names."""
    if "name" in table:
        if table["name"] not in known_kits():
            raise unknown_kit(table["name"])
        return kits_root() / table["name"]
    return Path(table["path"])


class Kit:
    """An opened kit: its manifest, and its part folders, each part's files checked against the manifest's
    sha256 the first time it is used (a damaged kit fails before it trains anything)."""

    def __init__(self, root: Path):
        self.root = Path(root).absolute()
        self.manifest = KitManifest.read(self.root)
        self._verified: set[str] = set()

    @property
    def name(self) -> str:
        return self.manifest.name

    def check_preset(self, preset) -> None:
        """One-line error unless the kit holds every part and was built from exactly the preset's tables."""
        missing = [p for p in PARTS if p not in self.manifest.parts]
        if missing:
            raise MarsEvalError(f"kit {self.name} ({self.root}) lacks parts {missing}: an unfinished "
                                "`mars-eval kit build`?")
        want = kit_tables(preset.tables)
        for part in PARTS:
            got = self.manifest.parts[part].tables
            diff = table_difference(got, want, PART_TABLES[part])
            if diff:
                raise MarsEvalError(f"preset {preset.name}: part {part} of kit {self.name} was built from other "
                                    f"tables, {diff}; "
                                    "use --from-scratch to build every artifact from the preset, or rebuild the "
                                    "kit (mars-eval kit build)")

    def part_dir(self, part: str) -> Path:
        if part not in self._verified:
            bad = first_bad_file(self.root, self.manifest.parts[part])
            if bad:
                raise MarsEvalError(f"kit {self.name} ({self.root}): {bad}; check it with `mars-eval kit verify "
                                    f"{self.root}`")
            self._verified.add(part)
        return self.root / part

    def identity(self, part: str) -> str:
        """What later stages' cache keys hold in place of a path: the part's content digest."""
        return f"kit:{self.name}/{part}@{self.manifest.parts[part].sha256}"

    def identity_of(self, path: Path) -> str | None:
        path = Path(path).absolute()
        return next((self.identity(p) for p in PARTS if path == self.root / p), None)
