"""Oracles of spec ifid-seesaw §5.2-5.5: EQ, SE, VF and GMM losses."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.special import logsumexp
from torch import nn

from latentbench.metrics.baselines import (
    eq_loss,
    eq_scales,
    fit_vf_projection,
    gmm_loss,
    se_loss,
    vf_loss,
    vf_metric,
)


def _images(n: int = 6, size: int = 32, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _pool_encoder(f: int):
    return lambda x: F.avg_pool2d(x, f)


def _nearest_decoder(f: int):
    return lambda z: F.interpolate(z, scale_factor=f, mode="nearest")


def _recon_mse(x: torch.Tensor, y01: torch.Tensor) -> float:
    """Mean over images of the per-image MSE in [-1, 1] units."""
    return float(((2 * y01 - 1) - (2 * x - 1)).square().flatten(1).mean(1).mean())


def _token_encoder(x: torch.Tensor) -> torch.Tensor:
    """A 1-D tokenizer's encoder: N x L x C tokens."""
    return torch.zeros(x.shape[0], 16, 4, dtype=x.dtype)


class _RandomConvVAE:
    """'Any VAE': a seeded random conv encoder (f = 4) and decoder, not rotation-equivariant."""

    def __init__(self, seed: int = 0) -> None:
        torch.manual_seed(seed)
        self.enc = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.SiLU(), nn.Conv2d(8, 4, 4, stride=4)).double()
        self.dec = nn.Sequential(nn.Conv2d(4, 8, 3, padding=1), nn.SiLU(), nn.Conv2d(8, 48, 1)).double()

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.enc(x)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return F.pixel_shuffle(self.dec(z), 4)  # 48 = 3 * 4 * 4


# ---------------------------------------------------------------- EQ (§5.2)


def test_eq_scale_set_matches_eqvae_and_spec():
    assert eq_scales(32) == tuple(k / 32 for k in range(8, 32))  # EQ-VAE's {8/32 .. 31/32}
    assert eq_scales(16) == tuple(k / 16 for k in range(4, 16))  # spec: {4/16 .. 15/16}


def test_eq_pool_vae_commutes_with_rotations():
    x = _images(6, 32)
    enc, dec = _pool_encoder(8), _nearest_decoder(8)
    plain = _recon_mse(x, dec(enc(x)))
    assert plain > 0.01
    eq = eq_loss(enc, dec, x, (4, 4), seed=3, scales=(1.0,), rotations=(1, 2, 3), batch_size=4)
    assert eq == pytest.approx(plain, rel=1e-12)


def test_eq_identity_transform_is_plain_reconstruction_for_any_vae():
    vae = _RandomConvVAE()
    x = _images(5, 16)
    with torch.no_grad():
        plain = _recon_mse(x, vae.decode(vae.encode(x)))
    eq = eq_loss(vae.encode, vae.decode, x, (4, 4), seed=0, scales=(1.0,), rotations=(0,))
    assert eq == pytest.approx(plain, rel=1e-12)
    # The same random VAE is not rotation-equivariant: the metric must see that.
    eq_rot = eq_loss(vae.encode, vae.decode, x, (4, 4), seed=0, scales=(1.0,), rotations=(1, 2, 3))
    assert abs(eq_rot - plain) > 1e-3 * plain


def test_eq_half_scale_on_pool_vae_is_directly_computable():
    # s = 1/2 at exact halving: bilinear (align_corners False) = 2x2 box average, so
    # D(tau z) = nearest8(avgpool16(x)) and tau x = avgpool2(x).
    x = _images(4, 64)
    expected = _recon_mse(F.avg_pool2d(x, 2), F.interpolate(F.avg_pool2d(x, 16), scale_factor=8, mode="nearest"))
    eq = eq_loss(_pool_encoder(8), _nearest_decoder(8), x, (8, 8), seed=1, scales=(0.5,), rotations=(0,))
    assert eq == pytest.approx(expected, rel=1e-12)


def test_eq_default_set_is_seeded_and_batch_independent():
    vae = _RandomConvVAE(1)
    x = _images(7, 32, seed=2)
    a = eq_loss(vae.encode, vae.decode, x, (8, 8), seed=11, batch_size=7)
    b = eq_loss(vae.encode, vae.decode, [x[:3], x[3:]], (8, 8), seed=11, batch_size=2)
    c = eq_loss(vae.encode, vae.decode, x, (8, 8), seed=12)
    assert a == pytest.approx(b, rel=1e-12)
    assert a != c


def test_eq_rejects_1d_tokenizers_and_inconsistent_scales():
    with pytest.raises(ValueError, match="1-D tokenizers"):
        eq_loss(_token_encoder, lambda z: z, _images(2, 16), (4, 4), seed=0)
    with pytest.raises(ValueError, match="scales"):
        eq_loss(_pool_encoder(4), _nearest_decoder(4), _images(2, 16), (4, 4), seed=0, scales=(0.3,))
    with pytest.raises(ValueError, match="latent_hw"):
        eq_loss(_pool_encoder(4), _nearest_decoder(4), _images(2, 16), (8, 8), seed=0)


# ---------------------------------------------------------------- SE (§5.3)


def test_se_box_encoder_nearest_decoder_is_directly_computable():
    x = _images(5, 32)
    f_enc = 4
    expected = np.mean(
        [
            _recon_mse(F.avg_pool2d(x, f), F.interpolate(F.avg_pool2d(x, f * f_enc), scale_factor=f_enc, mode="nearest"))
            for f in (2, 4)
        ]
    )
    got = se_loss(_pool_encoder(f_enc), _nearest_decoder(f_enc), x, factors=(2, 4), batch_size=2)
    assert expected > 1e-3
    assert got == pytest.approx(expected, rel=1e-12)


def test_se_constant_image_is_zero():
    x = torch.full((3, 3, 32, 32), 0.3, dtype=torch.float64)
    assert se_loss(_pool_encoder(4), _nearest_decoder(4), x) == pytest.approx(0.0, abs=1e-24)


def test_se_bilinear_equals_area_at_factor_two():
    vae = _RandomConvVAE(2)
    x = _images(3, 32)
    area = se_loss(vae.encode, vae.decode, x, factors=(2,), mode="area")
    bilinear = se_loss(vae.encode, vae.decode, x, factors=(2,), mode="bilinear")
    assert area == pytest.approx(bilinear, rel=1e-10)
    assert se_loss(vae.encode, vae.decode, x, factors=(4,), mode="bilinear") != pytest.approx(
        se_loss(vae.encode, vae.decode, x, factors=(4,), mode="area"), rel=1e-6
    )


def test_se_rejects_bad_input():
    with pytest.raises(ValueError, match="1-D tokenizers"):
        se_loss(_token_encoder, lambda z: z, _images(2, 16))
    with pytest.raises(ValueError, match="factors"):
        se_loss(_pool_encoder(4), _nearest_decoder(4), _images(2, 24), factors=(4,))  # 6x6 latent
    with pytest.raises(ValueError, match="mode"):
        se_loss(_pool_encoder(4), _nearest_decoder(4), _images(2, 16), mode="nearest")


# ---------------------------------------------------------------- VF (§5.4)


def _vf_brute_force(zp: torch.Tensor, f: torch.Tensor, m1: float, m2: float) -> float:
    """The spec formulas, written out with explicit loops over images and positions."""
    zp, f = zp.double().flatten(2), f.double().flatten(2)
    b, _, n = zp.shape
    mcos, mdms = 0.0, 0.0
    for i in range(b):
        zn = zp[i] / zp[i].norm(dim=0, keepdim=True)
        fn = f[i] / f[i].norm(dim=0, keepdim=True)
        for p in range(n):
            mcos += max(0.0, 1 - m1 - float(zn[:, p] @ fn[:, p]))
            for q in range(n):
                mdms += max(0.0, abs(float(zn[:, p] @ zn[:, q]) - float(fn[:, p] @ fn[:, q])) - m2)
    return mcos / (b * n) + mdms / (b * n * n)


def test_vf_oracles():
    f = torch.randn(3, 16, 4, 4, generator=torch.Generator().manual_seed(0))
    assert vf_loss(f, f) == pytest.approx(0.0, abs=1e-6)
    assert vf_loss(-f, f) == pytest.approx(1.5, abs=1e-5)
    assert vf_loss(2 * f, f) == pytest.approx(0.0, abs=1e-6)


def test_vf_matches_spec_formula():
    g = torch.Generator().manual_seed(1)
    zp, f = torch.randn(2, 8, 3, 3, generator=g), torch.randn(2, 8, 3, 3, generator=g)
    for m1, m2 in ((0.5, 0.25), (0.0, 0.0), (0.9, 0.1)):
        expected = _vf_brute_force(zp, f, m1, m2)
        assert expected > 0.05
        assert vf_loss(zp, f, m1, m2) == pytest.approx(expected, rel=1e-5)


def _linear_pairs(n: int, c: int, d: int, hw: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(d, c, generator=g)
    z = torch.randn(n, c, hw, hw, generator=g)
    return z, torch.einsum("dc,nchw->ndhw", w, z), w


def test_fit_vf_projection_recovers_a_linear_target():
    z, f, _ = _linear_pairs(48, 4, 12, 4, seed=2)
    proj, final = fit_vf_projection(z, f, steps=300, lr=3e-2, batch=16, seed=0)
    assert final < 0.02
    with torch.no_grad():
        fitted = vf_loss(proj(z), f)
        random_proj = vf_loss(nn.Conv2d(4, 12, 1, bias=False)(z), f)
    assert fitted < 0.02 < random_proj
    proj2, final2 = fit_vf_projection(z, f, steps=300, lr=3e-2, batch=16, seed=0)
    assert final2 == final and torch.equal(proj.weight, proj2.weight)


def test_vf_metric_on_val_pairs_and_grid_resize():
    z, f, w = _linear_pairs(64, 4, 12, 8, seed=3)
    f_small = F.interpolate(f, size=(4, 4), mode="area")  # features on a coarser grid than the latents
    out = vf_metric(z[:48], f_small[:48], z[48:], f_small[48:], steps=300, lr=3e-2, batch=16, seed=0)
    assert out["vf_loss"] < 0.02 and out["fit_loss"] < 0.02
    assert out["token_pooled_1d"] is False and out["n_val"] == 16
    # A shipped projection is used as is: P = w reproduces the features exactly.
    proj = nn.Conv2d(4, 12, 1, bias=False)
    with torch.no_grad():
        proj.weight.copy_(w[:, :, None, None])
    given = vf_metric(None, None, z, f, projection=proj, batch=10)
    assert given["fit_loss"] is None and given["vf_loss"] == pytest.approx(0.0, abs=1e-6)
    with torch.no_grad():
        proj.weight.neg_()
    assert vf_metric(None, None, z, f, projection=proj)["vf_loss"] == pytest.approx(1.5, abs=1e-5)


def test_vf_metric_1d_tokens_pool_raster_features():
    g = torch.Generator().manual_seed(4)
    n, length, c, d = 40, 4, 3, 10
    tokens = torch.randn(n, length, c, generator=g)  # N x L x C
    w = torch.randn(d, c, generator=g)
    per_token = torch.einsum("dc,nlc->ndl", w, tokens)
    # 4x4 feature grid; raster positions 4l..4l+3 (row l) average to token l's target.
    noise = torch.randn(n, d, length, 4, generator=g)
    f = (per_token[..., None] + noise - noise.mean(-1, keepdim=True)).reshape(n, d, 4, 4)
    out = vf_metric(tokens[:32], f[:32], tokens[32:], f[32:], steps=300, lr=3e-2, batch=16, seed=1)
    assert out["token_pooled_1d"] is True
    assert out["vf_loss"] < 0.02


def test_vf_rejects_bad_input():
    with pytest.raises(ValueError):
        vf_loss(torch.randn(2, 4, 3, 3), torch.randn(2, 5, 3, 3))
    with pytest.raises(ValueError, match="count"):
        fit_vf_projection(torch.randn(4, 2, 2, 2), torch.randn(3, 5, 2, 2), steps=1)


# ---------------------------------------------------------------- GMM (§5.5)


def _as_nchw(tokens: np.ndarray, hw: int) -> torch.Tensor:
    """[M, C] tokens -> [M / hw^2, C, hw, hw] latents."""
    c = tokens.shape[1]
    return torch.from_numpy(tokens).reshape(-1, hw, hw, c).permute(0, 3, 1, 2).contiguous()


def _diag_gmm_logpdf(v: np.ndarray, weights: np.ndarray, means: np.ndarray, var: np.ndarray) -> np.ndarray:
    comp = -0.5 * (np.log(2 * np.pi * var)[None] + (v[:, None, :] - means[None]) ** 2 / var[None]).sum(-1)
    return logsumexp(comp + np.log(weights)[None], axis=1)


def test_gmm_known_mixture_matches_true_nll():
    rng = np.random.default_rng(0)
    weights = np.array([0.5, 0.3, 0.2])
    means = np.array([[0.0, 0.0, 0.0, 0.0], [10.0, -8.0, 6.0, 9.0], [-9.0, 9.0, -10.0, 5.0]])
    var = np.array([[1.0, 0.5, 2.0, 1.0], [0.3, 1.5, 0.8, 1.2], [2.0, 1.0, 0.5, 0.7]])

    def draw(m: int) -> np.ndarray:
        comp = rng.choice(3, size=m, p=weights)
        return means[comp] + np.sqrt(var[comp]) * rng.standard_normal((m, 4))

    train, val = draw(16 * 1024), draw(16 * 1024)
    out = gmm_loss(_as_nchw(train, 4), _as_nchw(val, 4), n_components=3, max_iter=200)
    # Truth: the true mixture after the same standardisation (fitting-set mean, unbiased std),
    # evaluated on the same val tokens (Monte Carlo with the true parameters).
    mu, sd = train.mean(0), train.std(0, ddof=1)
    truth = -_diag_gmm_logpdf((val - mu) / sd, weights, (means - mu) / sd, var / sd**2).mean() / 4
    assert out["k"] == 3 and out["channels"] == 4 and out["n_fit"] == train.shape[0]
    assert out["gmm_loss"] == pytest.approx(truth, abs=0.01)
    assert out["nll_per_token"] == pytest.approx(4 * out["gmm_loss"])
    # A single Gaussian cannot model it: the metric must be clearly worse.
    assert gmm_loss(_as_nchw(train, 4), _as_nchw(val, 4), n_components=1)["gmm_loss"] > truth + 0.3


def test_gmm_standard_normal_single_component():
    g = torch.Generator().manual_seed(5)
    train, val = torch.randn(1000, 4, 4, 4, generator=g), torch.randn(1000, 4, 4, 4, generator=g)
    out = gmm_loss(train, val, n_components=1)
    assert out["gmm_loss"] == pytest.approx(0.5 * math.log(2 * math.pi * math.e), abs=0.01)  # 1.418939


def test_gmm_single_component_on_its_own_fitting_set_is_exact():
    # K=1 diag fitted by ML on standardised tokens: variance (n-1)/n + reg_covar per channel,
    # so the per-dim NLL on the same tokens is known in closed form for any distribution.
    tokens = np.random.default_rng(1).uniform(-3, 7, size=(2048, 3))
    z = _as_nchw(tokens, 4)
    n = tokens.shape[0]
    ml_var = (n - 1) / n
    v = ml_var + 1e-6
    expected = 0.5 * math.log(2 * math.pi * v) + 0.5 * ml_var / v
    assert gmm_loss(z, z, n_components=1)["gmm_loss"] == pytest.approx(expected, abs=1e-9)


def test_gmm_token_layout_and_subsampling():
    g = torch.Generator().manual_seed(6)
    grid = torch.randn(64, 3, 4, 4, generator=g) * torch.tensor([1.0, 3.0, 0.2])[None, :, None, None]
    seq = grid.flatten(2).transpose(1, 2).contiguous()  # the same tokens as N x L x C
    a = gmm_loss(grid, grid, n_components=2, seed=0)
    b = gmm_loss(seq, seq, n_components=2, seed=0)
    assert a["gmm_loss"] == pytest.approx(b["gmm_loss"], rel=1e-9)
    s1 = gmm_loss(grid, grid, n_components=2, n_fit=300, n_eval=200, seed=3)
    s2 = gmm_loss(seq, seq, n_components=2, n_fit=300, n_eval=200, seed=3)
    assert s1["n_fit"] == 300 and s1["n_eval"] == 200
    assert s1["gmm_loss"] == pytest.approx(s2["gmm_loss"], rel=1e-9)  # same tokens drawn in both layouts


def test_gmm_rejects_bad_input():
    z = torch.randn(8, 2, 2, 2)
    with pytest.raises(ValueError, match="train_latents"):
        gmm_loss(torch.randn(8, 2), z)
    dead = z.clone()
    dead[:, 1] = 0.5
    with pytest.raises(ValueError, match="constant"):
        gmm_loss(dead, z, n_components=1)
    with pytest.raises(ValueError, match="val_latents"):
        gmm_loss(z, torch.randn(8, 3, 2, 2), n_components=1)
