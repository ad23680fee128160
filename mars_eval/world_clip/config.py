"""Architecture and training settings of the world CLIP, and the open_clip model config they produce.

The world CLIP is a real open_clip `CLIP` (ViT image tower + causal text transformer) sized for 32 px world
images and short captions, so the same loader that reads OpenAI/LAION checkpoints (`open_clip`'s `local-dir:`
format) reads ours. Text goes through our own byte-level BPE (open_clip's `HFTokenizer` path, right-padded with the
end-of-text token); the causal text tower pools at the last position (`pool_type="last"`), which attends to every
token, so a caption longer than the context is truncated but still pooled correctly.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from mars_eval.errors import MarsEvalError


@dataclass(frozen=True)
class WorldClipConfig:
    # architecture
    vision: str = "resnet"  # "resnet": open_clip's ModifiedResNet (CLIP RN50's design); "vit": VisionTransformer
    resnet_layers: tuple[int, ...] = (1, 1, 1, 1)
    resnet_width: int = 16
    image_size: int = 32  # model input; the world's 32 px images are resized to it (bicubic)
    patch_size: int = 8
    vision_width: int = 128
    vision_layers: int = 3
    text_width: int = 128
    text_layers: int = 2
    head_width: int = 32
    mlp_ratio: float = 2.0
    embed_dim: int = 128
    context_length: int = 24  # world captions are at most 21 tokens (English) with the trained BPE
    vocab_size: int = 1024  # BPE target size; the trained vocabulary may be smaller
    # training
    steps: int = 6000  # held-out top-1 en / zh 93.9 / 93.0 % on 4,000 images (3,000 steps: 90.0 / 88.9 %)
    batch_size: int = 64
    lr: float = 2e-3
    weight_decay: float = 0.05
    warmup: int = 40
    seed: int = 0
    use_stage3: bool = True  # also train on the world's Stage III low-resolution images (more scenes)
    fresh: float = 0.5  # share of each batch rendered on the fly from new scenes (scenes.py); 0 = corpora only
    fresh_pool: int = 2048  # rendered fresh scenes kept (scenes.ScenePool); 0 = a new render for every pair
    fresh_refresh: int = 8  # pool entries replaced by new scenes per step
    aux_words: float = 0.2  # weight of the image -> caption-tokens auxiliary loss (train.py); 0 = plain CLIP
    aux_text_words: float = 0.2  # the same from the text embedding (both languages' tokens from either caption)
    logit_scale_init: float = 30.0  # initial 1 / temperature (open_clip's default 1 / 0.07 learns slower here)
    max_shift: int = 2  # random translation augmentation, in pixels of the 32 px world image
    held_out: int = 512  # last images of the manifest, never trained on; retrieval is measured on them
    eval_batch: int = 32  # retrieval: rank the true caption among this many

    def __post_init__(self):
        def need(ok: bool, what: str):
            if not ok:
                raise MarsEvalError(f"invalid world CLIP config: {what}")

        need(self.vision in ("resnet", "vit"), f"vision must be 'resnet' or 'vit', got {self.vision!r}")
        need(len(self.resnet_layers) == 4 and min(self.resnet_layers) >= 1 and self.resnet_width >= 2,
             f"resnet_layers {self.resnet_layers} needs 4 stages of >= 1 block, resnet_width >= 2")
        need(self.vision != "resnet" or self.image_size % 32 == 0,
             f"a ResNet tower needs image_size divisible by 32, got {self.image_size}")
        need(self.image_size > 0 and self.patch_size > 0 and self.image_size % self.patch_size == 0,
             f"image_size {self.image_size} must be a positive multiple of patch_size {self.patch_size}")
        for name in ("vision_width", "text_width"):
            w = getattr(self, name)
            need(w > 0 and w % self.head_width == 0, f"{name} {w} must be a positive multiple of {self.head_width}")
        need(min(self.vision_layers, self.text_layers, self.embed_dim) >= 1, "layers and embed_dim must be >= 1")
        need(self.context_length >= 4, f"context_length {self.context_length} must be >= 4")
        need(self.vocab_size >= 257, f"vocab_size {self.vocab_size} must be >= 257 (bytes + end of text)")
        need(self.steps >= 1 and self.batch_size >= 2, "steps must be >= 1 and batch_size >= 2")
        need(self.lr > 0 and self.weight_decay >= 0 and self.warmup >= 0, "lr > 0, weight_decay >= 0, warmup >= 0")
        need(0 <= self.fresh < 1, f"fresh must be in [0, 1), got {self.fresh}")
        need(self.max_shift >= 0, f"max_shift must be >= 0, got {self.max_shift}")
        need(self.fresh_pool >= 0 and self.fresh_refresh >= 0, "fresh_pool and fresh_refresh must be >= 0")
        need(self.aux_words >= 0 and self.aux_text_words >= 0, "aux_words and aux_text_words must be >= 0")
        need(1 <= self.logit_scale_init <= 100, f"logit_scale_init must be in [1, 100], got {self.logit_scale_init}")
        need(self.held_out >= 2 and self.eval_batch >= 2, "held_out and eval_batch must be >= 2")

    def model_cfg(self, vocab_size: int, pad_id: int, tokenizer_dir: str) -> dict:
        """open_clip's `model_cfg` (the dict in `open_clip_config.json`) for a trained vocabulary."""
        return {
            "embed_dim": self.embed_dim,
            "vision_cfg": self.vision_cfg(),
            "text_cfg": {
                "context_length": self.context_length,
                "vocab_size": vocab_size,
                "hf_tokenizer_name": tokenizer_dir,
                "tokenizer_kwargs": {"clean": "lower", "local_files_only": True},
                "width": self.text_width,
                "heads": self.text_width // self.head_width,
                "layers": self.text_layers,
                "mlp_ratio": self.mlp_ratio,
                "pad_id": pad_id,
                "pool_type": "last",
            },
        }

    def vision_cfg(self) -> dict:
        if self.vision == "resnet":  # a list of layers makes open_clip build a ModifiedResNet
            return {"image_size": self.image_size, "layers": list(self.resnet_layers), "width": self.resnet_width,
                    "head_width": self.head_width}
        return {"image_size": self.image_size, "patch_size": self.patch_size, "width": self.vision_width,
                "layers": self.vision_layers, "head_width": self.head_width, "mlp_ratio": self.mlp_ratio}

    def to_dict(self) -> dict:
        return asdict(self)
