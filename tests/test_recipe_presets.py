"""Every shipped recipe preset loads and validates; bad preset files give one-line errors."""

from importlib import resources

import pytest

from mars_eval.errors import MarsEvalError
from mars_eval.recipe.pipeline import OPTIONAL_TABLES, TABLES, Preset
from mars_eval.suites.ablate import DEFAULTS, budget

SHIPPED = sorted(p.name.removesuffix(".toml") for p in resources.files("mars_eval.recipe").joinpath("presets").iterdir()
                 if p.name.endswith(".toml"))


def test_the_documented_presets_ship():
    assert {"ci", "xs", "small"} <= set(SHIPPED)


@pytest.mark.parametrize("name", SHIPPED)
def test_every_shipped_preset_loads(name):
    p = Preset.load(name)
    assert set(TABLES) <= set(p.tables) <= set(TABLES) | set(OPTIONAL_TABLES)
    for stage in ("stage0", "stageI", "stageII", "stageIII"):
        cfg = p.train_config(stage)
        assert cfg.steps >= 1 and cfg.global_batch % cfg.micro_batch == 0
        assert cfg.betas[1] == 0.95 and cfg.weight_decay == 0.1 and cfg.warmup_ratio == 0.01  # the paper's AdamW
    b = budget(p)
    assert set(b) == set(DEFAULTS) and all(v >= 1 for v in b.values())


def test_presets_grow_in_size():
    dims = {n: Preset.load(n).tables["model"]["hidden_size"] for n in ("ci", "xs", "small")}
    assert dims["ci"] < dims["xs"] < dims["small"]


def test_a_preset_file_with_a_missing_table_is_rejected(tmp_path):
    f = tmp_path / "bad.toml"
    f.write_text("[world]\nn = 10\nseed = 0\n")
    with pytest.raises(MarsEvalError, match="missing tables"):
        Preset.load(str(f))


def test_a_preset_file_with_bad_toml_or_a_bad_value_is_rejected(tmp_path):
    f = tmp_path / "bad.toml"
    f.write_text("[world\n")
    with pytest.raises(MarsEvalError, match="invalid TOML"):
        Preset.load(str(f))
    text = resources.files("mars_eval.recipe").joinpath("presets/ci.toml").read_text()
    f.write_text(text.replace("[stageI]\nsteps = 40", "[stageI]\nsteps = -1"))
    with pytest.raises(MarsEvalError, match=r"stageI"):
        Preset.load(str(f))
    f.write_text(text.replace("[ablate]\nseeds = 2", "[ablate]\nseeds = 0"))
    with pytest.raises(MarsEvalError, match="seeds"):
        budget(Preset.load(str(f)))


def test_unknown_preset_names_list_the_known_ones():
    with pytest.raises(MarsEvalError, match="known: ci, small, xs"):
        Preset.load("huge")


@pytest.mark.parametrize("table, match", [
    ('captions = "long"', "captions must be one of"),
    ("p_dense = 1.5", "p_dense must be a number in"),
    ("p_uncond = -0.1", "p_uncond must be a number in"),
    ("p_dance = 0.5", "unknown keys"),
    ('images = "stream"', "images must be one of"),
    ("object_weight = 3", 'object_weight needs images = "fresh"'),
    ('images = "fresh"\nobject_weight = 0', "object_weight must be a number > 0"),
])
def test_a_bad_data_table_is_a_one_line_error(tmp_path, table, match):
    text = resources.files("mars_eval.recipe").joinpath("presets/ci.toml").read_text(encoding="utf-8")
    f = tmp_path / "p.toml"
    f.write_text(text + f"\n[data]\n{table}\n", encoding="utf-8")
    with pytest.raises(MarsEvalError, match=match) as e:
        Preset.load(str(f))
    assert "\n" not in str(e.value) and "p.toml" in str(e.value)


def test_the_caption_dropout_is_a_data_field_that_sets_the_share_of_empty_captions():
    import numpy as np
    import torch

    from mars_eval.recipe.data import Corpus
    from mars_eval.recipe.objectives import ImageTextData
    from mars_eval.recipe.stages import StageIData
    from mars_ref.config import MarsConfig

    assert StageIData().p_uncond == 0.1 and StageIData.from_table({"p_uncond": 0}).p_uncond == 0
    cfg = MarsConfig(text_vocab_size=50, codebook_size=16, hidden_size=8, num_hidden_layers=1, num_attention_heads=1,
                     num_key_value_heads=1, intermediate_size=8, max_position_embeddings=64)
    corpus = Corpus([torch.arange(4) for _ in range(8)], [(2, 2)] * 8, {"en": [[5, 6]] * 8, "zh": [[7]] * 8})
    for p, want_empty in ((0.0, 0), (1.0, 8)):
        batch = ImageTextData(corpus, cfg, 3, p_caption=0.0, p_uncond=p).collate(np.arange(8), np.arange(8))
        caption_tokens = [int((row[: row.tolist().index(cfg.boi_id)] < cfg.text_vocab_size).sum())
                          for row in batch["ids"]]
        assert sum(c == 0 for c in caption_tokens) == want_empty


def test_the_contrastive_negatives_are_a_checked_data_field():
    from mars_eval.recipe.stages import StageIData

    assert StageIData().negatives == "other-scene"
    assert StageIData.from_table({"images": "fresh", "negatives": "one-word"}).negatives == "one-word"
    with pytest.raises(MarsEvalError, match="negatives must be one of other-scene, one-word"):
        StageIData.from_table({"images": "fresh", "negatives": "swap"})
    with pytest.raises(MarsEvalError, match='needs images = "fresh"'):
        StageIData.from_table({"negatives": "one-word"})
