"""The shuffled-prompt control: the same images scored against a fixed derangement of their prompts.

A model that ignores its prompt scores about as well against another prompt of the same category as against its
own, so the control row says what a prompt-blind model gets with these judges on these very images; a model row
is above chance only where it clears its control row. The control uses the suite's own scorer (world judges,
official judges, CLIP), only the prompt changes; its per-image scores live in the same ScoreStore as the model's,
under keys that add the control prompt, so both resume independently.
"""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from collections.abc import Callable, Sequence

import numpy as np

from mars_eval.errors import MarsEvalError
from mars_eval.suites.common import ScoreStore, score_key, score_resumable

CONTROL = "shuffled_prompts"  # the `control` field of control rows (score rows and results rows)
SUFFIX = " · shuffled-prompt control"


def why_not_derangeable(prompts: Sequence[str]) -> str | None:
    """Why `prompts` have no derangement that keeps identical texts apart (None when they have one)."""
    if len(prompts) < 2:
        return f"{len(prompts)} prompt(s); the shuffled-prompt control needs at least 2 distinct prompts"
    text, same = max(_groups(prompts).items(), key=lambda kv: len(kv[1]))
    if 2 * len(same) > len(prompts):
        return (f"prompt {text[:60]!r} is {len(same)} of the {len(prompts)} prompts; the shuffled-prompt control "
                "needs every text to be at most half of them")
    return None


def derangement(prompts: Sequence[str]) -> list[int]:
    """sigma: image i's prompt is replaced by prompts[sigma[i]]. A permutation with prompts[sigma[i]] !=
    prompts[i] for every i (no fixed point, and identical texts never paired), a function of the prompt list
    alone. Built as a cyclic shift by the largest group's size over the prompts laid out group by group in an
    order seeded by the list: each group is a run no longer than the shift, so the shift always leaves it."""
    why = why_not_derangeable(prompts)
    if why is not None:
        raise MarsEvalError(f"cannot derange the prompts: {why}")
    groups = list(_groups(prompts).values())
    shift = max(len(g) for g in groups)
    digest = hashlib.sha256(json.dumps(list(prompts), ensure_ascii=False).encode()).digest()
    rng = np.random.default_rng(int.from_bytes(digest[:8], "little"))
    order = [int(i) for g in rng.permutation(len(groups)) for i in rng.permutation(groups[g])]
    sigma = [0] * len(order)
    for k, i in enumerate(order):
        sigma[i] = order[(k + shift) % len(order)]
    return sigma


def _groups(prompts: Sequence[str]) -> dict[str, list[int]]:
    out: dict[str, list[int]] = defaultdict(list)
    for i, t in enumerate(prompts):
        out[t].append(i)
    return out


def control_scores(store: ScoreStore, images: Sequence[tuple[int, str]], key_parts: Sequence[dict], chunk: int,
                   compute: Callable[[range, list[str]], list[dict]],
                   on_chunk: Callable[[int], None] | None = None) -> tuple[list[dict], int] | str:
    """Score every image against the prompt that its own prompt maps to under a derangement of the prompts.

    images: (prompt_index, prompt) of each image, in scoring order (several images may share a prompt; they all
    get the same control prompt). key_parts: each image's score_key parts for the model's score; the control key
    adds the control and its prompt. compute(positions, prompts): the suite's scorer on those images with those
    prompt texts, one row per position. Returns (rows in image order, images newly scored), each row with
    `control`, `control_prompt_index` and `control_prompt`; or, when the prompts cannot be deranged, the reason.
    """
    text = dict(images)
    index = sorted(text)
    why = why_not_derangeable([text[i] for i in index])
    if why is not None:
        return why
    sigma = derangement([text[i] for i in index])
    to = {index[k]: index[s] for k, s in enumerate(sigma)}
    asked = [(to[i], text[to[i]]) for i, _ in images]
    keys = [score_key(**parts, control=CONTROL, control_prompt=t) for parts, (_, t) in zip(key_parts, asked,
                                                                                         strict=True)]

    def scored(pos: range) -> list[dict]:
        rows = compute(pos, [asked[i][1] for i in pos])
        return [{**r, "control": CONTROL, "control_prompt_index": asked[i][0], "control_prompt": asked[i][1]}
                for i, r in zip(pos, rows, strict=True)]

    return score_resumable(store, keys, chunk, scored, on_chunk)


def per_prompt_means(rows: Sequence[dict], values: Sequence[float] | None = None,
                     scale: float = 1.0) -> dict[str, float]:
    """{prompt index: scale x the mean of its images' values} (`values`, default each row's "score"): what a
    metric row carries as `per_prompt`, for the report's prompt-clustered interval."""
    by: dict[int, list[float]] = defaultdict(list)
    for r, v in zip(rows, values if values is not None else [r["score"] for r in rows], strict=True):
        by[r["prompt_index"]].append(float(v))
    return {str(k): scale * sum(v) / len(v) for k, v in sorted(by.items())}


def prompt_ci(rows: Sequence[dict], values: Sequence[float] | None = None, scale: float = 1.0) -> list[float] | None:
    """[low, high] of the 95 % CI (Student t, mars_eval.report.stats) over the per-prompt mean scores (`values`,
    default each row's "score"): the same interval for a model's rows and its control's, so a reader can see
    whether they overlap. None with fewer than 2 prompts."""
    import math

    from mars_eval.report.stats import mean_ci

    est = mean_ci(list(per_prompt_means(rows, values).values()))
    if math.isnan(est.half_width):
        return None
    return [scale * (est.mean - est.half_width), scale * (est.mean + est.half_width)]


def control_label(label: str) -> str:
    return label + SUFFIX


def relabel(row: dict, label: str) -> dict:
    """A results row under a new model label; a control row keeps its control suffix."""
    return {**row, "label": control_label(label) if row.get("control") else label}


def control_row(row: dict, value: float, per_prompt: dict | None = None) -> dict:
    """The control twin of a model's metric row: same table, metric and protocol, own label, value and per-prompt
    means (never the model's: the report's interval of a control is the control's own)."""
    out = {k: v for k, v in row.items() if k != "per_prompt"}
    out.update(label=control_label(row["label"]), value=value, control=CONTROL)
    if per_prompt is not None:
        out["per_prompt"] = per_prompt
    return out
