"""How a world draws its scenes: where objects go and what is behind them (the world's `[world]` table).

A caption fixes what is in a scene; the style fixes how much else an image varies. The default style is the
rich world (objects anywhere, six kinds of textured backgrounds). The `slots` layout puts each object at a
fixed place given by the caption's order and relation (two objects: left and right half; "A above B": top and
bottom; counts on a grid), with a small jitter; `plain` backgrounds are one neutral grey, the same in every
scene (a per-scene muted colour taught Stage I to follow prompts 5x slower). Together they make an
image a near-function of its caption, which a small generator on a CPU budget can learn to follow (measured in
reports/experiments/2026-12-world-style.md): with free layouts and varied backgrounds the caption informs only
a few of the 64 codes, wherever the objects happen to be, and the unstated background dominates the loss.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from mars_ref.errors import MarsRefError

LAYOUTS: tuple[str, ...] = ("free", "slots")
BACKGROUND_STYLES: tuple[str, ...] = ("varied", "plain")


@dataclass(frozen=True)
class WorldStyle:
    layout: str = "free"
    backgrounds: str = "varied"

    def __post_init__(self):
        if self.layout not in LAYOUTS:
            raise MarsRefError(f"unknown world layout {self.layout!r} (expected one of {', '.join(LAYOUTS)})")
        if self.backgrounds not in BACKGROUND_STYLES:
            raise MarsRefError(f"unknown world backgrounds {self.backgrounds!r} "
                               f"(expected one of {', '.join(BACKGROUND_STYLES)})")

    @classmethod
    def from_table(cls, table: dict | None) -> WorldStyle:
        """The style fields of a preset's `[world]` table (other keys are the build's)."""
        t = table or {}
        return cls(**{k: t[k] for k in ("layout", "backgrounds") if k in t})

    def to_dict(self) -> dict:
        return asdict(self)


DEFAULT_STYLE = WorldStyle()


def world_style(world_dir: str | Path) -> WorldStyle:
    """The style a built world was drawn with (recorded in its world.json; older builds are the default)."""
    marker = Path(world_dir) / "world.json"
    if not marker.is_file():
        return DEFAULT_STYLE
    return WorldStyle(**json.loads(marker.read_text(encoding="utf-8")).get("style", {}))
