"""Statistics and score stages against independent computations: closed forms on Gaussians, numpy/scipy, and
the clean-fid / torch-fidelity formulas. No Inception here (small dimensions, fast)."""

import numpy as np
import pytest
import scipy.linalg
from scipy.spatial.distance import cdist

from mars_eval.errors import MarsEvalError
from mars_eval.metrics.fid_infinity import BootstrapConfig, FidInfConfig, bootstrap_ci, fid_infinity
from mars_eval.metrics.metric_fid import frechet_distance, frechet_distance_features, trace_sqrt_product
from mars_eval.metrics.metric_kid import KidConfig, kid
from mars_eval.metrics.metric_prc import precision_recall
from mars_eval.metrics.statistics import GaussianStats, RunningMoments


def _gaussians(d, seed=0, shift=0.3, spread=(0.7, 1.3)):
    """Two Gaussians with commuting covariances, so the Frechet distance has a closed form."""
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.standard_normal((d, d)))
    la = rng.uniform(0.5, 2.0, d)
    lb = la * rng.uniform(*spread, d)
    mu_a, mu_b = rng.standard_normal(d), rng.standard_normal(d)
    mu_b = mu_a + shift * (mu_b - mu_a) / np.linalg.norm(mu_b - mu_a)
    sa, sb = (q * la) @ q.T, (q * lb) @ q.T
    closed = float(((mu_a - mu_b) ** 2).sum() + ((np.sqrt(la) - np.sqrt(lb)) ** 2).sum())
    return mu_a, sa, mu_b, sb, closed, rng


@pytest.mark.parametrize("batch", [1, 7, 64, 1000])
def test_running_moments_equal_numpy(batch):
    rng = np.random.default_rng(1)
    x = (rng.standard_normal((301, 12)) * 3 + 50).astype(np.float32)  # large mean: a one-pass formula would lose digits
    m = RunningMoments(12)
    for i in range(0, len(x), batch):
        m.update(x[i:i + batch])
    st = m.finalize()
    np.testing.assert_allclose(st.mu, x.astype(np.float64).mean(0), rtol=1e-12, atol=1e-10)
    np.testing.assert_allclose(st.sigma, np.cov(x, rowvar=False), rtol=1e-10, atol=1e-10)
    assert st.n == 301


def test_running_moments_need_two_samples():
    m = RunningMoments(3)
    m.update(np.zeros((1, 3)))
    with pytest.raises(MarsEvalError):
        m.finalize()


def test_frechet_distance_closed_form():
    mu_a, sa, mu_b, sb, closed, _ = _gaussians(32)
    got = frechet_distance(GaussianStats(mu_a, sa, 100), GaussianStats(mu_b, sb, 100))
    assert got == pytest.approx(closed, rel=1e-9)


def test_frechet_distance_equals_clean_fid_and_torch_fidelity_formulas():
    """Non-commuting covariances: compare with clean-fid's sqrtm and torch-fidelity's eigvals implementations.
    """
    from cleanfid.fid import frechet_distance as cleanfid_fd
    from torch_fidelity.metric_fid import fid_statistics_to_metric

    rng = np.random.default_rng(2)
    d = 48
    xa, xb = rng.standard_normal((200, d)) ** 2, rng.standard_normal((150, d)) * 1.5 + 0.2
    a, b = GaussianStats.from_features(xa), GaussianStats.from_features(xb)
    ours = frechet_distance(a, b)
    ref_cf = cleanfid_fd(a.mu, a.sigma, b.mu, b.sigma)
    ref_tf = fid_statistics_to_metric({"mu": a.mu, "sigma": a.sigma}, {"mu": b.mu, "sigma": b.sigma}, False)
    assert ours == pytest.approx(ref_cf, rel=1e-9)
    assert ours == pytest.approx(ref_tf["frechet_inception_distance"], rel=1e-9)
    # and the trace term against scipy directly
    assert trace_sqrt_product(a.sigma, b.sigma) == pytest.approx(
        float(np.trace(scipy.linalg.sqrtm(a.sigma @ b.sigma)).real), rel=1e-9)


@pytest.mark.parametrize("na,nb", [(20, 30), (60, 45), (300, 200)])
def test_feature_path_equals_statistics_path(na, nb):
    """The nuclear-norm path (n < d) and the eigh path (n > d) both equal the statistics-based value."""
    rng = np.random.default_rng(na)
    d = 96
    xa = rng.standard_normal((na, d)).astype(np.float32) ** 2
    xb = (rng.standard_normal((nb, d)) + 0.3).astype(np.float32) ** 2
    expected = frechet_distance(GaussianStats.from_features(xa), GaussianStats.from_features(xb))
    assert frechet_distance_features(xa, xb) == pytest.approx(expected, rel=1e-8)


def test_weighted_features_equal_duplicated_rows():
    rng = np.random.default_rng(3)
    xa, xb = rng.standard_normal((25, 40)), rng.standard_normal((30, 40)) + 0.5
    wa, wb = rng.integers(0, 3, 25), rng.integers(0, 3, 30)
    wa[0] = wb[0] = 2  # at least two samples
    dup_a, dup_b = np.repeat(xa, wa, axis=0), np.repeat(xb, wb, axis=0)
    assert frechet_distance_features(xa, xb, wa, wb) == pytest.approx(
        frechet_distance(GaussianStats.from_features(dup_a), GaussianStats.from_features(dup_b)), rel=1e-9)


def test_sample_fid_converges_to_closed_form():
    mu_a, sa, mu_b, sb, closed, rng = _gaussians(6, seed=4)
    xa = rng.multivariate_normal(mu_a, sa, 40000)
    xb = rng.multivariate_normal(mu_b, sb, 40000)
    assert frechet_distance_features(xa, xb) == pytest.approx(closed, abs=0.01)


def _poly_mmd2_closed_form(mu_a, sa, mu_b, sb):
    """MMD^2 for k(x, y) = (x.y / d + 1)^3 between two Gaussians, from their first three moments."""
    d = len(mu_a)

    def third(mu, s):  # E[x_i x_j x_k]
        return (np.einsum("i,j,k->ijk", mu, mu, mu) + np.einsum("i,jk->ijk", mu, s)
                + np.einsum("j,ik->ijk", mu, s) + np.einsum("k,ij->ijk", mu, s))

    def ek(mu1, s1, mu2, s2):  # E k(x, y), x ~ N(mu1, s1), y ~ N(mu2, s2) independent
        m1, m2 = s1 + np.outer(mu1, mu1), s2 + np.outer(mu2, mu2)
        e1, e2 = mu1 @ mu2, np.trace(m1 @ m2)
        e3 = float((third(mu1, s1) * third(mu2, s2)).sum())
        return e3 / d ** 3 + 3 * e2 / d ** 2 + 3 * e1 / d + 1

    return ek(mu_a, sa, mu_a, sa) + ek(mu_b, sb, mu_b, sb) - 2 * ek(mu_a, sa, mu_b, sb)


def test_kid_matches_closed_form_mmd():
    mu_a, sa, mu_b, sb, _, rng = _gaussians(8, seed=5, shift=1.0)
    expected = _poly_mmd2_closed_form(mu_a, sa, mu_b, sb)
    xa = rng.multivariate_normal(mu_a, sa, 4000).astype(np.float32)
    xb = rng.multivariate_normal(mu_b, sb, 4000).astype(np.float32)
    out = kid(xa, xb, KidConfig(subsets=100, subset_size=1000))
    assert out["kid_subset_size"] == 1000
    assert expected > 10 * out["kid_std"]  # the check below is not vacuous
    assert out["kid"] == pytest.approx(expected, abs=3 * out["kid_std"])


def test_kid_of_identical_distributions_is_near_zero_and_subset_size_checked():
    rng = np.random.default_rng(6)
    xa, xb = rng.standard_normal((300, 8)), rng.standard_normal((300, 8))
    assert kid(xa, xb, KidConfig(subsets=5))["kid_subset_size"] == 300  # default: min(1000, n_a, n_b)
    out = kid(xa, xb, KidConfig(subsets=50, subset_size=100))
    assert abs(out["kid"]) < 3 * out["kid_std"]
    with pytest.raises(MarsEvalError, match="subset size"):
        kid(xa, xb[:100], KidConfig(subset_size=200))


def _prc_reference(gen, ref, k=3):
    """Independent k-NN precision / recall (Kynkaanniemi et al. 2019) with scipy distances."""
    r_gen = np.sort(cdist(gen, gen), axis=1)[:, k]  # k-th neighbour, self excluded (column 0)
    r_ref = np.sort(cdist(ref, ref), axis=1)[:, k]
    d = cdist(gen, ref)  # (n_gen, n_ref)
    precision = float((d <= r_ref[None, :]).any(axis=1).mean())
    recall = float((d.T <= r_gen[None, :]).any(axis=1).mean())
    return precision, recall


def test_precision_recall_equals_independent_knn():
    rng = np.random.default_rng(7)
    ref = rng.standard_normal((60, 5))
    gen = rng.standard_normal((50, 5)) * 0.5 + 0.8  # a narrower, shifted generator: precision != recall
    out = precision_recall(gen.astype(np.float32), ref.astype(np.float32))
    p, r = _prc_reference(gen.astype(np.float32).astype(np.float64), ref.astype(np.float32).astype(np.float64))
    assert out["precision"] == pytest.approx(p) and out["recall"] == pytest.approx(r)
    assert out["precision"] != out["recall"]


def test_bootstrap_interval_contains_fid_and_narrows_with_more_samples():
    mu_a, sa, mu_b, sb, _, rng = _gaussians(8, seed=8, shift=1.0)
    widths = []
    for n in (60, 600):
        xa, xb = rng.multivariate_normal(mu_a, sa, n), rng.multivariate_normal(mu_b, sb, n)
        f = frechet_distance_features(xa, xb)
        ci = bootstrap_ci(xa, xb, f, BootstrapConfig(resamples=60, seed=1))
        assert ci["fid_ci_low"] <= f <= ci["fid_ci_high"]
        assert ci == bootstrap_ci(xa, xb, f, BootstrapConfig(resamples=60, seed=1))  # seeded
        widths.append(ci["fid_ci_high"] - ci["fid_ci_low"])
    assert widths[1] < widths[0] / 2


def test_fid_infinity_removes_most_of_the_bias_when_n_exceeds_dimension():
    mu_a, sa, mu_b, sb, closed, rng = _gaussians(16, seed=9, shift=0.5)
    plain, inf = [], []
    for trial in range(4):
        xa, xb = rng.multivariate_normal(mu_a, sa, 1000), rng.multivariate_normal(mu_b, sb, 1000)
        plain.append(frechet_distance_features(xa, xb))
        out = fid_infinity(xa, xb, FidInfConfig(seed=trial))
        assert out["fid_inf_valid"] and out["fid_inf_slope"] > 0
        inf.append(out["fid_inf"])
    assert np.mean(plain) - closed > 0.1  # plain FID is visibly biased at this size ...
    assert abs(np.mean(inf) - closed) < 0.3 * (np.mean(plain) - closed)  # ... FID-inf much less
    small = fid_infinity(xa[:40], xb[:40], FidInfConfig(min_images=50))
    assert small["fid_inf"] is None


def test_fid_infinity_flags_sets_smaller_than_the_dimension():
    rng = np.random.default_rng(10)
    out = fid_infinity(rng.standard_normal((80, 64)), rng.standard_normal((80, 64)) + 0.1, FidInfConfig())
    assert out["fid_inf"] is not None and out["fid_inf_valid"] is False
