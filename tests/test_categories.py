"""The one category registry agrees with what uses it: the world's samplers, the judge paths, the report labels."""

from dataclasses import fields

from mars_eval.categories import BY_NAME, LABELS, NAMES, REGISTRY, WORLD_NAMES
from mars_eval.compbench.score import JudgePaths
from mars_eval.judges.world_judges import CATEGORIES as WORLD_JUDGE_CATEGORIES
from mars_ref.world import CATEGORIES as WORLD_SAMPLERS


def test_world_categories_are_the_world_samplers():
    assert WORLD_NAMES == WORLD_SAMPLERS
    assert set(WORLD_JUDGE_CATEGORIES) == set(NAMES)  # the world judges also read 3D-spatial for calibration


def test_every_category_names_existing_judge_paths_and_a_unique_label():
    paths = {f.name for f in fields(JudgePaths)}
    assert all(c.judges and set(c.judges) <= paths for c in REGISTRY)
    assert len(set(LABELS.values())) == len(NAMES) == len(BY_NAME)
    assert BY_NAME["complex"].judges == ("blip_dir", "detector_dir", "clip_ckpt")
