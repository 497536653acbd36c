"""Shared parts of the pretrained adapters: the zoo row, the adapter base class, strict loading.

Contract (DESIGN.md public API, spec models.md §2.1 as corrected by zoo.md): images in [0, 1]
at the boundary (each adapter maps to what its network expects), ``encode_moments`` returns the
raw posterior (std zeros for deterministic encoders; 1-D token latents as ``(B, L, C)``), and
``decode`` returns the [0, 1] scale unclamped. The model's own latent normalisation is *not*
applied here: :meth:`PretrainedTokenizer.native_normalize` is the one named step a study applies
with ``latent_norm: native``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from latentbench.errors import LatentbenchError, WeightsError  # noqa: F401 (re-exported)
from latentbench.tokenizers.base import Tokenizer, WeightRef, check_images
from latentbench.weights_io import load_weights_file, read_state  # noqa: F401 (re-exported)

log = logging.getLogger(__name__)


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


@dataclass(frozen=True)
class AffineNorm:
    """A latent normalisation ``(z - shift) * scale`` along the channel axis (dim 1).

    ``shift`` and ``scale`` are scalars or per-channel vectors (C,); ``source`` says where the
    numbers come from (a file, a config key, a published constant), for logs and errors.
    Every native normalisation of the KL rows has this form (spec zoo.md §3: SD ×0.18215,
    FLUX/SD-3.5 shift and scale, REPA-E ``(z - bias)·scale``, hustvl / Qwen ``(z - mean)/std``).
    """

    shift: torch.Tensor
    scale: torch.Tensor
    source: str

    @classmethod
    def from_mean_std(cls, mean: Any, std: Any, source: str) -> AffineNorm:
        """``(z - mean) / std``."""
        mean, std = _flat(mean), _flat(std)
        if bool((std <= 0).any()):
            raise ValueError(f"{source}: latent std must be > 0")
        return cls(mean, 1.0 / std, source)

    @classmethod
    def from_shift_scale(cls, shift: Any, scale: Any, source: str) -> AffineNorm:
        """``(z - shift) * scale``."""
        return cls(_flat(shift), _flat(scale), source)

    def _view(self, t: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        t = t.to(device=z.device, dtype=z.dtype)
        if t.ndim == 0:
            return t
        if z.ndim < 2 or z.shape[1] != t.numel():
            raise ValueError(f"latent of shape {tuple(z.shape)} does not have the {t.numel()} channels of {self.source}")
        return t.reshape(1, -1, *([1] * (z.ndim - 2)))

    def apply(self, z: torch.Tensor) -> torch.Tensor:
        return (z - self._view(self.shift, z)) * self._view(self.scale, z)

    def invert(self, z: torch.Tensor) -> torch.Tensor:
        return z / self._view(self.scale, z) + self._view(self.shift, z)


def _flat(v: Any) -> torch.Tensor:
    """A scalar or per-channel statistic as a float32 CPU tensor of shape () or (C,) (squeezing
    the (1, C, 1, 1) layout stats files store)."""
    t = torch.as_tensor(v, dtype=torch.float32, device="cpu").detach()
    return t.reshape(()) if t.numel() == 1 else t.reshape(-1)


class PretrainedTokenizer(Tokenizer):
    """Base of every zoo adapter; subclasses implement ``encode_moments`` and ``decode``.

    ``native_normalize`` applies ``self.latent_norm`` (an :class:`AffineNorm`) when one is set;
    when it is None and ``self.norm_missing`` is set, asking for it raises ValueError with that
    reason (a row whose statistics were not loaded or never published); otherwise it is the
    identity (adapters that normalise inside ``encode``, e.g. RAE).
    """

    row: ZooRow
    latent_norm: AffineNorm | None = None
    norm_missing: str | None = None

    def __init__(self, row: ZooRow | None = None) -> None:
        super().__init__()
        if row is not None:
            self.row = row
            self.latent_shape = tuple(row.latent_shape)
            self.is_1d = len(row.latent_shape) == 2
            self.native_norm = row.norm

    def native_normalize(self, z: torch.Tensor) -> torch.Tensor:
        """The model's own latent normalisation (``latent_norm: native``)."""
        if self.latent_norm is not None:
            return self.latent_norm.apply(z)
        if self.norm_missing:
            raise ValueError(self.norm_missing)
        return z

    def native_denormalize(self, z: torch.Tensor) -> torch.Tensor:
        """Inverse of :meth:`native_normalize`."""
        if self.latent_norm is not None:
            return self.latent_norm.invert(z)
        if self.norm_missing:
            raise ValueError(self.norm_missing)
        return z

    def declared_weights(self, manifest: Mapping | None = None) -> tuple[WeightRef, ...]:
        """(repo, file, licence, gated) of each manifest entry the row names (models.md §2.1)."""
        from latentbench.weights_fetch import load_manifest

        manifest = load_manifest() if manifest is None else manifest
        refs = []
        for name in self.row.files:
            e = manifest[name]
            refs.append(WeightRef(e.hf_repo or e.url or str(e.package), e.hf_filename or e.file, e.licence or "not stated", e.gated))
        return tuple(refs)

    def latent_shape_at(self, resolution: int) -> tuple[int, ...]:
        """The latent shape at ``resolution`` px (the row's at 256)."""
        if resolution != self.row.resolution:
            raise ValueError(f"{self.row.name}: latent shape known at {self.row.resolution} px only, got {resolution}")
        return tuple(self.row.latent_shape)




def strict_load(
    module: torch.nn.Module,
    state: Mapping[str, torch.Tensor],
    path: Path | str,
    drop_prefixes: Iterable[str] = (),
) -> None:
    """Load ``state`` into ``module`` after dropping ``drop_prefixes``; any missing or leftover key
    (or a shape mismatch) raises :class:`WeightsError` naming ``path`` and the first offenders.

    ``assign=True`` moves the file's tensors into the module instead of copying them, so a meta
    or random-init module never holds a second copy of the weights. A module built on the meta
    device must be fully materialised by the file: a parameter or buffer left on meta (e.g. a
    non-persistent buffer) is an error.
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
    left = [n for n, t in (*module.named_parameters(), *module.named_buffers()) if t.is_meta]
    if left:
        raise WeightsError(f"{path}: {len(left)} tensor(s) of {type(module).__name__} not in the file, e.g. {left[:3]}")


def empty_module(weights: Path | None):
    """Context to construct a module that ``weights`` will fill: on the meta device (no random
    init, no memory; :func:`strict_load` assigns the file's tensors) when a file is given, else
    the caller's device (random init)."""
    import contextlib

    return torch.device("meta") if weights is not None else contextlib.nullcontext()


class GaussianAdapter(PretrainedTokenizer):
    """An adapter whose network works on [-1, 1] images and has a diagonal Gaussian posterior.

    Subclasses implement ``_moments(x) -> (mean, std)`` and ``_decode(z) -> x`` on the network's
    [-1, 1] scale; this class maps the suite's [0, 1] images in and out (no clamping).
    """

    posterior = "gaussian"

    def _moments(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def _decode(self, z: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def encode_moments(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        check_images(x)
        return self._moments(x * 2.0 - 1.0)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        c = self.latent_shape[0]
        if not isinstance(z, torch.Tensor) or z.ndim != 4 or z.shape[1] != c:
            shape = tuple(z.shape) if isinstance(z, torch.Tensor) else type(z).__name__
            raise ValueError(f"{self.row.name}: z must be NCHW with {c} channels, got {shape}")
        return (self._decode(z) + 1.0) * 0.5




def as_float32(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``state`` with floating tensors in float32 (half-precision releases); others unchanged."""
    return {k: v.float() if v.is_floating_point() and v.dtype != torch.float32 else v for k, v in state.items()}


def check_latent_shape(tokenizer: Tokenizer, got: tuple[int, ...], path: Path | str | None = None) -> None:
    """Raise :class:`WeightsError` unless a per-image latent shape equals the row's (zoo.md)."""
    want = tuple(tokenizer.row.latent_shape)
    if tuple(got) != want:
        where = f"{path}: " if path else ""
        raise WeightsError(f"{where}{tokenizer.row.name} latent shape {tuple(got)} != {want} (spec zoo.md)")
