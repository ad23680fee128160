"""MarsConfig: the Qwen2 dimensions of the frozen LLM plus the joint-vocabulary layout of MARS (paper, "Methodology").

Token-id layout of the joint vocabulary (one embedding row and one logit per id):

    [0, text_vocab_size)                        text tokens (the LLM's own vocabulary, text head)
    [text_vocab_size, + codebook_size)          VQ codebook entries ("vision words", vision head)
    [text_vocab_size + codebook_size, + 6)      special tokens, in SPECIAL_TOKENS order (vision head)

The six special tokens (the paper adds six; it does not name them, so this is our choice):
    <boi>  begins an image block (Stage I/II grids, the low-res block of Stage III, images in joint generation)
    <eoi>  ends an image block
    <boh>  begins the high-resolution grid of Stage III (after the low-res block); the NKTP grid follows it
    <res>  marks the resolution hint written into a caption (Stage II/III: "<res>" then e.g. "8x12" as text)
    <mask> a not-yet-known high-resolution token (Stage III masked-token prediction input)
    <pad>  left padding of batched prompts; never attended to, never a target
"""

from __future__ import annotations

import dataclasses
import json
import tomllib
from dataclasses import dataclass
from pathlib import Path

from mars_ref.errors import MarsRefError

SPECIAL_TOKENS: tuple[str, ...] = ("<boi>", "<eoi>", "<boh>", "<res>", "<mask>", "<pad>")
PRESETS_DIR = Path(__file__).parent / "presets"
CAPTION_KV: tuple[str, ...] = ("text", "expert", "stream")


@dataclass(frozen=True)
class MarsConfig:
    """Dimensions of a SemVIE model; validated on construction so a bad preset fails before any tensor exists."""

    name: str = "custom"
    # Qwen2 text-LLM dimensions (names follow transformers.Qwen2Config)
    text_vocab_size: int = 256
    hidden_size: int = 64
    num_hidden_layers: int = 2
    num_attention_heads: int = 4
    num_key_value_heads: int = 2
    intermediate_size: int = 128
    rope_theta: float = 10000.0
    rms_norm_eps: float = 1e-6
    tie_word_embeddings: bool = False
    attention_bias: bool = True  # Qwen2 has biases on q/k/v (not on o)
    max_position_embeddings: int = 4096
    initializer_range: float = 0.02
    # MARS additions
    codebook_size: int = 64
    n_special: int = len(SPECIAL_TOKENS)
    visual_expert: bool = True  # False = the paper's "w/o visual expert" ablation: all weights shared and trained
    # Stage III RoPE positions of the suffix (mars_ref/nktp.py): "sequential" counts on through the low-res block and
    # the high-res grid; "aligned" puts each high-res slot right after ITS low-res token's position (+ a fraction
    # for its place in the 2x2 block), so "look at the token I refine" is one fixed relative offset to learn
    stage3_positions: str = "sequential"
    # What image queries read of the caption (the visual expert only): "text" = the caption's keys/values from the
    # frozen text projections, as text queries do (the paper); "expert" = the expert's own K/V projections of the
    # same frozen caption states; "stream" = the K/V of a second, vision stream that runs the expert over the caption
    # too (mars_ref/model.py). Text queries always read the text path, so text-only outputs stay the LLM's exactly.
    caption_kv: str = "text"

    def __post_init__(self):
        ints = ("text_vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
                "num_key_value_heads", "intermediate_size", "max_position_embeddings", "codebook_size")
        for f in ints:
            v = getattr(self, f)
            if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
                raise MarsRefError(f"config {self.name!r}: {f} must be a positive integer, got {v!r}")
        if self.hidden_size % self.num_attention_heads:
            raise MarsRefError(f"config {self.name!r}: hidden_size {self.hidden_size} is not divisible by "
                               f"num_attention_heads {self.num_attention_heads}")
        if self.num_attention_heads % self.num_key_value_heads:
            raise MarsRefError(f"config {self.name!r}: num_attention_heads {self.num_attention_heads} is not a "
                               f"multiple of num_key_value_heads {self.num_key_value_heads}")
        if self.head_dim % 2:
            raise MarsRefError(f"config {self.name!r}: head_dim {self.head_dim} must be even for RoPE")
        if self.n_special != len(SPECIAL_TOKENS):
            raise MarsRefError(f"config {self.name!r}: n_special must be {len(SPECIAL_TOKENS)} "
                               f"({' '.join(SPECIAL_TOKENS)}), got {self.n_special}")
        if not (self.rope_theta > 0 and self.rms_norm_eps > 0 and self.initializer_range > 0):
            raise MarsRefError(f"config {self.name!r}: rope_theta, rms_norm_eps and initializer_range must be > 0")
        if self.stage3_positions not in ("sequential", "aligned"):
            raise MarsRefError(f"config {self.name!r}: stage3_positions must be 'sequential' or 'aligned', got "
                               f"{self.stage3_positions!r}")
        if self.caption_kv not in CAPTION_KV:
            raise MarsRefError(f"config {self.name!r}: caption_kv must be one of {', '.join(CAPTION_KV)}, got "
                               f"{self.caption_kv!r}")
        for f in ("tie_word_embeddings", "attention_bias", "visual_expert"):
            if not isinstance(getattr(self, f), bool):
                raise MarsRefError(f"config {self.name!r}: {f} must be true or false, got {getattr(self, f)!r}")

    # ---- derived sizes and token ids -------------------------------------------------------------------------
    @property
    def image_view(self) -> bool:
        """Whether the caption has a second set of keys/values, read by image queries (caption_kv not "text")."""
        return self.visual_expert and self.caption_kv != "text"

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @property
    def codebook_offset(self) -> int:
        return self.text_vocab_size

    @property
    def visual_vocab_size(self) -> int:
        """Rows of the vision head / visual embedding table: codebook + specials."""
        return self.codebook_size + self.n_special

    @property
    def vocab_size(self) -> int:
        """Joint vocabulary: text + codebook + specials."""
        return self.text_vocab_size + self.visual_vocab_size

    def special_id(self, token: str) -> int:
        if token not in SPECIAL_TOKENS:
            raise MarsRefError(f"unknown special token {token!r}; known: {' '.join(SPECIAL_TOKENS)}")
        return self.text_vocab_size + self.codebook_size + SPECIAL_TOKENS.index(token)

    boi_id = property(lambda self: self.special_id("<boi>"))
    eoi_id = property(lambda self: self.special_id("<eoi>"))
    boh_id = property(lambda self: self.special_id("<boh>"))
    res_id = property(lambda self: self.special_id("<res>"))
    mask_id = property(lambda self: self.special_id("<mask>"))
    pad_id = property(lambda self: self.special_id("<pad>"))

    # ---- serialisation ---------------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_dict(cls, d: dict, source: str = "config") -> MarsConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise MarsRefError(f"{source}: unknown MarsConfig field(s) {unknown}")
        return cls(**d)

    @classmethod
    def from_json(cls, text: str, source: str = "config") -> MarsConfig:
        try:
            d = json.loads(text)
        except json.JSONDecodeError as e:
            raise MarsRefError(f"{source}: not valid JSON ({e})") from None
        if not isinstance(d, dict):
            raise MarsRefError(f"{source}: expected a JSON object")
        return cls.from_dict(d, source)

    @classmethod
    def from_preset(cls, name: str, **overrides) -> MarsConfig:
        """A named preset from `mars_ref/presets/NAME.toml`; `overrides` replace fields (e.g. text_vocab_size)."""
        path = PRESETS_DIR / f"{name}.toml"
        if not path.is_file():
            known = sorted(p.stem for p in PRESETS_DIR.glob("*.toml"))
            raise MarsRefError(f"unknown model preset {name!r}; known: {known}")
        with open(path, "rb") as f:
            d = tomllib.load(f)
        d.setdefault("name", name)
        return cls.from_dict({**d, **overrides}, str(path))

    @classmethod
    def from_hf_qwen2(cls, directory: str | Path, codebook_size: int, visual_expert: bool = True,
                      name: str | None = None, caption_kv: str = "text") -> MarsConfig:
        """Read a local Hugging Face Qwen2 `config.json` (transformers 4.x `rope_theta` or 5.x `rope_parameters`)."""
        path = Path(directory) / "config.json"
        try:
            d = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise MarsRefError(f"no config.json in {directory}") from None
        except (OSError, json.JSONDecodeError) as e:
            raise MarsRefError(f"cannot read {path}: {e}") from None
        if d.get("model_type") != "qwen2":
            raise MarsRefError(f"{path}: model_type is {d.get('model_type')!r}, expected 'qwen2'")
        if d.get("use_sliding_window"):
            raise MarsRefError(f"{path}: use_sliding_window=true is not supported")
        if d.get("hidden_act", "silu") != "silu":
            raise MarsRefError(f"{path}: hidden_act {d['hidden_act']!r} is not supported (Qwen2 uses silu)")
        rope = d.get("rope_parameters") or d.get("rope_scaling") or {}
        if rope.get("rope_type", rope.get("type", "default")) != "default":
            raise MarsRefError(f"{path}: rope type {rope.get('rope_type', rope.get('type'))!r} is not supported")
        theta = rope.get("rope_theta", d.get("rope_theta", 10000.0))
        heads = d["num_attention_heads"]
        if d.get("head_dim") not in (None, d["hidden_size"] // heads):
            raise MarsRefError(f"{path}: head_dim {d['head_dim']} != hidden_size / num_attention_heads")
        try:
            return cls(name=name or f"qwen2:{Path(directory).name}", text_vocab_size=d["vocab_size"],
                       hidden_size=d["hidden_size"], num_hidden_layers=d["num_hidden_layers"],
                       num_attention_heads=heads, num_key_value_heads=d.get("num_key_value_heads") or heads,
                       intermediate_size=d["intermediate_size"], rope_theta=float(theta),
                       rms_norm_eps=float(d.get("rms_norm_eps", 1e-6)),
                       tie_word_embeddings=bool(d.get("tie_word_embeddings", False)),
                       max_position_embeddings=d.get("max_position_embeddings", 4096),
                       initializer_range=float(d.get("initializer_range", 0.02)),
                       codebook_size=codebook_size, visual_expert=visual_expert, caption_kv=caption_kv)
        except KeyError as e:
            raise MarsRefError(f"{path}: missing field {e.args[0]!r}") from None

    def to_hf_qwen2(self):
        """The transformers.Qwen2Config of the text LLM alone (e.g. to pre-train the world LLM with transformers)."""
        from transformers import Qwen2Config

        return Qwen2Config(vocab_size=self.text_vocab_size, hidden_size=self.hidden_size,
                           intermediate_size=self.intermediate_size, num_hidden_layers=self.num_hidden_layers,
                           num_attention_heads=self.num_attention_heads,
                           num_key_value_heads=self.num_key_value_heads,
                           max_position_embeddings=self.max_position_embeddings, rms_norm_eps=self.rms_norm_eps,
                           tie_word_embeddings=self.tie_word_embeddings, initializer_range=self.initializer_range,
                           rope_parameters={"rope_type": "default", "rope_theta": self.rope_theta})

    def replace(self, **changes) -> MarsConfig:
        return dataclasses.replace(self, **changes)
