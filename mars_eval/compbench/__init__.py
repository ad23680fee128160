"""T2I-CompBench scorers with the real judge architectures (BLIP-VQA, a transformers detector, CLIP ViT-B/32).

Data flow: image folder (official `{prompt}_{000000}.png` naming) -> `files.match_folder` -> `ImageItem`s ->
`score.score_images(category, items, JudgePaths(...))` -> per-image `ImageScore` rows -> `table_x100`.
"""

from mars_eval.compbench.files import ImageItem, match_folder, match_paths, official_name, parse_name
from mars_eval.compbench.score import (
    CATEGORIES,
    ImageScore,
    JudgePaths,
    Judges,
    ScoreOptions,
    category_score,
    score_images,
    table_x100,
)

__all__ = [
    "CATEGORIES", "ImageItem", "ImageScore", "JudgePaths", "Judges", "ScoreOptions", "category_score",
    "match_folder", "match_paths", "official_name", "parse_name", "score_images", "table_x100",
]
