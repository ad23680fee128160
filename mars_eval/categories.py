"""The T2I-CompBench categories, once: name (the benchmark's file key), the report's column label, the judge
weights the official scorer needs (JudgePaths fields), and whether the embedded world has the category.

Order is the paper's Table 1 (+ T2I-CompBench++'s 3D-spatial). Complex needs all three judges because its val
set mixes attribute, spatial and non-spatial prompts (the 3-in-1 score). The world scores 3D-spatial only inside
its judge calibration (its non-spatial prompts that state an occlusion), not as a CompBench column.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Category:
    name: str
    label: str
    judges: tuple[str, ...]
    world: bool = True


REGISTRY: tuple[Category, ...] = (
    Category("color", "Color", ("blip_dir",)),
    Category("shape", "Shape", ("blip_dir",)),
    Category("texture", "Texture", ("blip_dir",)),
    Category("spatial", "Spatial", ("detector_dir",)),
    Category("non_spatial", "Non-Spatial", ("clip_ckpt",)),
    Category("complex", "Complex", ("blip_dir", "detector_dir", "clip_ckpt")),
    Category("numeracy", "Numeracy", ("detector_dir",)),
    Category("3d_spatial", "3D-Spatial", ("detector_dir", "depth_dir"), world=False),
)
BY_NAME: dict[str, Category] = {c.name: c for c in REGISTRY}
NAMES: tuple[str, ...] = tuple(c.name for c in REGISTRY)
WORLD_NAMES: tuple[str, ...] = tuple(c.name for c in REGISTRY if c.world)
LABELS: dict[str, str] = {c.name: c.label for c in REGISTRY}
