"""Inception Score: torch-fidelity's formula as the oracle, analytic cases, exact shard merging."""

import math

import numpy as np
import pytest
import torch
from torch_fidelity.metric_isc import KEY_METRIC_ISC_MEAN, KEY_METRIC_ISC_STD, isc_features_to_metric

from latentbench.metrics.inception_score import InceptionScore, inception_score


def _logits(n: int, k: int, seed: int = 0) -> torch.Tensor:
    return 3.0 * torch.randn(n, k, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def test_equals_torch_fidelity_with_contiguous_splits():
    logits = _logits(1000, 37)
    ours = inception_score(logits, split_size=100)  # 10 contiguous splits of 100
    ref = isc_features_to_metric(logits, splits=10, shuffle=False)
    assert ours["splits"] == 10 and ours["num_samples"] == 1000
    assert ours["is"] == pytest.approx(ref[KEY_METRIC_ISC_MEAN], rel=1e-12)
    assert ours["is_std"] == pytest.approx(ref[KEY_METRIC_ISC_STD], rel=1e-9)


def test_analytic_values():
    k = 8
    # confident and uniform over classes -> IS = K; identical predictions -> IS = 1
    confident = torch.full((k * 10, k), -50.0)
    confident[torch.arange(k * 10), torch.arange(k * 10) % k] = 50.0
    assert inception_score(confident)["is"] == pytest.approx(k, rel=1e-9)
    same = torch.randn(1, k).repeat(64, 1)
    assert inception_score(same)["is"] == pytest.approx(1.0, abs=1e-12)
    # two classes, every prediction (a, 1-a) and (1-a, a) equally often: exp(KL to uniform)
    a = 0.9
    logit = math.log(a / (1 - a))
    two = torch.tensor([[logit, 0.0], [0.0, logit]], dtype=torch.float64).repeat(50, 1)
    expected = math.exp(a * math.log(2 * a) + (1 - a) * math.log(2 * (1 - a)))
    assert inception_score(two)["is"] == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("bounds", [[0, 250, 1000], [0, 1, 333, 640, 1000], [0, 999, 1000]])
def test_shards_merge_exactly(tmp_path, bounds):
    logits = _logits(1000, 11, seed=1)
    whole = inception_score(logits, split_size=300)  # splits straddle shard boundaries
    merged = InceptionScore(11, split_size=300)
    for i, (lo, hi) in enumerate(zip(bounds[:-1], bounds[1:])):
        path = tmp_path / f"shard-{i}.npz"
        InceptionScore(11, split_size=300).update(logits[lo:hi], lo).save(path)
        merged.merge(InceptionScore.load(path))
    assert merged.result()["splits"] == 4
    assert merged.result()["is"] == pytest.approx(whole["is"], rel=1e-12)
    assert merged.result()["is_std"] == pytest.approx(whole["is_std"], rel=1e-9)


def test_order_within_a_split_does_not_matter_but_splits_do():
    logits = _logits(600, 5, seed=2)
    perm = torch.randperm(300, generator=torch.Generator().manual_seed(0))
    within = torch.cat([logits[:300][perm], logits[300:]])
    assert inception_score(within, 300)["is"] == pytest.approx(inception_score(logits, 300)["is"], rel=1e-12)
    assert inception_score(logits, 600)["is"] != pytest.approx(inception_score(logits, 300)["is"], rel=1e-6)


def test_bad_input_is_named(tmp_path):
    with pytest.raises(ValueError, match="logits"):
        InceptionScore(4).update(torch.zeros(3, 5), 0)
    with pytest.raises(ValueError, match="split_size"):
        InceptionScore(4, split_size=0)
    with pytest.raises(ValueError, match="differ"):
        InceptionScore(4).merge(InceptionScore(5))
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not an npz")
    with pytest.raises(ValueError, match="bad.npz"):
        InceptionScore.load(bad)
    with pytest.raises(ValueError, match="no samples"):
        InceptionScore(4).result()
    assert np.isfinite(InceptionScore(4).update(torch.tensor([[1e4, -1e4, 0.0, 0.0]]), 0).split_scores()).all()
