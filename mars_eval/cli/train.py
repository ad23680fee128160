"""`mars-eval train ...`: the training sub-commands (each sub-command lives in its own `train_*.py` module)."""

import typer

from mars_eval.cli.main import app

train_app = typer.Typer(help="Train the reference model's parts: VQ tokenizer, world CLIP, MARS stages 0-III.",
                        no_args_is_help=True)
app.add_typer(train_app, name="train")
