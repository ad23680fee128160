"""KV-cache greedy decoding: our MarsModel text path vs transformers' `generate` on the same Qwen2 weights.

Random weights at the `small` preset's LLM dimensions (speed does not depend on the values); prompts of 16 tokens,
64 new tokens, batch 1 and 16, one CPU thread (this machine is shared). Also reports how many greedy tokens agree.
"""

from __future__ import annotations

import tempfile

import torch
import transformers

from benchmarks.timing import best_of
from mars_ref.config import MarsConfig
from mars_ref.model import MarsModel
from mars_ref.sampling import generate_text

PROMPT_LEN, NEW_TOKENS, REPEATS = 16, 64, 3


def run() -> dict:
    torch.set_num_threads(1)
    torch.manual_seed(0)
    cfg = MarsConfig.from_preset("small")
    hf = transformers.Qwen2ForCausalLM(cfg.to_hf_qwen2()).eval()
    with tempfile.TemporaryDirectory() as d:
        hf.save_pretrained(d)
        ours = MarsModel.from_qwen2(d, cfg.codebook_size).eval()
    result = {"preset": "small", "threads": 1, "prompt_len": PROMPT_LEN, "new_tokens": NEW_TOKENS,
              "llm_params": sum(p.numel() for p in hf.parameters())}
    for batch in (1, 16):
        prompts = torch.randint(0, cfg.text_vocab_size, (batch, PROMPT_LEN), generator=torch.Generator().manual_seed(1))
        t_ours, out_ours = best_of(lambda p=prompts: generate_text(ours, p.tolist(), NEW_TOKENS), REPEATS)

        def hf_gen(p=prompts):
            with torch.inference_mode():
                return hf.generate(p, attention_mask=torch.ones_like(p), max_new_tokens=NEW_TOKENS,
                                   min_new_tokens=NEW_TOKENS, do_sample=False, use_cache=True, pad_token_id=0)

        t_hf, out_hf = best_of(hf_gen, REPEATS)
        agree = (torch.tensor(out_ours) == out_hf[:, PROMPT_LEN:]).float().mean().item()
        result[f"batch{batch}"] = {"ours_tokens_per_s": round(batch * NEW_TOKENS / t_ours, 1),
                                   "hf_generate_tokens_per_s": round(batch * NEW_TOKENS / t_hf, 1),
                                   "speedup": round(t_hf / t_ours, 2), "greedy_token_agreement": round(agree, 4)}
    return result


if __name__ == "__main__":
    print(run())
