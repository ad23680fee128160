"""`mars-eval encode`: VQ-encode an image-caption source once into code shards (LlamaGen's extract-codes step),
so that training reads integers instead of decoding and encoding images every epoch.

    OUT/job.json                   what is encoded: source, VQ (its files' sha256), resolution, shard size
    OUT/codes-00000.safetensors    "codes": the shard's int32 codebook indices, record after record, flattened
                                   (square and superres: (n, h*w); buckets: 1-d with "lengths"); superres: "high"
    OUT/index-00000.jsonl          per record, in the same order: key, origin, caption_en, caption_zh, grid [h, w]
    OUT/encode.json                written last: counts, the bad-record tally, grid, seconds (a complete run)

Layouts, one per stage of the recipe:
    square    (Stage I)   the largest centred square, resized (bicubic) to px x px, as LlamaGen's `center_crop_arr`
    buckets   (Stage II)  the aspect bucket nearest the image's (px x px, 3:2, 2:3, 2:1, 1:2 at the same short
                          side, as the world's Stage II sizes), centre-cropped to it and resized; the index row
                          records the grid and the resolution that training writes into the caption ("<res WxH> ")
    superres  (Stage III) the square at px (low) and at 2 px (high): (low-res, caption, high-res) triplets by
                          downsampling the user's own images
Records
keep the source's order and shard i holds good records [i*S, (i+1)*S), so the output does not depend on how the
work is split: `--shard r/n` encodes shards r, r+n, ... (one process, one node or one SLURM array task each), and
a run killed midway resumes at the first missing shard (each file lands by atomic rename). A second run into the
same folder with another job is refused.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from mars_eval.errors import MarsEvalError
from mars_eval.io import atomic_write, atomic_write_json, atomic_write_jsonl
from mars_eval.sources import Record, open_source

JOB, DONE = "job.json", "encode.json"
LAYOUTS = ("square", "buckets", "superres")
BUCKET_ASPECTS = ((1, 1), (3, 2), (2, 3), (2, 1), (1, 2))  # (width, height) ratios over the short side px


@dataclass(frozen=True)
class EncodeJob:
    source: str
    vq_sha256: str
    px: int
    shard_size: int
    max_bad_fraction: float
    layout: str = "square"


def centre_crop_resize(image: Image.Image, px: int) -> Image.Image:
    """The largest centred square, resized to px x px (bicubic)."""
    return crop_resize(image, px, px)


def bucket_sizes(px: int, f: int) -> list[tuple[int, int]]:
    """(width, height) of the aspect buckets at short side px, each side a multiple of the VQ factor f."""
    return [(px * a // b // f * f, px) if a >= b else (px, px * b // a // f * f) for a, b in BUCKET_ASPECTS]


def nearest_bucket(width: int, height: int, sizes: list[tuple[int, int]]) -> tuple[int, int]:
    """The bucket whose aspect ratio is nearest the image's in log scale (the first on a tie)."""
    r = np.log(width / height)
    return min(sizes, key=lambda s: abs(np.log(s[0] / s[1]) - r))


def crop_resize(image: Image.Image, width: int, height: int) -> Image.Image:
    """The largest centred region of the target's aspect ratio, resized (bicubic) to width x height."""
    w, h = image.size
    cw, ch = (w, round(w * height / width)) if w * height <= h * width else (round(h * width / height), h)
    left, top = (w - cw) // 2, (h - ch) // 2
    return image.crop((left, top, left + cw, top + ch)).resize((width, height), Image.BICUBIC)


def vq_digest(vq_path: Path) -> str:
    files = sorted(p for p in vq_path.rglob("*") if p.is_file()) if vq_path.is_dir() else [vq_path]
    h = hashlib.sha256()
    for p in files:
        h.update(p.name.encode())
        h.update(hashlib.sha256(p.read_bytes()).digest())
    return h.hexdigest()


def _check_job(out: Path, job: EncodeJob) -> None:
    path = out / JOB
    if path.is_file():
        old = {"layout": "square", **json.loads(path.read_text(encoding="utf-8"))}  # folders from before layouts
        if old != asdict(job):
            key = next(k for k in asdict(job) if old.get(k) != asdict(job)[k])
            raise MarsEvalError(f"{out} holds another encode job ({key}: {old.get(key)!r}, now {asdict(job)[key]!r});"
                                " use another --out")
    else:
        atomic_write_json(path, asdict(job))


def _shards(records: Iterator[Record], size: int) -> Iterator[list[Record]]:
    batch: list[Record] = []
    for r in records:
        batch.append(r)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def encode_source(source: str, vq_path: str | Path, out: str | Path, *, px: int, shard_size: int = 1000,
                  batch_size: int = 64, max_bad_fraction: float = 0.01, rank: int = 0, world_size: int = 1,
                  layout: str = "square", on_start: Callable[[], None] | None = None,
                  on_shard: Callable[[int, int], None] | None = None) -> dict:
    """Encode the source's records into OUT (see the module doc); returns the summary written to encode.json
    (by the run that finishes the last shard; with several ranks, the rank that runs last writes it).
    on_start() is called once the inputs are checked, on_shard(index, records) after each shard written."""
    from safetensors.torch import save_file

    from mars_ref.vq_formats import load_any_vq

    if layout not in LAYOUTS:
        raise MarsEvalError(f"--layout must be one of {', '.join(LAYOUTS)}, got {layout!r}")
    if not 0 <= rank < world_size:
        raise MarsEvalError(f"--shard {rank}/{world_size}: need 0 <= index < count")
    out, vq_path = Path(out), Path(vq_path)
    if not vq_path.exists():
        raise MarsEvalError(f"VQ checkpoint not found: {vq_path}")
    vq = load_any_vq(vq_path).eval()
    f = vq.cfg.downsample_factor
    if px < f or px % f:
        raise MarsEvalError(f"--px {px} must be a positive multiple of the VQ's downsampling factor {f}")
    src = open_source(source, max_bad_fraction)
    job = EncodeJob(str(source), vq_digest(vq_path), px, shard_size, max_bad_fraction, layout)
    out.mkdir(parents=True, exist_ok=True)
    _check_job(out, job)
    if on_start:
        on_start()
    t0, n_records, written, grid = time.perf_counter(), 0, 0, [px // f, px // f]
    for i, shard in enumerate(_shards(iter(src), shard_size)):
        n_records += len(shard)
        codes_file, index_file = out / f"codes-{i:05d}.safetensors", out / f"index-{i:05d}.jsonl"
        if i % world_size != rank or (codes_file.is_file() and index_file.is_file()):
            continue
        tensors, grids = _encode_shard(vq, shard, layout, px, batch_size)
        atomic_write_jsonl(index_file, [{"key": r.key, "origin": r.origin, "caption_en": r.caption_en,
                                         "caption_zh": r.caption_zh, "grid": list(g)}
                                        for r, g in zip(shard, grids, strict=True)])
        atomic_write(codes_file, lambda p, t=tensors: save_file(t, str(p)))
        written += 1
        if on_shard:
            on_shard(i, len(shard))
    n_shards = -(-n_records // shard_size)
    missing = [i for i in range(n_shards) if not ((out / f"codes-{i:05d}.safetensors").is_file()
                                                  and (out / f"index-{i:05d}.jsonl").is_file())]
    summary = {**asdict(job), "records": n_records, "shards": n_shards, "grid": grid, "downsample": f,
               "tally": src.tally.to_dict(), "shards_written_now": written, "complete": not missing,
               "seconds": round(time.perf_counter() - t0, 3)}
    if not missing:
        atomic_write_json(out / DONE, summary)
    return summary


def _vq_codes(vq, images: list[Image.Image], batch_size: int) -> torch.Tensor:
    """(n, h*w) int32 codes of equally sized images."""
    from mars_ref.vq_train import to_model_range

    x = to_model_range(torch.from_numpy(np.stack([np.asarray(im) for im in images])).permute(0, 3, 1, 2).contiguous())
    with torch.inference_mode():
        codes = torch.cat([vq.encode(x[j:j + batch_size]) for j in range(0, len(x), batch_size)])  # (n, h, w)
    return codes.flatten(1).to(torch.int32).contiguous()


def _encode_shard(vq, shard: list[Record], layout: str, px: int, batch_size: int):
    """(tensors of the shard's codes file, per record grid (h, w)) in the given layout."""
    f = vq.cfg.downsample_factor
    if layout == "square":
        return {"codes": _vq_codes(vq, [centre_crop_resize(r.image, px) for r in shard], batch_size)}, \
            [(px // f, px // f)] * len(shard)
    if layout == "superres":
        low = _vq_codes(vq, [centre_crop_resize(r.image, px) for r in shard], batch_size)
        high = _vq_codes(vq, [centre_crop_resize(r.image, 2 * px) for r in shard], batch_size)
        return {"codes": low, "high": high}, [(px // f, px // f)] * len(shard)
    sizes = bucket_sizes(px, f)
    size_of = [nearest_bucket(*r.image.size, sizes) for r in shard]
    codes: list[torch.Tensor | None] = [None] * len(shard)
    for size in dict.fromkeys(size_of):  # one batch per bucket, buckets in order of first use
        idx = [i for i, s in enumerate(size_of) if s == size]
        for i, c in zip(idx, _vq_codes(vq, [crop_resize(shard[i].image, *size) for i in idx], batch_size),
                        strict=True):
            codes[i] = c
    return {"codes": torch.cat(codes), "lengths": torch.tensor([len(c) for c in codes], dtype=torch.int32)}, \
        [(h // f, w // f) for w, h in size_of]


@dataclass
class Encoded:
    """A complete encode folder in memory, in source order."""

    done: dict  # encode.json
    rows: list[dict]  # index rows
    codes: list[torch.Tensor]  # per record (h*w,) int64 (superres: the low-res grid)
    grids: list[tuple[int, int]]  # per record (h, w)
    high: list[torch.Tensor] | None = None  # superres: per record (4*h*w,) int64


def read_encoded(out: str | Path) -> Encoded:
    from safetensors.torch import load_file

    out = Path(out)
    if not (out / DONE).is_file():
        raise MarsEvalError(f"{out}: no {DONE} (encoding incomplete? rerun `mars-eval encode` to resume)")
    done = json.loads((out / DONE).read_text(encoding="utf-8"))
    layout = done.get("layout", "square")
    codes, high, rows = [], [], []
    for i in range(done["shards"]):
        t = load_file(str(out / f"codes-{i:05d}.safetensors"))
        codes += list(t["codes"].split(t["lengths"].tolist())) if layout == "buckets" else list(t["codes"])
        high += list(t["high"]) if layout == "superres" else []
        rows += [json.loads(line) for line in (out / f"index-{i:05d}.jsonl").read_text(encoding="utf-8").splitlines()]
    base = tuple(done["grid"])
    grids = [tuple(r.get("grid", base)) for r in rows]
    return Encoded(done, rows, [c.long() for c in codes], grids, [h.long() for h in high] if high else None)


def read_codes(out: str | Path) -> tuple[torch.Tensor, list[dict]]:
    """All codes (N, h*w) int32 and index rows of a complete square (or superres low-res) encode folder."""
    enc = read_encoded(out)
    if enc.done.get("layout", "square") == "buckets":
        raise MarsEvalError(f"{out}: codes of several aspect ratios (layout buckets) do not stack; use read_encoded")
    return torch.stack(enc.codes).to(torch.int32), enc.rows
