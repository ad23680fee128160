"""`mars-eval encode`: codes equal the VQ's on the cropped images, the output does not depend on how the shards
are split or on a kill midway, a second job into the same folder is refused, bad input is one line."""

import hashlib
import json

import numpy as np
import pytest
import torch
from test_sources import write_jsonl, write_shards

from mars_eval.cli.main import main
from mars_eval.encode import centre_crop_resize, encode_source, read_codes
from mars_eval.errors import MarsEvalError
from mars_ref.vq import VQModel, vq_preset
from mars_ref.vq_formats import save_vq
from mars_ref.vq_train import to_model_range
from mars_ref.world import CATEGORIES, caption, render, sample_scene


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("enc")
    rng = np.random.default_rng(1)
    scenes = [sample_scene(CATEGORIES[i % 7], rng, aspect=(3, 2) if i % 3 == 0 else (1, 1)) for i in range(11)]
    records = [(f"{i:04d}", render(s, 48 if s.aspect == (3, 2) else 32, 32), caption(s, "en"), caption(s, "zh"))
               for i, s in enumerate(scenes)]
    torch.manual_seed(0)
    vq = VQModel(vq_preset("tiny")).eval()
    save_vq(vq, root / "vq")
    return {"root": root, "records": records, "jsonl": str(write_jsonl(root / "j", records)),
            "wds": write_shards(root / "w", records, per_shard=4), "vq": vq}


def _digest(out):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(out.iterdir())
            if p.name.startswith(("codes-", "index-"))}


def test_codes_are_the_vqs_on_centre_crops_in_source_order(data, tmp_path):
    s = encode_source(data["jsonl"], data["root"] / "vq", tmp_path / "o", px=16, shard_size=4)
    side = 16 // data["vq"].cfg.downsample_factor
    assert s["complete"] and s["records"] == 11 and s["shards"] == 3 and s["grid"] == [side, side]
    codes, rows = read_codes(tmp_path / "o")
    crops = np.stack([np.asarray(centre_crop_resize(im.convert("RGB"), 16)) for _, im, _, _ in data["records"]])
    with torch.inference_mode():
        want = data["vq"].encode(to_model_range(torch.from_numpy(crops).permute(0, 3, 1, 2).contiguous()))
    assert torch.equal(codes, want.flatten(1).to(torch.int32))
    assert [r["key"] for r in rows] == [k for k, *_ in data["records"]]
    assert [r["caption_zh"] for r in rows] == [zh for *_, zh in data["records"]]
    assert list(codes.shape) == [11, side * side]


def test_split_and_resumed_runs_write_the_same_files(data, tmp_path):
    one = tmp_path / "one"
    encode_source(data["wds"], data["root"] / "vq", one, px=16, shard_size=3)
    split = tmp_path / "split"
    first = encode_source(data["wds"], data["root"] / "vq", split, px=16, shard_size=3, rank=1, world_size=2)
    assert not first["complete"] and not (split / "encode.json").exists()
    (split / "index-00001.jsonl").unlink()  # as if killed between the two files of shard 1
    done = encode_source(data["wds"], data["root"] / "vq", split, px=16, shard_size=3, rank=0, world_size=2)
    assert not done["complete"]
    done = encode_source(data["wds"], data["root"] / "vq", split, px=16, shard_size=3)
    assert done["complete"] and done["shards_written_now"] == 1
    assert _digest(split) == _digest(one)


def test_another_job_into_the_same_folder_and_bad_input_are_one_line_errors(data, tmp_path, capsys):
    encode_source(data["jsonl"], data["root"] / "vq", tmp_path / "o", px=16, shard_size=4)
    with pytest.raises(MarsEvalError, match="holds another encode job \\(px: 16, now 32\\)"):
        encode_source(data["jsonl"], data["root"] / "vq", tmp_path / "o", px=32, shard_size=4)
    for args, needle in ((["--px", "7"], "multiple of the VQ's downsampling factor"),
                         (["--shard", "3/2"], "need 0 <= index < count"),
                         (["--vq", str(tmp_path / "none")], "VQ checkpoint not found")):
        argv = ["encode", "--data", data["jsonl"], "--vq", str(data["root"] / "vq"), "--out", str(tmp_path / "x"),
                "--px", "16", *args]
        with pytest.raises(SystemExit) as e:
            main(argv)
        assert e.value.code == 1
        err = capsys.readouterr().err
        assert err.startswith("error: ") and err.count("\n") == 1 and needle in err, err


def test_cli_reports_counts(data, tmp_path, capsys):
    assert main(["encode", "--data", data["jsonl"], "--vq", str(data["root"] / "vq"), "--out", str(tmp_path / "o"),
                 "--px", "16", "--shard-size", "5", "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["records"] == 11 and res["shards"] == 3 and res["tally"]["skipped"] == 0


def _vq_of(vq, images):
    x = torch.from_numpy(np.stack([np.asarray(im) for im in images])).permute(0, 3, 1, 2).contiguous()
    with torch.inference_mode():
        return vq.encode(to_model_range(x)).flatten(1)


def test_bucket_and_superres_layouts_hold_the_vqs_codes_of_each_stages_crops(data, tmp_path):
    from PIL import Image

    from mars_eval.encode import bucket_sizes, crop_resize, nearest_bucket, read_encoded

    assert bucket_sizes(16, 4) == [(16, 16), (24, 16), (16, 24), (32, 16), (16, 32)]
    assert nearest_bucket(48, 32, bucket_sizes(16, 4)) == (24, 16) and nearest_bucket(30, 70, bucket_sizes(16, 4)) \
        == (16, 32) and nearest_bucket(33, 32, bucket_sizes(16, 4)) == (16, 16)
    im = Image.fromarray(np.arange(60 * 40 * 3, dtype=np.uint8).reshape(40, 60, 3))  # 60 wide, 40 high
    assert np.array_equal(np.asarray(crop_resize(im, 20, 20)), np.asarray(im.crop((10, 0, 50, 40)).resize(
        (20, 20), Image.BICUBIC)))
    assert crop_resize(im, 32, 16).size == (32, 16)

    vq, f = data["vq"], data["vq"].cfg.downsample_factor
    s = encode_source(data["jsonl"], data["root"] / "vq", tmp_path / "b", px=16, shard_size=4, layout="buckets")
    enc = read_encoded(tmp_path / "b")
    assert s["complete"] and s["layout"] == "buckets" and len(enc.codes) == 11 and enc.high is None
    for (_, image, _, _), codes, grid in zip(data["records"], enc.codes, enc.grids, strict=True):
        w, h = nearest_bucket(*image.size, bucket_sizes(16, f))
        assert grid == (h // f, w // f) and torch.equal(codes, _vq_of(vq, [crop_resize(image.convert("RGB"), w, h)])[0])
    assert {g for g in enc.grids} == {(16 // f, 24 // f), (16 // f, 16 // f)}  # the 3:2 renders and the squares

    encode_source(data["jsonl"], data["root"] / "vq", tmp_path / "s", px=16, shard_size=4, layout="superres")
    enc = read_encoded(tmp_path / "s")
    rgb = [im.convert("RGB") for _, im, _, _ in data["records"]]
    assert torch.equal(torch.stack(enc.codes), _vq_of(vq, [centre_crop_resize(im, 16) for im in rgb]).long())
    assert torch.equal(torch.stack(enc.high), _vq_of(vq, [centre_crop_resize(im, 32) for im in rgb]).long())
    with pytest.raises(MarsEvalError, match="do not stack"):
        read_codes(tmp_path / "b")
    with pytest.raises(MarsEvalError, match="--layout must be one of square, buckets, superres"):
        encode_source(data["jsonl"], data["root"] / "vq", tmp_path / "x", px=16, layout="tiles")
