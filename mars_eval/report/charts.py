"""Matplotlib charts rendered to PNG bytes (the HTML page embeds them, the Markdown links them)."""

from __future__ import annotations

import io

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return buf.getvalue()


def bar_with_ci(title: str, labels: list[str], means: list[float], errors: list[tuple[float, float]],
                ylabel: str) -> bytes:
    """Bars with error bars; `errors` are each bar's (below, above) distances to its CI ends (nan: no bar)."""
    fig, ax = plt.subplots(figsize=(max(4, 0.9 * len(labels) + 2), 3.2))
    yerr = [[0 if lo != lo else lo for lo, _ in errors], [0 if hi != hi else hi for _, hi in errors]]  # (2, N)
    ax.bar(range(len(labels)), means, yerr=yerr, capsize=4, color="#4c72b0")
    ax.set_xticks(range(len(labels)), labels, rotation=20, ha="right")
    ax.set_title(title)
    ax.set_ylabel(ylabel)
    return _png(fig)


def lines(title: str, series: dict[str, tuple[list[float], list[float]]], xlabel: str, ylabel: str,
          logy: bool = False, flags: dict[str, list[int]] | None = None) -> bytes:
    """One line per series name: (xs, ys). `flags` marks points (by index) in red, e.g. regressions."""
    fig, ax = plt.subplots(figsize=(6, 3.2))
    for name, (xs, ys) in series.items():
        ax.plot(xs, ys, label=name, linewidth=1.2, marker="o" if len(xs) < 30 else None, markersize=3)
        for i in (flags or {}).get(name, []):
            ax.plot([xs[i]], [ys[i]], "o", color="red", markersize=8, fillstyle="none")
    if logy:
        ax.set_yscale("log")
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=7)
    return _png(fig)


def image_grid(title: str, items: list[dict], cols: int = 6) -> bytes:
    """Generated images (item: path, prompt, score) in a grid, each titled with its prompt and score.
    The bundled fonts have no CJK glyphs, so a non-ASCII prompt is titled by its number (the Markdown lists it)."""
    import textwrap

    from PIL import Image

    rows = max(1, -(-len(items) // cols))
    fig, axes = plt.subplots(rows, cols, figsize=(1.9 * cols, 2.7 * rows), squeeze=False)
    for k, ax in enumerate(axes.flat):
        ax.axis("off")
        if k >= len(items):
            continue
        it = items[k]
        with Image.open(it["path"]) as im:
            ax.imshow(im.convert("RGB"), interpolation="nearest")
        text = "\n".join(textwrap.wrap(it["prompt"], 26)[:3]) if it["prompt"].isascii() else f"#{k + 1}"
        if it.get("score") is not None:
            text += f"\nscore {it['score']:.2f}"
        ax.set_title(text, fontsize=7)
    fig.suptitle(title, fontsize=9)
    return _png(fig)
