"""The world CLIP: a small open_clip model trained on bilingual world image-caption pairs (docs/kit.md).

    WorldClipConfig                                   architecture + training settings (config.py)
    train_world_clip(world, out, cfg, progress) -> dict   train, measure held-out retrieval, save (train.py)
    load_world_clip(dir) -> (model, preprocess, tokenizer)   via open_clip's `local-dir:` loader
    top1_in_batch(img_emb, txt_emb, captions, batch)  the retrieval figure (retrieval.py)
"""

from mars_eval.world_clip.config import WorldClipConfig
from mars_eval.world_clip.retrieval import top1_in_batch
from mars_eval.world_clip.train import MARKER, load_world_clip, train_world_clip

__all__ = ["MARKER", "WorldClipConfig", "load_world_clip", "top1_in_batch", "train_world_clip"]
