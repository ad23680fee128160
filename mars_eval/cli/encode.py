"""`mars-eval encode`: a data source -> VQ code shards (mars_eval.encode)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from mars_eval.cli.common import JsonOpt, emit, progress
from mars_eval.cli.main import app
from mars_eval.errors import MarsEvalError


@app.command()
def encode(
    data: Annotated[str, typer.Option(help="Data source: a .jsonl manifest, an image folder with .txt captions, or "
                                           "WebDataset shards ('shards/{000..099}.tar'); prefix jsonl:/folder:/wds: "
                                           "to force the kind.")],
    vq: Annotated[Path, typer.Option(help="VQ tokenizer: our directory, or a LlamaGen VQ-16 / taming checkpoint.")],
    out: Annotated[Path, typer.Option(help="Output folder for the code shards (resumable).")],
    px: Annotated[int, typer.Option(help="Resolution: the square side (square), the short side (buckets), the "
                                         "low-res side (superres; high-res is 2 px).")] = 256,
    layout: Annotated[str, typer.Option(help="square (Stage I), buckets (Stage II: aspect buckets, the resolution "
                                             "goes into the caption), superres (Stage III: px and 2 px).")] = "square",
    shard_size: Annotated[int, typer.Option(help="Records per output shard.", min=1)] = 1000,
    batch_size: Annotated[int, typer.Option(help="Images per VQ forward.", min=1)] = 64,
    max_bad_fraction: Annotated[float, typer.Option(help="Largest share of bad records skipped before the run "
                                                         "fails.")] = 0.01,
    shard: Annotated[str, typer.Option(help="r/n: encode only output shards r, r+n, ... (one of n processes, "
                                            "nodes or array tasks); run once more without it to finish.")] = "0/1",
    as_json: JsonOpt = False,
) -> None:
    """VQ-encode every record once; the folder is complete when encode.json exists."""
    from mars_eval.encode import encode_source

    try:
        rank, world = (int(x) for x in shard.split("/"))
    except ValueError:
        raise MarsEvalError(f"--shard must look like r/n (e.g. 0/4), got {shard!r}") from None
    bar = progress()
    task = bar.add_task("encode", total=None, rate="")
    try:  # the bar starts once the inputs are checked, so that an error is the only output
        summary = encode_source(data, vq, out, px=px, shard_size=shard_size, batch_size=batch_size,
                                max_bad_fraction=max_bad_fraction, rank=rank, world_size=world, layout=layout,
                                on_start=bar.start,
                                on_shard=lambda i, n: bar.update(task, advance=n, rate=f"shard {i}"))
    finally:
        if bar.live.is_started:
            bar.stop()
    tally = summary.pop("tally")
    emit({**summary, "skipped": tally["skipped"], "bad": tally["bad"]} if not as_json else {**summary, "tally": tally},
         as_json, "encode")
