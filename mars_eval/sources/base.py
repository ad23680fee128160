"""A record, the tally of bad records, and the iteration every source shares (decode, check, count, skip)."""

from __future__ import annotations

import io
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field

from PIL import Image, UnidentifiedImageError

from mars_eval.errors import MarsEvalError

IMAGE_SUFFIXES = ("png", "jpg", "jpeg", "webp")
MAX_EXAMPLES = 5  # bad records remembered per reason (all are counted)


@dataclass(frozen=True)
class Record:
    key: str  # stable id within the source (a manifest line number, a file stem, a tar sample key)
    origin: str  # where it came from, for messages: "FILE:LINE" or "SHARD:KEY"
    image: Image.Image  # RGB
    caption_en: str | None
    caption_zh: str | None


class BadRecord(Exception):
    """One record that cannot be used: `reason` is its tally bucket, the message says what is wrong."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


@dataclass
class Tally:
    """Records read and bad records skipped, by reason, with the first few origins of each."""

    read: int = 0
    bad: Counter = field(default_factory=Counter)
    examples: dict[str, list[str]] = field(default_factory=dict)

    @property
    def skipped(self) -> int:
        return sum(self.bad.values())

    def add_bad(self, reason: str, where: str) -> None:
        self.bad[reason] += 1
        self.examples.setdefault(reason, [])
        if len(self.examples[reason]) < MAX_EXAMPLES:
            self.examples[reason].append(where)

    def to_dict(self) -> dict:
        return {"read": self.read, "used": self.read - self.skipped, "skipped": self.skipped,
                "bad": dict(self.bad), "examples": self.examples}


def decode_image(data: bytes, where: str, size: tuple[int, int] | None = None) -> Image.Image:
    """RGB image from file bytes; BadRecord("image") when it cannot be decoded or its (width, height) != size."""
    try:
        with Image.open(io.BytesIO(data)) as im:
            im.load()
            out = im.convert("RGB")
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as e:
        raise BadRecord("image", f"{where}: unreadable image ({' '.join(str(e).split())})") from None
    if size is not None and tuple(size) != out.size:
        raise BadRecord("size", f"{where}: image is {out.size[0]}x{out.size[1]}, the record says {size[0]}x{size[1]}")
    return out


def caption_text(value, where: str, what: str = "caption") -> str | None:
    """A stripped caption, None when absent; BadRecord("caption") when present but empty or not text."""
    if value is None:
        return None
    if isinstance(value, bytes):
        try:
            value = value.decode("utf-8")
        except UnicodeDecodeError as e:
            raise BadRecord("utf-8", f"{where}: {what} is not UTF-8 (byte {e.start})") from None
    if not isinstance(value, str) or not value.strip():
        raise BadRecord("caption", f"{where}: empty {what}")
    return value.strip()


def captions_of(obj: dict, where: str) -> tuple[str | None, str | None]:
    """(caption_en, caption_zh) from `caption` (taken as English) or `caption_en` / `caption_zh`."""
    en = caption_text(obj.get("caption_en", obj.get("caption")), where)
    zh = caption_text(obj.get("caption_zh"), where, "caption_zh")
    if en is None and zh is None:
        raise BadRecord("caption", f"{where}: no caption (give caption, caption_en or caption_zh)")
    return en, zh


class Source:
    """Iterates records, skipping and counting bad ones. Subclasses yield either a Record or a BadRecord per item
    from `_items()`; `describe` names the source in messages."""

    kind = "source"

    def __init__(self, path: str, max_bad_fraction: float = 0.01):
        if not 0 <= max_bad_fraction <= 1:
            raise MarsEvalError(f"max_bad_fraction must be in [0, 1], got {max_bad_fraction}")
        self.path, self.max_bad_fraction = path, max_bad_fraction
        self.tally = Tally()

    def _items(self) -> Iterator[Record | BadRecord]:
        raise NotImplementedError

    def __iter__(self) -> Iterator[Record]:
        self.tally = Tally()
        first_bad = None
        for item in self._items():
            self.tally.read += 1
            if isinstance(item, BadRecord):
                self.tally.add_bad(item.reason, str(item))
                first_bad = first_bad or str(item)
                continue
            yield item
        t = self.tally
        if t.read == 0:
            raise MarsEvalError(f"{self.kind} source {self.path}: no records")
        if t.skipped > self.max_bad_fraction * t.read:
            raise MarsEvalError(f"{self.kind} source {self.path}: {t.skipped} of {t.read} records are bad, more than "
                                f"the allowed {self.max_bad_fraction:.0%} (first: {first_bad})")

    def count(self) -> int:
        """Records the source holds (bad ones included), without decoding images."""
        raise NotImplementedError
