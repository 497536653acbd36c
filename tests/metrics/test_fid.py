"""Fréchet distance and streamed feature statistics (spec ifid-seesaw 1.1, 1.2, 1.6)."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg
import torch

from latentbench.metrics.fid import FeatureStats, frechet_distance, frechet_distance_from_features

torch.set_num_threads(1)


def route_a(mu1: np.ndarray, s1: np.ndarray, mu2: np.ndarray, s2: np.ndarray) -> float:
    """Spec 1.2 route (a): scipy sqrtm of S1 S2, real part (pytorch-fid's algorithm)."""
    covmean = np.real(scipy.linalg.sqrtm(s1 @ s2))
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))


def gaussian_sets(n1: int, n2: int, d: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Two random feature sets with different means and non-trivial covariances."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n1, d)) @ rng.standard_normal((d, d)) * 0.2
    y = rng.standard_normal((n2, d)) @ rng.standard_normal((d, d)) * 0.3 + 0.5
    return x, y


def stats(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return x.mean(0), np.cov(x, rowvar=False)


# ---- analytic oracles (spec 1.6) ------------------------------------------------------


def test_identical_statistics_give_zero() -> None:
    x, _ = gaussian_sets(500, 2, 64)
    mu, s = stats(x)
    assert abs(frechet_distance(mu, s, mu, s)) < 1e-8 * np.trace(s)


def test_same_covariance_gives_squared_mean_distance() -> None:
    x, _ = gaussian_sets(300, 2, 16)
    mu, s = stats(x)
    shift = np.linspace(-1.0, 2.0, 16)
    assert frechet_distance(mu, s, mu + shift, s) == pytest.approx(shift @ shift, rel=1e-10)


def test_one_dimensional() -> None:
    m1, s1, m2, s2 = 0.3, 2.0, -1.2, 0.5  # s = standard deviations
    expected = (m1 - m2) ** 2 + (s1 - s2) ** 2
    got = frechet_distance(np.array([m1]), np.array([[s1**2]]), np.array([m2]), np.array([[s2**2]]))
    assert got == pytest.approx(expected, rel=1e-14)
    # scalars are accepted as the 1-D case
    assert frechet_distance(m1, s1**2, m2, s2**2) == pytest.approx(expected, rel=1e-14)


def test_diagonal_example() -> None:
    fd = frechet_distance(np.zeros(2), np.diag([1.0, 4.0]), np.ones(2), np.diag([4.0, 1.0]))
    assert fd == pytest.approx(4.0, abs=1e-14)


def test_non_diagonal_example() -> None:
    s1 = np.array([[2.0, 1.0], [1.0, 2.0]])
    fd = frechet_distance(np.zeros(2), s1, np.zeros(2), np.eye(2))
    assert fd == pytest.approx(0.5358983848622454, abs=1e-14)


def test_general_example() -> None:
    s1 = np.array([[2.0, 1.0], [1.0, 2.0]])
    s2 = np.array([[1.0, -0.5], [-0.5, 1.0]])
    fd = frechet_distance(np.zeros(2), s1, np.ones(2), s2)
    assert fd == pytest.approx(3.1010205144336442, abs=1e-14)
    assert route_a(np.zeros(2), s1, np.ones(2), s2) == pytest.approx(fd, abs=1e-13)


def test_symmetry_scaling_translation() -> None:
    x, y = gaussian_sets(400, 350, 32)
    fd = frechet_distance(*stats(x), *stats(y))
    assert frechet_distance(*stats(y), *stats(x)) == pytest.approx(fd, rel=1e-12)
    c = 3.7
    assert frechet_distance(*stats(c * x), *stats(c * y)) == pytest.approx(c**2 * fd, rel=1e-12)
    t = np.linspace(-5.0, 5.0, 32)
    assert frechet_distance(*stats(x + t), *stats(y + t)) == pytest.approx(fd, rel=1e-12)


# ---- agreement between routes --------------------------------------------------------


def test_random_full_rank_matches_sqrtm_route() -> None:
    x, y = gaussian_sets(500, 500, 64)
    ours = frechet_distance(*stats(x), *stats(y))
    assert ours == pytest.approx(route_a(*stats(x), *stats(y)), rel=1e-8)
    assert frechet_distance_from_features(x, y) == pytest.approx(ours, rel=1e-10)


@pytest.mark.parametrize("n1, n2", [(20, 23), (300, 20), (20, 300)])
def test_rank_deficient_matches_sqrtm_and_feature_routes(n1: int, n2: int) -> None:
    """n = 20 < d = 64: that covariance has rank 19 (one or both sides).

    Route (d) works on the features and never forms S1 S2, so it is the exact reference
    here: ours agrees with it to rounding (this needs the numerical-zero cut-offs on both
    eigen-decompositions). sqrtm (route (a)) adds sqrt(rounding noise) from the ~45 zero
    eigenvalues of S1 S2 and is off by ~2e-8 relative, so it is compared at 1e-7.
    """
    x, y = gaussian_sets(n1, n2, 64, seed=1)
    ours = frechet_distance(*stats(x), *stats(y))
    assert frechet_distance_from_features(x, y) == pytest.approx(ours, rel=1e-12)
    assert route_a(*stats(x), *stats(y)) == pytest.approx(ours, rel=1e-7)


def test_feature_route_with_more_samples_than_dimensions() -> None:
    x, y = gaussian_sets(90, 40, 8, seed=2)
    assert frechet_distance_from_features(x, y) == pytest.approx(
        frechet_distance(*stats(x), *stats(y)), rel=1e-12
    )


def test_accepts_torch_tensors() -> None:
    x, y = gaussian_sets(200, 200, 16)
    expected = frechet_distance(*stats(x), *stats(y))
    as_t = [torch.from_numpy(a).float() for a in (*stats(x), *stats(y))]
    assert frechet_distance(*as_t) == pytest.approx(expected, rel=1e-5)  # float32 inputs
    as_t64 = [torch.from_numpy(a) for a in (*stats(x), *stats(y))]
    assert frechet_distance(*as_t64) == pytest.approx(expected, rel=1e-14)
    fx, fy = torch.from_numpy(x), torch.from_numpy(y)
    assert frechet_distance_from_features(fx, fy) == pytest.approx(expected, rel=1e-10)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu() -> None:
    x, y = gaussian_sets(20, 300, 64)  # S1 rank-deficient: exercises the eigh path too
    expected = frechet_distance(*stats(x), *stats(y))
    on_gpu = [torch.from_numpy(a).cuda() for a in (*stats(x), *stats(y))]
    assert frechet_distance(*on_gpu) == pytest.approx(expected, rel=1e-10)
    fx, fy = torch.from_numpy(x).cuda(), torch.from_numpy(y).cuda()
    assert frechet_distance_from_features(fx, fy) == pytest.approx(expected, rel=1e-10)
    gpu_stats = FeatureStats().update(fx)
    np.testing.assert_allclose(gpu_stats.cov, np.cov(x, rowvar=False), rtol=1e-12, atol=1e-14)


def test_bad_shapes_raise() -> None:
    mu, s = np.zeros(3), np.eye(3)
    with pytest.raises(ValueError, match="sigma1"):
        frechet_distance(mu, np.eye(4), mu, s)
    with pytest.raises(ValueError, match="mu2"):
        frechet_distance(mu, s, np.zeros(4), np.eye(4))
    with pytest.raises(ValueError, match="mu1"):
        frechet_distance(np.zeros((3, 1)), s, mu, s)
    with pytest.raises(ValueError, match="sigma2"):
        frechet_distance(mu, s, mu, np.triu(np.ones((3, 3))))
    with pytest.raises(ValueError, match="NaN"):
        frechet_distance(mu, s, mu * np.nan, s)
    with pytest.raises(ValueError, match="y"):
        frechet_distance_from_features(np.zeros((5, 3)), np.zeros((5, 4)))


# ---- FeatureStats ----------------------------------------------------------------------


def test_feature_stats_matches_numpy() -> None:
    x, _ = gaussian_sets(257, 2, 24)
    fs = FeatureStats().update(x)
    assert fs.count == 257 and fs.dim == 24
    np.testing.assert_allclose(fs.mean, x.mean(0), rtol=1e-13, atol=1e-14)
    np.testing.assert_allclose(fs.cov, np.cov(x, rowvar=False), rtol=1e-12, atol=1e-14)
    assert fs.mean.dtype == np.float64 and fs.cov.dtype == np.float64


@pytest.mark.parametrize("batch", [1, 7, 64, 1000])
def test_feature_stats_batch_size_invariance(batch: int) -> None:
    x, _ = gaussian_sets(301, 2, 12)
    x = x + 1e4  # a large offset is where a raw sum of x x^T loses digits
    fs = FeatureStats()
    for start in range(0, len(x), batch):
        fs.update(torch.from_numpy(x[start : start + batch]))
    np.testing.assert_allclose(fs.mean, x.mean(0), rtol=1e-13)
    np.testing.assert_allclose(fs.cov, np.cov(x, rowvar=False), rtol=1e-9, atol=1e-12)


def test_feature_stats_float32_input_accumulates_in_float64() -> None:
    x = (np.random.default_rng(3).standard_normal((500, 8)) + 100.0).astype(np.float32)
    fs = FeatureStats()
    for chunk in np.array_split(x, 9):
        fs.update(torch.from_numpy(chunk))
    np.testing.assert_allclose(fs.cov, np.cov(x.astype(np.float64), rowvar=False), rtol=1e-10)


def test_feature_stats_merge_is_exact() -> None:
    x, _ = gaussian_sets(400, 2, 10)
    whole = FeatureStats().update(x)
    a = FeatureStats().update(x[:123])
    b = FeatureStats().update(x[123:301]).update(x[301:])
    merged = a.merge(b)
    assert merged.count == 400
    np.testing.assert_allclose(merged.mean, whole.mean, rtol=1e-13)
    np.testing.assert_allclose(merged.cov, whole.cov, rtol=1e-12, atol=1e-14)
    empty = FeatureStats()
    assert empty.merge(whole).count == 400  # merging into empty stats copies
    assert whole.merge(FeatureStats()).count == 400


def test_feature_stats_save_load_roundtrip(tmp_path) -> None:
    x, y = gaussian_sets(50, 60, 6)
    fs = FeatureStats().update(x)
    path = tmp_path / "stats.npz"
    fs.save(path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["stats.npz"]  # no temporary left
    loaded = FeatureStats.load(path)
    assert loaded.count == 50
    np.testing.assert_array_equal(loaded.mean, fs.mean)
    np.testing.assert_array_equal(loaded.cov, fs.cov)
    with np.load(path) as data:  # pytorch-fid / ADM key names are present
        np.testing.assert_array_equal(data["sigma"], fs.cov)
    # loaded stats keep streaming exactly
    loaded.update(y)
    np.testing.assert_allclose(loaded.cov, np.cov(np.vstack([x, y]), rowvar=False), rtol=1e-12)
    # a name without the .npz suffix is kept as given
    fs.save(tmp_path / "plain")
    assert FeatureStats.load(tmp_path / "plain").count == 50


def test_feature_stats_load_errors(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="missing.npz"):
        FeatureStats.load(tmp_path / "missing.npz")
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="bad.npz"):
        FeatureStats.load(bad)
    other = tmp_path / "other.npz"
    np.savez(other, mu=np.zeros(2), sigma=np.eye(2))
    with pytest.raises(ValueError, match="missing key"):
        FeatureStats.load(other)


def test_feature_stats_fd_and_errors() -> None:
    x, y = gaussian_sets(300, 250, 16)
    fx, fy = FeatureStats().update(x), FeatureStats().update(y)
    assert fx.fd(fy) == pytest.approx(frechet_distance(*stats(x), *stats(y)), rel=1e-12)
    with pytest.raises(ValueError, match="features"):
        fx.update(np.zeros((3, 5)))
    with pytest.raises(ValueError, match="features"):
        fx.update(np.zeros(16))
    with pytest.raises(ValueError, match="features"):
        fx.update(np.full((2, 16), np.nan))
    with pytest.raises(ValueError, match="at least 2"):
        _ = FeatureStats().update(np.zeros((1, 4))).cov
    with pytest.raises(ValueError, match="no features"):
        _ = FeatureStats().mean
    with pytest.raises(ValueError, match="other"):
        fx.merge(FeatureStats().update(np.zeros((2, 3))))


def test_stats_group_roundtrip_and_empty_group(tmp_path):
    from latentbench.metrics.fid import load_stats_group, save_stats_group

    g = np.random.default_rng(0)
    a, b = FeatureStats().update(g.normal(size=(20, 3))), FeatureStats().update(g.normal(size=(9, 5)))
    save_stats_group(tmp_path / "g.npz", {"a": a, "b": b})
    loaded = load_stats_group(tmp_path / "g.npz")
    assert sorted(loaded) == ["a", "b"] and loaded["b"].count == 9
    np.testing.assert_array_equal(loaded["a"].cov, a.cov)
    save_stats_group(tmp_path / "empty.npz", {})
    assert load_stats_group(tmp_path / "empty.npz") == {}
    (tmp_path / "bad.npz").write_bytes(b"junk")
    with pytest.raises(ValueError, match="bad.npz"):
        load_stats_group(tmp_path / "bad.npz")
