"""`mars-eval caption --ckpt CKPT`: the model's image -> text direction, scored against the world's ground truth,
and how much its text -> image direction uses the prompt and its colour and kind words (teacher-forced, on the
same kind of fresh renders)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from mars_eval.cli.common import JsonOpt, emit
from mars_eval.cli.main import app


@app.command("caption")
def caption_command(
    ckpt: Annotated[Path, typer.Option(help="Checkpoint bundle directory (bundle.json, mars/, vq/, tokenizer/).")],
    n: Annotated[int, typer.Option(help="Fresh world scenes to caption, spread over the 7 categories.", min=1)] = 140,
    seed: Annotated[int, typer.Option(help="Seed of the scenes (not of any training split: they are new).")] = 12345,
    world: Annotated[Path | None, typer.Option(help="A built world whose style (layout, backgrounds) the scenes "
                                               "are drawn in; default: the default style.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Greedy-caption fresh 32 px world renders; exact = objects and relations parse back to the scene's truth.
    Also prompt_gain: nats per image the prompt saves in predicting the image tokens (own vs another caption), and
    color_word_gain / kind_word_gain: the same for one colour or kind word of the caption swapped."""
    from mars_eval.bundle import Bundle
    from mars_eval.recipe.evaluate import captioning_accuracy, prompt_use, word_use
    from mars_eval.suites.common import check_world
    from mars_ref.world import DEFAULT_STYLE, world_style

    style = world_style(check_world(world)) if world is not None else DEFAULT_STYLE
    bundle = Bundle.load(ckpt)
    res = captioning_accuracy(bundle.model, bundle.vq, bundle.tokenizer, n=n, seed=seed, style=style)
    use = prompt_use(bundle.model, bundle.vq, bundle.tokenizer, n=n, seed=seed + 1, style=style)
    words = {f"{w}_word_gain": word_use(bundle.model, bundle.vq, bundle.tokenizer, w, n=n, seed=seed + 2,
                                        style=style)["gain"] for w in ("color", "kind")}
    examples = res.pop("examples")
    res = {"checkpoint": bundle.digest, **res, **{k: v for k, v in use.items() if k != "n"}, **words}
    if not as_json:
        for ex in examples:
            typer.echo(f"truth: {ex['truth_en']!r}  model: {ex['model']!r}", err=True)
    emit({**res, "examples": examples} if as_json else res, as_json, "captioning")
