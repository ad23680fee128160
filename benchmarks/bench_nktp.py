"""Stage III speed: next-token prediction (NTP) vs next-K-token prediction (NKTP) on the same model, ours vs the
previous loops (benchmarks/previous_decode.py: a cache grown by concatenation, the whole joint vocabulary).

`small` preset dimensions with random weights (speed does not depend on the values), batch 4, no CFG. The
high-res grid is 16x16 tokens (256) and the low-res grid 8x8 (64), as in a 2x super-resolution.
- ntp_hires: 256 tokens autoregressively from the caption (1 prefill + 255 decode passes).
- nktp_*: the 256 tokens given caption + low-res tokens, K per pass (1 caption prefill + one pass per step).
- cascade_*: what a Stage III image costs end to end: NTP for the 8x8 low-res grid, then NKTP.
token_positions_per_image counts the positions the model runs per image (the compute): an NKTP pass re-runs the
whole bidirectional suffix (low-res + 3 specials + high-res), so NKTP needs far fewer passes but more compute;
it wins where a pass is latency/bandwidth bound (large models, GPUs), not on a compute-bound CPU with a tiny model.

Timing: ONE thread (`OMP_NUM_THREADS=1 nice -n 19 python -m benchmarks.run nktp`) on a shared 2-core machine, so
1-thread figures measured beside other load; ours and previous run in turn within each of REPEATS rounds and each
figure is the best round by process CPU time (see bench_decode.py).
"""

from __future__ import annotations

import torch

from benchmarks import previous_decode as previous
from benchmarks.bench_decode import rounds
from mars_ref.config import MarsConfig
from mars_ref.model import MarsModel
from mars_ref.nktp import nktp_generate
from mars_ref.sampling import generate_image_tokens, image_seed

BATCH, LOW, HIGH, PROMPT_LEN, REPEATS = 4, (8, 8), (16, 16), 16, 3
NKTP = {"nktp_cosine_8": {"steps": 8}, "nktp_cosine_16": {"steps": 16}, "nktp_k16": {"k": 16}, "nktp_k64": {"k": 64}}


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
    n_hi, n_lo, suffix = HIGH[0] * HIGH[1], LOW[0] * LOW[1], LOW[0] * LOW[1] + 3 + HIGH[0] * HIGH[1]
    result = {"preset": "small", "threads": 1, "batch": BATCH, "hires_grid": list(HIGH), "lowres_grid": list(LOW),
              "timing": "1 thread, beside other load on a shared 2-core machine; best of 3 interleaved rounds by "
                        "process CPU time"}

    contenders = {}
    for impl, ntp in (("ours", generate_image_tokens), ("previous", previous.generate_image_tokens)):
        contenders[f"ntp_hires/{impl}"] = lambda f=ntp: f(model, prompts, HIGH, seeds=seeds)
        contenders[f"ntp_lowres/{impl}"] = lambda f=ntp: f(model, prompts, LOW, seeds=seeds)
    low = generate_image_tokens(model, prompts, LOW, seeds=seeds)
    for name, kw in NKTP.items():
        contenders[f"{name}/ours"] = lambda kw=kw: nktp_generate(model, prompts, low, HIGH, seeds=seeds, **kw)
        contenders[f"{name}/previous"] = lambda kw=kw: previous.nktp_generate(model, prompts, low, HIGH,
                                                                              seeds=seeds, **kw)
    cpu, _, out = rounds(contenders, REPEATS)

    def entry(name: str, passes: int, positions: int | None = None) -> dict:
        e = {"images_per_s": round(BATCH / cpu[f"{name}/ours"], 3),
             "previous_images_per_s": round(BATCH / cpu[f"{name}/previous"], 3),
             "speedup_vs_previous": round(cpu[f"{name}/previous"] / cpu[f"{name}/ours"], 2),
             "forward_passes_per_image": passes}
        return e | ({"token_positions_per_image": positions} if positions else {})

    result["ntp_hires"] = entry("ntp_hires", n_hi, PROMPT_LEN + n_hi)
    result["ntp_lowres"] = entry("ntp_lowres", n_lo, PROMPT_LEN + n_lo)
    same = torch.equal(out["ntp_hires/ours"], out["ntp_hires/previous"])
    for name in NKTP:
        res = out[f"{name}/ours"]
        same &= torch.equal(res.tokens, out[f"{name}/previous"].tokens)
        result[name] = entry(name, res.forward_passes, PROMPT_LEN + (res.forward_passes - 1) * suffix)
        result[name]["speedup_vs_ntp_hires"] = round(cpu["ntp_hires/ours"] / cpu[f"{name}/ours"], 2)
        t = cpu["ntp_lowres/ours"] + cpu[f"{name}/ours"]
        result[f"cascade_{name}"] = {"images_per_s": round(BATCH / t, 3),
                                     "forward_passes_per_image": n_lo + res.forward_passes,
                                     "speedup_vs_ntp_hires": round(cpu["ntp_hires/ours"] / t, 2)}
    result["same_tokens_as_previous"] = bool(same)
    return result


if __name__ == "__main__":
    print(run())
