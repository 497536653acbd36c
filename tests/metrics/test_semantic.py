"""LNC and linear-probe oracles of spec diffusability §3."""

import pytest
import torch

from latentbench.metrics.semantic import linear_probe, lnc, neighbor_consistency, pooled_features


def test_exact_small_case_on_a_line():
    x = torch.tensor([[0.0], [1.0], [10.0], [11.0]])
    assert neighbor_consistency(x, torch.tensor([0, 0, 1, 1]), (1,), metric="l2") == {1: 1.0}
    assert neighbor_consistency(x, torch.tensor([0, 1, 0, 1]), (1,), metric="l2") == {1: 0.0}


def test_two_separated_clusters_give_one():
    gen = torch.Generator().manual_seed(0)
    a = torch.tensor([1.0, 0.0, 0.0]) + 0.05 * torch.randn(8, 3, generator=gen)
    b = torch.tensor([0.0, 0.0, 1.0]) + 0.05 * torch.randn(8, 3, generator=gen)
    out = neighbor_consistency(torch.cat([a, b]), torch.tensor([0] * 8 + [1] * 8), (5, 7))
    assert out == {5: 1.0, 7: 1.0}


def test_random_labels_match_expectation():
    gen = torch.Generator().manual_seed(1)
    feats = torch.randn(200, 8, generator=gen)
    base = torch.arange(4).repeat_interleave(50)  # L = 4 classes of m = 50
    values = [neighbor_consistency(feats, base[torch.randperm(200, generator=gen)], (5,))[5] for _ in range(20)]
    assert sum(values) / len(values) == pytest.approx(49 / 199, abs=0.015)


def test_matches_sklearn_neighbours_over_several_row_blocks():
    """More rows than one counting block (DEFAULT_CHUNK) and one k-NN query block: the counts per
    rank must add up to scikit-learn's brute-force cosine neighbours."""
    from sklearn.neighbors import NearestNeighbors

    gen = torch.Generator().manual_seed(4)
    labels = torch.randint(0, 6, (2600,), generator=gen)
    feats = torch.randn(6, 5, generator=gen)[labels] + 1.5 * torch.randn(2600, 5, generator=gen)
    idx = NearestNeighbors(n_neighbors=8, metric="cosine", algorithm="brute").fit(feats.numpy())
    idx = torch.from_numpy(idx.kneighbors(return_distance=False))  # self excluded
    same = (labels[idx] == labels[:, None]).double()
    out = neighbor_consistency(feats.double(), labels, (1, 5, 8))
    assert out == pytest.approx({k: float(same[:, :k].mean()) for k in (1, 5, 8)}, abs=1e-12)
    assert 0.3 < out[5] < 0.95  # neither trivial value: the check can tell a wrong count


def test_self_is_excluded_and_ks_are_checked():
    x = torch.tensor([[1.0, 0.0], [1.0, 0.01], [0.0, 1.0]])
    # every point's nearest other point: 0 <-> 1 share label 0, point 2 (label 1) has none
    assert neighbor_consistency(x, torch.tensor([0, 0, 1]), (1,))[1] == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match="ks"):
        neighbor_consistency(x, torch.tensor([0, 0, 1]), (3,))
    with pytest.raises(ValueError, match="labels"):
        neighbor_consistency(x, torch.tensor([0, 0]), (1,))


def test_masked_mean_pooling_and_dropped_images():
    gen = torch.Generator().manual_seed(2)
    z = torch.randn(3, 2, 4, 4, generator=gen)
    mask = torch.zeros(3, 4, 4, dtype=torch.bool)
    mask[0, 1:3, 1:3] = True
    mask[2] = True
    feats, keep = pooled_features(z, mask, standardize=False)
    assert keep.tolist() == [True, False, True]
    torch.testing.assert_close(feats[0], z[0, :, 1:3, 1:3].double().mean(dim=(1, 2)))
    torch.testing.assert_close(feats[1], z[2].double().mean(dim=(1, 2)))
    chunked, keep_chunked = pooled_features(z, mask, standardize=False, chunk=2)  # keep across chunks
    assert keep_chunked.tolist() == keep.tolist()
    torch.testing.assert_close(chunked, feats)
    all_tokens, keep_all = pooled_features(z, None, standardize=False, chunk=2)
    assert keep_all.all() and all_tokens.shape == (3, 2)


def _masked_set(seed: int = 3) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Class signal only on FG tokens, strong noise on BG tokens."""
    gen = torch.Generator().manual_seed(seed)
    labels = torch.arange(4).repeat_interleave(10)
    centres = 3 * torch.randn(4, 6, generator=gen)
    z = 4 * torch.randn(40, 6, 4, 4, generator=gen)
    mask = torch.zeros(40, 4, 4, dtype=torch.bool)
    mask[:, 1:3, 1:3] = True
    z[:, :, 1:3, 1:3] = centres[labels][:, :, None, None] + 0.3 * torch.randn(40, 6, 2, 2, generator=gen)
    return z, labels, mask


def test_lnc_uses_foreground_only():
    z, labels, mask = _masked_set()
    with_mask = lnc(z, labels, mask, k=5)
    assert with_mask == pytest.approx(1.0)
    assert lnc(z, labels, None, k=5) < with_mask
    # invariant to a positive per-image scaling of the pooled features (cosine)
    scale = torch.rand(40, 1, 1, 1, generator=torch.Generator().manual_seed(4)) + 0.5
    assert lnc(z * scale, labels, mask, standardize=False) == pytest.approx(lnc(z, labels, mask, standardize=False))


def test_linear_probe_separable_vs_random_labels():
    gen = torch.Generator().manual_seed(5)
    centres = 4 * torch.randn(5, 8, generator=gen)
    y_tr, y_va = torch.arange(5).repeat(60), torch.arange(5).repeat(20)
    x_tr = centres[y_tr] + torch.randn(300, 8, generator=gen)
    x_va = centres[y_va] + torch.randn(100, 8, generator=gen)
    state = torch.random.get_rng_state()
    acc = linear_probe(x_tr, y_tr, x_va, y_va, epochs=30, lr=1e-2, batch_size=64, seed=0)
    assert torch.equal(state, torch.random.get_rng_state())  # global RNG untouched
    assert acc > 0.95
    assert acc == linear_probe(x_tr, y_tr, x_va, y_va, epochs=30, lr=1e-2, batch_size=64, seed=0)
    shuffled = y_tr[torch.randperm(300, generator=gen)]
    assert linear_probe(x_tr, shuffled, x_va, y_va, epochs=10, lr=1e-2, batch_size=64) < 0.5
    with pytest.raises(ValueError, match="feature size"):
        linear_probe(x_tr, y_tr, x_va[:, :4], y_va)
