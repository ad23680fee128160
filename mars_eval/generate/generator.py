"""The adapter from a checkpoint bundle to `generate(items) -> images`, the callable run_shard drives.

Each image is a function of (bundle, sampler settings, prompt, item seed, prompt index, image index): its
token sampler owns a generator seeded by `image_seed(item.seed, prompt_index, image_index)` (sampling.py), so
the random numbers of an image do not depend on the batch it shares or on the process that made it (float
rounding can; see runner.py). With a Stage III `hires` model the base grid is sampled first, then NKTP
super-resolution fills the high-resolution grid from caption + base tokens, with a second seed derived from
the first (so the two stages never share random numbers).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import torch
from PIL import Image

from mars_eval.bundle import Bundle, BundleInfo
from mars_eval.errors import MarsEvalError
from mars_eval.generate.folder import Item
from mars_ref.errors import MarsRefError
from mars_ref.nktp import nktp_generate
from mars_ref.sampling import generate_image_tokens, image_seed

# Recorded in every manifest row so that a reader knows how `seed` became the sampler's random stream.
SEED_RULE = ("image_seed(seed, prompt_index, image_index); "
             "stage III: image_seed(that, prompt_index, image_index)")


@dataclass(frozen=True)
class SamplerSettings:
    """Sampler settings of one run; None fields of `from_bundle` overrides keep the bundle's defaults.

    cfg_scale 1 (plain conditional sampling) is stored as None and skips the null-caption batch; top_k 0 and
    top_p 1 mean "off" and are stored as None; temperature 0 is greedy decoding (seeds then play no role).
    """

    cfg_scale: float | None = 3.0
    temperature: float = 1.0
    top_k: int | None = None
    top_p: float | None = None
    nktp_steps: int = 8

    def __post_init__(self):
        cfg, k, p = self.cfg_scale, self.top_k, self.top_p
        if cfg is not None and not (math.isfinite(cfg) and cfg >= 0):
            raise MarsEvalError(f"cfg_scale must be a finite number >= 0, got {cfg}")
        if not (math.isfinite(self.temperature) and self.temperature >= 0):
            raise MarsEvalError(f"temperature must be >= 0 (0 = greedy), got {self.temperature}")
        if k is not None and (isinstance(k, bool) or not isinstance(k, int) or k < 0):
            raise MarsEvalError(f"top_k must be an integer >= 0 (0 = off), got {k!r}")
        if p is not None and not 0 < p <= 1:
            raise MarsEvalError(f"top_p must be in (0, 1] (1 = off), got {p}")
        if isinstance(self.nktp_steps, bool) or not isinstance(self.nktp_steps, int) or self.nktp_steps < 1:
            raise MarsEvalError(f"nktp_steps must be a positive integer, got {self.nktp_steps!r}")
        # canonical "off" values, so that equivalent settings give the same job spec
        object.__setattr__(self, "cfg_scale", None if cfg is None or cfg == 1 else float(cfg))
        object.__setattr__(self, "top_k", k or None)
        object.__setattr__(self, "top_p", None if p is None or p >= 1 else float(p))
        object.__setattr__(self, "temperature", float(self.temperature))

    @classmethod
    def from_bundle(cls, info: BundleInfo, cfg_scale: float | None = None, temperature: float | None = None,
                    top_k: int | None = None, top_p: float | None = None,
                    nktp_steps: int | None = None) -> SamplerSettings:
        pick = lambda given, default: default if given is None else given  # noqa: E731
        return cls(pick(cfg_scale, info.cfg_scale), pick(temperature, info.temperature),
                   pick(top_k, info.top_k), pick(top_p, info.top_p), pick(nktp_steps, info.nktp_steps))

    def to_dict(self) -> dict:
        return asdict(self)


def item_seeds(item: Item) -> tuple[int, int]:
    """(base-grid seed, Stage III seed) of one image."""
    base = image_seed(item.seed, item.prompt_index, item.image_index)
    return base, image_seed(base, item.prompt_index, item.image_index)


class BundleGenerator:
    """Callable `list[Item] -> list[PIL.Image]`: sample tokens for the batch, then decode them with the VQ."""

    def __init__(self, bundle: Bundle, settings: SamplerSettings):
        self.bundle, self.settings = bundle, settings
        vq_cfg = bundle.vq.cfg
        try:
            self.grid = vq_cfg.token_grid(*bundle.info.image_px)  # (h, w) base token grid
        except MarsRefError as e:
            raise MarsEvalError(f"{bundle.path}: image_px {bundle.info.image_px}: {e}") from None
        self.hires_grid: tuple[int, int] | None = None
        if bundle.hires is not None:
            if bundle.info.hires_px is None:
                raise MarsEvalError(f"{bundle.path}: has a hires/ model but bundle.json sets no hires_px")
            if bundle.hires.config.codebook_size != vq_cfg.codebook_size:
                raise MarsEvalError(f"{bundle.path}: hires model codebook {bundle.hires.config.codebook_size}"
                                    f" != VQ codebook {vq_cfg.codebook_size}")
            try:
                self.hires_grid = vq_cfg.token_grid(*bundle.info.hires_px)
            except MarsRefError as e:
                raise MarsEvalError(f"{bundle.path}: hires_px {bundle.info.hires_px}: {e}") from None
            n_hi = self.hires_grid[0] * self.hires_grid[1]
            if settings.nktp_steps > n_hi:
                raise MarsEvalError(f"nktp_steps {settings.nktp_steps} exceeds the {n_hi} high-res tokens")
        self.max_prompt_tokens = bundle.prompt_budget(self.grid, self.hires_grid)

    def prompt_length(self, text: str) -> tuple[int, int]:
        """(caption tokens the model conditions on, tokens of the whole prompt): they differ for a truncated one."""
        total = len(self.bundle.encode_prompt(text, max_tokens=1 << 30))
        return min(total, self.max_prompt_tokens), total

    @property
    def output_px(self) -> tuple[int, int]:
        return tuple(self.bundle.info.hires_px if self.hires_grid else self.bundle.info.image_px)

    def describe(self) -> dict:
        """What goes into every manifest row and the job spec: checkpoint, stage, sizes, sampler settings."""
        info = self.bundle.info
        sampler = {k: v for k, v in self.settings.to_dict().items() if self.hires_grid or k != "nktp_steps"}
        return {"ckpt": self.bundle.digest, "stage": info.stage, "variant": info.variant,
                "image_px": list(self.output_px), "hires": self.hires_grid is not None,
                "seed_rule": SEED_RULE, **sampler}

    def tokens(self, items: Sequence[Item]) -> tuple[torch.Tensor, tuple[int, int]]:
        """Codebook indices (B, h*w) of the final grid, and that grid's (h, w)."""
        s, b = self.settings, self.bundle
        prompts = [b.encode_prompt(it.prompt, self.max_prompt_tokens) for it in items]
        seeds = [item_seeds(it) for it in items]
        kw = dict(temperature=s.temperature, top_k=s.top_k, top_p=s.top_p, cfg_scale=s.cfg_scale)
        low = generate_image_tokens(b.model, prompts, self.grid, seeds=[a for a, _ in seeds], **kw)  # (B, hw)
        if self.hires_grid is None:
            return low, self.grid
        res = nktp_generate(b.hires, prompts, low, self.hires_grid, seeds=[c for _, c in seeds],
                            steps=s.nktp_steps, **kw)
        return res.tokens, self.hires_grid  # (B, H*W)

    def __call__(self, items: Sequence[Item]) -> list[Image.Image]:
        if not items:
            return []
        codes, hw = self.tokens(items)
        return self.bundle.decode_codes(codes, hw)
