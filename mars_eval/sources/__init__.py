"""Image-caption data behind one interface, for training MARS on a user's corpus (and on the world's).

    source = open_source("manifest.jsonl")        # or "DIR" (images + same-name .txt), "shards/{000..009}.tar"
    for record in source:                          # Record: key, origin, image (RGB PIL), caption_en, caption_zh
        ...
    source.tally                                   # records read, and the bad ones skipped, by reason

Formats (`open_source` infers the kind from the path; `kind:` prefixes force it: jsonl:, folder:, wds:):
  jsonl   one JSON object per line: `image` (a path relative to the manifest), `caption` or `caption_en` /
          `caption_zh`, optional `width` / `height` (checked against the image). A built world's
          stage1/manifest.jsonl is one: the world is a source like any other.
  folder  every image file (png, jpg, jpeg, webp) with a same-name `.txt` caption beside it, sorted by name.
  wds     WebDataset tar shards (read with the `webdataset` library): per sample an image member (png, jpg, jpeg,
          webp) and a caption (`txt`, or `json` with the jsonl keys), streamed shard by shard.

Bad records (an unreadable or missing image, an empty or missing caption, bad UTF-8 or JSON, a size that does not
match) are never silent: each is counted by reason with its shard / line, skipped, and when more than
`max_bad_fraction` of the records read are bad the iteration ends with a one-line error naming the first one.
"""

from mars_eval.sources.base import Record, Source, Tally
from mars_eval.sources.open import open_source

__all__ = ["Record", "Source", "Tally", "open_source"]
