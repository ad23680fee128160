"""Benchmark suites behind `mars-eval coco` and `mars-eval compbench`: generate -> score -> results rows.

    run_compbench(ckpt, out, ...)   T2I-CompBench: the world's val prompts scored by the world judges (default),
                                    or the official val prompts scored by the real-architecture judges
    run_coco(ckpt, out, ...)        COCO-style FID / KID / CLIP score: the world's COCO-like split (default),
                                    or the COCO-30k captions against a local val2014 folder
    run_geneval(ckpt, out, ...)     GenEval: the world GenEval prompts scored by the world judges (default), or
                                    the official 553 prompts scored by Mask2Former + CLIP ViT-L/14

Both write into one output folder: `images/` (generate_folder, resumable), `scores.jsonl` (per-image scores,
rewritten atomically after every scored chunk, so a resumed run recomputes nothing already scored) and
`results.jsonl` (rows in the report's format, appended once per distinct result).
"""

from mars_eval.suites.coco import run_coco
from mars_eval.suites.compbench import run_compbench
from mars_eval.suites.geneval import run_geneval

__all__ = ["run_coco", "run_compbench", "run_geneval"]
