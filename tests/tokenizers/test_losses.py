"""Eq. 12 terms and the two gradient-norm weights (spec models.md §3.3, diffusability §11.1-11.2)."""

from __future__ import annotations

import math

import pytest
import torch

from latentbench.tokenizers.discriminator import NLayerDiscriminator
from latentbench.tokenizers.kl_vae import AutoencoderKL, DiagonalGaussian, resolve_arch
from latentbench.tokenizers.losses import (
    AUX_WEIGHT_MAX,
    GAN_WEIGHT_MAX,
    AuxTerm,
    Eq12Loss,
    adaptive_weight,
    generator_loss,
    hinge_d_loss,
    kl_loss,
    nll_loss,
    reconstruction_map,
)
from latentbench.tokenizers.regularizers import vf_loss

TINY = {"ch": 8, "ch_mult": (1, 2), "num_res_blocks": 1, "attn_resolutions": (8,), "z_channels": 2, "embed_dim": 2,
        "resolution": 16, "norm_groups": 4}  # fmt: skip


def _perceptual(x01: torch.Tensor, y01: torch.Tensor) -> torch.Tensor:
    """A differentiable stand-in with a non-trivial gradient: per-image mean squared difference of a blur."""
    k = torch.ones(3, 1, 3, 3) / 9
    bx, by = (torch.nn.functional.conv2d(t, k, padding=1, groups=3) for t in (x01, y01))
    return (bx - by).pow(2).mean(dim=(1, 2, 3)) * 5.0


def test_adaptive_weight_analytic():
    w = torch.nn.Parameter(torch.randn(4, 3, 3, 3))
    ref = 3.0 * w.sum()  # grad = 3 everywhere: norm 3 * sqrt(108)
    other = (w**2).sum()  # grad = 2w: norm 2 ||w||
    expected = 3 * math.sqrt(w.numel()) / (2 * w.detach().norm().item() + 1e-4)
    assert adaptive_weight(ref, other, w).item() == pytest.approx(expected, rel=1e-5)
    assert adaptive_weight(ref, 0.0 * w.sum(), w).item() == GAN_WEIGHT_MAX  # clamped
    assert adaptive_weight(ref, 0.0 * w.sum(), w, AUX_WEIGHT_MAX).item() == pytest.approx(3 * math.sqrt(108) / 1e-4)
    assert not adaptive_weight(ref, other, w).requires_grad


def test_adaptive_weight_matches_hand_computation_on_tiny_model():
    torch.manual_seed(0)
    vae = AutoencoderKL(resolve_arch(TINY))
    disc = NLayerDiscriminator(3, 4, 1)
    x = torch.rand(2, 3, 16, 16) * 2 - 1
    x_hat, _ = vae(x)
    nll = nll_loss(reconstruction_map(x, x_hat, _perceptual), torch.zeros(()))
    g = generator_loss(disc(x_hat))
    w = vae.decoder.conv_out.weight
    gn = torch.autograd.grad(nll, w, retain_graph=True)[0]
    gg = torch.autograd.grad(g, w, retain_graph=True)[0]
    hand = min(max(gn.norm().item() / (gg.norm().item() + 1e-4), 0.0), 1e4)
    assert adaptive_weight(nll, g, w).item() == pytest.approx(hand, rel=1e-6)


def test_nll_kl_hinge_and_generator_terms():
    rec = torch.full((2, 3, 4, 4), 0.3)
    s = torch.tensor(0.7)
    assert nll_loss(rec, s).item() == pytest.approx(48 * (0.3 * math.exp(-0.7) + 0.7), rel=1e-6)
    post = DiagonalGaussian(torch.cat([torch.ones(2, 1, 2, 2), torch.zeros(2, 1, 2, 2)], 1))
    assert kl_loss(post).item() == pytest.approx(0.5 * 4)  # 0.5 * sum(mu^2) = 0.5 * 4 per sample
    assert hinge_d_loss(torch.full((3,), 2.0), torch.full((3,), -2.0)).item() == 0.0
    assert hinge_d_loss(torch.zeros(3), torch.zeros(3)).item() == pytest.approx(1.0)
    assert generator_loss(torch.tensor([1.0, 3.0])).item() == -2.0


def test_reconstruction_map_broadcasts_perceptual_per_image():
    x = torch.zeros(2, 3, 4, 4)
    y = torch.full((2, 3, 4, 4), 0.5)
    rec = reconstruction_map(x, y, lambda a, b: torch.tensor([1.0, 2.0]), perceptual_weight=0.5)
    assert torch.allclose(rec[0], torch.full((3, 4, 4), 1.0)) and torch.allclose(rec[1], torch.full((3, 4, 4), 1.5))
    with pytest.raises(ValueError, match="x_hat shape"):
        reconstruction_map(x, y[:, :, :2])


@pytest.mark.parametrize("learn_logvar", [False, True])
def test_generator_backward_equals_reference_total(learn_logvar):
    """The re-ordered backward gives the gradients of the reference's single ``total.backward()``."""
    torch.manual_seed(0)
    vae = AutoencoderKL(resolve_arch(TINY))
    disc = NLayerDiscriminator(3, 4, 1).requires_grad_(False)
    proj = torch.nn.Conv2d(2, 6, 1, bias=False)
    feats = torch.randn(2, 6, 8, 8)
    x = torch.rand(2, 3, 16, 16) * 2 - 1
    loss = Eq12Loss(kl_weight=1e-3, perceptual=_perceptual, learn_logvar=learn_logvar)
    with torch.no_grad():
        loss.logvar.fill_(0.3)
    params = [*vae.parameters(), *proj.parameters()] + ([loss.logvar] if learn_logvar else [])

    def forward():
        x_hat, post = vae(x, generator=torch.Generator().manual_seed(1))
        z = post.sample(torch.Generator().manual_seed(1))
        return x_hat, post, [AuxTerm("vf", vf_loss(proj(z), feats), 0.1)]

    # reference: contperceptual.py style, one total loss
    x_hat, post, aux = forward()
    nll = nll_loss(reconstruction_map(x, x_hat, _perceptual), loss.logvar)
    g = generator_loss(disc(x_hat))
    d_w = adaptive_weight(nll, g, vae.decoder.conv_out.weight) * 0.5
    vf_w = adaptive_weight(nll, aux[0].loss, vae.encoder.conv_out.weight, AUX_WEIGHT_MAX) * 0.1
    total = nll + 1e-3 * kl_loss(post) + d_w * g + vf_w * aux[0].loss
    ref_grads = torch.autograd.grad(total, params)

    x_hat, post, aux = forward()
    logs = loss.generator_backward(
        x, x_hat, post, vae.decoder.conv_out.weight, vae.encoder.conv_out.weight, disc(x_hat), aux
    )
    assert logs["total"].item() == pytest.approx(total.item(), rel=1e-5)
    assert logs["d_weight"].item() == pytest.approx(d_w.item(), rel=1e-5)
    assert logs["vf_weight"].item() == pytest.approx(vf_w.item(), rel=1e-5)
    scale = max(r.abs().max().item() for r in ref_grads)  # attention key biases have ~0 true gradient
    for p, ref in zip(params, ref_grads):
        assert torch.allclose(p.grad, ref, rtol=1e-4, atol=1e-6 * scale)


def test_aux_terms_need_encoder_layer():
    vae = AutoencoderKL(resolve_arch(TINY))
    x = torch.rand(1, 3, 16, 16) * 2 - 1
    x_hat, post = vae(x)
    with pytest.raises(ValueError, match="encoder_last_layer"):
        Eq12Loss().generator_backward(
            x, x_hat, post, vae.decoder.conv_out.weight, None, None, [AuxTerm("a", x_hat.mean(), 1)]
        )
    with pytest.raises(ValueError, match="kl_weight"):
        Eq12Loss(kl_weight=-1.0)
