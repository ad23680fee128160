"""Best-of-N by CLIP score: the protocol of the paper's Table 2 row "FID 3.51, picked with the highest CLIP score".

N images are generated per caption; each is scored by CLIP against its own caption and the highest-scoring one
(the lowest image index on a tie) is kept, copied into the scored folder under COCO-30k naming (`00042_000.png`).
`selection.json` records every candidate's cosine and the pick, and the protocol says "best of N by CLIP".
The same CLIP then scores the kept images, so their CLIP score is inflated by the selection (reported as is,
named in the protocol); FID compares the kept set with the reference.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np

from mars_eval.errors import MarsEvalError
from mars_eval.io import atomic_write_json

SELECTION = "selection.json"


def select_best(candidates: Path, manifest: list[dict], out_dir: Path, score) -> dict:
    """Keep the best of each caption's candidates (manifest rows of `candidates`) in out_dir.

    score(files, texts) -> (N,) cosines. Returns the selection: per caption the chosen image index and every
    candidate's cosine, plus the mean best and mean overall cosine."""
    by_prompt: dict[int, list[dict]] = {}
    for r in manifest:
        by_prompt.setdefault(r["prompt_index"], []).append(r)
    sizes = {len(v) for v in by_prompt.values()}
    if len(sizes) != 1:
        raise MarsEvalError(f"{candidates}: captions have different numbers of candidates {sorted(sizes)}")
    cos = score([candidates / r["file"] for r in manifest], [r["prompt"] for r in manifest])
    cos_of = {(r["prompt_index"], r["image_index"]): float(c) for r, c in zip(manifest, cos, strict=True)}
    out_dir.mkdir(parents=True, exist_ok=True)
    picks = []
    for i in sorted(by_prompt):
        rows = sorted(by_prompt[i], key=lambda r: r["image_index"])
        scores = [cos_of[(i, r["image_index"])] for r in rows]
        best = rows[int(np.argmax(scores))]  # argmax: the first maximum, the lowest image index on a tie
        dst = out_dir / f"{i:05d}_000.png"
        tmp = dst.with_name(dst.name + ".tmp")
        shutil.copyfile(candidates / best["file"], tmp)
        os.replace(tmp, dst)  # a kept image exists only once complete
        picks.append({"prompt_index": i, "prompt": best["prompt"], "chosen_image_index": best["image_index"],
                      "chosen_sha256": best["sha256"], "cos": scores})
    selection = {"best_of": sizes.pop(), "by": "CLIP score against the image's own caption", "captions": picks,
                 "mean_best_cos": float(np.mean([max(p["cos"]) for p in picks])),
                 "mean_cos": float(np.mean(cos))}
    atomic_write_json(out_dir / SELECTION, selection)
    return selection
