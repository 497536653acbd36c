"""Uniformity oracles of spec diffusability §7."""

import math

import numpy as np
import pytest
import torch

from latentbench.metrics.uniformity import density_statistics, kde_density, sample_tokens, tsne_embed, uniformity


def test_statistics_of_1_2_3_4():
    out = density_statistics(np.array([1.0, 2.0, 3.0, 4.0]))
    assert out["density_cv"] == pytest.approx(0.4472136, abs=1e-7)
    assert out["gini"] == pytest.approx(0.25, abs=1e-12)
    assert out["normalized_entropy"] == pytest.approx(0.9232197, abs=1e-7)


def test_statistics_of_constant_density():
    out = density_statistics(torch.full((50,), 0.3))
    assert out["density_cv"] == pytest.approx(0.0, abs=1e-12)
    assert out["gini"] == pytest.approx(0.0, abs=1e-12)
    assert out["normalized_entropy"] == pytest.approx(1.0, abs=3e-9)


def test_bad_density_raises():
    with pytest.raises(ValueError, match="density"):
        density_statistics(np.array([1.0, -1.0, 2.0]))
    with pytest.raises(ValueError, match="density"):
        density_statistics(np.array([1.0]))


def test_kde_is_scott_gaussian_at_the_points():
    pts = np.random.default_rng(0).standard_normal((40, 2))
    n = len(pts)
    cov = np.cov(pts.T) * n ** (-2 / 6)  # Scott factor n^(-1/(d+4)), d = 2
    inv, det = np.linalg.inv(cov), np.linalg.det(cov)
    diff = pts[:, None, :] - pts[None, :, :]
    expo = np.einsum("ijk,kl,ijl->ij", diff, inv, diff)
    expected = np.exp(-0.5 * expo).sum(axis=1) / (n * 2 * math.pi * math.sqrt(det))
    np.testing.assert_allclose(kde_density(pts), expected, rtol=1e-10)


def test_clustered_points_are_less_uniform_than_a_square():
    rng = np.random.default_rng(1)
    square = rng.uniform(-1, 1, (400, 2))
    clusters = np.concatenate([rng.normal(-3, 0.1, (200, 2)), rng.normal(3, 0.1, (200, 2))])
    sq, cl = density_statistics(kde_density(square)), density_statistics(kde_density(clusters))
    assert cl["density_cv"] > sq["density_cv"] and cl["gini"] > sq["gini"]


def test_sample_tokens_one_random_token_per_distinct_image():
    n, h, w = 30, 3, 4
    z = torch.zeros(n, 2, h, w)
    z[:, 0] = torch.arange(n, dtype=torch.float32)[:, None, None]
    z[:, 1] = torch.arange(h * w, dtype=torch.float32).reshape(h, w)
    tokens = sample_tokens(z, 20, seed=5, stats=None)
    assert tokens.shape == (20, 2)
    assert len(set(tokens[:, 0].tolist())) == 20  # without replacement
    assert set(tokens[:, 1].tolist()) <= set(range(h * w))
    assert torch.equal(tokens, sample_tokens(z, 20, seed=5, stats=None))
    with pytest.raises(ValueError, match="n_points"):
        sample_tokens(z, 31, seed=0, stats=None)


def test_uniformity_end_to_end_small_and_deterministic():
    z = torch.randn(120, 4, 4, 4, generator=torch.Generator().manual_seed(2))
    out = uniformity(z, n_points=100, repeats=2)
    again = uniformity(z, n_points=100, repeats=2)
    assert out["normalized_entropy"] == again["normalized_entropy"]
    assert len(out["runs"]) == 2 and out["sklearn_version"]
    assert 0.9 < out["normalized_entropy"] <= 1.0
    assert out["runs"][0] != out["runs"][1]  # repeats use different seeds
    assert tsne_embed(z[:50, :, 0, 0], seed=42).shape == (50, 2)
