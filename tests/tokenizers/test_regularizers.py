"""Regularisers of the diffusability study (spec metrics-diffusability.md §11.2) against their oracles."""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pytest
import torch
from scipy import stats

from latentbench.tokenizers.kl_vae import ConvKLTokenizer
from latentbench.tokenizers.losses import reconstruction_map
from latentbench.tokenizers.regularizers import (
    LMR_RATIOS,
    EqRegularizer,
    EqTransform,
    LmrRegularizer,
    MaeRegularizer,
    build_regularizer,
    eq_scale_sizes,
    lcr_loss,
    local_correlation,
    parse_variant,
    sample_lmr_mask,
    sample_mask_ratio,
    vf_loss,
)
from latentbench.tokenizers.zoo import TABLE1

TINY = {"ch": 8, "ch_mult": (1, 2), "num_res_blocks": 1, "attn_resolutions": (8,), "z_channels": 2, "embed_dim": 2,
        "resolution": 16, "norm_groups": 4}  # fmt: skip


# ---- VF (mcos / mdms), oracles of spec metrics-ifid-seesaw.md §5.4 ----


def test_vf_oracles():
    f = torch.randn(3, 16, 8, 8)
    assert vf_loss(f, f).item() == pytest.approx(0.0, abs=1e-6)
    assert vf_loss(-f, f).item() == pytest.approx(1.5, abs=1e-5)  # mcos 1.5, mdms 0 (sign-invariant)
    assert vf_loss(2 * f, f).item() == pytest.approx(0.0, abs=1e-6)
    assert vf_loss(-f, f, cos_weight=0.0).item() == pytest.approx(0.0, abs=1e-6)  # mdms alone


def test_vf_terms_by_hand():
    torch.manual_seed(0)
    z, f = torch.randn(2, 5, 3, 3), torch.randn(2, 5, 3, 3)
    cos = torch.nn.functional.cosine_similarity(z, f, dim=1)
    mcos = torch.relu(1 - 0.5 - cos).mean()
    zn = z.flatten(2) / z.flatten(2).norm(dim=1, keepdim=True)
    fn = f.flatten(2) / f.flatten(2).norm(dim=1, keepdim=True)
    mdms = torch.relu((torch.einsum("bci,bcj->bij", zn, zn) - torch.einsum("bci,bcj->bij", fn, fn)).abs() - 0.25).mean()
    assert vf_loss(z, f, distmat_weight=0.0).item() == pytest.approx(mcos.item(), rel=1e-5)
    assert vf_loss(z, f, cos_weight=0.0).item() == pytest.approx(mdms.item(), rel=1e-5)
    assert vf_loss(z, f).item() == pytest.approx((mcos + mdms).item(), rel=1e-5)
    with pytest.raises(ValueError, match="differ"):
        vf_loss(z, f[:, :4])


# ---- LCR ----


def test_lcr_perfectly_correlated_windows():
    torch.manual_seed(0)
    tokens = torch.randn(4, 6, 4, 4)  # one C-vector per 2x2 window
    z = tokens.repeat_interleave(2, 2).repeat_interleave(2, 3) * 3.0 + 1.0
    assert local_correlation(z).item() == pytest.approx(1.0, abs=1e-5)
    assert lcr_loss(z, 0.75).item() == 0.0


def test_lcr_matches_pearson_by_hand():
    torch.manual_seed(1)
    z = torch.randn(2, 5, 4, 4)
    zn = (z - z.mean(dim=(0, 2, 3), keepdim=True)) / (z.std(dim=(0, 2, 3), keepdim=True) + 1e-6)
    rhos = []
    for b in range(2):
        for i in range(0, 4, 2):
            for j in range(0, 4, 2):
                toks = [zn[b, :, i + di, j + dj].numpy() for di in (0, 1) for dj in (0, 1)]
                rhos += [stats.pearsonr(toks[p], toks[q])[0] for p in range(4) for q in range(p + 1, 4)]
    assert local_correlation(z).item() == pytest.approx(float(np.mean(rhos)), abs=1e-5)
    assert lcr_loss(z, 0.9).item() == pytest.approx(max(0.0, 0.9 - float(np.mean(rhos))), abs=1e-5)
    with pytest.raises(ValueError, match="not divisible"):
        local_correlation(torch.randn(1, 3, 5, 4))


# ---- LMR ----


def test_lmr_mask_counts_and_probabilities():
    g = torch.Generator().manual_seed(0)
    probs = (0.6, 0.1, 0.15, 0.15)  # variant p0.1-0.15-0.15
    seen = Counter()
    for _ in range(4000):
        ratio, pos = sample_lmr_mask(g, probs, 8, 8)
        seen[ratio] += 1
        assert len(pos) == (0 if ratio == 0 else max(1, math.floor(64 * ratio)))
        assert len(set(pos.tolist())) == len(pos) and (pos.max() < 64 if len(pos) else True)
    for r, p in zip(LMR_RATIOS, probs):
        assert abs(seen[r] / 4000 - p) < 4 * math.sqrt(p * (1 - p) / 4000)
    _, pos = sample_lmr_mask(torch.Generator().manual_seed(3), (0, 0, 0, 1.0), 1, 1)
    assert len(pos) == 1  # max(1, floor(r*hw))
    with pytest.raises(ValueError, match="probs"):
        sample_lmr_mask(g, (0.5, 0.5), 8, 8)


def test_lmr_replaces_shared_positions_with_mask_token():
    reg = LmrRegularizer((0.0, 0.0, 1.0, 0.0), latent_channels=3)
    plan = reg.plan(torch.Generator().manual_seed(0), 2, (4, 4))
    assert plan["ratio"] == 0.5 and len(plan["positions"]) == 8
    z = torch.randn(2, 3, 4, 4)
    out, _ = reg.decoder_input(z, torch.zeros(1), plan)
    flat = out.flatten(2)
    masked = torch.zeros(16, dtype=torch.bool)
    masked[plan["positions"]] = True
    assert torch.equal(flat[:, :, ~masked], z.flatten(2)[:, :, ~masked])
    assert torch.equal(flat[:, :, masked], reg.mask_token.detach().view(1, 3, 1).expand(2, 3, 8))


# ---- MAE (conv adaptation) ----


def test_mae_ratio_sampler_bounds_and_distribution():
    g = torch.Generator().manual_seed(0)
    draws = np.array([sample_mask_ratio(g, 0.7) for _ in range(4000)])
    assert draws.min() >= 0.0 and draws.max() <= 0.7
    ref = stats.truncnorm((0 - 0.7) / 0.25, 0, loc=0.7, scale=0.25)
    assert abs(draws.mean() - ref.mean()) < 4 * ref.std() / math.sqrt(4000)
    assert stats.kstest(draws, ref.cdf).pvalue > 1e-3
    assert sample_mask_ratio(g, 0.3, r_min=0.3) == 0.3
    with pytest.raises(ValueError, match="r_min"):
        sample_mask_ratio(g, 0.3, r_min=0.5)


def test_mae_masks_whole_latent_patches_with_learned_value():
    reg = MaeRegularizer(r_max=0.7, patch=4)
    with torch.no_grad():
        reg.mask_patch.fill_(0.25)
    plan = reg.plan(torch.Generator().manual_seed(2), 3, (4, 4))
    count = math.floor(plan["ratio"] * 16)
    assert plan["mask"].shape == (3, 4, 4) and (plan["mask"].flatten(1).sum(1) == count).all()
    x = torch.rand(3, 3, 16, 16) * 2 - 1
    x_in, target = reg.encoder_input(x, plan)
    assert torch.equal(target, x)  # the full image is the target
    pix = plan["mask"].repeat_interleave(4, 1).repeat_interleave(4, 2).unsqueeze(1).expand_as(x)
    assert bool((x_in[pix] == 0.25).all()) and torch.equal(x_in[~pix], x[~pix])


# ---- EQ ----


def test_eq_scale_set_and_transforms():
    assert eq_scale_sizes(16) == list(range(8, 16))  # s in {8/16 .. 15/16}, spec §11.2
    assert eq_scale_sizes(8) == [4, 5, 6, 7]
    t = EqTransform("scale", size=5)
    assert t.apply(torch.randn(1, 4, 8, 8)).shape[-2:] == (5, 5)
    assert t.apply(torch.randn(1, 3, 32, 32), factor=4).shape[-2:] == (20, 20)  # image k*f stays consistent
    x = torch.randn(1, 2, 4, 4)
    for dims in ((-1,), (-2,), (-2, -1)):
        f = EqTransform("flip", dims=dims)
        assert torch.equal(f.apply(f.apply(x)), x)
    assert torch.equal(EqTransform("flip", dims=(-1,)).apply(x), x.flip(-1))


def test_eq_with_identity_transform_equals_plain_reconstruction():
    torch.manual_seed(0)
    tok = ConvKLTokenizer(TINY)
    reg = EqRegularizer("scale", factor=2)
    x = torch.rand(2, 3, 16, 16) * 2 - 1
    plan = {"mode": "latent", "T": EqTransform()}
    x_in, target = reg.encoder_input(x, plan)
    z = tok.vae.encode(x_in).mode()
    z_dec, target = reg.decoder_input(z, target, plan)
    eq_rec = reconstruction_map(target, tok.vae.decode(z_dec))
    plain = reconstruction_map(x, tok.vae.decode(tok.vae.encode(x).mode()))
    assert torch.equal(eq_rec, plain)


def test_eq_plan_modes_and_shapes():
    reg = EqRegularizer("flip", factor=4)
    g = torch.Generator().manual_seed(0)
    plans = [reg.plan(g, 2, (8, 8)) for _ in range(2000)]
    latent = [p for p in plans if p["mode"] == "latent"]
    assert abs(len(latent) / 2000 - 0.5) < 0.05
    assert {p["T"].dims for p in latent} == {(-1,), (-2,), (-2, -1)}
    image_scaled = [p for p in plans if p["mode"] == "image" and p["T"].kind == "scale"]
    assert abs(len(image_scaled) / 2000 - 0.5 * 0.25) < 0.03
    reg = EqRegularizer("scale", factor=4)
    z, x = torch.randn(2, 4, 8, 8), torch.randn(2, 3, 32, 32)
    zt, xt = reg.decoder_input(z, x, {"mode": "latent", "T": EqTransform("scale", size=6)})
    assert zt.shape[-1] == 6 and xt.shape[-1] == 24


# ---- variants and the builder ----


def test_parse_variants_of_table1():
    for row in TABLE1:
        parse_variant(row.cluster, row.variant)  # every Table 1 variant parses
    assert parse_variant("lcr", "w0.05-th0.70") == {"weight": 0.05, "threshold": 0.7}
    assert parse_variant("lmr", "p0.1-0.10-0.10")["probs"] == pytest.approx((0.7, 0.1, 0.1, 0.1))
    assert parse_variant("mae", "r0.3") == {"r_max": 0.3}
    for reg, bad in (("lcr", "w0.02"), ("lmr", "p0.5-0.5-0.5"), ("mae", "r1.5"), ("eq", "rotate"), ("baseline", "x")):
        with pytest.raises(ValueError, match="unknown variant"):
            parse_variant(reg, bad)
    with pytest.raises(ValueError, match="needs a variant"):
        parse_variant("lcr", "-")


@pytest.mark.parametrize("cluster", ["baseline", "mcos", "mdms", "mcos+mdms", "repa", "eq", "lcr", "lmr", "mae"])
def test_build_every_cluster(cluster):
    variant = next(r.variant for r in TABLE1 if r.cluster == cluster)
    cfg = {"regularizer": cluster, "variant": variant, "reg_options": {"repa_hidden": 16}}
    reg = build_regularizer(cfg, 4, 4, target_features=lambda x: x[:, :1].repeat(1, 6, 1, 1), feature_dim=6)
    assert reg.name == cluster
    with pytest.raises(ValueError, match="bogus"):
        build_regularizer({**cfg, "reg_options": {"bogus": 1}}, 4, 4)
    if cluster in ("mcos", "repa"):
        with pytest.raises(ValueError, match="target_features"):
            build_regularizer(cfg, 4, 4)
