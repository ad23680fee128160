"""WebDataset tar shards, streamed with the `webdataset` library: per sample an image and a caption."""

from __future__ import annotations

import json
import tarfile
from collections.abc import Iterator
from pathlib import Path

from mars_eval.errors import MarsEvalError
from mars_eval.sources.base import (
    IMAGE_SUFFIXES,
    BadRecord,
    Record,
    Source,
    caption_text,
    captions_of,
    decode_image,
)


def shard_paths(spec: str) -> list[Path]:
    """The shards of a spec with brace patterns (`data/{000..009}.tar`), each checked to exist."""
    from braceexpand import braceexpand

    paths = [Path(p) for p in braceexpand(spec)]
    missing = [p for p in paths if not p.is_file()]
    if missing:
        raise MarsEvalError(f"wds source: shard not found: {missing[0]}" + (f" (and {len(missing) - 1} more)"
                                                                           if len(missing) > 1 else ""))
    return paths


class WdsSource(Source):
    kind = "wds"

    def __init__(self, spec: str, max_bad_fraction: float = 0.01):
        super().__init__(spec, max_bad_fraction)
        self.shards = shard_paths(spec)

    def count(self) -> int:
        n = 0
        for shard in self.shards:
            try:
                with tarfile.open(shard) as tar:
                    n += len({m.name.split("/")[-1].split(".")[0] for m in tar.getmembers() if m.isfile()})
            except (tarfile.TarError, OSError) as e:
                raise MarsEvalError(f"wds source: {shard} is not a readable tar shard ({e})") from None
        return n

    def _items(self) -> Iterator[Record | BadRecord]:
        import webdataset as wds

        for shard in self.shards:
            samples = wds.WebDataset(str(shard), shardshuffle=False, empty_check=False)
            try:
                for sample in samples:
                    where = f"{shard}:{sample.get('__key__')}"
                    try:
                        yield self._record(sample, where)
                    except BadRecord as bad:
                        yield bad
            except (tarfile.TarError, OSError, ValueError) as e:
                raise MarsEvalError(f"wds source: {shard} is not a readable tar shard "
                                    f"({' '.join(str(e).split())})") from None

    @staticmethod
    def _record(sample: dict, where: str) -> Record:
        ext = next((e for e in IMAGE_SUFFIXES if e in sample), None)
        if ext is None:
            raise BadRecord("image", f"{where}: no image member ({', '.join(IMAGE_SUFFIXES)})")
        if "json" in sample:
            try:
                meta = json.loads(sample["json"].decode("utf-8"))
            except UnicodeDecodeError as e:
                raise BadRecord("utf-8", f"{where}: json member is not UTF-8 (byte {e.start})") from None
            except json.JSONDecodeError as e:
                raise BadRecord("json", f"{where}: json member is not JSON ({e.msg})") from None
            en, zh = captions_of(meta if isinstance(meta, dict) else {}, where)
        elif "txt" in sample:
            en, zh = caption_text(sample["txt"], where), None
        else:
            raise BadRecord("caption", f"{where}: no caption member (txt or json)")
        return Record(str(sample["__key__"]), where, decode_image(sample[ext], where), en, zh)
