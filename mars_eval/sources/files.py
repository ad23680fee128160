"""Sources on plain files: a JSONL manifest, and an image folder with same-name .txt captions."""

from __future__ import annotations

import json
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


def _read(path: Path, where: str) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise BadRecord("image", f"{where}: image not found: {path}") from None
    except OSError as e:
        raise BadRecord("image", f"{where}: cannot read {path}: {e.strerror or e}") from None


class JsonlSource(Source):
    kind = "jsonl"

    def __init__(self, path: str, max_bad_fraction: float = 0.01):
        super().__init__(path, max_bad_fraction)
        self.file = Path(path)
        if not self.file.is_file():
            raise MarsEvalError(f"jsonl source: manifest not found: {self.file}")

    def _lines(self) -> Iterator[tuple[int, bytes]]:
        with open(self.file, "rb") as f:
            for n, raw in enumerate(f, 1):
                if raw.strip():
                    yield n, raw

    def count(self) -> int:
        return sum(1 for _ in self._lines())

    def _items(self) -> Iterator[Record | BadRecord]:
        for n, raw in self._lines():
            where = f"{self.file}:{n}"
            try:
                yield self._record(raw, where, n)
            except BadRecord as bad:
                yield bad

    def _record(self, raw: bytes, where: str, n: int) -> Record:
        try:
            obj = json.loads(raw.decode("utf-8"))
        except UnicodeDecodeError as e:
            raise BadRecord("utf-8", f"{where}: not UTF-8 (byte {e.start})") from None
        except json.JSONDecodeError as e:
            raise BadRecord("json", f"{where}: not JSON ({e.msg})") from None
        if not isinstance(obj, dict) or not isinstance(obj.get("image"), str) or not obj["image"]:
            raise BadRecord("json", f"{where}: a record needs an 'image' path")
        en, zh = captions_of(obj, where)
        size = (obj["width"], obj["height"]) if "width" in obj and "height" in obj else None
        image = decode_image(_read(self.file.parent / obj["image"], where), where, size)
        return Record(str(obj.get("id", n)), where, image, en, zh)


class FolderSource(Source):
    kind = "folder"

    def __init__(self, path: str, max_bad_fraction: float = 0.01):
        super().__init__(path, max_bad_fraction)
        self.root = Path(path)
        if not self.root.is_dir():
            raise MarsEvalError(f"folder source: not a directory: {self.root}")

    def _images(self) -> list[Path]:
        return sorted(p for p in self.root.rglob("*") if p.is_file() and p.suffix.lower().lstrip(".") in IMAGE_SUFFIXES)

    def count(self) -> int:
        return len(self._images())

    def _items(self) -> Iterator[Record | BadRecord]:
        for img in self._images():
            where = str(img)
            try:
                txt = img.with_suffix(".txt")
                if not txt.is_file():
                    raise BadRecord("caption", f"{where}: no caption file {txt.name}")
                en = caption_text(txt.read_bytes(), str(txt))
                key = img.relative_to(self.root).with_suffix("").as_posix()
                yield Record(key, where, decode_image(_read(img, where), where), en, None)
            except BadRecord as bad:
                yield bad
