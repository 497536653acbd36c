"""SEC oracles of spec diffusability §5."""

import numpy as np
import pytest
import scipy.fft
import torch

from latentbench.metrics.spectral import dct2, dct_matrix, sec, sec_from_energy, spectral_energy


def test_dct_matches_scipy_orthonormal_dct2():
    x = np.random.default_rng(0).standard_normal((3, 2, 16, 8))
    ours = dct2(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(ours, scipy.fft.dctn(x, type=2, norm="ortho", axes=(-2, -1)), atol=1e-12)
    d = dct_matrix(5)
    torch.testing.assert_close(d @ d.T, torch.eye(5, dtype=torch.float64), rtol=0, atol=1e-12)


@pytest.mark.parametrize("rho, expected", [(0.25, 220 / 256), (0.5, 120 / 256)])
def test_white_noise_16x16(rho, expected):
    z = torch.randn(200, 10, 16, 16, generator=torch.Generator().manual_seed(0))
    assert expected in (0.859375, 0.46875)
    assert sec(z, rho) == pytest.approx(expected, abs=0.005)


def test_spatially_constant_maps_have_zero_sec():
    z = torch.randn(30, 4, 1, 1, generator=torch.Generator().manual_seed(1)).expand(30, 4, 16, 16)
    for rho in (0.0, 0.25, 0.5):
        assert sec(z, rho) == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize("u0, v0", [(0, 0), (1, 2), (7, 8), (8, 8), (15, 0), (3, 12), (15, 15)])
def test_single_dct_basis_image_is_an_indicator(u0, v0):
    coef = torch.zeros(16, 16, dtype=torch.float64)
    coef[u0, v0] = 1.0
    d = dct_matrix(16)
    basis = d.T @ coef @ d  # inverse orthonormal DCT of a unit coefficient
    amp = torch.randn(6, 3, 1, 1, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    z = amp * basis
    for rho in (0.25, 0.5):
        tau = rho * 30
        assert sec(z, rho, standardize=False) == pytest.approx(float(u0 + v0 > tau), abs=1e-12)


def test_invariances():
    gen = torch.Generator().manual_seed(3)
    z = torch.cumsum(torch.randn(20, 4, 8, 8, generator=gen, dtype=torch.float64), dim=-1)  # non-white
    base = sec(z, 0.25, standardize=False)
    signs = torch.where(torch.rand(20, 4, 1, 1, generator=gen) < 0.5, -1.0, 1.0).double()
    mix = torch.linalg.qr(torch.randn(4, 4, generator=gen, dtype=torch.float64))[0]
    assert sec(z[:, [3, 1, 0, 2]], 0.25, standardize=False) == pytest.approx(base, rel=1e-12)
    assert sec(z * signs, 0.25, standardize=False) == pytest.approx(base, rel=1e-12)
    assert sec(torch.einsum("dc,nchw->ndhw", mix, z), 0.25, standardize=False) == pytest.approx(base, rel=1e-10)
    assert sec(7.0 * z, 0.25, standardize=False) == pytest.approx(base, rel=1e-12)
    assert sec(7.0 * z + 3.0, 0.25) == pytest.approx(sec(z, 0.25), rel=1e-12)  # standardised: affine-invariant
    assert sec(z, 0.25) != pytest.approx(base, rel=1e-6)  # the mean removal changes the DC energy


def test_streaming_chunks_and_multiple_rho():
    z = torch.randn(25, 3, 6, 10, generator=torch.Generator().manual_seed(4))
    energy = spectral_energy(z)
    torch.testing.assert_close(spectral_energy(z, chunk=4), energy, rtol=1e-12, atol=0)
    assert sec_from_energy(energy, 0.3) == pytest.approx(sec(z, 0.3), rel=1e-12)
    # Parseval: standardised maps carry H*W*(NHW-1)/(NHW) energy per map on average
    m = 25 * 6 * 10
    assert float(energy.sum()) == pytest.approx(60 * (m - 1) / m, rel=1e-12)


def test_bad_input_raises():
    with pytest.raises(ValueError, match="rho"):
        sec(torch.randn(2, 2, 4, 4), 1.5)
    with pytest.raises(ValueError, match="latents"):
        sec(torch.randn(2, 4, 4))
    with pytest.raises(ValueError, match="zero spectral energy"):
        sec(torch.zeros(2, 2, 4, 4), standardize=False)
