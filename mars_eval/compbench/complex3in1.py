"""Complex category, "3-in-1" (T2I-CompBench `3_in_1_eval/3_in_1.py`).

Each complex prompt is listed in one of `complex_val_{spatial,action,spatialaction}`; its image score is
- spatial prompts:        (BLIP-VQA + detector) / 2
- action prompts:         (BLIP-VQA + CLIP) / 2
- everything else:        (BLIP-VQA + detector + CLIP) / 3   (the official `else` branch: spatialaction and
                                                             any prompt in neither list)
with the detector and CLIP parts computed in their complex mode (objects around the preposition; adjectives
removed before CLIP). Lists are matched on the text before the first '.', lower-cased, as the official does,
but after CRLF / final-newline normalisation (the official kept a stray '\\r' on CRLF lines without a period,
which silently sent such prompts to the 3-judge branch).
"""

from __future__ import annotations

from functools import lru_cache

from mars_eval.errors import MarsEvalError
from mars_eval.prompts import PromptSet

KINDS = ("spatial", "action", "spatialaction")


def _key(text: str) -> str:
    return text.split(".")[0].strip().lower()


@lru_cache(maxsize=1)
def _lists() -> dict[str, frozenset[str]]:
    return {k: frozenset(_key(t) for t in PromptSet.builtin(f"complex_val_{k}").texts) for k in KINDS}


def prompt_kind(prompt: str) -> str:
    """'spatial', 'action', 'spatialaction', or 'unlisted' (scored like spatialaction, as the official does)."""
    lists, k = _lists(), _key(prompt)
    if k in lists["spatial"]:
        return "spatial"
    if k in lists["action"]:
        return "action"
    return "spatialaction" if k in lists["spatialaction"] else "unlisted"


def judges_for(kind: str) -> tuple[str, ...]:
    """Which parts the 3-in-1 score of a prompt of this kind averages."""
    if kind == "spatial":
        return ("blip", "detector")
    if kind == "action":
        return ("blip", "clip")
    if kind in ("spatialaction", "unlisted"):
        return ("blip", "detector", "clip")
    raise MarsEvalError(f"unknown complex prompt kind {kind!r}")


def combine(kind: str, parts: dict[str, float]) -> float:
    """Mean of the parts this kind uses."""
    names = judges_for(kind)
    missing = [n for n in names if n not in parts]
    if missing:
        raise MarsEvalError(f"complex {kind} prompt needs the {', '.join(missing)} score(s)")
    return sum(parts[n] for n in names) / len(names)
