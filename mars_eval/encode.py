"""`mars-eval encode`: VQ-encode an image-caption source once into code shards (LlamaGen's extract-codes step),
so that training reads integers instead of decoding and encoding images every epoch.

    OUT/job.json                   what is encoded: source, VQ (its files' sha256), resolution, shard size
    OUT/codes-00000.safetensors    "codes": (n, h*w) int32 codebook indices of the shard's records
    OUT/index-00000.jsonl          per record, in the same order: key, origin, caption_en, caption_zh
    OUT/encode.json                written last: counts, the bad-record tally, grid, seconds (a complete run)

Images are centre-cropped to a square and resized (bicubic) to `px`, as LlamaGen's `center_crop_arr`. Records
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


@dataclass(frozen=True)
class EncodeJob:
    source: str
    vq_sha256: str
    px: int
    shard_size: int
    max_bad_fraction: float


def centre_crop_resize(image: Image.Image, px: int) -> Image.Image:
    """The largest centred square, resized to px x px (bicubic)."""
    w, h = image.size
    s = min(w, h)
    left, top = (w - s) // 2, (h - s) // 2
    return image.crop((left, top, left + s, top + s)).resize((px, px), Image.BICUBIC)


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
        old = json.loads(path.read_text(encoding="utf-8"))
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
                  on_start: Callable[[], None] | None = None,
                  on_shard: Callable[[int, int], None] | None = None) -> dict:
    """Encode the source's records into OUT (see the module doc); returns the summary written to encode.json
    (by the run that finishes the last shard; with several ranks, the rank that runs last writes it).
    on_start() is called once the inputs are checked, on_shard(index, records) after each shard written."""
    from safetensors.torch import save_file

    from mars_ref.vq_formats import load_any_vq
    from mars_ref.vq_train import to_model_range

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
    job = EncodeJob(str(source), vq_digest(vq_path), px, shard_size, max_bad_fraction)
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
        x = torch.from_numpy(np.stack([np.asarray(centre_crop_resize(r.image, px)) for r in shard]))
        x = to_model_range(x.permute(0, 3, 1, 2).contiguous())
        with torch.inference_mode():
            codes = torch.cat([vq.encode(x[j:j + batch_size]) for j in range(0, len(x), batch_size)])  # (n, h, w)
        flat = codes.flatten(1).to(torch.int32).contiguous()
        atomic_write_jsonl(index_file, [{"key": r.key, "origin": r.origin, "caption_en": r.caption_en,
                                         "caption_zh": r.caption_zh} for r in shard])
        atomic_write(codes_file, lambda p, t=flat: save_file({"codes": t}, str(p)))
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


def read_codes(out: str | Path) -> tuple[torch.Tensor, list[dict]]:
    """All codes (N, h*w) and index rows of a complete encode folder, in source order."""
    from safetensors.torch import load_file

    out = Path(out)
    if not (out / DONE).is_file():
        raise MarsEvalError(f"{out}: no {DONE} (encoding incomplete? rerun `mars-eval encode` to resume)")
    done = json.loads((out / DONE).read_text(encoding="utf-8"))
    codes, rows = [], []
    for i in range(done["shards"]):
        codes.append(load_file(str(out / f"codes-{i:05d}.safetensors"))["codes"])
        rows += [json.loads(line) for line in (out / f"index-{i:05d}.jsonl").read_text(encoding="utf-8").splitlines()]
    return torch.cat(codes), rows
