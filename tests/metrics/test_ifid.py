"""iFID latent operations: interpolation, top-K pick, neighbour latents, posterior samples
(oracles of spec metrics-ifid-seesaw §3.7)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.linalg
import torch

import latentbench.metrics.ifid as ifid_module
from latentbench.metrics.ifid import (
    ifid_latents,
    interpolate,
    pick_topk,
    sample_posterior,
    topk_weights,
)
from latentbench.latents import row_seeds
from latentbench.seeding import derive_seed

torch.set_num_threads(1)


def latents(n: int, shape: tuple[int, ...] = (4, 4, 4), seed: int = 0, scale: float = 1.0):
    return scale * torch.randn(n, *shape, generator=torch.Generator().manual_seed(seed))


# ---- slerp (spec §3.3, §3.7) -------------------------------------------------------------


def test_slerp_orthogonal_unit_vectors_carry_the_eps() -> None:
    a, b = torch.tensor([[1.0, 0.0]]).double(), torch.tensor([[0.0, 1.0]]).double()
    out = interpolate(a, b, 0.5, "slerp")
    want = torch.tensor([[0.70710671, 0.70710671]]).double()
    torch.testing.assert_close(out, want, rtol=0, atol=5e-9)
    # Not exactly 1/sqrt(2): sin(theta) + 1e-7 in the denominator.
    assert abs(float(out[0, 0]) - 1 / math.sqrt(2)) > 5e-8


def test_slerp_sixty_degrees() -> None:
    out = interpolate(torch.tensor([[1.0, 0.0]]), torch.tensor([[0.5, 0.8660254]]), 0.5, "slerp")
    torch.testing.assert_close(out, torch.tensor([[0.8660254, 0.5]]), rtol=0, atol=1e-6)


def test_slerp_keeps_unnormalised_norms_in_the_weights() -> None:
    a, b = torch.tensor([[1.0, 0.0]]).double(), torch.tensor([[0.0, 2.0]]).double()
    out = interpolate(a, b, 0.5, "slerp")
    want = torch.tensor([[0.70710671, 1.41421342]]).double()
    torch.testing.assert_close(out, want, rtol=0, atol=1e-8)


@pytest.mark.parametrize("alpha", [0.0, 0.3, 0.5, 1.0])
def test_slerp_of_a_with_itself_is_a(alpha: float) -> None:
    a = latents(5)
    torch.testing.assert_close(interpolate(a, a, alpha, "slerp"), a, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("alpha", [0.25, 0.5, 0.9])
def test_slerp_of_parallel_inputs_falls_back_to_linear(alpha: float) -> None:
    # slerp(a, 2a, t) = (1 + t) a: sin(theta) < 1e-6 selects (1 - t) a + t b.
    a = latents(5)
    out = interpolate(a, 2 * a, alpha, "slerp")
    torch.testing.assert_close(out, (1 + alpha) * a, rtol=1e-6, atol=1e-6)


def test_slerp_is_per_sample() -> None:
    a, b = latents(6, seed=1), latents(6, seed=2)
    batched = interpolate(a, b, 0.4, "slerp")
    for i in range(6):
        alone = interpolate(a[i : i + 1], b[i : i + 1], 0.4, "slerp")
        torch.testing.assert_close(batched[i : i + 1], alone)


def test_slerp_midpoint_preserves_norm_of_equal_norm_inputs() -> None:
    # Spherical path: for ||a|| = ||b|| the midpoint keeps the norm (linear shrinks it).
    a, b = latents(8, seed=1), latents(8, seed=2)
    b = b * (a.flatten(1).norm(dim=1) / b.flatten(1).norm(dim=1))[:, None, None, None]
    mid = interpolate(a, b, 0.5, "slerp").flatten(1).norm(dim=1)
    torch.testing.assert_close(mid, a.flatten(1).norm(dim=1), rtol=1e-5, atol=0)
    assert (interpolate(a, b, 0.5, "linear").flatten(1).norm(dim=1) < 0.9 * mid).all()


# ---- alpha identities (spec §3.7) --------------------------------------------------------


def test_alpha_zero_and_one_identities() -> None:
    a, b = latents(7, seed=1), latents(7, seed=2)
    assert torch.equal(interpolate(a, b, 0.0, "linear"), a)
    assert torch.equal(interpolate(a, b, 1.0, "linear"), b)
    # slerp at alpha = 0: w1 = sin(theta) / (sin(theta) + 1e-7), within 1e-6 relative.
    torch.testing.assert_close(interpolate(a, b, 0.0, "slerp"), a, rtol=1e-6, atol=0)
    torch.testing.assert_close(interpolate(a, b, 1.0, "slerp"), b, rtol=1e-6, atol=0)


def test_linear_midpoint() -> None:
    a, b = latents(3, seed=1), latents(3, seed=2)
    torch.testing.assert_close(interpolate(a, b, 0.5, "linear"), (a + b) / 2)


# ---- mask (spec §3.3, §3.7) --------------------------------------------------------------


@pytest.mark.parametrize("alpha", [0.0, 0.5, 0.9])  # half_fixed ignores alpha
def test_half_mask_rows_of_2d_latents(alpha: float) -> None:
    out = interpolate(torch.zeros(2, 3, 4, 4), torch.ones(2, 3, 4, 4), alpha, "mask")
    assert (out[:, :, :2] == 1).all() and (out[:, :, 2:] == 0).all()
    odd = interpolate(torch.zeros(1, 2, 5, 3), torch.ones(1, 2, 5, 3), alpha, "mask")
    assert (odd[:, :, :2] == 1).all() and (odd[:, :, 2:] == 0).all()


def test_half_mask_tokens_of_1d_latents() -> None:
    out = interpolate(torch.zeros(2, 5, 8), torch.ones(2, 5, 8), 0.5, "mask")
    assert (out[:, :2] == 1).all() and (out[:, 2:] == 0).all()


def test_random_bernoulli_mask() -> None:
    a, b = torch.zeros(4, 3, 32, 32), torch.ones(4, 3, 32, 32)
    kwargs = {"method": "mask", "mask": "random_bernoulli"}
    out = interpolate(a, b, 0.3, generator=torch.Generator().manual_seed(1), **kwargs)
    again = interpolate(a, b, 0.3, generator=torch.Generator().manual_seed(1), **kwargs)
    assert torch.equal(out, again)
    assert abs(float(out.mean()) - 0.3) < 0.03
    assert (out == out[:, :1]).all()  # one mask per position, shared by the channels
    assert torch.equal(interpolate(a, b, 0.0, generator=torch.Generator(), **kwargs), a)
    assert torch.equal(interpolate(a, b, 1.0, generator=torch.Generator(), **kwargs), b)
    with pytest.raises(ValueError, match="generator"):
        interpolate(a, b, 0.3, **kwargs)


@pytest.mark.parametrize(
    "a, b, kwargs, match",
    [
        (torch.zeros(2, 3), torch.zeros(2, 4), {}, "shape"),
        (torch.zeros(2, 3), torch.zeros(2, 3), {"alpha": 1.5}, "alpha"),
        (torch.zeros(2, 3), torch.zeros(2, 3), {"method": "cubic"}, "method"),
        (torch.zeros(2, 3), torch.zeros(2, 3), {"method": "mask"}, "mask interpolation"),
        (torch.zeros(2, 3, 4), torch.zeros(2, 3, 4), {"method": "mask", "mask": "x"}, "mask must"),
    ],
)
def test_interpolate_rejects_bad_input(a, b, kwargs, match) -> None:
    with pytest.raises(ValueError, match=match):
        interpolate(a, b, **kwargs)


# ---- top-K pick (spec §3.2 step 4, §3.7) -------------------------------------------------


def test_softmax_mse_weights() -> None:
    weights = topk_weights(torch.tensor([[0.0, math.log(2.0)]]))
    torch.testing.assert_close(weights, torch.tensor([[2 / 3, 1 / 3]]).double())
    uniform = topk_weights(torch.tensor([[0.0, 5.0, 9.0, 1.0]]), how="uniform")
    torch.testing.assert_close(uniform, torch.full((1, 4), 0.25).double())


def test_pick_follows_the_weights() -> None:
    # MSE(q, c0) = 0 and MSE(q, c1) = ln 2 (every element sqrt(ln 2) away): w = [2/3, 1/3].
    n, d = 30000, 3
    queries = torch.zeros(n, d)
    candidates = torch.stack([torch.zeros(n, d), torch.full((n, d), math.sqrt(math.log(2)))], dim=1)
    chosen, entropy = pick_topk(queries, candidates, generator=torch.Generator().manual_seed(0))
    assert abs(float((chosen == 0).float().mean()) - 2 / 3) < 0.01
    assert entropy == pytest.approx(math.log(3) - (2 / 3) * math.log(2), rel=1e-6)
    again, _ = pick_topk(queries, candidates, generator=torch.Generator().manual_seed(0))
    assert torch.equal(chosen, again)
    uniform_rng = torch.Generator().manual_seed(1)
    chosen_u, entropy_u = pick_topk(queries, candidates, "uniform", uniform_rng)
    assert abs(float((chosen_u == 0).float().mean()) - 0.5) < 0.01
    assert entropy_u == pytest.approx(math.log(2))


def test_pick_with_k_one_is_deterministic() -> None:
    q = latents(5)
    chosen, entropy = pick_topk(q, q[:, None] + 1.0)
    assert chosen.tolist() == [0] * 5 and entropy == 0.0
    with pytest.raises(ValueError, match="generator"):
        pick_topk(q, torch.stack([q, q], dim=1))
    with pytest.raises(ValueError, match="candidates"):
        pick_topk(q, q)


# ---- neighbour latents (spec §3.2 steps 2-5, §3.7) ---------------------------------------


def test_alpha_zero_returns_the_queries() -> None:
    q, r = latents(20, seed=1), latents(100, seed=2)
    assert torch.equal(ifid_latents(q, r, k=3, alpha=0.0, method="linear")["latents"], q)
    torch.testing.assert_close(ifid_latents(q, r, k=3, alpha=0.0)["latents"], q, rtol=1e-6, atol=0)


@pytest.mark.parametrize("method", ["linear", "slerp", "mask"])
def test_same_set_without_exclusion_returns_the_queries(method: str) -> None:
    # Spec §3.7: R = Q, self-match not excluded -> NN(z) = z, so z_hat = z (iFID = rFID).
    z = latents(40, seed=3)
    out = ifid_latents(z, z, k=1, alpha=0.5, method=method)
    assert torch.equal(out["neighbor_index"], torch.arange(40))
    torch.testing.assert_close(out["latents"], z, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("method", ["linear", "slerp", "mask"])
def test_same_set_with_exclusion_never_uses_itself(method: str) -> None:
    z = latents(40, seed=3)
    out = ifid_latents(z, z, k=3, alpha=0.5, method=method, exclude_self=True)
    assert not (out["neighbor_index"] == torch.arange(40)).any()
    assert not torch.allclose(out["latents"], z)


def test_neighbour_is_one_of_the_topk_and_seeded() -> None:
    q, r = latents(50, seed=1), latents(400, seed=2)
    out = ifid_latents(q, r, k=5, topk_pick="uniform", seed=7)
    assert (out["topk_index"] == out["neighbor_index"][:, None]).any(dim=1).all()
    assert out["entropy"] == pytest.approx(math.log(5))
    again = ifid_latents(q, r, k=5, topk_pick="uniform", seed=7)
    assert torch.equal(out["neighbor_index"], again["neighbor_index"])
    assert torch.equal(out["latents"], again["latents"])
    other = ifid_latents(q, r, k=5, topk_pick="uniform", seed=8)
    assert not torch.equal(out["neighbor_index"], other["neighbor_index"])
    # The chosen neighbour and the interpolation agree with the public building blocks.
    neighbours = r[out["neighbor_index"]]
    torch.testing.assert_close(out["latents"], interpolate(q, neighbours, 0.5, "slerp"))


def test_large_norm_latents_make_the_softmax_pick_nearly_one_hot() -> None:
    # Spec §3.2 step 4: MSE grows with the square of the latent scale, so for large-norm
    # latents softmax(-MSE) is one-hot on the nearest candidate (entropy ~ 0), while at a
    # small scale it is nearly uniform (entropy ~ ln K).
    q = torch.zeros(20, 4, 4, 4)
    steps = torch.arange(1, 11, dtype=torch.float32)[:, None, None, None]
    large = ifid_latents(q, 5.0 * steps * torch.ones(10, 4, 4, 4), k=10, method="linear")
    assert large["entropy"] < 1e-6
    assert torch.equal(large["neighbor_index"], torch.zeros(20, dtype=torch.long))
    small = ifid_latents(q, 0.01 * steps * torch.ones(10, 4, 4, 4), k=10, method="linear")
    assert small["entropy"] == pytest.approx(math.log(10), rel=1e-3)
    assert len(set(small["neighbor_index"].tolist())) > 3


def test_memmap_references_and_chunking(tmp_path) -> None:
    q, r = latents(30, seed=1), latents(257, seed=2)
    np.save(tmp_path / "r.npy", r.numpy())
    mapped = np.load(tmp_path / "r.npy", mmap_mode="r")
    want = ifid_latents(q, r, k=4, seed=3)
    got = ifid_latents(q, mapped, k=4, seed=3, chunk_size=19)
    assert torch.equal(want["neighbor_index"], got["neighbor_index"])
    torch.testing.assert_close(want["latents"], got["latents"])
    assert want["entropy"] == pytest.approx(got["entropy"])


@pytest.mark.parametrize("pick", ["softmax_mse", "uniform"])
@pytest.mark.parametrize("k", [1, 4])
def test_blocking_does_not_change_the_result(monkeypatch, pick: str, k: int) -> None:
    q, r = latents(20, seed=1), latents(90, seed=2)
    whole = ifid_latents(q, r, k=k, topk_pick=pick, seed=5)
    monkeypatch.setattr(ifid_module, "BLOCK_ELEMENTS", 3 * 8 * 64)  # 3 queries per block
    blocked = ifid_latents(q, r, k=k, topk_pick=pick, seed=5)
    assert torch.equal(whole["neighbor_index"], blocked["neighbor_index"])
    assert torch.equal(whole["latents"], blocked["latents"])
    assert whole["entropy"] == pytest.approx(blocked["entropy"])


def test_ifid_latents_rejects_bad_input() -> None:
    q = latents(4)
    with pytest.raises(ValueError, match="latent shape"):
        ifid_latents(q, latents(10, shape=(4, 4, 2)))
    with pytest.raises(ValueError, match="method"):
        ifid_latents(q, q, method="nearest")
    with pytest.raises(ValueError, match="topk_pick"):
        ifid_latents(q, q, topk_pick="best")
    with pytest.raises(ValueError, match="alpha"):
        ifid_latents(q, q, alpha=-0.1)
    with pytest.raises(ValueError, match="mask"):
        ifid_latents(q, q, method="mask", mask="checkerboard")


def frechet(x: np.ndarray, y: np.ndarray) -> float:
    """FD of Gaussian fits (spec §1.1), scipy sqrtm route."""
    mu1, mu2 = x.mean(0), y.mean(0)
    s1, s2 = np.cov(x, rowvar=False), np.cov(y, rowvar=False)
    covmean = np.real(scipy.linalg.sqrtm(s1 @ s2))
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1 + s2 - 2 * covmean))


def test_gaussian_prior_toy_ordering() -> None:
    # Spec §3.7 (why slerp): z ~ N(0, I_64), identity decoder, FD on the latents themselves:
    # FD(linear + L2-NN) ~ 2.7 > FD(fresh sample) ~ 0.6 > FD(slerp + cosine-NN) ~ 0.14.
    g = torch.Generator().manual_seed(0)
    q, r, fresh = (torch.randn(n, 64, generator=g) for n in (4000, 40000, 4000))
    linear = ifid_latents(q, r, k=1, alpha=0.5, method="linear")["latents"]
    slerp = ifid_latents(q, r, k=1, alpha=0.5, method="slerp")["latents"]
    fd_linear, fd_fresh, fd_slerp = (frechet(q.numpy(), x.numpy()) for x in (linear, fresh, slerp))
    assert fd_linear > fd_fresh > fd_slerp
    assert fd_linear > 2 * fd_fresh and fd_fresh > 2 * fd_slerp


# ---- posterior samples (spec §3.5) -------------------------------------------------------


def posterior_seeds(seed: int, split: str, n: int) -> list[int]:
    """The per-row seeds the latent cache draws posterior samples with (latentbench.latents.LatentCache.rows)."""
    return row_seeds(derive_seed(seed, "posterior", split), 0, n).tolist()


def test_posterior_sample_is_reproducible_per_image() -> None:
    mean, std = latents(6, seed=1), latents(6, seed=2).abs()
    seeds = posterior_seeds(0, "train", 6)
    z = sample_posterior(mean, std, seeds)
    for i in (0, 4):
        alone = sample_posterior(mean[i : i + 1], std[i : i + 1], seeds[i : i + 1])
        assert torch.equal(alone[0], z[i])
    assert torch.equal(sample_posterior(mean, torch.zeros_like(std), seeds), mean)
    shuffled = sample_posterior(mean[[5, 0]], std[[5, 0]], [seeds[5], seeds[0]])
    assert torch.equal(shuffled, z[[5, 0]])


def test_posterior_sample_statistics() -> None:
    mean, std = torch.full((2000, 8), 3.0), torch.full((2000, 8), 0.5)
    z = sample_posterior(mean, std, posterior_seeds(1, "val", 2000))
    assert abs(float(z.mean()) - 3.0) < 0.02 and abs(float(z.std()) - 0.5) < 0.01
    # Different images (and splits) get different noise.
    assert not torch.equal(z[0], z[1])
    other = sample_posterior(mean[:1], std[:1], posterior_seeds(1, "train", 1))
    assert not torch.equal(other[0], z[0])


def test_posterior_sample_rejects_bad_input() -> None:
    mean = latents(3)
    with pytest.raises(ValueError, match="std"):
        sample_posterior(mean, mean[:2], [0, 1, 2])
    with pytest.raises(ValueError, match="seeds"):
        sample_posterior(mean, mean, [0, 1])
    with pytest.raises(ValueError, match="seeds"):
        sample_posterior(mean, mean, [0, 1, -1])
