"""World scenes: the samplers' contract (relations hold, objects fit), JSON round trips, and rendering."""

import json

import numpy as np
import pytest

from mars_ref.errors import MarsRefError
from mars_ref.world import CATEGORIES, Scene, render, sample_scene, scene_relations_hold
from mars_ref.world import lexicon as L
from mars_ref.world.sampling import OCCLUSION_RELATIONS
from mars_ref.world.scene import spatial_holds


@pytest.mark.parametrize("category", CATEGORIES)
def test_sampled_scenes_satisfy_their_relations_and_fit(category):
    rng = np.random.default_rng([21, CATEGORIES.index(category)])
    for aspect in ((1, 1), (2, 1), (2, 3)):
        for _ in range(25):
            scene = sample_scene(category, rng, aspect)
            assert scene_relations_hold(scene)
            cw, ch = scene.canvas
            for o in scene.objects:
                x0, y0, x1, y1 = o.box
                assert 0 <= x0 and x1 <= cw and 0 <= y0 and y1 <= ch
            assert len({g.kind for g in scene.groups}) == len(scene.groups)


def test_relation_geometry_by_hand():
    left, right = (0.1, 0.4, 0.3, 0.6), (0.6, 0.45, 0.8, 0.65)
    assert spatial_holds(left, right, "left_of") and spatial_holds(right, left, "right_of")
    assert not spatial_holds(left, right, "right_of") and not spatial_holds(left, right, "above")
    top, bottom = (0.4, 0.05, 0.6, 0.25), (0.35, 0.6, 0.65, 0.9)
    assert spatial_holds(top, bottom, "above") and spatial_holds(bottom, top, "below")
    # deep interpenetration along the axis is not "left of" even when the centres are ordered
    assert not spatial_holds((0.1, 0.4, 0.5, 0.6), (0.3, 0.4, 0.7, 0.6), "left_of")


def test_numeracy_objects_do_not_overlap():
    rng = np.random.default_rng(22)
    for _ in range(40):
        scene = sample_scene("numeracy", rng)
        boxes = [o.box for o in scene.objects]
        for i in range(len(boxes)):
            for j in range(i + 1, len(boxes)):
                a, b = boxes[i], boxes[j]
                assert a[2] <= b[0] or b[2] <= a[0] or a[3] <= b[1] or b[3] <= a[1]


def test_in_front_of_hides_part_of_the_object_behind_in_the_pixels():
    """Checked on renders, not on the layout's silhouettes: of the pixels the object behind covers (where it
    changes the empty scene), the share that changes again when the object in front is drawn over it. The layout
    bounds the silhouette share to HIDDEN = (0.2, 0.4); outline and drop shadow add a little. (Before the rule the
    same measure ran from 0.001 to 0.67 on these samplers.) The overlap also covers HIDDEN[0] of the silhouette in
    front, so the pair drawn the other way round reads as well."""
    from dataclasses import replace

    def pixels(scene, objects):
        return np.asarray(render(replace(scene, objects=objects), 128, 128), dtype=np.int16)

    rng = np.random.default_rng(23)
    shares, other_way = [], []
    while len(shares) < 30:
        scene = sample_scene("non_spatial", rng)
        r = next((r for r in scene.relations if r.rel in ("in_front_of", "behind")), None)
        if r is None or scene.aspect != (1, 1):
            continue
        front_g, back_g = (r.subj, r.obj) if r.rel == "in_front_of" else (r.obj, r.subj)
        front = next(o for o in scene.objects if o.group == front_g)
        back = next(o for o in scene.objects if o.group == back_g)
        empty, back_only, both = pixels(scene, ()), pixels(scene, (back,)), pixels(scene, (back, front))
        covered = np.abs(back_only - empty).max(-1) > 24  # (128, 128) the object behind, outline and shadow
        shares.append(float((np.abs(both - back_only).max(-1)[covered] > 24).mean()))
        # drawn the other way round, the pair hides a readable part of the front one too
        front_only, swapped = pixels(scene, (front,)), pixels(scene, (front, back))
        covered = np.abs(front_only - empty).max(-1) > 24
        other_way.append(float((np.abs(swapped - front_only).max(-1)[covered] > 24).mean()))
    assert 0.15 <= min(shares) and max(shares) <= 0.55, (min(shares), max(shares))
    assert min(other_way) >= 0.15, min(other_way)


@pytest.mark.parametrize("category", ["texture", "complex", "non_spatial"])
def test_objects_the_judges_must_read_closely_are_drawn_big_enough(category):
    """An object whose texture the prompt states, or that is one of an "in front of" pair, is drawn 10 px across at
    the 32 px base (8 px when its size word is "small"): at least 9 px (8) of the render change where it is drawn,
    its soft edges aside; crowded complex scenes used to draw textures at 5-6 px, two periods of the pattern, and
    occlusion pairs at 7 px."""
    from dataclasses import replace

    rng = np.random.default_rng([24, CATEGORIES.index(category)])
    sides = {"small": [], None: []}
    for _ in range(60):
        scene = sample_scene(category, rng)
        if scene.aspect != (1, 1):
            continue
        occluding = {i for r in scene.relations if r.rel in OCCLUSION_RELATIONS for i in (r.subj, r.obj)}
        empty = np.asarray(render(replace(scene, objects=()), 32, 32), dtype=np.int16)
        for o in scene.objects:
            g = scene.groups[o.group]
            if g.texture is None and o.group not in occluding:
                continue
            alone = np.asarray(render(replace(scene, objects=(o,)), 32, 32), dtype=np.int16)
            ys, xs = np.nonzero(np.abs(alone - empty).max(-1) > 24)
            sides["small" if g.size == "small" else None].append(max(xs.max() - xs.min(), ys.max() - ys.min()) + 1)
    assert len(sides[None]) >= 20 and min(sides[None]) >= 9, (len(sides[None]), min(sides[None]))
    assert min(sides["small"], default=8) >= 8, sides["small"]


def test_scene_json_round_trip():
    rng = np.random.default_rng(23)
    for cat in CATEGORIES:
        scene = sample_scene(cat, rng)
        again = Scene.from_dict(json.loads(json.dumps(scene.to_dict())))
        assert again == scene
        assert render(again, 32, 32).tobytes() == render(scene, 32, 32).tobytes()


def test_bad_scene_dict_is_one_error():
    d = sample_scene("color", np.random.default_rng(0)).to_dict()
    d["groups"][0]["kind"] = "dragon"
    with pytest.raises(MarsRefError, match="dragon"):
        Scene.from_dict(d)
    with pytest.raises(MarsRefError):
        Scene.from_dict({"category": "color"})


def test_render_is_deterministic_and_checks_size():
    scene = sample_scene("complex", np.random.default_rng(24), aspect=(3, 2))
    a, b = render(scene, 48, 32), render(scene, 48, 32)
    assert a.size == (48, 32) and a.mode == "RGB" and a.tobytes() == b.tobytes()
    with pytest.raises(MarsRefError):
        render(scene, 32, 32)


def _nearest_color(rgb) -> str:
    return min(L.COLORS, key=lambda c: sum((x - y) ** 2 for x, y in zip(rgb, L.COLOR_RGB[c], strict=True)))


# a point inside each kind's body colour (u, v in its box; u mirrored for flipped objects)
PROBES = {
    "ball": (0.5, 0.55),
    "heart": (0.5, 0.5),
    "star": (0.5, 0.58),
    "box": (0.36, 0.64),
    "cup": (0.38, 0.6),
    "car": (0.5, 0.62),
    "fish": (0.45, 0.6),
    "hat": (0.5, 0.35),
    "bottle": (0.5, 0.46),
    "house": (0.75, 0.88),
}


def test_objects_are_drawn_where_and_as_the_truth_says():
    """Independent check of the renderer: at a body point of each visible plain object, the pixel's nearest
    palette colour is the object's colour."""
    rng = np.random.default_rng(25)
    checked = 0
    for _ in range(100):
        scene = sample_scene(CATEGORIES[int(rng.integers(len(CATEGORIES)))], rng)
        img = np.asarray(render(scene, 64, 64)).astype(float)
        for i, o in enumerate(scene.objects):
            if o.kind not in PROBES or o.texture != "plain" or o.s < 0.2:
                continue
            u, v = PROBES[o.kind]
            x0, y0, x1, y1 = o.box
            cx = (x0 + ((1 - u) if o.flip else u) * (x1 - x0)) * 64
            cy = (y0 + v * (y1 - y0)) * 64
            if any(
                b.box[0] * 64 - 2 <= cx <= b.box[2] * 64 + 2 and b.box[1] * 64 - 2 <= cy <= b.box[3] * 64 + 2
                for b in scene.objects[i + 1 :]
            ):
                continue  # possibly covered by a later object
            patch = img[int(cy) - 1 : int(cy) + 2, int(cx) - 1 : int(cx) + 2].reshape(-1, 3).mean(0)
            assert _nearest_color(patch) == o.color, (o, patch)
            checked += 1
    assert checked >= 30


def test_low_and_high_resolution_show_the_same_scene():
    from PIL import Image

    rng = np.random.default_rng(26)
    for _ in range(10):
        scene = sample_scene("color", rng)
        low = np.asarray(render(scene, 32, 32)).astype(float)
        high = np.asarray(render(scene, 64, 64).resize((32, 32), Image.BOX)).astype(float)
        other = np.asarray(render(sample_scene("color", rng), 32, 32)).astype(float)
        assert np.abs(low - high).mean() < 6.0 < np.abs(low - other).mean()
