"""BLIP-VQA judge for attribute binding (colour / shape / texture, and the attribute part of complex).

Official protocol (T2I-CompBench `BLIPvqa_eval`, BLIP `model_base_vqa_capfilt_large`, `inference: vqa_prob`):
for every noun phrase of the prompt ask "{noun phrase}?", feed the decoder only its start token [DEC], take the
softmax of the first answer token's logits and keep P(yes) / (P(yes) + P(no)); the image score is the product
over the noun phrases (at most 8; a prompt with none scores 1). This is not BLIP's ranking inference
(`rank_answer`, which scores whole candidate answers by sequence likelihood and returns an argmax): the official
script uses the first-token probabilities directly, and since "yes" and "no" are single tokens the ratio equals
sigmoid(logit_yes - logit_no), the quantity computed here.

Through transformers' `BlipForQuestionAnswering` (same weights as the original, converted by HF):
- the original BLIP replaces the question's first token ([CLS]) by [ENC] before the text encoder; HF's own
  `generate` keeps [CLS]. `question_start="enc"` (default) does what the official scorer does;
- the official resizes to 480x480 (bicubic, CLIP mean/std) although the checkpoint was trained at 384: with
  `image_size=480` the position embeddings are interpolated (`interpolate_pos_encoding`), as BLIP's loader does;
- the official prints every per-phrase probability with 4 decimals before multiplying; we keep full precision;
- transformers' BLIP text model (5.x) drops `encoder_attention_mask` in its cross-attention, so a padded batch
  of questions would let padding states change the answers; questions are batched by token length, unpadded.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image
from torchvision.transforms import InterpolationMode
from torchvision.transforms import functional as TF

from mars_eval.errors import LOAD_ERRORS, MarsEvalError, load_failure


@dataclass(frozen=True)
class BlipVqaConfig:
    image_size: int = 480  # official vqa.yaml
    max_question_tokens: int = 35  # official tokenizer truncation
    question_start: str = "enc"  # "enc": official BLIP ([ENC] first); "cls": HF generate's behaviour
    batch_size: int = 8  # images per forward pass
    device: str = "cpu"

    def __post_init__(self):
        if self.image_size < 16:
            raise MarsEvalError(f"BLIP image_size must be >= 16, got {self.image_size}")
        if self.question_start not in ("enc", "cls"):
            raise MarsEvalError(f"question_start must be 'enc' or 'cls', got {self.question_start!r}")
        if self.batch_size < 1 or self.max_question_tokens < 2:
            raise MarsEvalError("BLIP batch_size must be >= 1 and max_question_tokens >= 2")


def pre_question(question: str, max_words: int = 50) -> str:
    """The official `pre_question`: lower-case, drop .!"()*#:;~ and trailing spaces, keep at most 50 words."""
    q = re.sub(r"([.!\"()*#:;~])", "", question.lower()).rstrip(" ")
    return " ".join(q.split(" ")[:max_words])


class BlipVqaJudge:
    """Scores (image, questions) with a local `BlipForQuestionAnswering` directory (model + processor files)."""

    def __init__(self, model_dir: str | Path, config: BlipVqaConfig | None = None):
        from transformers import BlipForQuestionAnswering, BlipProcessor

        self.config = config or BlipVqaConfig()
        model_dir = Path(model_dir)
        if not model_dir.is_dir():
            raise MarsEvalError(f"BLIP-VQA directory not found: {model_dir}")
        try:
            self.processor = BlipProcessor.from_pretrained(model_dir, local_files_only=True)
            self.model = BlipForQuestionAnswering.from_pretrained(model_dir, local_files_only=True)
        except LOAD_ERRORS as e:
            raise MarsEvalError(f"cannot load BLIP-VQA from {model_dir}: {load_failure(e)[:300]}") from None
        self.model.eval().to(self.config.device)
        tok = self.processor.tokenizer
        self.yes_id, self.no_id = self._single_token("yes"), self._single_token("no")
        text_cfg = self.model.config.text_config
        self.bos_id = int(text_cfg.bos_token_id)  # [DEC]
        self.enc_id = self._enc_token_id(tok, text_cfg) if self.config.question_start == "enc" else None
        img = self.processor.image_processor
        self.mean, self.std = list(img.image_mean), list(img.image_std)
        self.native_size = int(self.model.config.vision_config.image_size)
        self.name = f"blip-vqa:{model_dir.name}"

    def _single_token(self, word: str) -> int:
        ids = self.processor.tokenizer(word, add_special_tokens=False)["input_ids"]
        if len(ids) != 1 or ids[0] == self.processor.tokenizer.unk_token_id:
            raise MarsEvalError(f"BLIP tokenizer does not have {word!r} as one token")
        return int(ids[0])

    @staticmethod
    def _enc_token_id(tok, text_cfg) -> int:
        """[ENC]: by name if the tokenizer has it, else BLIP's layout (BERT vocab + [DEC] + [ENC], so bos + 1)."""
        enc = tok.convert_tokens_to_ids("[ENC]")
        if enc is not None and enc != tok.unk_token_id:
            return int(enc)
        if text_cfg.vocab_size == text_cfg.bos_token_id + 2:
            return int(text_cfg.bos_token_id) + 1
        raise MarsEvalError("cannot find BLIP's [ENC] token (tokenizer has none and the vocabulary is not "
                            "BERT + [DEC] + [ENC]); use question_start='cls'")

    def _ratio(self, input_ids: torch.Tensor, image_embeds: torch.Tensor, image_mask: torch.Tensor) -> torch.Tensor:
        """sigmoid(logit_yes - logit_no) of the first answer token for unpadded questions (Q, T)."""
        input_ids = input_ids.clone()  # (Q, T)
        if self.enc_id is not None:
            input_ids[:, 0] = self.enc_id
        q_mask = torch.ones_like(input_ids)
        q_states = self.model.text_encoder(input_ids=input_ids, attention_mask=q_mask, encoder_hidden_states=image_embeds,
                                           encoder_attention_mask=image_mask).last_hidden_state  # (Q, T, D)
        start = torch.full((len(input_ids), 1), self.bos_id, dtype=torch.long, device=input_ids.device)  # [DEC]
        logits = self.model.text_decoder(input_ids=start, encoder_hidden_states=q_states,
                                         encoder_attention_mask=q_mask).logits[:, 0, :]  # (Q, V)
        return torch.sigmoid((logits[:, self.yes_id] - logits[:, self.no_id]).double())  # (Q,)

    def pixel_values(self, images: Sequence[Image.Image]) -> torch.Tensor:
        """Official test transform: Resize((s, s), bicubic) on the PIL image, ToTensor, Normalize(CLIP mean/std)."""
        s = self.config.image_size
        out = []
        for im in images:
            t = TF.to_tensor(TF.resize(im.convert("RGB"), [s, s], interpolation=InterpolationMode.BICUBIC))
            out.append(TF.normalize(t, self.mean, self.std))
        return torch.stack(out)  # (B, 3, s, s)

    @torch.inference_mode()
    def p_yes(self, images: Sequence[Image.Image], questions: Sequence[Sequence[str]]) -> list[list[float]]:
        """P(yes)/(P(yes)+P(no)) for every question of every image (`questions[i]` belongs to `images[i]`)."""
        if len(images) != len(questions):
            raise MarsEvalError(f"{len(images)} images but {len(questions)} question lists")
        out: list[list[float]] = []
        bs = self.config.batch_size
        for start in range(0, len(images), bs):
            out.extend(self._p_yes_batch(images[start : start + bs], questions[start : start + bs]))
        return out

    def _p_yes_batch(self, images, questions) -> list[list[float]]:
        dev = self.config.device
        counts = [len(q) for q in questions]
        flat = [pre_question(q) for qs in questions for q in qs]
        if not flat:
            return [[] for _ in questions]
        pix = self.pixel_values(images).to(dev)
        vis = self.model.vision_model(pixel_values=pix, interpolate_pos_encoding=self.config.image_size != self.native_size)
        image_embeds = vis.last_hidden_state  # (B, N, D)
        image_embeds = image_embeds.repeat_interleave(torch.tensor(counts, device=dev), dim=0)  # (Q, N, D)
        image_mask = torch.ones(image_embeds.shape[:-1], dtype=torch.long, device=dev)  # (Q, N)
        ids = self.processor.tokenizer(flat, truncation=True, max_length=self.config.max_question_tokens)["input_ids"]
        ratio = torch.empty(len(flat), dtype=torch.float64)
        # Questions of equal token length run together, unpadded: transformers' BLIP text cross-attention
        # ignores `encoder_attention_mask` (5.x), so padded question states would leak into the answer.
        for length in sorted({len(x) for x in ids}):
            sel = [i for i, x in enumerate(ids) if len(x) == length]
            ratio[sel] = self._ratio(torch.tensor([ids[i] for i in sel], device=dev), image_embeds[sel],
                                     image_mask[sel]).cpu()
        vals = ratio.tolist()
        res, k = [], 0
        for c in counts:
            res.append(vals[k : k + c])
            k += c
        return res
