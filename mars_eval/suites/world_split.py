"""The world's "COCO-like" split: captions of fresh scenes with their renders as the FID reference set.

COCO FID-30K pairs 30,000 val captions with the val images they describe; here item i is a scene drawn from
SeedSequence([world seed, STREAM, i]) (uniform over the world's categories), captioned in English and rendered
at the generator's output size. A scene is redrawn (from the same item stream) while its caption is a caption
of the world's training corpora (stage1/2/3 manifests), a val prompt of any category, or an earlier item's
caption, so the split is disjoint from what the model trained on, from CompBench val, and free of repeats.
Item i does not depend on n: a split of n items is the first n items of any larger one.

The split is cached in `ROOT/world-coco-<hash>/` (hash of the world's world.json, n and the render size),
built in a hidden sibling directory and renamed into place, so a killed build never looks complete.
"""

from __future__ import annotations

import hashlib
import json
from math import gcd
from pathlib import Path

import numpy as np

from mars_eval.errors import MarsEvalError
from mars_eval.io import read_jsonl, staged_dir
from mars_eval.prompts import PromptSet
from mars_eval.results import config_hash
from mars_ref.world.captions import caption
from mars_ref.world.render import render
from mars_ref.world.sampling import CATEGORIES, sample_scene
from mars_ref.world.style import DEFAULT_STYLE, WorldStyle, world_style

FORMAT = "mars-world-coco/1"  # bump when a change here changes what a split holds
STREAM = 9101  # distinct from the world build's streams (1-7) and the fresh-scene stream (9001)
MARKER = "split.json"
CAPTIONS = "captions.txt"
MAX_DRAWS = 1000  # redraws of one item before giving up (a tiny world caption space)


def world_meta(world: Path) -> dict:
    path = Path(world) / "world.json"
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise MarsEvalError(f"not a built world (no world.json): {world}") from None
    except (OSError, json.JSONDecodeError) as e:
        raise MarsEvalError(f"{path}: unreadable ({e})") from None


def excluded_captions(world: Path) -> set[str]:
    """English captions the world's corpora train on (without `<res WxH>` tags) plus every val prompt."""
    world = Path(world)
    out: set[str] = set()
    for corpus in ("stage1", "stage2", "stage3"):
        manifest = world / corpus / "manifest.jsonl"
        if manifest.is_file():
            for row in read_jsonl(manifest):
                text = row.get("caption_en", "")
                out.add(text.split("> ", 1)[1] if text.startswith("<res ") else text)
    for p in sorted((world / "prompts").glob("*_val*.txt")):
        out.update(line for line in p.read_text(encoding="utf-8").splitlines() if line)
    return out


def sample_items(seed: int, n: int, exclude: set[str], aspect: tuple[int, int] = (1, 1),
                 style: WorldStyle = DEFAULT_STYLE) -> list:
    """The first n scenes of the split (item i from its own stream; see the module doc)."""
    taken = set(exclude)
    scenes = []
    for i in range(n):
        rng = np.random.default_rng([seed, STREAM, i])
        for _ in range(MAX_DRAWS):
            scene = sample_scene(CATEGORIES[int(rng.integers(len(CATEGORIES)))], rng, aspect, style)
            text = caption(scene, "en")
            if text not in taken:
                break
        else:
            raise MarsEvalError(f"world COCO-like split: no new caption for item {i} after {MAX_DRAWS} draws")
        taken.add(text)
        scenes.append(scene)
    return scenes


def _check_target(marker_name: str):
    def check(p: Path) -> Path:
        p = p.absolute()
        if p.exists() and (not p.is_dir() or (any(p.iterdir()) and not (p / marker_name).is_file())):
            raise MarsEvalError(f"{p} exists and is not a world COCO-like split; remove it")
        return p
    return check


def build_split(world: str | Path, n: int, size: tuple[int, int], root: str | Path) -> Path:
    """The cached split directory for (world, n, size=(height, width)): images/NNNNN.png + captions.txt."""
    world = Path(world)
    if isinstance(n, bool) or not isinstance(n, int) or n < 2:
        raise MarsEvalError(f"the COCO-like split needs n >= 2 images, got {n!r}")
    h, w = int(size[0]), int(size[1])
    meta = world_meta(world)
    world_digest = hashlib.sha256((world / "world.json").read_bytes()).hexdigest()
    spec = {"format": FORMAT, "world": world_digest, "seed": meta.get("seed"), "n": n, "size": [h, w]}
    out = Path(root) / f"world-coco-{config_hash(spec)}"
    if (out / MARKER).is_file():
        return out
    g = gcd(w, h)
    scenes = sample_items(int(meta["seed"]), n, excluded_captions(world), (w // g, h // g), world_style(world))
    with staged_dir(out, _check_target(MARKER)) as tmp:
        (tmp / "images").mkdir()
        for i, s in enumerate(scenes):
            render(s, w, h).save(tmp / "images" / f"{i:05d}.png", format="PNG")
        (tmp / CAPTIONS).write_text("".join(caption(s, "en") + "\n" for s in scenes), encoding="utf-8")
        rows = [{"index": i, "category": s.category, "caption_zh": caption(s, "zh"), "scene": s.to_dict()}
                for i, s in enumerate(scenes)]
        (tmp / "scenes.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False, sort_keys=True) + "\n"
                                                  for r in rows), encoding="utf-8")
        (tmp / MARKER).write_text(json.dumps({**spec, "world_dir": str(world.absolute())}, indent=2) + "\n",
                                  encoding="utf-8")
    return out


def split_prompts(split_dir: Path) -> PromptSet:
    n = json.loads((split_dir / MARKER).read_text(encoding="utf-8"))["n"]
    return PromptSet.from_file(split_dir / CAPTIONS, name=f"world-coco-{n}")
