"""VIV oracles of spec diffusability §2.7."""

import math

import pytest
import torch
from scipy.integrate import quad

from latentbench.metrics.normalization import channel_stats
from latentbench.metrics.viv import (
    ClassSpectra,
    class_spectra,
    flipflop_eigenvalues,
    irreducible_variance,
    irreducible_variance_at,
    irreducible_variance_eq6,
    viv,
    viv_curve,
    viv_from_eigenvalues,
    viv_marginal,
)

LAMBDAS = [4.0, 1.0, 0.25, 0.01, 2.5, 0.0]
F64 = torch.float64


def _rotation(n: int, gen: torch.Generator) -> torch.Tensor:
    return torch.linalg.qr(torch.randn(n, n, generator=gen, dtype=F64))[0]


def _ar1(n: int, rho: float) -> torch.Tensor:
    i = torch.arange(n, dtype=F64)
    return rho ** (i[:, None] - i[None, :]).abs()


def _matrix_normal(n: int, cov_c: torch.Tensor, cov_s: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Samples Z [n, C, S] with Cov(vec Z) = cov_c (x) cov_s."""
    l_c, l_s = torch.linalg.cholesky(cov_c), torch.linalg.cholesky(cov_s)
    e = torch.randn(n, cov_c.shape[0], cov_s.shape[0], generator=gen, dtype=F64)
    return l_c @ e @ l_s.T


def _reference_flipflop(z: torch.Tensor, iterations: int = 5, eps: float = 1e-12) -> torch.Tensor:
    """The spec §2.4 recipe written literally: SVD whitening, (rows - 1) denominators, trace match."""
    n, c, s = z.shape
    v_total = z.var(dim=0, unbiased=False).sum()
    x = z - z.mean(dim=0)
    w_s = torch.eye(s, dtype=F64)
    for _ in range(iterations):
        rows = (x @ w_s).permute(0, 2, 1).reshape(n * s, c)
        _, sv, vh = torch.linalg.svd(rows, full_matrices=False)
        eig_c = sv**2 / (n * s - 1)
        w_c = vh.T / torch.sqrt(eig_c + eps)
        rows = (w_c.T @ x).reshape(n * c, s)
        _, sv, vh = torch.linalg.svd(rows, full_matrices=False)
        eig_s = sv**2 / (n * c - 1)
        w_s = vh.T / torch.sqrt(eig_s + eps)
    lam = torch.outer(eig_c, eig_s).reshape(-1)
    return lam * v_total / lam.sum()


# ------------------------------------------------------------------ closed forms (§2.2)


@pytest.mark.parametrize("lam", LAMBDAS)
def test_eq5_closed_form_matches_quadrature_of_eq4(lam):
    integral, _ = quad(lambda t: float(irreducible_variance_at([lam], t)), 0.0, 1.0, epsabs=1e-10, limit=200)
    assert integral == pytest.approx((math.pi / 2) * math.sqrt(lam), abs=1e-6)
    assert irreducible_variance([lam]) == pytest.approx((math.pi / 2) * math.sqrt(lam), abs=1e-12)


def test_eq5_equals_eq6():
    assert irreducible_variance(LAMBDAS) == pytest.approx(8.138514, abs=1e-6)
    assert irreducible_variance_eq6(LAMBDAS) == pytest.approx(8.138514, abs=1e-6)
    assert viv_from_eigenvalues(LAMBDAS) == pytest.approx(8.138514 / 6, abs=1e-6)


def test_viv_from_eigenvalues_clamps_negative_eigenvalues():
    assert viv_from_eigenvalues([4.0, -1e-9]) == pytest.approx((math.pi / 2) * 2 / 2)


def test_eq4_endpoints_and_peak():
    lam = torch.tensor([3.0, 1.5, 0.7, 0.3, 0.1, 0.02], dtype=F64)
    assert float(irreducible_variance_at(lam, 0.0)) == pytest.approx(float(lam.sum()))
    assert float(irreducible_variance_at(lam, 1.0)) == pytest.approx(6.0)
    for value in lam:
        t_star = 1 / (1 + value)  # maximum 1 + lambda at t* = 1/(1+lambda)  (spec §2.2)
        assert float(irreducible_variance_at(value[None], t_star)) == pytest.approx(float(1 + value))
    assert float(irreducible_variance_at([0.0], 1.0)) == 1.0  # noise unobserved at t = 1


# ------------------------------------------------------------------ flip-flop (§2.4)


def test_flipflop_equals_literal_svd_reference():
    gen = torch.Generator().manual_seed(0)
    cov_c = _rotation(6, gen) @ torch.diag(torch.linspace(0.1, 2.0, 6, dtype=F64)) @ _rotation(6, gen).T
    cov_c = 0.5 * (cov_c + cov_c.T) + 2 * torch.eye(6, dtype=F64)
    z = _matrix_normal(20, cov_c, torch.kron(_ar1(3, 0.6), _ar1(4, 0.6)), gen) + 3.0
    ours = flipflop_eigenvalues(z, compute_dtype=F64).sort().values
    ref = _reference_flipflop(z).sort().values
    torch.testing.assert_close(ours, ref, rtol=1e-9, atol=1e-12)
    fp32 = flipflop_eigenvalues(z).sort().values  # default: float32 products, float64 factorisations
    torch.testing.assert_close(fp32, ref, rtol=1e-6, atol=1e-9)


def test_flipflop_degenerate_factors_follow_the_reference():
    gen = torch.Generator().manual_seed(5)
    constant_maps = torch.randn(20, 4, 1, generator=gen, dtype=F64).expand(20, 4, 9).contiguous()  # rank-1 Sigma_S
    dead_channel = torch.randn(20, 4, 9, generator=gen, dtype=F64)
    dead_channel[:, 1] = 0.0
    for z in (constant_maps, dead_channel):
        ref = viv_from_eigenvalues(_reference_flipflop(z))
        assert viv_from_eigenvalues(flipflop_eigenvalues(z, compute_dtype=F64)) == pytest.approx(ref, rel=1e-6)
        assert viv_from_eigenvalues(flipflop_eigenvalues(z)) == pytest.approx(ref, rel=1e-5)  # float32 + last float64


def test_flipflop_trace_matches_population_variance():
    gen = torch.Generator().manual_seed(1)
    z = torch.randn(15, 4, 9, generator=gen, dtype=F64) * torch.linspace(0.5, 2, 4, dtype=F64)[:, None]
    lam = flipflop_eigenvalues(z)
    assert lam.shape == (36,)
    assert float(lam.sum()) == pytest.approx(float(z.var(dim=0, unbiased=False).sum()), rel=1e-12)


def test_isotropic_class_within_4_percent_at_n50():
    gen = torch.Generator().manual_seed(2)
    z = 0.7 * torch.randn(50, 32, 256, generator=gen, dtype=F64) + 5.0
    assert viv_from_eigenvalues(flipflop_eigenvalues(z)) == pytest.approx((math.pi / 2) * 0.7, rel=0.04)


def test_kronecker_ground_truth_recovery_c8_s16():
    gen = torch.Generator().manual_seed(3)
    eig_c = 0.5 * 0.85 ** torch.arange(8, dtype=F64)
    rot = _rotation(8, gen)
    cov_c = rot @ torch.diag(eig_c) @ rot.T
    cov_s = torch.kron(_ar1(4, 0.8), _ar1(4, 0.8))  # separable AR(1), rho 0.8, on a 4x4 grid
    truth = viv_from_eigenvalues(torch.outer(eig_c, torch.linalg.eigvalsh(cov_s)))
    # tolerances cover the seed-to-seed spread seen over 8 seeds (max |dev| 4.4%, 0.6%, 0.1%)
    for n, tol in ((50, 0.06), (2000, 0.01), (20000, 0.003)):
        estimate = viv_from_eigenvalues(flipflop_eigenvalues(_matrix_normal(n, cov_c, cov_s, gen)))
        assert estimate == pytest.approx(truth, rel=tol), n
    # the unstructured sample covariance at N << d is rank deficient and biased low (§2.4 pitfall i)
    z = _matrix_normal(50, cov_c, cov_s, gen).reshape(50, -1)
    full = viv_from_eigenvalues(torch.linalg.eigvalsh(torch.cov(z.T, correction=0)))
    assert full < 0.95 * truth


def test_flipflop_rejects_bad_input():
    with pytest.raises(ValueError, match="at least 2"):
        flipflop_eigenvalues(torch.zeros(1, 2, 3))
    with pytest.raises(ValueError, match=r"N\*C >= S"):
        flipflop_eigenvalues(torch.randn(2, 2, 16))
    with pytest.raises(ValueError, match="z must be"):
        flipflop_eigenvalues(torch.zeros(4, 8))


# ------------------------------------------------------------------ class-averaged VIV (§2.3)


def _labelled_set(seed: int = 4, classes: int = 4, per_class: int = 12) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    labels = torch.arange(classes).repeat_interleave(per_class)
    means = 2 * torch.randn(classes, 3, 4, 4, generator=gen)
    scales = torch.tensor([0.3, 1.0, 3.0])[None, :, None, None]
    z = means[labels] + scales * torch.randn(classes * per_class, 3, 4, 4, generator=gen)
    z[:, 1] += 0.5 * z[:, 0]  # correlated channels
    return z[torch.randperm(z.shape[0], generator=gen)], labels[torch.randperm(z.shape[0], generator=gen)]


def test_viv_is_mean_of_per_class_values_of_standardised_latents():
    z, labels = _labelled_set()
    stats = channel_stats(z)
    zs = (z.double() - stats[0][:, None, None]) / stats[1][:, None, None]
    expected = [viv_from_eigenvalues(flipflop_eigenvalues(zs[labels == k].flatten(2), compute_dtype=F64)) for k in range(4)]
    assert viv(z, labels, compute_dtype=F64) == pytest.approx(sum(expected) / 4, rel=1e-12)
    assert viv(z, labels) == pytest.approx(sum(expected) / 4, rel=1e-5)  # default float32 products
    assert 0 < viv(z, labels) < math.pi / 2


def test_viv_invariant_to_channel_permutation_and_class_mean_shift():
    z, labels = _labelled_set(5)
    z = z.double()  # the shift below is large; keep its round-off out of the comparison
    base = viv(z, labels, compute_dtype=F64)
    assert viv(z[:, [2, 0, 1]], labels, compute_dtype=F64) == pytest.approx(base, rel=1e-9)
    stats = channel_stats(z)
    shift = 10 * torch.randn(4, 3, 4, 4, generator=torch.Generator().manual_seed(9))
    shifted = viv(z + shift[labels], labels, stats=stats, compute_dtype=F64)
    assert shifted == pytest.approx(viv(z, labels, stats=stats, compute_dtype=F64), rel=1e-9)


def test_viv_scales_linearly_without_standardisation():
    z, labels = _labelled_set(6)
    scaled = viv(2.5 * z.double(), labels, standardize=False, compute_dtype=F64)
    assert scaled == pytest.approx(2.5 * viv(z, labels, standardize=False, compute_dtype=F64), rel=1e-9)


def test_small_classes_are_skipped_and_listed():
    z, labels = _labelled_set(7)
    labels = labels.clone()
    labels[0] = 99  # a singleton class
    spectra = class_spectra(z, labels)
    assert 99 in spectra.skipped and 99 not in spectra.classes.tolist()
    assert spectra.eigenvalues.shape == (4, 48)
    with pytest.raises(ValueError, match="labels"):
        viv(z, labels[:-1])
    with pytest.raises(ValueError, match="no class"):
        viv(z[:1], labels[:1])


def test_viv_curve_endpoints():
    z, labels = _labelled_set(8)
    spectra = class_spectra(z, labels)
    curve = viv_curve(spectra, [0.0, 0.5, 1.0])
    assert float(curve[0]) == pytest.approx(float(spectra.eigenvalues.mean()), rel=1e-12)
    assert float(curve[2]) == pytest.approx(1.0, rel=1e-12)
    # the time average of the curve is the reported VIV (Eq. 5 / d)
    integral, _ = quad(lambda t: float(viv_curve(spectra, [t])[0]), 0, 1, limit=200)
    assert integral == pytest.approx(spectra.viv, rel=1e-6)
    assert spectra.irreducible_per_class().shape == (4,)


# ------------------------------------------------------------------ Monte Carlo (§2.5)


def _single_gaussian(seed: int = 0) -> tuple[ClassSpectra, torch.Tensor]:
    """d = 6 Gaussian with a random Kronecker-structured rotation (C=2, S=3) and random mean."""
    gen = torch.Generator().manual_seed(seed)
    lam = torch.tensor([[3.0, 1.5, 0.7], [0.3, 0.1, 0.02]], dtype=F64)
    spectra = ClassSpectra(
        classes=torch.tensor([0]),
        counts=torch.tensor([1]),
        eigenvalues=lam.reshape(1, -1),
        shape=(2, 3, 1),
        means=torch.randn(1, 2, 3, generator=gen, dtype=F64),
        bases_c=_rotation(2, gen)[None],
        bases_s=_rotation(3, gen)[None],
    )
    return spectra, lam.reshape(-1)


@pytest.mark.parametrize("t", [0.05, 0.3, 0.5, 0.8, 0.95])
def test_mc_irreducible_variance_matches_eq4_at_fixed_t(t):
    spectra, lam = _single_gaussian()
    out = viv_marginal(spectra, 20_000, batch_size=5_000, t=t, seed=11)
    exact = float(irreducible_variance_at(lam, t)) / 6
    assert abs(out["naive"] - exact) < 3 * out["naive_se"]
    assert out["rao_blackwell"] == pytest.approx(exact, rel=1e-10)  # one component: RB is exact


def test_mc_uniform_t_matches_eq5():
    spectra, lam = _single_gaussian(1)
    out = viv_marginal(spectra, 20_000, batch_size=5_000, seed=12)
    assert abs(out["naive"] - viv_from_eigenvalues(lam)) < 3 * out["naive_se"]
    assert abs(out["rao_blackwell"] - viv_from_eigenvalues(lam)) < 3 * out["rao_blackwell_se"]


def _mixture(separation: float, seed: int = 2) -> ClassSpectra:
    gen = torch.Generator().manual_seed(seed)
    lam = torch.tensor([[2.0, 0.8, 0.3, 0.1], [0.5, 0.2, 0.05, 0.01]], dtype=F64).reshape(1, -1).repeat(3, 1)
    means = torch.randn(1, 2, 4, generator=gen, dtype=F64) + separation * torch.randn(3, 2, 4, generator=gen, dtype=F64)
    return ClassSpectra(
        classes=torch.arange(3),
        counts=torch.tensor([1, 2, 3]),
        eigenvalues=lam,
        shape=(2, 2, 2),
        means=means,
        bases_c=torch.stack([_rotation(2, gen) for _ in range(3)]),
        bases_s=torch.stack([_rotation(4, gen) for _ in range(3)]),
    )


def test_gmm_with_identical_components_equals_eq5():
    spectra = _mixture(0.0)
    spectra.means = spectra.means[:1].repeat(3, 1, 1)
    spectra.bases_c = spectra.bases_c[:1].repeat(3, 1, 1)
    spectra.bases_s = spectra.bases_s[:1].repeat(3, 1, 1)
    out = viv_marginal(spectra, 8_000, batch_size=2_000, seed=13)
    exact = viv_from_eigenvalues(spectra.eigenvalues[0])
    assert abs(out["naive"] - exact) < 3 * out["naive_se"]
    assert abs(out["rao_blackwell"] - exact) < 3 * out["rao_blackwell_se"]
    assert out["class_average"] == pytest.approx(exact)


def test_gmm_naive_and_rao_blackwell_agree_and_grow_with_separation():
    values = []
    for sep in (0.0, 2.0, 20.0):
        out = viv_marginal(_mixture(sep), 8_000, batch_size=2_000, component_chunk=2, seed=14)
        assert abs(out["naive"] - out["rao_blackwell"]) < 3 * (out["naive_se"] + out["rao_blackwell_se"])
        assert out["rao_blackwell"] >= out["class_average"] - 3 * out["rao_blackwell_se"]
        values.append(out["rao_blackwell"])
    assert values[0] < values[1] < values[2]


def test_marginal_from_class_spectra_end_to_end():
    z, labels = _labelled_set(10)
    spectra = class_spectra(z, labels, keep_bases=True)
    out = viv_marginal(spectra, 400, batch_size=100, seed=15)
    assert out["rao_blackwell"] >= spectra.viv
    assert abs(out["naive"] - out["rao_blackwell"]) < 3 * (out["naive_se"] + out["rao_blackwell_se"])
    with pytest.raises(ValueError, match="keep_bases"):
        viv_marginal(class_spectra(z, labels), 10)
