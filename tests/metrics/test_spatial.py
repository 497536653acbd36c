"""LDS / CDS / SRSS / RMSC oracles of spec diffusability §4 (iREPA definitions)."""

import math

import pytest
import torch

from latentbench.metrics.spatial import grid_distances, spatial_metrics, spatial_per_image, token_mask


def _two_halves() -> tuple[torch.Tensor, torch.Tensor]:
    """8x8 grid, D=2: tokens e1 in columns 0-3 and e2 in columns 4-7; FG = columns 0-3."""
    z = torch.zeros(1, 2, 8, 8)
    z[0, 0, :, :4] = 1.0
    z[0, 1, :, 4:] = 1.0
    fg = torch.zeros(1, 8, 8, dtype=torch.bool)
    fg[0, :, :4] = True
    return z, fg


def _brute_force(z: torch.Tensor, fg: torch.Tensor, far: int, dmax: int, d_neg: int) -> tuple[float, float, float]:
    """Spec §4 definitions with explicit loops over token pairs (one image)."""
    c, h, w = z.shape
    pos = [(i, j) for i in range(h) for j in range(w)]
    u = [z[:, i, j] / max(float(z[:, i, j].norm()), 1e-8) for i, j in pos]
    m = fg.reshape(-1).tolist()

    def dist(p, q):
        return abs(pos[p][0] - pos[q][0]) + abs(pos[p][1] - pos[q][1])

    def cos(p, q):
        return float(u[p] @ u[q])

    pairs = [(p, q) for p in range(h * w) for q in range(h * w)]
    local = [cos(p, q) for p, q in pairs if p < q and dist(p, q) == 1]
    far_ = [cos(p, q) for p, q in pairs if dist(p, q) >= far]
    lds = sum(local) / len(local) - sum(far_) / len(far_)
    s = [sum(cos(p, q) for p, q in pairs if dist(p, q) == d) / sum(1 for p, q in pairs if dist(p, q) == d)
         for d in range(1, dmax + 1)]
    d_mean, s_mean = (dmax + 1) / 2, sum(s) / dmax
    slope = sum((sd - s_mean) * (d - d_mean) for d, sd in zip(range(1, dmax + 1), s)) / sum(
        (d - d_mean) ** 2 for d in range(1, dmax + 1)
    )
    deltas = []
    for p in range(h * w):
        if not m[p]:
            continue
        near = [cos(p, q) for q in range(h * w) if m[q] and dist(p, q) == 1]
        neg = [cos(p, q) for q in range(h * w) if not m[q] and dist(p, q) >= d_neg]
        if near and neg:
            deltas.append(sum(near) / len(near) - sum(neg) / len(neg))
    return lds, -slope, sum(deltas) / len(deltas)


def test_two_halves_oracle():
    z, fg = _two_halves()
    per = spatial_per_image(z, fg)
    assert float(per["lds"][0]) == pytest.approx(0.668086, abs=1e-6)
    assert float(per["cds"][0]) == pytest.approx(0.102511, abs=1e-6)
    assert float(per["srss"][0]) == pytest.approx(1.0, abs=1e-6)
    out = spatial_metrics(z, fg, standardize=False)
    assert out["lds"] == pytest.approx(0.668086, abs=1e-6)
    assert out["n_kept"] == 1 and out["n_srss_valid"] == 1


def test_identical_tokens_give_zero():
    z = torch.randn(3, 5, 1, 1, generator=torch.Generator().manual_seed(0)).expand(3, 5, 8, 8)
    per = spatial_per_image(z)
    torch.testing.assert_close(per["lds"], torch.zeros(3, dtype=torch.float64), rtol=0, atol=1e-9)
    torch.testing.assert_close(per["cds"], torch.zeros(3, dtype=torch.float64), rtol=0, atol=1e-9)
    torch.testing.assert_close(per["rmsc"], torch.zeros(3, dtype=torch.float64), rtol=0, atol=1e-9)


def test_matches_brute_force_definitions():
    gen = torch.Generator().manual_seed(1)
    z = torch.cumsum(torch.randn(2, 3, 6, 6, generator=gen), dim=-1)
    fg = torch.rand(2, 6, 6, generator=gen) < 0.5
    per = spatial_per_image(z, fg, far_dist=4, dmax=5, d_pos=1, d_neg=4)
    for b in range(2):
        lds, cds, srss = _brute_force(z[b], fg[b], far=4, dmax=5, d_neg=4)
        assert float(per["lds"][b]) == pytest.approx(lds, abs=1e-5)
        assert float(per["cds"][b]) == pytest.approx(cds, abs=1e-5)
        assert float(per["srss"][b]) == pytest.approx(srss, abs=1e-5)


def test_invariances():
    gen = torch.Generator().manual_seed(2)
    z = torch.cumsum(torch.randn(4, 6, 8, 8, generator=gen), dim=-1)
    fg = torch.zeros(4, 8, 8, dtype=torch.bool)
    fg[:, 2:6, 1:5] = True
    base = spatial_per_image(z, fg)
    rot = torch.linalg.qr(torch.randn(6, 6, generator=gen))[0]
    scale = torch.rand(4, 1, 8, 8, generator=gen) + 0.1
    for other in (torch.einsum("dc,nchw->ndhw", rot, z), z * scale):
        out = spatial_per_image(other, fg)
        for key in ("lds", "cds", "srss"):
            torch.testing.assert_close(out[key], base[key], rtol=0, atol=1e-6)
    shifted = spatial_per_image(z + 5.0, fg)
    assert not torch.allclose(shifted["lds"], base["lds"], atol=1e-3)


def test_filter_and_nan_handling():
    z, fg = _two_halves()
    z = z.repeat(3, 1, 1, 1) + 0.01 * torch.randn(3, 2, 8, 8, generator=torch.Generator().manual_seed(3))
    fg = fg.repeat(3, 1, 1)
    fg[1] = True  # no BG: filtered out; unfiltered its SRSS is NaN
    fg[2] = False
    fg[2, 0, :5] = True  # 5 FG tokens < 25% of 64
    out = spatial_metrics(z, fg, standardize=False)
    assert out["n_kept"] == 1 and out["n_images"] == 3
    loose = spatial_metrics(z, fg, standardize=False, filter_images=False)
    assert loose["n_kept"] == 3 and loose["n_srss_valid"] == 2
    per = spatial_per_image(z, fg)
    assert math.isnan(float(per["srss"][1]))
    assert loose["srss"] == pytest.approx(float(per["srss"][[0, 2]].mean()), rel=1e-9)
    with pytest.raises(ValueError, match="filter"):
        spatial_metrics(z[1:2], fg[1:2], standardize=False)


def test_standardisation_uses_given_stats():
    z = torch.randn(6, 3, 8, 8, generator=torch.Generator().manual_seed(4)) + 2.0
    stats = (torch.full((3,), 2.0, dtype=torch.float64), torch.ones(3, dtype=torch.float64))
    assert spatial_metrics(z, stats=stats)["lds"] == pytest.approx(spatial_metrics(z - 2.0, standardize=False)["lds"], abs=1e-6)


def test_token_mask_max_pools_pixels():
    pix = torch.zeros(2, 1, 32, 32)
    pix[0, 0, 17, 3] = 1000  # id 1000 ("other") counts as FG
    pix[1, 0, :16, :16] = 5
    tok = token_mask(pix, 16)
    assert tok.shape == (2, 2, 2) and tok.dtype == torch.bool
    assert tok[0].tolist() == [[False, False], [True, False]]
    assert tok[1].tolist() == [[True, False], [False, False]]
    with pytest.raises(ValueError, match="patch"):
        token_mask(pix, 5)


def test_grid_distances_and_bad_grids():
    dist = grid_distances(2, 3)
    assert dist[0, 5] == 3 and dist[1, 3] == 2 and dist.diagonal().eq(0).all()
    with pytest.raises(ValueError, match="far_dist"):
        spatial_per_image(torch.randn(1, 2, 3, 3))
