"""Family-independent bases of the trainable KL tokenizers (conv ``kl_vae``, ViT ``vit_vae``):
the autoencoder base, the :class:`~latentbench.tokenizers.base.Tokenizer` wrapper, preset
resolution, architecture keys of a config entry and parameter counting."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import fields, replace
from typing import Any

import torch
from torch import nn

from latentbench.tokenizers.base import Tokenizer, check_images
from latentbench.tokenizers.posterior import DiagonalGaussian


def resolve_preset(arch: Any, cls: type, presets: dict[str, Any]) -> Any:
    """A preset name, a ``cls`` instance, or a dict of ``cls`` fields (optionally ``preset`` + overrides)."""
    if isinstance(arch, cls):
        return arch
    if isinstance(arch, str):
        if arch not in presets:
            raise ValueError(f"unknown arch {arch!r}; known presets: {', '.join(sorted(presets))}")
        return presets[arch]
    if isinstance(arch, dict):
        overrides = dict(arch)
        base = resolve_preset(str(overrides.pop("preset")), cls, presets) if "preset" in overrides else cls()
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise ValueError(f"unknown arch keys {unknown}; known: {sorted(known | {'preset'})}")
        return replace(base, **overrides)
    raise ValueError(f"arch must be a preset name or a dict, got {type(arch).__name__}")


def count_parameters(module: nn.Module) -> int:
    """Number of parameters (works on the ``meta`` device)."""
    return sum(p.numel() for p in module.parameters())


class KLAutoencoder(nn.Module):
    """Base of the trainable KL autoencoders (images in [-1, 1]): subclasses define ``encode`` (->
    :class:`DiagonalGaussian`), ``decode`` and ``last_layers`` (the layers of the adaptive weights)."""

    def forward(self, x: torch.Tensor, sample: bool = True, generator: torch.Generator | None = None):
        """(reconstruction, posterior) of ``x``: decodes a posterior sample, or the mean."""
        posterior = self.encode(x)
        z = posterior.sample(generator) if sample else posterior.mode()
        return self.decode(z), posterior

    @property
    def decoder_last_layer(self) -> torch.Tensor:
        """W of the GAN adaptive weight (spec models.md §3.3: the decoder's output layer)."""
        return self.last_layers()[1].weight

    @property
    def encoder_last_layer(self) -> torch.Tensor:
        """E of the VF/LCR adaptive weights (spec §3.3/§11.2: the encoder's output layer)."""
        return self.last_layers()[0].weight


class KLTokenizer(Tokenizer):
    """A trainable KL autoencoder ``vae`` (working in [-1, 1]) behind the :class:`Tokenizer`
    interface ([0, 1] images). ``vae.encode`` returns a :class:`DiagonalGaussian`; ``arch``
    declares ``embed_dim`` (latent channels) and ``latent_shape``."""

    native_norm = "per-channel mean/std of the training latents"
    masks_tokens = False  # True where the ``mae`` regulariser masks encoder input tokens

    def __init__(self, arch: Any, vae: nn.Module) -> None:
        super().__init__()
        self.arch = arch
        self.vae = vae
        self.latent_shape = tuple(arch.latent_shape)
        self.is_1d = False
        self.posterior = "gaussian"

    def posterior_of(self, x: torch.Tensor) -> DiagonalGaussian:
        """The posterior of [0, 1] images ``x`` (mapped to [-1, 1] for the network)."""
        check_images(x)
        return self.vae.encode(x * 2.0 - 1.0)

    def encode_moments(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        post = self.posterior_of(x)
        return post.mean, post.std

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        if not isinstance(z, torch.Tensor) or z.ndim != 4 or z.shape[1] != self.arch.embed_dim:
            shape = tuple(z.shape) if isinstance(z, torch.Tensor) else type(z).__name__
            raise ValueError(f"z must be NCHW with {self.arch.embed_dim} channels, got {shape}")
        return (self.vae.decode(z) + 1.0) * 0.5


def validated_arch(cfg: dict[str, Any], resolve: Callable[[Any], Any]) -> Any:
    """The architecture of a trainable-family config entry: ``arch`` (preset name or dict, default
    ``"demo"``, the schema's default) through ``resolve``; ``latent_channels`` overrides the latent
    width (``z_channels`` = ``embed_dim``), e.g. 8 for a "d64"-style sweep.

    Reads architecture keys only: the training keys (``regularizer``/``variant``, ``kl_weight``)
    are checked by the config validator (:func:`latentbench.config.check_config`) and by the
    training step's builders.
    """
    arch = resolve(cfg.get("arch", "demo"))
    if cfg.get("latent_channels") is not None:
        c = cfg["latent_channels"]
        if isinstance(c, bool) or not isinstance(c, int) or c < 1:
            raise ValueError(f"latent_channels must be a positive integer, got {c!r}")
        arch = arch.with_latent_channels(c)
    return arch
