"""Writing an image folder so that a killed run resumes and nothing half-written looks complete.

Every image is a pure function of (checkpoint, sampler settings, prompt, prompt index, image index, seed), so:
- file names come from the prompt index and image index, never from prompt text;
- an image file exists only once complete (written to a temporary name, then renamed);
- the manifest is rebuilt from the job spec after all shards finish and written atomically last, so a folder
  with `manifest.jsonl` is complete, and a folder without one is a run to resume.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from mars_eval.errors import MarsEvalError
from mars_eval.io import atomic_write, atomic_write_jsonl, read_jsonl
from mars_eval.prompts import PromptSet

MANIFEST = "manifest.jsonl"
JOB = "job.json"


@dataclass(frozen=True)
class Item:
    prompt_index: int
    image_index: int
    prompt: str
    seed: int

    @property
    def file_name(self) -> str:
        return f"{self.prompt_index:05d}_{self.image_index:03d}.png"


@dataclass(frozen=True)
class Job:
    """What to generate: the prompt set, how many images per prompt, and how seeds are chosen."""

    prompts: PromptSet
    images_per_prompt: int = 1
    base_seed: int = 42  # T2I-CompBench: image n of each prompt uses seed 42 + n
    use_prompt_seeds: bool = False  # COCO-30k: each caption carries its own `evaluation_seed`
    settings: dict = field(default_factory=dict)  # sampler settings + checkpoint hash, copied into every row

    def items(self) -> list[Item]:
        out = []
        for p in self.prompts:
            for n in range(self.images_per_prompt):
                seed = (p.seed if (self.use_prompt_seeds and p.seed is not None) else self.base_seed) + n
                out.append(Item(p.index, n, p.text, seed))
        return out

    def spec(self) -> dict:
        """Everything that determines the images; a resumed run must match it."""
        return {"prompt_set": self.prompts.name, "prompt_digest": self.prompts.digest, "n_prompts": len(self.prompts),
                "images_per_prompt": self.images_per_prompt, "base_seed": self.base_seed,
                "use_prompt_seeds": self.use_prompt_seeds, "settings": self.settings}


def save_png(path: Path, image: Image.Image) -> None:
    atomic_write(path, lambda tmp: image.save(tmp, format="PNG"))


def check_or_write_job(out_dir: Path, job: Job) -> None:
    """A folder belongs to one job: resuming with other settings would mix images, so refuse it."""
    path = out_dir / JOB
    spec = job.spec()
    if path.exists():
        try:
            old = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            raise MarsEvalError(f"{path}: unreadable job file; use a new output directory") from None
        if old != json.loads(json.dumps(spec)):
            diff = sorted(k for k in spec if old.get(k) != json.loads(json.dumps(spec)).get(k))
            raise MarsEvalError(f"{out_dir} holds images of another job (differs in {', '.join(diff)}); "
                                "use a new output directory")
        return
    atomic_write(path, lambda tmp: tmp.write_text(json.dumps(spec, indent=2, ensure_ascii=False), encoding="utf-8"))


def pending(out_dir: Path, items: Sequence[Item]) -> list[Item]:
    return [it for it in items if not (out_dir / it.file_name).is_file()]


def shard(items: Sequence[Item], rank: int, world_size: int) -> list[Item]:
    return [it for i, it in enumerate(items) if i % world_size == rank]


def run_shard(out_dir: Path, items: Sequence[Item], generate: Callable[[list[Item]], list[Image.Image]],
              batch_size: int, on_done: Callable[[int], None] | None = None) -> None:
    """Generate `items` in batches, saving each image atomically as soon as its batch is done."""
    for i in range(0, len(items), batch_size):
        batch = list(items[i : i + batch_size])
        images = generate(batch)
        if len(images) != len(batch):
            raise MarsEvalError(f"generator returned {len(images)} images for {len(batch)} items")
        for it, im in zip(batch, images, strict=True):
            save_png(out_dir / it.file_name, im)
        if on_done:
            on_done(len(batch))


def write_manifest(out_dir: Path, job: Job,
                   prompt_length: Callable[[str], tuple[int, int]] | None = None) -> Path:
    """Write the manifest last, once every image exists: its presence marks the folder complete. With
    `prompt_length` (text -> (tokens kept, tokens in all)), every row records how much of its prompt was used."""
    items = job.items()
    missing = pending(out_dir, items)
    if missing:
        raise MarsEvalError(f"{out_dir}: {len(missing)} images missing (first: {missing[0].file_name})")
    rows = []
    for it in items:
        data = (out_dir / it.file_name).read_bytes()
        row = {"file": it.file_name, "prompt": it.prompt, "prompt_index": it.prompt_index,
               "image_index": it.image_index, "seed": it.seed, "sha256": hashlib.sha256(data).hexdigest(),
               "prompt_set": job.prompts.name, **job.settings}
        if prompt_length is not None:
            row["prompt_tokens"], row["prompt_tokens_total"] = prompt_length(it.prompt)
        rows.append(row)
    return atomic_write_jsonl(out_dir / MANIFEST, rows)


def read_manifest(out_dir: Path) -> list[dict]:
    path = out_dir / MANIFEST
    if not path.is_file():
        raise MarsEvalError(f"{out_dir}: no {MANIFEST} (generation incomplete? rerun it to resume)")
    return read_jsonl(path)
