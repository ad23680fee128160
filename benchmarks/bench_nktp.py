"""Stage III speed: next-token prediction (NTP) vs next-K-token prediction (NKTP) on the same model.

`small` preset dimensions with random weights (speed does not depend on the values), one CPU thread, batch 4,
no CFG, best of 3 runs. The high-res grid is 16x16 tokens (256) and the low-res grid 8x8 (64), as in a 2x super-resolution.
- ntp_hires: 256 tokens autoregressively from the caption (1 prefill + 255 decode passes).
- nktp_*: the 256 tokens given caption + low-res tokens, K per pass (1 caption prefill + one pass per step).
- cascade_*: what a Stage III image costs end to end: NTP for the 8x8 low-res grid, then NKTP.
token_positions_per_image counts the positions the model runs per image (the compute): an NKTP pass re-runs the
whole bidirectional suffix (low-res + 3 specials + high-res), so NKTP needs far fewer passes but more compute;
it wins where a pass is latency/bandwidth bound (large models, GPUs), not on a compute-bound CPU with a tiny model.
"""

from __future__ import annotations

import torch

from benchmarks.timing import best_of
from mars_ref.config import MarsConfig
from mars_ref.model import MarsModel
from mars_ref.nktp import nktp_generate
from mars_ref.sampling import generate_image_tokens, image_seed

BATCH, LOW, HIGH, PROMPT_LEN = 4, (8, 8), (16, 16), 16


def run() -> dict:
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = MarsModel(MarsConfig.from_preset("small")).eval()
    cfg = model.config
    with torch.no_grad():  # non-uniform image logits, so confidence ordering is exercised
        model.vision_head.weight.normal_(0, 0.05)
    prompts = torch.randint(0, cfg.text_vocab_size, (BATCH, PROMPT_LEN), generator=torch.Generator().manual_seed(1))
    prompts = prompts.tolist()
    seeds = [image_seed(0, i) for i in range(BATCH)]
    n_hi, n_lo = HIGH[0] * HIGH[1], LOW[0] * LOW[1]
    result = {"preset": "small", "threads": 1, "batch": BATCH, "hires_grid": list(HIGH), "lowres_grid": list(LOW)}

    t_hi, _ = best_of(lambda: generate_image_tokens(model, prompts, HIGH, seeds=seeds))
    result["ntp_hires"] = {"images_per_s": round(BATCH / t_hi, 3), "forward_passes_per_image": n_hi,
                           "token_positions_per_image": PROMPT_LEN + n_hi}
    t_lo, low = best_of(lambda: generate_image_tokens(model, prompts, LOW, seeds=seeds))
    result["ntp_lowres"] = {"images_per_s": round(BATCH / t_lo, 3), "forward_passes_per_image": n_lo,
                            "token_positions_per_image": PROMPT_LEN + n_lo}
    for name, kw in {"nktp_cosine_8": {"steps": 8}, "nktp_cosine_16": {"steps": 16}, "nktp_k16": {"k": 16},
                     "nktp_k64": {"k": 64}}.items():
        t, res = best_of(lambda kw=kw: nktp_generate(model, prompts, low, HIGH, seeds=seeds, **kw))
        suffix = n_lo + 3 + n_hi
        result[name] = {"images_per_s": round(BATCH / t, 3), "forward_passes_per_image": res.forward_passes,
                        "token_positions_per_image": PROMPT_LEN + (res.forward_passes - 1) * suffix,
                        "speedup_vs_ntp_hires": round(t_hi / t, 2)}
        result[f"cascade_{name}"] = {"images_per_s": round(BATCH / (t_lo + t), 3),
                                     "forward_passes_per_image": n_lo + res.forward_passes,
                                     "speedup_vs_ntp_hires": round(t_hi / (t_lo + t), 2)}
    return result


if __name__ == "__main__":
    print(run())
