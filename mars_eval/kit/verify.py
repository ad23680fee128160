"""`mars-eval kit verify`: every file of a kit against its sha256 in the manifest, then (unless quick) each part's
checks measured again on a freshly built world, beside the values the manifest recorded at build time."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from mars_eval.errors import MarsEvalError
from mars_eval.kit.figures import measure
from mars_eval.kit.manifest import PARTS, KitManifest, first_bad_file


@dataclass(frozen=True)
class Check:
    """One re-measured figure of a part: the manifest's value (measured at build time) and today's."""

    part: str
    figure: str
    kit: float | int | str | None
    measured: float | int | str

    @property
    def delta(self) -> float | None:
        ok = all(isinstance(v, int | float) and not isinstance(v, bool) for v in (self.kit, self.measured))
        return float(self.measured) - float(self.kit) if ok else None

    def to_dict(self) -> dict:
        return {**asdict(self), "delta": self.delta}


def verify_files(kit_dir: Path, manifest: KitManifest, advance: Callable[[str], None] = lambda part: None) -> int:
    """Check every part's files; raises a one-line error naming the first bad file. Returns the file count."""
    missing = [p for p in PARTS if p not in manifest.parts]
    if missing:
        raise MarsEvalError(f"kit {manifest.name} ({kit_dir}) lacks parts {missing}: an unfinished `kit build`?")
    for part in PARTS:
        bad = first_bad_file(kit_dir, manifest.parts[part])
        if bad:
            raise MarsEvalError(f"kit {manifest.name} ({kit_dir}): {bad}")
        advance(part)
    return sum(len(manifest.parts[p].files) for p in PARTS)


def kit_world(manifest: KitManifest, cache: Path) -> Path:
    """The kit's world, built (or found) in the artifact cache exactly as a run of its preset builds it."""
    from mars_eval.recipe.pipeline import Artifacts, Preset
    from mars_ref.world.build import FORMAT

    table = dict(manifest.tables["world"])
    fmt = table.pop("format", None)
    if fmt != FORMAT:
        raise MarsEvalError(f"kit {manifest.name} was built on world format {fmt!r}, this code builds {FORMAT!r}: "
                            "its checks cannot be measured again (rebuild the kit, or use --quick)")
    return Artifacts(Preset(manifest.preset, {"world": table}), cache, progress=False, from_scratch=True).world()


def remeasure(kit_dir: Path, manifest: KitManifest, world: Path,
              advance: Callable[[str], None] = lambda part: None) -> list[Check]:
    rows = []
    for part in PARTS:
        recorded = manifest.parts[part].checks
        rows += [Check(part, k, recorded.get(k), v) for k, v in measure(part, kit_dir, world).items()]
        advance(part)
    return rows
