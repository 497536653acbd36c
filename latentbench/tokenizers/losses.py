"""The tokenizer objective, Eq. 12 of the diffusability study, with both gradient-norm weights.

``L = nll(L1 + w_p * perceptual) + 1e-6 * KL + lambda_grad * 0.5 * G + sum_k w_k * L_k``
(seed 001 Eq. 12; spec metrics-diffusability.md §11.1, models.md §3.3). Reference:
LightningDiT ``vavae/ldm/modules/losses/contperceptual.py`` (``LPIPSWithDiscriminator``) and
SSVAE ``losses/loss_factory.py`` (LCR weight).

- ``rec = |x - x_hat| + w_p * P(x, x_hat)`` per pixel, images in [-1, 1] for the L1 term;
  ``P`` returns one value per image and is broadcast over the pixels, as LPIPS' [N,1,1,1]
  output is in the reference. ``P`` is a callable on [0, 1] images (the demo passes
  ``demo_net.perceptual_distance``; paper scale LPIPS-VGG).
- ``nll = rec / exp(s) + s`` with a scalar ``s`` (init 0), summed over pixels, averaged
  over the batch. The reference keeps ``s`` as a parameter but leaves it out of the
  optimiser (LDM/VA-VAE ``configure_optimizers``), so it stays 0; ``learn_logvar`` (sgm's
  name for the same switch) trains it.
- ``KL`` summed over latent elements, averaged over the batch.
- GAN: hinge D loss ``0.5 (mean relu(1 - D(x)) + mean relu(1 + D(x_hat)))``, generator loss
  ``-mean D(x_hat)``, weighted by ``lambda = ||grad_W nll|| / (||grad_W G|| + 1e-4)``
  clamped [0, 1e4], detached, times ``disc_weight`` 0.5; W = ``decoder.conv_out.weight``.
- Auxiliary regulariser terms (VF, REPA, LCR) get ``scale * ||grad_E nll|| / (||grad_E L_k|| + 1e-4)``
  clamped [0, 1e8], E = ``encoder.conv_out.weight`` (scale 0.1 for VF/REPA, 0.1*w for LCR).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

if TYPE_CHECKING:
    from latentbench.tokenizers.posterior import DiagonalGaussian

Perceptual = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # [0,1] images -> [N]

GAN_WEIGHT_MAX = 1e4  # contperceptual.py calculate_adaptive_weight
AUX_WEIGHT_MAX = 1e8  # contperceptual.py calculate_adaptive_weight_vf; SSVAE max_limit
GRAD_EPS = 1e-4


@dataclass
class AuxTerm:
    """A regulariser loss weighted adaptively on the encoder's last layer."""

    name: str
    loss: torch.Tensor
    scale: float
    max_weight: float = AUX_WEIGHT_MAX


def reconstruction_map(
    x: torch.Tensor, x_hat: torch.Tensor, perceptual: Perceptual | None = None, perceptual_weight: float = 1.0
) -> torch.Tensor:
    """Per-pixel ``|x - x_hat| + w * P(x, x_hat)`` for images in [-1, 1]; shape of ``x``."""
    if x.shape != x_hat.shape:
        raise ValueError(f"x_hat shape {tuple(x_hat.shape)} differs from x shape {tuple(x.shape)}")
    rec = (x - x_hat).abs()
    if perceptual is not None and perceptual_weight > 0:
        p = perceptual((x + 1.0) * 0.5, (x_hat + 1.0) * 0.5)
        rec = rec + perceptual_weight * p.reshape(-1, 1, 1, 1)
    return rec


def nll_loss(rec: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """``sum(rec / exp(s) + s) / N`` (contperceptual.py)."""
    return torch.sum(rec / torch.exp(logvar) + logvar) / rec.shape[0]


def kl_loss(posterior: DiagonalGaussian) -> torch.Tensor:
    """KL to N(0, I) summed over latent elements, averaged over the batch."""
    kl = posterior.kl()
    return kl.sum() / kl.shape[0]


def hinge_d_loss(logits_real: torch.Tensor, logits_fake: torch.Tensor) -> torch.Tensor:
    """taming ``hinge_d_loss``: 0.5 * (mean relu(1 - real) + mean relu(1 + fake))."""
    return 0.5 * (F.relu(1.0 - logits_real).mean() + F.relu(1.0 + logits_fake).mean())


def generator_loss(logits_fake: torch.Tensor) -> torch.Tensor:
    """``-mean D(x_hat)``."""
    return -logits_fake.mean()


def grad_norms(loss: torch.Tensor, layers: list[torch.Tensor]) -> list[torch.Tensor]:
    """L2 norms of d loss / d layer for each layer, in one backward pass (graph retained)."""
    grads = torch.autograd.grad(loss, layers, retain_graph=True, allow_unused=True)
    return [torch.zeros((), device=loss.device) if g is None else torch.linalg.vector_norm(g) for g in grads]


def weight_from_norms(ref_norm: torch.Tensor, other_norm: torch.Tensor, max_weight: float) -> torch.Tensor:
    """``clamp(||grad ref|| / (||grad other|| + 1e-4), 0, max)``, detached."""
    return torch.clamp(ref_norm / (other_norm + GRAD_EPS), 0.0, max_weight).detach()


def adaptive_weight(
    ref_loss: torch.Tensor, other_loss: torch.Tensor, layer: torch.Tensor, max_weight: float = GAN_WEIGHT_MAX
) -> torch.Tensor:
    """``||grad_layer ref|| / (||grad_layer other|| + 1e-4)`` clamped to [0, max], detached."""
    (ref_norm,) = grad_norms(ref_loss, [layer])
    (other_norm,) = grad_norms(other_loss, [layer])
    return weight_from_norms(ref_norm, other_norm, max_weight)


class Eq12Loss(nn.Module):
    """Eq. 12: nll + kl_weight * KL + lambda * disc_weight * G + adaptive auxiliary terms."""

    def __init__(
        self,
        kl_weight: float = 1e-6,
        perceptual_weight: float = 1.0,
        disc_weight: float = 0.5,
        perceptual: Perceptual | None = None,
        logvar_init: float = 0.0,
        learn_logvar: bool = False,
    ) -> None:
        super().__init__()
        for name, value in (
            ("kl_weight", kl_weight),
            ("perceptual_weight", perceptual_weight),
            ("disc_weight", disc_weight),
        ):
            if not value >= 0:
                raise ValueError(f"{name} must be >= 0, got {value!r}")
        self.kl_weight = float(kl_weight)
        self.perceptual_weight = float(perceptual_weight)
        self.disc_weight = float(disc_weight)
        self.perceptual = perceptual
        self.logvar = nn.Parameter(torch.full((), float(logvar_init)), requires_grad=learn_logvar)

    def generator_backward(
        self,
        target: torch.Tensor,
        x_hat: torch.Tensor,
        posterior: DiagonalGaussian,
        decoder_last_layer: torch.Tensor,
        encoder_last_layer: torch.Tensor | None = None,
        logits_fake: torch.Tensor | None = None,
        aux: list[AuxTerm] = (),
    ) -> dict[str, torch.Tensor]:
        """Back-propagate the total autoencoder loss into ``.grad``; return its detached terms.

        ``target``/``x_hat`` in [-1, 1], ``x_hat`` the direct output of the layer
        ``decoder_last_layer``; ``logits_fake`` = D(x_hat) when the GAN term is on (None before
        ``disc_start``); ``aux`` terms need ``encoder_last_layer``.

        The gradients equal ``total.backward()`` for ``total = nll + kl_weight*KL + lambda*G +
        sum w_k L_k`` with the weights computed as in the reference (detached); the work is
        ordered so the perceptual network and the discriminator are back-propagated once
        (reference: three and two times): d nll/d x_hat and d G/d x_hat are taken once, the
        layer-W gradient norms follow from them through the last conv alone, and the final
        backward starts from x_hat with ``d nll/d x_hat + lambda * d G/d x_hat``.
        """
        rec = reconstruction_map(target, x_hat, self.perceptual, self.perceptual_weight)
        nll = nll_loss(rec, self.logvar)
        kl = kl_loss(posterior)
        learn_logvar = self.logvar.requires_grad
        grads = torch.autograd.grad(nll, [x_hat, self.logvar] if learn_logvar else [x_hat], retain_graph=True)
        g_nll = grads[0]
        total = nll.detach() + self.kl_weight * kl.detach()
        logs = {"nll": nll.detach(), "kl": kl.detach(), "l1": (target - x_hat).detach().abs().mean()}

        g_xhat = g_nll
        if logits_fake is not None:
            g = generator_loss(logits_fake)
            (g_gan,) = torch.autograd.grad(g, x_hat, retain_graph=True)
            (w_nll,) = torch.autograd.grad(x_hat, decoder_last_layer, g_nll, retain_graph=True)
            (w_gan,) = torch.autograd.grad(x_hat, decoder_last_layer, g_gan, retain_graph=True)
            d_weight = self.disc_weight * weight_from_norms(
                torch.linalg.vector_norm(w_nll), torch.linalg.vector_norm(w_gan), GAN_WEIGHT_MAX
            )
            g_xhat = g_nll + d_weight * g_gan
            total = total + d_weight * g.detach()
            logs.update(g_loss=g.detach(), d_weight=d_weight)

        rest = self.kl_weight * kl
        if aux:
            if encoder_last_layer is None:
                raise ValueError("encoder_last_layer is required for auxiliary regulariser terms")
            (e_nll,) = torch.autograd.grad(x_hat, encoder_last_layer, g_nll, retain_graph=True)
            e_nll_norm = torch.linalg.vector_norm(e_nll)
            for term in aux:
                (a_norm,) = grad_norms(term.loss, [encoder_last_layer])
                w = weight_from_norms(e_nll_norm, a_norm, term.max_weight) * term.scale
                rest = rest + w * term.loss
                total = total + w * term.loss.detach()
                logs[f"{term.name}_loss"] = term.loss.detach()
                logs[f"{term.name}_weight"] = w
        torch.autograd.backward([x_hat, rest], [g_xhat, torch.ones_like(rest)])
        if learn_logvar:
            self.logvar.grad = grads[1] if self.logvar.grad is None else self.logvar.grad + grads[1]
        logs["total"] = total
        logs["logvar"] = self.logvar.detach()
        return logs

    @staticmethod
    def discriminator_loss(logits_real: torch.Tensor, logits_fake: torch.Tensor) -> torch.Tensor:
        """Hinge loss for the discriminator step."""
        return hinge_d_loss(logits_real, logits_fake)
