"""GenEval's summary (`evaluation/summary_scores.py`): per-task accuracy over images, overall = the mean of the
task accuracies (so a task's weight does not depend on its number of prompts), plus the share of correct images
and of prompts with at least one correct image."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from mars_eval.errors import MarsEvalError
from mars_eval.geneval.metadata import TASKS


@dataclass(frozen=True)
class ImageResult:
    """One scored image: a line of the per-image JSONL."""

    prompt_index: int
    image_index: int
    tag: str
    prompt: str
    file: str
    correct: bool
    reason: str


@dataclass(frozen=True)
class TaskScore:
    tag: str
    correct: int
    n: int

    @property
    def accuracy(self) -> float:
        return self.correct / self.n


@dataclass(frozen=True)
class Summary:
    tasks: tuple[TaskScore, ...]  # the tasks present, in GenEval's order
    overall: float  # mean of the task accuracies
    n_images: int
    n_prompts: int
    image_accuracy: float  # share of correct images
    prompt_accuracy: float  # share of prompts with at least one correct image

    def accuracy(self) -> dict[str, float]:
        return {t.tag: t.accuracy for t in self.tasks}


def summarize(results: Sequence[ImageResult]) -> Summary:
    if not results:
        raise MarsEvalError("no scored GenEval images to summarize")
    tasks = []
    for tag in TASKS:
        rows = [r for r in results if r.tag == tag]
        if rows:
            tasks.append(TaskScore(tag, sum(r.correct for r in rows), len(rows)))
    by_prompt: dict[int, bool] = {}
    for r in results:
        by_prompt[r.prompt_index] = by_prompt.get(r.prompt_index, False) or r.correct
    return Summary(tuple(tasks), sum(t.accuracy for t in tasks) / len(tasks), len(results), len(by_prompt),
                   sum(r.correct for r in results) / len(results), sum(by_prompt.values()) / len(by_prompt))
