"""FID / KID on the real InceptionV3 against the libraries: clean-fid's `compute_fid` and torch-fidelity's
`calculate_metrics` on the same folders, degradation monotonicity, and the feature cache.

Inception runs at ~7-10 images/s on one CPU core, so the folders are small world-like shape images (32 px).
"""

import os

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw, ImageFilter

from mars_eval.errors import MarsEvalError
from mars_eval.metrics.features import LoaderConfig, extract
from mars_eval.metrics.images import list_images
from mars_eval.metrics.inception import ExtractorConfig, InceptionExtractor, load_inception_layers
from mars_eval.metrics.metric_fid import frechet_distance_features
from mars_eval.metrics.metric_kid import KidConfig, kid
from mars_eval.metrics.pipeline import FidRunConfig, score_folders
from mars_eval.metrics.preprocess import PreprocessSpec

N = 12  # images per folder in the library comparisons


def shapes(folder, n, size=32, seed=0, ellipses_only=False):
    """World-like images: a flat background with 1-3 coloured rectangles / ellipses."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        img = Image.new("RGB", (size, size), tuple(int(v) for v in rng.integers(0, 256, 3)))
        draw = ImageDraw.Draw(img)
        for _ in range(int(rng.integers(1, 4))):
            x0, y0 = (int(v) for v in rng.integers(0, size - 8, 2))
            w, h = (int(v) for v in rng.integers(6, size // 2, 2))
            box = [x0, y0, min(size - 1, x0 + w), min(size - 1, y0 + h)]
            shape = draw.ellipse if ellipses_only or rng.integers(0, 2) else draw.rectangle
            shape(box, fill=tuple(int(v) for v in rng.integers(0, 256, 3)))
        img.save(folder / f"{i:04d}.png")
    return folder


@pytest.fixture(scope="module")
def extractor():
    return InceptionExtractor()


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("fid")
    return shapes(root / "a", N, seed=1), shapes(root / "b", N, seed=2, ellipses_only=True)


@pytest.fixture(scope="module")
def shared_cache(tmp_path_factory):
    """One feature cache for the module, so each folder goes through Inception once per protocol."""
    return tmp_path_factory.mktemp("cache")


def _config(**kw):
    return FidRunConfig(metrics=("fid", "kid"), kid=KidConfig(subsets=20), **kw)


def test_fid_equals_clean_fid_compute_fid(folders, extractor, shared_cache):
    """Our streaming, channels-last, frozen path vs clean-fid's own loop (its dataset, resizer, batching,
    numpy statistics and scipy sqrtm), fed the plain fp32 NCHW TorchScript network."""
    from cleanfid import fid as cleanfid

    a, b = folders
    ours = score_folders(a, b, _config(cache_dir=shared_cache), extractor)
    reference_net = InceptionExtractor(ExtractorConfig(backend="torchscript", channels_last=False, freeze=False))
    theirs = cleanfid.compute_fid(str(a), str(b), mode="clean", custom_feat_extractor=reference_net,
                                  device=torch.device("cpu"), num_workers=0, batch_size=8, verbose=False)
    assert ours["n_a"] == ours["n_b"] == N and ours["protocol"] == "clean"
    assert abs(ours["fid"] - theirs) < 1e-3
    assert ours["fid"] > 5  # two different distributions


def test_torch_fidelity_agrees_up_to_its_resize(folders, extractor, shared_cache, tmp_path):
    """torch-fidelity's own network and loop (with these weights) equals our `torch-fidelity` protocol; the
    gap to the `clean` protocol is the resize alone (bilinear vs bicubic upsampling of 32 px images), since
    both protocols give identical features for 299x299 inputs (test_metrics_images)."""
    import torch_fidelity

    from mars_eval.metrics.inception_fidelity import fidelity_weights_path

    a, b = folders
    weights = fidelity_weights_path(tmp_path)
    theirs = torch_fidelity.calculate_metrics(
        input1=str(a), input2=str(b), cuda=False, fid=True, kid=True, kid_subsets=20, kid_subset_size=N,
        feature_extractor="inception-v3-compat", feature_extractor_weights_path=str(weights),
        batch_size=8, cache=False, save_cpu_ram=True, verbose=False)
    ours_tf = score_folders(a, b, _config(preprocess=PreprocessSpec("torch-fidelity")), extractor)
    ours_clean = score_folders(a, b, _config(cache_dir=shared_cache), extractor)
    assert abs(ours_tf["fid"] - theirs["frechet_inception_distance"]) < 1e-3
    assert ours_tf["kid"] == pytest.approx(theirs["kernel_inception_distance_mean"], rel=1e-4, abs=1e-6)
    gap = abs(ours_tf["fid"] - ours_clean["fid"]) / ours_clean["fid"]
    assert 0 < gap < 0.5, gap  # same images, different resampler: a visible but bounded difference


def test_fidelity_weights_equal_torchscript(tmp_path):
    """The converted state dict in torch-fidelity's own network gives the TorchScript features."""
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    from mars_eval.metrics.inception_fidelity import fidelity_weights_path

    net = FeatureExtractorInceptionV3("inception-v3-compat", ["2048", "logits"],
                                      feature_extractor_weights_path=str(fidelity_weights_path(tmp_path)))
    x = torch.randint(0, 256, (2, 3, 299, 299), dtype=torch.uint8)
    f_tf, logits = net(x)
    f_ts = load_inception_layers()((x.float() - 128) / 128).reshape(2, 2048)
    torch.testing.assert_close(f_tf, f_ts, rtol=1e-5, atol=1e-5)
    assert torch.isnan(logits).all()  # no classifier weights: Inception Score must fail loudly


def test_fast_paths_within_1e5_of_the_plain_torchscript(folders):
    files = list_images(folders[0]).files[:4]
    plain = ExtractorConfig(backend="torchscript", channels_last=False, freeze=False)
    ref = extract(files, PreprocessSpec(), InceptionExtractor(plain)).features
    for cfg in (ExtractorConfig(), ExtractorConfig(backend="torchscript")):  # fused (default); frozen channels-last
        fast = extract(files, PreprocessSpec(), InceptionExtractor(cfg)).features
        assert np.abs(fast - ref).max() / np.abs(ref).max() < 1e-5, cfg
    bf16 = InceptionExtractor(ExtractorConfig(bf16=True))
    low = extract(files, PreprocessSpec(), bf16).features
    rel_bf16 = np.linalg.norm(low - ref) / np.linalg.norm(ref)
    assert 1e-4 < rel_bf16 < 0.05 and bf16.identity["precision"] == "bf16-autocast"


def test_fid_of_a_folder_with_itself_is_zero(folders, extractor, shared_cache):
    from mars_eval.metrics.metric_fid import frechet_distance

    a = folders[0]
    out = score_folders(a, a, _config(cache_dir=shared_cache), extractor)
    assert abs(out["fid"]) < 1e-6
    st = extract(list_images(a).files[:3], PreprocessSpec(), extractor).stats  # the statistics path too
    assert abs(frechet_distance(st, st)) < 1e-6


def _degrade(src, dst, blur=0.0, noise=0.0, seed=0):
    rng = np.random.default_rng(seed)
    dst.mkdir(parents=True, exist_ok=True)
    for f in sorted(src.iterdir()):
        img = Image.open(f).convert("RGB")
        if blur:
            img = img.filter(ImageFilter.GaussianBlur(blur))
        arr = np.asarray(img, dtype=np.float64)
        if noise:
            arr = arr + rng.normal(0, noise, arr.shape)
        Image.fromarray(np.clip(np.rint(arr), 0, 255).astype(np.uint8)).save(dst / f.name)
    return dst


@pytest.mark.parametrize("kind,levels", [("blur", (1.0, 2.0, 4.0)), ("noise", (12.0, 36.0, 100.0))])
def test_fid_and_kid_rise_monotonically_with_degradation(tmp_path, extractor, kind, levels):
    """Degraded copies of 8 world-like images against the originals; level 0 is the set against itself."""
    ref = shapes(tmp_path / "ref", 8, seed=3)
    base = extract(list_images(ref).files, PreprocessSpec(), extractor)
    fids = [frechet_distance_features(base.features, base.features)]
    kids = [kid(base.features, base.features, KidConfig(subsets=1))["kid"]]
    for level in levels:
        d = _degrade(ref, tmp_path / f"{kind}{level}", **{kind: level})
        feats = extract(list_images(d).files, PreprocessSpec(), extractor).features
        fids.append(frechet_distance_features(base.features, feats))
        kids.append(kid(base.features, feats, KidConfig(subsets=1))["kid"])
    assert all(x < y for x, y in zip(fids, fids[1:], strict=False)), fids
    assert all(x < y for x, y in zip(kids, kids[1:], strict=False)), kids


def test_cache_hit_computes_nothing_and_content_change_invalidates(tmp_path):
    a, b = shapes(tmp_path / "a", 3, seed=4), shapes(tmp_path / "b", 3, seed=5)
    net = InceptionExtractor()
    cfg = _config(cache_dir=tmp_path / "cache", loader=LoaderConfig(batch_size=4))
    first = score_folders(a, b, cfg, net)
    assert net.n_images == 6 and not first["cache_hit_a"] and not first["cache_hit_b"]
    second = score_folders(a, b, cfg, net)
    assert net.n_images == 6 and second["cache_hit_a"] and second["cache_hit_b"]
    assert second["fid"] == first["fid"] and second["kid"] == first["kid"]
    # a different protocol is a different entry
    score_folders(a, b, _config(cache_dir=tmp_path / "cache", preprocess=PreprocessSpec("coco", 24)), net)
    assert net.n_images == 12
    # rewrite one image of B with other pixels: B is recomputed, A still hits
    Image.new("RGB", (32, 32), (255, 0, 0)).save(b / "0001.png")
    third = score_folders(a, b, cfg, net)
    assert net.n_images == 15 and third["cache_hit_a"] and not third["cache_hit_b"]
    assert third["fid"] != first["fid"]
    # content hashing: touching a file without changing it still hits
    cfg_sha = _config(cache_dir=tmp_path / "cache", content_hash=True)
    score_folders(a, b, cfg_sha, net)
    n = net.n_images
    st = os.stat(a / "0000.png")
    os.utime(a / "0000.png", ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    assert score_folders(a, b, cfg_sha, net)["cache_hit_a"] and net.n_images == n


def test_corrupt_cache_entry_is_recomputed(tmp_path):
    a, b = shapes(tmp_path / "a", 2, seed=6), shapes(tmp_path / "b", 2, seed=7)
    net = InceptionExtractor()
    cfg = _config(cache_dir=tmp_path / "cache")
    first = score_folders(a, b, cfg, net)
    for entry in (tmp_path / "cache").rglob("*.safetensors"):
        entry.write_bytes(b"\0" * 10)
    again = score_folders(a, b, cfg, net)
    assert net.n_images == 8 and again["fid"] == pytest.approx(first["fid"], rel=1e-6)


def test_wrong_weights_file_is_refused(tmp_path):
    fake = tmp_path / "default_1.pt"
    fake.write_bytes(b"not inception")
    with pytest.raises(MarsEvalError, match="sha256"):
        InceptionExtractor(weights=fake)


def test_pinned_features():
    """Pinned Inception features of three synthetic 299x299 inputs (grey, ramp, checkerboard), recorded from the
    plain fp32 TorchScript path: catches a changed normalisation, layout or weights file."""
    g = torch.full((3, 299, 299), 128.0)
    ramp = torch.linspace(0, 255, 299).expand(3, 299, 299).clone()
    yy, xx = torch.meshgrid(torch.arange(299), torch.arange(299), indexing="ij")
    checker = (((yy // 23 + xx // 23) % 2) * 255).float().expand(3, 299, 299).clone()
    f = InceptionExtractor()(torch.stack([g, ramp, checker])).double()  # (3, 2048)
    expected_head = [[0.49266848, 0.02834645, 0.10596873, 0.00815130],
                     [0.17251895, 0.04935149, 0.02442805, 0.00170118],
                     [0.36354324, 0.00362204, 0.00261884, 0.01449818]]
    np.testing.assert_allclose(f[:, :4].numpy(), expected_head, atol=2e-5)
    np.testing.assert_allclose(f.norm(dim=1).numpy(), [13.0365067, 19.0246317, 18.5482885], rtol=1e-5)
    np.testing.assert_allclose(f.sum(dim=1).numpy(), [201.387370, 340.304717, 458.536943], rtol=1e-5)
