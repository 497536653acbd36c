"""Exact streamed k-NN against a float64 brute force (spec ifid-seesaw §3.2 steps 2-3, §3.5)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from latentbench.metrics.ifid import nearest_neighbors as public_nearest_neighbors
from latentbench.metrics.neighbors import gather_rows, nearest_neighbors

torch.set_num_threads(1)


def brute_force(
    q: torch.Tensor, r: torch.Tensor, k: int, metric: str, exclude_self: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """Full float64 cost matrix; stable sort gives (cost, index) order."""
    q, r = q.reshape(len(q), -1).double(), r.reshape(len(r), -1).double()
    if metric == "l2":
        cost = torch.cdist(q, r).square()
    else:  # spec §3.2 step 2: -(r.q) / (||r|| ||q|| + 1e-8)
        cost = -(q @ r.T) / (torch.outer(q.norm(dim=1), r.norm(dim=1)) + 1e-8)
    if exclude_self:
        cost.fill_diagonal_(float("inf"))
    cost, index = cost.sort(dim=1, stable=True)
    scores = cost[:, :k] if metric == "l2" else -cost[:, :k]
    return scores, index[:, :k]


def random_sets(n_q: int = 37, n_r: int = 103, shape: tuple[int, ...] = (4, 2, 3), seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n_q, *shape, generator=g), torch.randn(n_r, *shape, generator=g)


@pytest.mark.parametrize("metric", ["l2", "cosine"])
@pytest.mark.parametrize("chunk_size", [1, 3, 10, 103, 1000])
def test_matches_float64_brute_force(metric: str, chunk_size: int) -> None:
    # chunk 3 < k = 5; chunk 10 does not divide 103; chunk 1000 > N.
    q, r = random_sets()
    scores, index = nearest_neighbors(
        q, r, k=5, metric=metric, chunk_size=chunk_size, query_block=8
    )
    want_scores, want_index = brute_force(q, r, 5, metric)
    assert index.dtype == torch.long and scores.dtype == torch.float32
    assert torch.equal(index, want_index)
    torch.testing.assert_close(scores.double(), want_scores, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("metric", ["l2", "cosine"])
def test_exclude_self_never_returns_self(metric: str) -> None:
    _, r = random_sets()
    scores, index = nearest_neighbors(r, r, k=4, metric=metric, exclude_self=True, chunk_size=7)
    assert not (index == torch.arange(len(r))[:, None]).any()
    want_scores, want_index = brute_force(r, r, 4, metric, exclude_self=True)
    assert torch.equal(index, want_index)
    torch.testing.assert_close(scores.double(), want_scores, rtol=1e-5, atol=1e-5)


def test_same_set_without_exclusion_finds_itself() -> None:
    # Spec §3.7: R = Q and self-match not excluded -> NN(z) = z.
    _, r = random_sets()
    for metric in ("l2", "cosine"):
        _, index = nearest_neighbors(r, r, k=1, metric=metric, chunk_size=16)
        assert torch.equal(index[:, 0], torch.arange(len(r)))


def test_memmap_references(tmp_path) -> None:
    q, r = random_sets(n_r=211)
    path = tmp_path / "refs.npy"
    np.save(path, r.numpy())
    mapped = np.load(path, mmap_mode="r")
    for metric in ("l2", "cosine"):
        scores, index = nearest_neighbors(q.numpy(), mapped, k=3, metric=metric, chunk_size=50)
        want_scores, want_index = brute_force(q, r, 3, metric)
        assert torch.equal(index, want_index)
        torch.testing.assert_close(scores.double(), want_scores, rtol=1e-5, atol=1e-5)


def test_float16_memmap_is_upcast(tmp_path) -> None:
    q, r = random_sets(n_r=64)
    r16 = r.half()
    path = tmp_path / "refs16.npy"
    np.save(path, r16.numpy())
    _, index = nearest_neighbors(q, np.load(path, mmap_mode="r"), k=2, chunk_size=20)
    assert torch.equal(index, brute_force(q, r16.float(), 2, "l2")[1])


def test_float64_inputs_accumulate_in_float64() -> None:
    q, r = random_sets()
    scores, index = nearest_neighbors(q.double(), r.double(), k=3, chunk_size=9)
    want_scores, want_index = brute_force(q, r, 3, "l2")
    assert scores.dtype == torch.float64
    assert torch.equal(index, want_index)
    torch.testing.assert_close(scores, want_scores, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("chunk_size", [1, 2, 5, 13, 40])
@pytest.mark.parametrize("metric", ["l2", "cosine"])
def test_ties_go_to_the_lower_index(chunk_size: int, metric: str) -> None:
    # Small integers: every dot product and norm is exact, so duplicates tie exactly.
    g = torch.Generator().manual_seed(3)
    r = torch.randint(-3, 4, (40, 6), generator=g).float()
    target = torch.tensor([5.0, -4.0, 6.0, 5.0, -6.0, 4.0])
    copies = [3, 7, 8, 12, 21, 22, 39]
    r[copies] = target
    q = target[None].repeat(3, 1)
    _, index = nearest_neighbors(q, r, k=4, metric=metric, chunk_size=chunk_size)
    assert index.tolist() == [[3, 7, 8, 12]] * 3
    _, index = nearest_neighbors(q, r, k=9, metric=metric, chunk_size=chunk_size)
    assert index[0, :7].tolist() == copies
    assert torch.equal(index, brute_force(q, r, 9, metric)[1])


def test_ties_inside_one_chunk_straddling_k() -> None:
    # Many exact ties at the k-th place inside a single chunk (the topk repair path).
    r = torch.zeros(50, 3)
    r[:, 0] = 1.0
    r[[5, 17, 40], 0] = 0.0  # three rows at distance 0 to the query, 47 tied at distance 1
    _, index = nearest_neighbors(torch.zeros(2, 3), r, k=6, chunk_size=50)
    assert index.tolist() == [[5, 17, 40, 0, 1, 2]] * 2


def test_linear_nn_equals_cosine_nn_for_equal_norms() -> None:
    # Spec §3.7: with ||q|| = ||r|| = c, ||q - r||^2 = 2c^2 (1 - cos): same ranking.
    q, r = random_sets(n_q=50, n_r=300, shape=(16,), seed=4)
    q = 3.0 * q / q.norm(dim=1, keepdim=True)
    r = 3.0 * r / r.norm(dim=1, keepdim=True)
    _, by_l2 = nearest_neighbors(q, r, k=3, metric="l2")
    _, by_cos = nearest_neighbors(q, r, k=3, metric="cosine")
    assert torch.equal(by_l2, by_cos)


@pytest.mark.parametrize("metric", ["l2", "cosine"])
def test_bf16_shortlist_is_reranked_exactly(metric: str) -> None:
    # Well-separated data: 200 cluster centres, references and queries scattered around them.
    g = torch.Generator().manual_seed(5)
    centres = torch.randn(200, 64, generator=g) * 4
    r = centres.repeat(5, 1) + 0.3 * torch.randn(1000, 64, generator=g)
    q = r[torch.randint(0, 1000, (120,), generator=g)] + 0.05 * torch.randn(120, 64, generator=g)
    exact_scores, exact_index = nearest_neighbors(q, r, k=3, metric=metric, chunk_size=128)
    scores, index = nearest_neighbors(q, r, k=3, metric=metric, chunk_size=128, precision="bf16")
    assert torch.equal(index[:, 0], exact_index[:, 0])
    # Re-ranked scores carry float32 rounding only; a bf16 dot product (8-bit mantissa)
    # would be off by ~|q.r| / 256, about 4 here for l2 and 4e-3 for cosine.
    want = brute_force(q, r, 3, metric)[0][:, :1]
    scale = 2 * float(r.square().sum(dim=1).max()) if metric == "l2" else 1.0
    torch.testing.assert_close(scores[:, :1].double(), want, rtol=0, atol=2e-6 * scale)
    torch.testing.assert_close(scores, exact_scores, rtol=0, atol=2e-6 * scale)


@pytest.mark.parametrize("metric", ["l2", "cosine"])
@pytest.mark.parametrize("exclude_self", [False, True])
def test_faiss_backend_equals_exact(metric: str, exclude_self: bool) -> None:
    pytest.importorskip("faiss")
    _, r = random_sets(n_r=150)
    q = r if exclude_self else random_sets(n_r=150, seed=9)[0]
    want_scores, want_index = nearest_neighbors(q, r, k=5, metric=metric, exclude_self=exclude_self)
    scores, index = nearest_neighbors(
        q, r, k=5, metric=metric, exclude_self=exclude_self, backend="faiss", chunk_size=40
    )
    assert torch.equal(index, want_index)
    torch.testing.assert_close(scores, want_scores, rtol=1e-5, atol=1e-5)


def test_public_name_is_reexported() -> None:
    assert public_nearest_neighbors is nearest_neighbors


def test_gather_rows_keeps_the_latent_shape(tmp_path) -> None:
    _, r = random_sets(n_r=20)
    index = torch.tensor([[3, 0], [19, 3]])
    np.save(tmp_path / "r.npy", r.numpy())
    for source in (r, r.numpy(), np.load(tmp_path / "r.npy", mmap_mode="r")):
        rows = gather_rows(source, index)
        assert rows.shape == (2, 2, 4, 2, 3)
        assert torch.equal(rows[1, 0], r[19])


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"k": 0}, "k must be"),
        ({"k": 104}, "k must be"),
        ({"metric": "l1"}, "metric"),
        ({"precision": "fp8"}, "precision"),
        ({"backend": "annoy"}, "backend"),
        ({"exclude_self": True}, "exclude_self"),
        ({"chunk_size": 0}, "chunk_size"),
        ({"precision": "bf16", "k": 3, "shortlist": 2}, "shortlist"),
    ],
)
def test_bad_arguments_raise_value_error(kwargs: dict, match: str) -> None:
    q, r = random_sets()
    with pytest.raises(ValueError, match=match):
        nearest_neighbors(q, r, **kwargs)


def test_bad_inputs_raise_value_error() -> None:
    q, r = random_sets()
    with pytest.raises(ValueError, match="references: rows have"):
        nearest_neighbors(q, r[:, :2])
    with pytest.raises(ValueError, match="floating"):
        nearest_neighbors(q, r.long())
    bad = r.clone()
    bad[57, 1, 0, 2] = float("nan")
    with pytest.raises(ValueError, match="row 57"):
        nearest_neighbors(q, bad, chunk_size=10)
    with pytest.raises(ValueError, match="k must be"):  # only N - 1 others with exclusion
        nearest_neighbors(r, r, k=103, exclude_self=True)
