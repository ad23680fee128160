"""The embedded bilingual world: procedural compositional scenes with full ground truth (docs/world.md).

Library API (everything is deterministic given a `numpy.random.Generator` or a seed):

    CATEGORIES                                  ("color", "shape", "texture", "spatial", "non_spatial",
                                                 "complex", "numeracy")
    sample_scene(category, rng, aspect=(1, 1), style=DEFAULT_STYLE) -> Scene
    training_scene(rng, held_out) -> Scene      a scene of a random category whose caption is no val prompt
    WorldStyle(layout, backgrounds)             how scenes are drawn ("free"/"slots", "varied"/"plain");
    world_style(world_dir) -> WorldStyle        the style a built world was drawn with
    render(scene, width, height) -> PIL.Image   anti-aliased RGB; width:height must equal scene.aspect
    caption(scene, lang, res=None) -> str       lang "en" or "zh"; res=(w, h) prepends "<res WxH> "
    parse_caption(text, lang) -> dict           {"objects": [...], "relations": [...], "res": [w, h] | None},
                                                equal to scene.truth(res) for the scene's caption
    Scene.to_dict() / Scene.from_dict(d)        JSON-able ground truth (groups, relations, drawn objects)
    relation_holds(a, b, rel, z_a, z_b)         the geometric meaning of each relation, for judges
    build_world(out_dir, n, seed, ...)          all corpora + prompt sets into one directory (atomic)
    make_prompt_sets(out_dir, seed)             T2I-CompBench-format prompt files with ground-truth JSONL

Scenes are described at two levels: `Scene.groups`/`Scene.relations` are what the caption says (counts and the
attributes it names; None where it is silent) and `Scene.objects` are the drawn objects (every attribute, box,
drawing order). Coordinates are in units of the image's shorter side, so one scene renders at any resolution.
"""

from mars_ref.world.build import build_world, make_prompt_sets, training_scene
from mars_ref.world.captions import LANGS, caption
from mars_ref.world.lexicon import COLORS, KINDS, RELATIONS, SHAPES, TEXTURES
from mars_ref.world.parse import parse_caption
from mars_ref.world.render import render
from mars_ref.world.sampling import (
    CATEGORIES,
    COMPLEX_KINDS,
    complex_kind,
    realize,
    sample_scene,
    sample_spec,
)
from mars_ref.world.scene import Background, Group, Obj, Relation, Scene, relation_holds, scene_relations_hold
from mars_ref.world.style import DEFAULT_STYLE, WorldStyle, world_style

__all__ = [
    "CATEGORIES",
    "DEFAULT_STYLE",
    "COLORS",
    "COMPLEX_KINDS",
    "KINDS",
    "LANGS",
    "RELATIONS",
    "SHAPES",
    "TEXTURES",
    "Background",
    "Group",
    "Obj",
    "Relation",
    "Scene",
    "build_world",
    "caption",
    "complex_kind",
    "make_prompt_sets",
    "parse_caption",
    "realize",
    "relation_holds",
    "render",
    "sample_scene",
    "sample_spec",
    "scene_relations_hold",
    "training_scene",
    "WorldStyle",
    "world_style",
]
