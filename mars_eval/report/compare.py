"""Paired comparison of two scored runs on identical images' prompts and seeds (`mars-eval compare`).

Each side is a per-image score store (OUT/scores.jsonl of `compbench`). Images pair up by (category, language,
prompt index, image index), and a pair counts only when both sides asked the same prompt; the seed rule makes
image n of prompt i the same draw on both sides. Images of one prompt are correlated, so the unit of the test is
the prompt: per prompt, the mean difference of its images; then a two-sided paired Student t-test over prompts,
with the 95 % CI of the mean difference. `control=True` compares a run with its own shuffled-prompt control (the
same images scored against another prompt of the category): a model that follows its prompts differs from it.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

from scipy import stats

from mars_eval.errors import MarsEvalError
from mars_eval.io import read_jsonl
from mars_eval.suites.common import SCORES


@dataclass(frozen=True)
class PairedResult:
    category: str
    lang: str
    n_prompts: int
    n_images: int
    mean_a: float
    mean_b: float
    diff: float  # mean over prompts of (a - b)
    ci: tuple[float, float] | None  # 95 % CI of diff; None with fewer than 2 prompts
    p_value: float | None  # two-sided paired t-test over prompts

    def to_dict(self) -> dict:
        return asdict(self)


def score_rows(run: str | Path) -> list[dict]:
    """The per-image score rows of a run folder (or a scores.jsonl file)."""
    path = Path(run)
    path = path / SCORES if path.is_dir() else path
    if not path.is_file():
        raise MarsEvalError(f"no per-image scores: {path} (score a run with `mars-eval compbench --out DIR`)")
    return read_jsonl(path)


def _by_image(rows: Iterable[dict], control: bool) -> dict[tuple, dict]:
    return {(r["category"], r.get("lang", "en"), r["prompt_index"], r["image_index"]): r
            for r in rows if bool(r.get("control")) == control}


def paired_compare(rows_a: list[dict], rows_b: list[dict] | None = None) -> list[PairedResult]:
    """One PairedResult per (category, language) both sides scored; rows_b=None pairs A with its own control."""
    a = _by_image(rows_a, control=False)
    b = _by_image(rows_a if rows_b is None else rows_b, control=rows_b is None)
    groups: dict[tuple[str, str], dict[int, list[tuple[float, float]]]] = defaultdict(lambda: defaultdict(list))
    for key, ra in a.items():
        rb = b.get(key)
        if rb is None or (rows_b is not None and rb["prompt"] != ra["prompt"]):
            continue
        groups[key[:2]][key[2]].append((float(ra["score"]), float(rb["score"])))
    if not groups:
        raise MarsEvalError("the two runs share no scored image (same category, language, prompt and image index)")
    return [_test(cat, lang, per_prompt) for (cat, lang), per_prompt in sorted(groups.items())]


def _test(category: str, lang: str, per_prompt: dict[int, list[tuple[float, float]]]) -> PairedResult:
    ma = [sum(x for x, _ in v) / len(v) for v in per_prompt.values()]
    mb = [sum(y for _, y in v) / len(v) for v in per_prompt.values()]
    d = [x - y for x, y in zip(ma, mb, strict=True)]
    n = len(d)
    mean = sum(d) / n
    ci = p = None
    if n >= 2:
        sd = math.sqrt(sum((x - mean) ** 2 for x in d) / (n - 1))
        if sd == 0:
            ci, p = (mean, mean), (1.0 if mean == 0 else 0.0)
        else:
            se = sd / math.sqrt(n)
            t = stats.t.ppf(0.975, df=n - 1)
            ci = (mean - t * se, mean + t * se)
            p = float(2 * stats.t.sf(abs(mean / se), df=n - 1))
    return PairedResult(category, lang, n, sum(len(v) for v in per_prompt.values()), sum(ma) / n, sum(mb) / n,
                        mean, ci, p)
