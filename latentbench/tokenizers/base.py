"""The Tokenizer interface every tokenizer (pretrained adapter or DAG-trained) implements.

Contract (spec models.md §2.1, DESIGN.md "Conventions"): images cross the boundary as
float NCHW in [0, 1]; a tokenizer maps them to whatever its network expects internally
(the LDM KL-VAE works in [-1, 1]) and maps decoder output back to the [0, 1] scale
**without clamping**, so reconstruction metrics see the raw decoder output. Latents are
NCHW ``(C, H, W)`` or, for 1-D tokenizers, ``(L, C)`` per image.

A tokenizer declares:
- ``latent_shape``: (C, H, W) or (L, C) at its native resolution;
- ``is_1d``: True for token sequences;
- ``posterior``: ``"gaussian"`` (``encode_moments`` returns mean and std and
  ``encode(sample=True)`` draws ``mean + std * eps``) or ``"deterministic"`` (std = 0);
- ``native_norm``: the latent normalisation its authors use for diffusion, recorded but
  never applied inside the tokenizer (the diffusion recipes apply their own);
- ``weights``: the external weight files it needs (empty for DAG-trained tokenizers).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import torch
from torch import nn

POSTERIORS = ("gaussian", "deterministic")


@dataclass(frozen=True)
class WeightRef:
    """One external weight file a tokenizer needs (spec models.md §2.1)."""

    repo: str
    file: str
    licence: str
    gated: bool = False


def check_images(x: torch.Tensor, name: str = "x") -> None:
    """Raise a ValueError naming ``name`` unless ``x`` is a float NCHW tensor with 3 channels."""
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.ndim != 4 or x.shape[1] != 3:
        raise ValueError(f"{name} must be float NCHW with 3 channels, got shape {tuple(x.shape)}")
    if not torch.is_floating_point(x):
        raise ValueError(f"{name} must be a floating-point tensor in [0, 1], got {x.dtype}")


class Tokenizer(nn.Module, ABC):
    """Base class: ``encode_moments``, ``encode``, ``decode`` on [0, 1] images."""

    latent_shape: tuple[int, ...]
    is_1d: bool = False
    posterior: str = "gaussian"
    native_norm: str = "none"
    weights: tuple[WeightRef, ...] = ()

    @abstractmethod
    def encode_moments(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Posterior mean and std of images ``x`` in [0, 1]; std is zeros if deterministic."""

    def encode(self, x: torch.Tensor, sample: bool = True, generator: torch.Generator | None = None) -> torch.Tensor:
        """A latent for ``x``: a posterior sample ``mean + std * eps`` or the mean (``sample=False``).

        ``generator`` (on any device) makes the sample reproducible; deterministic
        tokenizers return the mean either way.
        """
        mean, std = self.encode_moments(x)
        if not sample or self.posterior == "deterministic":
            return mean
        return mean + std * standard_normal_like(mean, generator)

    @abstractmethod
    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Images on the [0, 1] scale (not clamped) from latents ``z``."""

    def describe(self) -> dict:
        """The declared properties, for logs and result records."""
        return {
            "class": type(self).__name__,
            "latent_shape": list(self.latent_shape),
            "is_1d": self.is_1d,
            "posterior": self.posterior,
            "native_norm": self.native_norm,
        }


def standard_normal_like(t: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """N(0, I) noise shaped like ``t``; drawn on the generator's device, then moved to ``t``'s."""
    if generator is None:
        return torch.randn_like(t)
    noise = torch.randn(t.shape, generator=generator, device=generator.device, dtype=t.dtype)
    return noise.to(t.device)
