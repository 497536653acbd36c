"""The diagonal Gaussian posterior of the KL autoencoders (LDM ``DiagonalGaussianDistribution``,
``ldm/modules/distributions/distributions.py``)."""

from __future__ import annotations

import torch

from latentbench.tokenizers.base import standard_normal_like

LOGVAR_MIN, LOGVAR_MAX = -30.0, 20.0  # DiagonalGaussianDistribution clamp (LDM distributions.py)


class DiagonalGaussian:
    """Diagonal Gaussian posterior from ``moments = mean || logvar`` along channels.

    logvar is clamped to [-30, 20] (LDM ``DiagonalGaussianDistribution``).
    """

    def __init__(self, moments: torch.Tensor) -> None:
        self.mean, logvar = torch.chunk(moments, 2, dim=1)
        self.logvar = torch.clamp(logvar, LOGVAR_MIN, LOGVAR_MAX)
        self.std = torch.exp(0.5 * self.logvar)
        self.var = torch.exp(self.logvar)

    def sample(self, generator: torch.Generator | None = None) -> torch.Tensor:
        """``mean + std * eps``."""
        return self.mean + self.std * standard_normal_like(self.mean, generator)

    def mode(self) -> torch.Tensor:
        return self.mean

    def kl(self) -> torch.Tensor:
        """KL(q || N(0, I)) per sample, summed over latent elements: 0.5 sum(mu^2 + var - 1 - logvar)."""
        return 0.5 * torch.sum(self.mean.pow(2) + self.var - 1.0 - self.logvar, dim=list(range(1, self.mean.ndim)))
