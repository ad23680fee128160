"""Data sources: a JSONL manifest, an image folder and WebDataset shards hold the same world records and read back
alike; bad records are counted by reason with their origin and skipped up to the allowed share; a bad shard or an
unknown spec is a one-line error."""

import io
import json
import tarfile

import numpy as np
import pytest
import webdataset as wds

from mars_eval.errors import MarsEvalError
from mars_eval.sources import open_source
from mars_ref.world import CATEGORIES, caption, render, sample_scene

N = 12


@pytest.fixture(scope="module")
def world_records():
    rng = np.random.default_rng(0)
    scenes = [sample_scene(CATEGORIES[i % len(CATEGORIES)], rng) for i in range(N)]
    return [(f"{i:04d}", render(s, 32, 32), caption(s, "en"), caption(s, "zh")) for i, s in enumerate(scenes)]


def _png(im) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue()


def write_jsonl(root, records, extra_lines=()):
    (root / "img").mkdir(parents=True)
    lines = []
    for key, im, en, zh in records:
        im.save(root / "img" / f"{key}.png")
        lines.append(json.dumps({"id": key, "image": f"img/{key}.png", "caption_en": en, "caption_zh": zh,
                                 "width": im.size[0], "height": im.size[1]}, ensure_ascii=False).encode())
    (root / "m.jsonl").write_bytes(b"\n".join(lines + list(extra_lines)) + b"\n")
    return root / "m.jsonl"


def write_folder(root, records):
    root.mkdir(parents=True)
    for key, im, en, _ in records:
        im.save(root / f"{key}.png")
        (root / f"{key}.txt").write_text(en, encoding="utf-8")
    return root


def write_shards(root, records, per_shard=5):
    root.mkdir(parents=True)
    for s in range(0, len(records), per_shard):
        with wds.TarWriter(str(root / f"{s // per_shard:03d}.tar")) as w:
            for key, im, en, zh in records[s:s + per_shard]:
                w.write({"__key__": key, "png": _png(im), "json": json.dumps({"caption_en": en, "caption_zh": zh})})
    n = -(-len(records) // per_shard)
    return f"{root}/{{000..{n - 1:03d}}}.tar"


def _as_tuples(source):
    return [(r.key, np.asarray(r.image).tobytes(), r.caption_en) for r in source]


def test_three_formats_hold_the_same_records(tmp_path, world_records):
    want = [(k, np.asarray(im.convert("RGB")).tobytes(), en) for k, im, en, _ in world_records]
    sources = [open_source(str(write_jsonl(tmp_path / "j", world_records))),
               open_source(str(write_folder(tmp_path / "f", world_records))),
               open_source(write_shards(tmp_path / "w", world_records))]
    for src in sources:
        assert src.count() == N
        assert _as_tuples(src) == want, src.kind
        assert src.tally.to_dict()["used"] == N and src.tally.skipped == 0
    assert [r.caption_zh for r in sources[0]] == [zh for *_, zh in world_records]
    assert [r.caption_zh for r in sources[2]] == [zh for *_, zh in world_records]


def test_a_built_world_manifest_is_a_jsonl_source(tmp_path):
    from mars_ref.world import build_world

    build_world(tmp_path / "w", 3, seed=1, n_stage2=0, n_stage3=0, n_sequences=0, n_text=1, val_size=2,
                train_size=0)
    recs = list(open_source(str(tmp_path / "w" / "stage1" / "manifest.jsonl")))
    assert len(recs) == 3 and all(r.image.size == (32, 32) and r.caption_en and r.caption_zh for r in recs)


def test_bad_records_are_counted_by_reason_with_their_origin(tmp_path, world_records):
    path = write_jsonl(tmp_path / "j", world_records, extra_lines=[
        b'{"image": "img/missing.png", "caption": "a red ball"}',
        b'{"image": "img/0000.png", "caption": "   "}',
        b'{"image": "img/0000.png"}',
        b'{"image": "img/0000.png", "caption": "a red ball", "width": 64, "height": 64}',
        b'{"image": "img/bad.png", "caption": "a red ball"}',
        b'{"image": "img/0000.png", "caption": "caf\xe9"}',
        b'{not json',
    ])
    (tmp_path / "j" / "img" / "bad.png").write_bytes(b"not a png at all")
    src = open_source(str(path), max_bad_fraction=0.5)
    assert len(list(src)) == N
    t = src.tally
    assert t.read == N + 7 and t.skipped == 7
    assert dict(t.bad) == {"image": 2, "caption": 2, "size": 1, "utf-8": 1, "json": 1}
    assert t.examples["size"] == [f"{path}:{N + 4}: image is 32x32, the record says 64x64"]
    assert f"{path}:{N + 1}: image not found" in t.examples["image"][0]
    with pytest.raises(MarsEvalError, match=r"7 of 19 records are bad, more than the allowed 1% \(first: .*missing"):
        list(open_source(str(path)))


def test_folder_and_shard_records_without_captions_are_skipped(tmp_path, world_records):
    root = write_folder(tmp_path / "f", world_records)
    (root / "0003.txt").unlink()
    (root / "0004.txt").write_bytes(b"\xff\xfe")
    src = open_source(f"folder:{root}", max_bad_fraction=0.2)
    assert len(list(src)) == N - 2 and dict(src.tally.bad) == {"caption": 1, "utf-8": 1}
    spec = write_shards(tmp_path / "w", world_records[:3], per_shard=3)
    with wds.TarWriter(str(tmp_path / "w" / "001.tar")) as w:
        w.write({"__key__": "x", "png": _png(world_records[0][1])})
        w.write({"__key__": "y", "txt": "only a caption"})
    src = open_source(spec.replace("000..000", "000..001"), max_bad_fraction=0.5)
    assert len(list(src)) == 3 and dict(src.tally.bad) == {"caption": 1, "image": 1}


def test_bad_shards_and_specs_are_one_line_errors(tmp_path, world_records):
    spec = write_shards(tmp_path / "w", world_records[:4], per_shard=2)
    data = (tmp_path / "w" / "001.tar").read_bytes()
    (tmp_path / "w" / "001.tar").write_bytes(data[:700])  # truncated inside a member
    with pytest.raises(MarsEvalError, match=r"001.tar is not a readable tar shard"):
        list(open_source(spec))
    with pytest.raises(MarsEvalError, match=r"shard not found: .*002.tar \(and 5 more\)"):
        open_source(f"{tmp_path}/w/{{000..007}}.tar")
    with pytest.raises(MarsEvalError, match="cannot tell what kind of data source"):
        open_source(str(tmp_path / "nothing"))
    with pytest.raises(MarsEvalError, match="no records"):
        (tmp_path / "empty.jsonl").write_text("\n")
        list(open_source(str(tmp_path / "empty.jsonl")))
    assert tarfile.is_tarfile(tmp_path / "w" / "000.tar")
