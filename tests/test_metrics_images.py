"""Image folders and preprocessing protocols: listing, strict decoding, pixel formats, and each protocol's
resize against the library it claims to follow (no Inception here)."""

import numpy as np
import pytest
import torch
from PIL import Image

from mars_eval.errors import MarsEvalError
from mars_eval.metrics.features import LoaderConfig, extract
from mars_eval.metrics.images import list_images, load_rgb
from mars_eval.metrics.preprocess import PreprocessSpec, Protocol, centre_crop_resize


def _png(path, size=(16, 16), mode="RGB", seed=0):
    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(arr).convert(mode).save(path)
    return path


def test_listing_is_sorted_filters_and_counts_ignored(tmp_path):
    for name in ("b.png", "a.PNG", "c.jpg", "10.webp"):
        _png(tmp_path / name) if not name.endswith("jpg") else Image.new("RGB", (8, 8)).save(tmp_path / name)
    (tmp_path / "manifest.jsonl").write_text("{}\n")
    (tmp_path / ".hidden.png").write_bytes(b"")
    (tmp_path / "sub").mkdir()
    _png(tmp_path / "sub" / "d.png")
    folder = list_images(tmp_path)
    assert folder.relative() == ["10.webp", "a.PNG", "b.png", "c.jpg"]
    assert folder.ignored == 1
    assert list_images(tmp_path, recursive=True).relative()[-1] == "sub/d.png"


def test_listing_errors_name_the_folder(tmp_path):
    with pytest.raises(MarsEvalError, match="not found"):
        list_images(tmp_path / "missing")
    (tmp_path / "file.png").write_bytes(b"x")
    with pytest.raises(MarsEvalError, match="not a directory"):
        list_images(tmp_path / "file.png")
    one = tmp_path / "one"
    one.mkdir()
    _png(one / "0.png")
    with pytest.raises(MarsEvalError, match=r"one: found 1 image\(s\), need at least 2"):
        list_images(one)


@pytest.mark.parametrize("content,match", [
    (b"", "empty file"),
    (b"this is not an image at all", "not a readable image"),
])
def test_bad_files_are_errors_naming_the_file(tmp_path, content, match):
    p = tmp_path / "bad.png"
    p.write_bytes(content)
    with pytest.raises(MarsEvalError, match=match) as e:
        load_rgb(p)
    assert str(p) in str(e.value) and "\n" not in str(e.value)


def test_truncated_png_is_an_error(tmp_path):
    good = _png(tmp_path / "good.png", size=(64, 64))
    data = good.read_bytes()
    bad = tmp_path / "cut.png"
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(MarsEvalError, match="cut.png"):
        load_rgb(bad)


def test_pixel_formats(tmp_path):
    rng = np.random.default_rng(0)
    rgba = rng.integers(0, 256, (8, 8, 4), dtype=np.uint8)
    Image.fromarray(rgba, "RGBA").save(tmp_path / "rgba.png")
    np.testing.assert_array_equal(load_rgb(tmp_path / "rgba.png"), rgba[:, :, :3])  # alpha dropped, as the libraries

    grey = rng.integers(0, 256, (8, 8), dtype=np.uint8)
    Image.fromarray(grey, "L").save(tmp_path / "l.png")
    np.testing.assert_array_equal(load_rgb(tmp_path / "l.png"), np.repeat(grey[:, :, None], 3, axis=2))

    pal = Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).convert("P")
    pal.save(tmp_path / "p.png")
    np.testing.assert_array_equal(load_rgb(tmp_path / "p.png"), np.asarray(pal.convert("RGB")))

    g16 = rng.integers(0, 65536, (8, 8)).astype(np.uint16)
    Image.fromarray(g16).save(tmp_path / "g16.png")
    assert Image.open(tmp_path / "g16.png").mode.startswith("I;16")
    out = load_rgb(tmp_path / "g16.png")
    np.testing.assert_array_equal(out[:, :, 1], np.rint(g16 / 257.0).astype(np.uint8))
    assert out.dtype == np.uint8 and out.shape == (8, 8, 3)

    Image.fromarray(rng.random((8, 8)).astype(np.float32), "F").save(tmp_path / "f.tiff")
    with pytest.raises(MarsEvalError, match="f.tiff.*floating-point"):
        load_rgb(tmp_path / "f.tiff")


def test_clean_protocol_equals_clean_fid_dataset(tmp_path):
    from cleanfid.utils import ResizeDataset

    p = _png(tmp_path / "x.png", size=(37, 23))
    ours = PreprocessSpec(Protocol.CLEAN).build()(load_rgb(p))
    theirs = ResizeDataset([str(p)], mode="clean")[0]
    assert ours.shape == (3, 299, 299)
    torch.testing.assert_close(ours, theirs, rtol=0, atol=0)


def test_protocols_agree_exactly_at_299(tmp_path):
    """Both resizers are the identity at 299x299, so clean and torch-fidelity differ only by resizing."""
    rgb = load_rgb(_png(tmp_path / "x.png", size=(299, 299)))
    expected = torch.from_numpy(rgb).permute(2, 0, 1).float()
    for proto in (Protocol.CLEAN, Protocol.TORCH_FIDELITY):
        torch.testing.assert_close(PreprocessSpec(proto).build()(rgb), expected, rtol=0, atol=1e-4)
    small = load_rgb(_png(tmp_path / "y.png", size=(32, 32)))
    clean = PreprocessSpec(Protocol.CLEAN).build()(small)
    tf = PreprocessSpec(Protocol.TORCH_FIDELITY).build()(small)
    assert (clean - tf).abs().max() > 1  # bicubic vs bilinear upsampling differ


def test_coco_protocol_is_centre_crop_then_lanczos(tmp_path):
    rgb = load_rgb(_png(tmp_path / "x.png", size=(64, 40)))  # W 64, H 40: crop the width to 40 at offset 12
    expected = np.asarray(Image.fromarray(rgb).crop((12, 0, 52, 40)).resize((24, 24), Image.LANCZOS))
    np.testing.assert_array_equal(centre_crop_resize(rgb, 24), expected)
    spec = PreprocessSpec("coco")
    assert spec.resolution == 256 and spec.build()(rgb).shape == (3, 299, 299)


def test_preprocess_spec_validation():
    with pytest.raises(MarsEvalError, match="unknown FID protocol"):
        PreprocessSpec("legacy")
    with pytest.raises(MarsEvalError, match="coco protocol only"):
        PreprocessSpec("clean", 256)
    with pytest.raises(MarsEvalError, match="resolution"):
        PreprocessSpec("coco", 3)


class _MeanExtractor(torch.nn.Module):
    """A stand-in network: per-channel means repeated to 8 features (the loader, not Inception, is under
    test)."""

    dim = 8

    def forward(self, x):  # (B, 3, 299, 299) -> (B, 8)
        m = x.mean(dim=(2, 3))
        return torch.cat([m, m, m[:, :2]], dim=1)


@pytest.mark.parametrize("workers", [0, 1])
def test_extraction_reports_a_bad_file_in_one_line(tmp_path, workers):
    for i in range(3):
        _png(tmp_path / f"{i}.png", seed=i)
    (tmp_path / "1.png").write_bytes(b"garbage")
    folder = list_images(tmp_path)
    with pytest.raises(MarsEvalError) as e:
        extract(folder.files, PreprocessSpec(), _MeanExtractor(), LoaderConfig(batch_size=2, num_workers=workers))
    assert "1.png" in str(e.value) and "\n" not in str(e.value)


def test_streaming_statistics_equal_kept_features(tmp_path):
    for i in range(7):
        _png(tmp_path / f"{i}.png", seed=i)
    folder = list_images(tmp_path)
    out = extract(folder.files, PreprocessSpec(), _MeanExtractor(), LoaderConfig(batch_size=3), keep=True)
    np.testing.assert_allclose(out.stats.mu, out.features.astype(np.float64).mean(0), rtol=1e-12)
    np.testing.assert_allclose(out.stats.sigma, np.cov(out.features, rowvar=False), rtol=1e-9, atol=1e-12)
    assert extract(folder.files, PreprocessSpec(), _MeanExtractor(), keep=False).features is None
