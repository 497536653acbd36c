"""Shared parts of the pretrained adapters: the zoo row, the adapter base class, strict loading.

Contract (DESIGN.md public API, spec models.md §2.1 as corrected by zoo.md): images in [0, 1]
at the boundary (each adapter maps to what its network expects), ``encode_moments`` returns the
raw posterior (std zeros for deterministic encoders; 1-D token latents as ``(B, L, C)``), and
``decode`` returns the [0, 1] scale unclamped. The model's own latent normalisation is *not*
applied here: :meth:`PretrainedTokenizer.native_normalize` is the one named step a study applies
with ``latent_norm: native``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch

from latentbench.errors import LatentbenchError
from latentbench.tokenizers.base import Tokenizer


def canonical(name: str) -> str:
    """Lookup form of a zoo name or alias: lower case, '_' and '-' alike (``SD-VAE`` == ``sd_vae``)."""
    return name.strip().lower().replace("_", "-")


@dataclass(frozen=True)
class ZooRow:
    """One row of spec zoo.md §3.

    ``arch``: the architecture class id of zoo.md §2 (K1..K4, C1..C8); ``config``: the
    constructor config of that class for this row; ``latent_shape``: the latent at 256 px,
    (C, H, W) or (L, C); ``encode``: what the iFID code encodes (``sample``, ``mean``,
    ``deterministic``; ``-`` where iFID does not use the row); ``files``: weight-manifest
    entry names this row needs; ``norm``: the model's own normalisation in words;
    ``unverified``: the [U] facts of zoo.md still to pin at first download.
    """

    name: str
    arch: str
    latent_shape: tuple[int, ...]
    encode: str = "-"
    aliases: tuple[str, ...] = ()
    config: Mapping = field(default_factory=dict)
    files: tuple[str, ...] = ()
    norm: str = "none"
    params: int | None = None
    unverified: tuple[str, ...] = ()
    resolution: int = 256


class PretrainedTokenizer(Tokenizer):
    """Base of every zoo adapter; subclasses implement ``encode_moments`` and ``decode``."""

    row: ZooRow

    def native_normalize(self, z: torch.Tensor) -> torch.Tensor:
        """The model's own latent normalisation (``latent_norm: native``); identity by default."""
        return z

    def native_denormalize(self, z: torch.Tensor) -> torch.Tensor:
        """Inverse of :meth:`native_normalize`."""
        return z

    def latent_shape_at(self, resolution: int) -> tuple[int, ...]:
        """The latent shape at ``resolution`` px (the row's at 256)."""
        if resolution != self.row.resolution:
            raise ValueError(f"{self.row.name}: latent shape known at {self.row.resolution} px only, got {resolution}")
        return tuple(self.row.latent_shape)


class WeightsError(LatentbenchError, ValueError):
    """A released weights file that does not match its adapter (one line: file and first keys)."""


def strict_load(
    module: torch.nn.Module,
    state: Mapping[str, torch.Tensor],
    path: Path | str,
    drop_prefixes: Iterable[str] = (),
) -> None:
    """Load ``state`` into ``module`` after dropping ``drop_prefixes``; any missing or leftover key
    (or a shape mismatch) raises :class:`WeightsError` naming ``path`` and the first offenders.

    ``assign=True`` moves the file's tensors into the module instead of copying them, so a meta
    or random-init module never holds a second copy of the weights.
    """
    drop = tuple(drop_prefixes)
    state = {k: v for k, v in state.items() if not k.startswith(drop)}
    own = module.state_dict()
    missing = [k for k in own if k not in state]
    extra = [k for k in state if k not in own]
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"missing {len(missing)} key(s) e.g. {missing[:3]}")
        if extra:
            parts.append(f"unexpected {len(extra)} key(s) e.g. {extra[:3]}")
        raise WeightsError(f"{path}: does not match {type(module).__name__}: " + "; ".join(parts))
    bad = [k for k, v in state.items() if tuple(v.shape) != tuple(own[k].shape)]
    if bad:
        k = bad[0]
        raise WeightsError(
            f"{path}: shape mismatch for {len(bad)} key(s), first {k}: file {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
        )
    module.load_state_dict(state, strict=True, assign=True)


def check_latent_shape(tokenizer: Tokenizer, got: tuple[int, ...], path: Path | str | None = None) -> None:
    """Raise :class:`WeightsError` unless a per-image latent shape equals the row's (zoo.md)."""
    want = tuple(tokenizer.row.latent_shape)
    if tuple(got) != want:
        where = f"{path}: " if path else ""
        raise WeightsError(f"{where}{tokenizer.row.name} latent shape {tuple(got)} != {want} (spec zoo.md)")
