"""Dataset-level per-channel standardisation of latents (spec diffusability §1.5).

Every latent-only metric (VIV, SEC, LNC, LDS/CDS/SRSS, uniformity, equivariance) reads
latents as ``z <- (z - m_c) / s_c`` where ``m_c`` and ``s_c`` are the mean and the
**unbiased** standard deviation of channel ``c`` over (N, H, W) of the evaluation set, the
statistics LightningDiT stores in ``latents_stats.pt``. Per-image normalisation is wrong.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

Stats = tuple[torch.Tensor, torch.Tensor]

DEFAULT_CHUNK = 1024


def _check_latents(z: torch.Tensor, name: str = "latents") -> None:
    if not isinstance(z, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(z).__name__}")
    if z.ndim != 4:
        raise ValueError(f"{name} must have shape [N, C, H, W], got {tuple(z.shape)}")
    if not torch.is_floating_point(z):
        raise ValueError(f"{name} must be a floating-point tensor, got {z.dtype}")


class ChannelStats:
    """Streaming per-channel mean and unbiased std over (N, H, W), accumulated in float64.

    Batches are merged with Chan et al.'s parallel update of (count, mean, M2), so the
    result does not depend on how the set is split into batches.
    """

    def __init__(self) -> None:
        self.count = 0
        self._mean: torch.Tensor | None = None
        self._m2: torch.Tensor | None = None

    def update(self, z: torch.Tensor) -> "ChannelStats":
        """Add a batch of latents [N, C, H, W]."""
        _check_latents(z)
        x = z.detach().to(torch.float64).transpose(0, 1).reshape(z.shape[1], -1)
        n_b = x.shape[1]
        if n_b == 0:
            return self
        mean_b = x.mean(dim=1)
        m2_b = ((x - mean_b[:, None]) ** 2).sum(dim=1)
        if self._mean is None:
            self.count, self._mean, self._m2 = n_b, mean_b, m2_b
            return self
        if mean_b.shape != self._mean.shape:
            raise ValueError(
                f"latents have {mean_b.shape[0]} channels, earlier batches had {self._mean.shape[0]}"
            )
        mean_b, m2_b = mean_b.to(self._mean.device), m2_b.to(self._mean.device)
        total = self.count + n_b
        delta = mean_b - self._mean
        self._mean = self._mean + delta * (n_b / total)
        self._m2 = self._m2 + m2_b + delta**2 * (self.count * n_b / total)
        self.count = total
        return self

    @property
    def mean(self) -> torch.Tensor:
        """Per-channel mean [C] (float64)."""
        if self._mean is None:
            raise ValueError("ChannelStats is empty: call update() with at least one batch")
        return self._mean

    @property
    def std(self) -> torch.Tensor:
        """Per-channel unbiased std [C] (float64), divisor N*H*W - 1 as in ``torch.std``."""
        if self._m2 is None or self.count < 2:
            raise ValueError("ChannelStats needs at least 2 values per channel for an unbiased std")
        return (self._m2 / (self.count - 1)).sqrt()


def channel_stats(
    z: torch.Tensor | Iterable[torch.Tensor], chunk: int = DEFAULT_CHUNK
) -> Stats:
    """Per-channel (mean[C], std[C]) over (N, H, W), unbiased std, float64 (spec §1.5).

    ``z`` is a [N, C, H, W] tensor (read ``chunk`` samples at a time, so a memory-mapped
    cache is never copied whole) or an iterable of such batches.
    """
    stats = ChannelStats()
    if isinstance(z, torch.Tensor):
        _check_latents(z)
        for start in range(0, z.shape[0], chunk):
            stats.update(z[start : start + chunk])
    else:
        for batch in z:
            stats.update(batch)
    return stats.mean, stats.std


def standardize(z: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """``(z - mean_c) / std_c`` per channel; returns float64 if the stats are float64.

    A channel with zero std (a dead channel) is centred but not scaled, so it becomes
    exactly zero instead of NaN.
    """
    _check_latents(z)
    mean = torch.as_tensor(mean, device=z.device)
    std = torch.as_tensor(std, device=z.device)
    if mean.shape != (z.shape[1],) or std.shape != (z.shape[1],):
        raise ValueError(
            f"mean/std must have shape [{z.shape[1]}] (one per channel), "
            f"got {tuple(mean.shape)} and {tuple(std.shape)}"
        )
    dtype = torch.promote_types(z.dtype, mean.dtype)
    scale = torch.where(std > 0, std, torch.ones_like(std)).to(dtype)
    return (z.to(dtype) - mean.to(dtype)[:, None, None]) / scale[:, None, None]


def resolve_stats(z: torch.Tensor, stats: Stats | None, standardize_input: bool) -> Stats | None:
    """The stats a metric should standardise ``z`` with: given ones, the set's own, or None.

    Metrics call this once and then standardise chunk by chunk, so the standardised copy of a
    large set is never held in memory.
    """
    if not standardize_input:
        return None
    if stats is not None:
        return stats
    return channel_stats(z)


def prepare(z: torch.Tensor, stats: Stats | None, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """Standardise ``z`` with ``stats`` (or only cast it when ``stats`` is None)."""
    if stats is None:
        return z.to(dtype)
    return standardize(z, *stats).to(dtype)
