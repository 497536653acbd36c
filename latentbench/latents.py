"""The latent cache: one tokenizer's split encoded once (posterior mean and std, memory-mapped
``.npy``), read block by block, with reproducible per-image posterior samples.

Layout of a cache folder (rules/latents.smk): ``mean.npy`` and ``std.npy`` (N x latent shape,
float32) and ``stats.json`` (count, latent shape, per-channel mean/std of the posterior means,
posterior kind, mean posterior std).

Posterior samples (spec metrics-ifid-seesaw.md §3.5): image i's sample ``mean_i + std_i * eps_i``
draws ``eps_i`` from a generator seeded by ``row_seeds(key, i)`` alone, so it does not depend on
batching or on which job draws it, and a block of rows is drawn without touching the others. The
row seeds are a vectorised splitmix64 of ``key + i`` (``key`` = derive_seed(seed, "posterior",
split)), one array operation per block instead of one hash per image.
"""

from __future__ import annotations

import logging
import tempfile
import warnings
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch

from latentbench.errors import InputError
from latentbench.io import atomic_path, load_npy, read_json, write_json
from latentbench.metrics.fid import FeatureStats
from latentbench.metrics.ifid import sample_posterior
from latentbench.metrics.normalization import ChannelStats
from latentbench.progress import progress
from latentbench.seeding import derive_seed

log = logging.getLogger(__name__)

MODES = ("mean", "sample")
# Rows read at once: ~64 MiB of float32 latents per block (at least 1 row).
BLOCK_BYTES = 64 * 2**20


def row_seeds(key: int, start: int, stop: int) -> np.ndarray:
    """splitmix64(key + i) for i in [start, stop): independent 64-bit seeds, one per row.

    splitmix64 (Steele, Lea & Flood 2014, the seeding routine of xoroshiro; constants from
    Vigna's reference ``splitmix64.c``) mixes consecutive inputs into uncorrelated outputs.
    """
    with np.errstate(over="ignore"):
        z = np.uint64(key) + np.arange(start, stop, dtype=np.uint64) + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


class LatentCache:
    """Read access to one tokenizer's cached split: memory-mapped mean/std and channel stats."""

    def __init__(self, split_dir: str | Path) -> None:
        self.dir = Path(split_dir)
        self.mean = load_npy(self.dir / "mean.npy")
        self.std = load_npy(self.dir / "std.npy")
        self.stats = read_json(self.dir / "stats.json")
        if self.mean.shape != self.std.shape:
            raise InputError(f"{self.dir}: mean.npy and std.npy shapes differ ({self.mean.shape} vs {self.std.shape})")

    def __len__(self) -> int:
        return self.mean.shape[0]

    @property
    def latent_shape(self) -> tuple[int, ...]:
        return tuple(self.mean.shape[1:])

    def channel_stats(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-channel (mean, std) of the posterior means, shaped for broadcasting over NCHW."""
        shape = (1, -1) + (1,) * (self.mean.ndim - 2)
        return (
            torch.tensor(self.stats["channel_mean"]).view(shape),
            torch.tensor(self.stats["channel_std"]).view(shape),
        )

    def block_rows(self) -> int:
        """Rows per block of :meth:`blocks` (``BLOCK_BYTES`` of float32 latents)."""
        return max(1, BLOCK_BYTES // (4 * int(np.prod(self.latent_shape))))

    def rows(self, start: int, stop: int, mode: str, seed: int, split: str) -> torch.Tensor:
        """Latents of rows [start, stop): the posterior mean, or each row's seeded posterior sample."""
        if mode not in MODES:
            raise InputError(f"latent mode {mode!r}: expected one of {', '.join(MODES)}")
        mean = torch.from_numpy(np.array(self.mean[start:stop], dtype=np.float32))
        if mode == "mean":
            return mean
        std = torch.from_numpy(np.array(self.std[start:stop], dtype=np.float32))
        key = derive_seed(seed, "posterior", split)
        return sample_posterior(mean, std, row_seeds(key, start, stop).tolist())

    def blocks(self, mode: str, seed: int, split: str, rows: int | None = None) -> Iterator[tuple[int, torch.Tensor]]:
        """(first row, latents) of consecutive blocks of ``rows`` rows over the whole split."""
        rows = rows or self.block_rows()
        for start in range(0, len(self), rows):
            yield start, self.rows(start, min(len(self), start + rows), mode, seed, split)

    def latents(self, mode: str, seed: int, split: str) -> torch.Tensor:
        """Every latent of the split in memory (for metrics that need the whole split at once)."""
        if mode == "mean":
            return torch.from_numpy(np.array(self.mean, dtype=np.float32))
        out = torch.empty((len(self), *self.latent_shape), dtype=torch.float32)
        for start, block in self.blocks(mode, seed, split):
            out[start : start + len(block)] = block
        return out

    @contextmanager
    def array(
        self, mode: str, seed: int, split: str, rows: np.ndarray | None = None, scratch: str | Path | None = None
    ) -> Iterator[np.ndarray]:
        """The split's latents (or the sorted subset ``rows``) as a read-only memory map, for
        streaming readers such as the neighbour search.

        ``mean`` of the whole split maps ``mean.npy`` itself; otherwise the latents are written block
        by block to a temporary ``.npy`` in ``scratch`` (default: the system temp folder), removed
        afterwards, so memory never holds more than one block.
        """
        if mode == "mean" and rows is None:
            yield self.mean
            return
        index = np.arange(len(self)) if rows is None else np.asarray(rows)
        with tempfile.TemporaryDirectory(dir=scratch, prefix="latents-") as tmp:
            path = Path(tmp) / f"{mode}.npy"
            out = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(len(index), *self.latent_shape))
            step = self.block_rows()
            for b0 in range(0, len(index), step):
                part = index[b0 : b0 + step]
                lo, hi = int(part[0]), int(part[-1]) + 1  # sorted rows: read their span, keep the chosen
                block = self.rows(lo, hi, mode, seed, split) if hi - lo <= 4 * step else None
                if block is None:  # a sparse subset: draw row by row spans of one
                    block = torch.cat([self.rows(int(i), int(i) + 1, mode, seed, split) for i in part])
                    out[b0 : b0 + len(part)] = block.numpy()
                else:
                    out[b0 : b0 + len(part)] = block[torch.from_numpy(part - lo)].numpy()
            out.flush()
            del out
            yield load_npy(path)


def as_tensor(array: np.ndarray) -> torch.Tensor:
    """A tensor sharing ``array``'s memory (a read-only memory map stays on disk; never write to it)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        return torch.from_numpy(array)


@torch.inference_mode()
def encode_to_cache(
    encode_moments, batches: Iterable[torch.Tensor], count: int, latent_shape: tuple[int, ...], out_dir: str | Path,
    posterior: str = "gaussian", device: torch.device | str = "cpu", extra: dict | None = None,
) -> dict:
    """Encode image batches into ``out_dir``'s mean.npy / std.npy (memory-mapped) and stats.json.

    ``stats.json`` holds the per-channel mean/std of the posterior means over (N, H, W), unbiased
    (spec metrics-diffusability.md §1.5; LightningDiT ``latents_stats.pt``), accumulated while
    encoding, used by the recipes with ``latent_norm: channel_stats`` and by the latent metrics.
    """
    out_dir = Path(out_dir)
    shape = (count, *latent_shape)
    channels = ChannelStats()
    std_sum, start = 0.0, 0
    with atomic_path(out_dir / "mean.npy") as tmp_mean, atomic_path(out_dir / "std.npy") as tmp_std:
        means = np.lib.format.open_memmap(tmp_mean, mode="w+", dtype=np.float32, shape=shape)
        stds = np.lib.format.open_memmap(tmp_std, mode="w+", dtype=np.float32, shape=shape)
        for images in progress(batches, total=count, desc=f"encode {out_dir}", unit="img", weight=len):
            mean, std = encode_moments(images.to(device))
            mean, std = mean.float().cpu(), std.float().cpu()
            if start + len(mean) > count:
                raise InputError(f"{out_dir}: more than the {count} images the split declares")
            means[start : start + len(mean)] = mean.numpy()
            stds[start : start + len(std)] = std.numpy()
            channels.update(mean)
            std_sum += float(std.double().sum())
            start += len(mean)
        if start != count:
            raise InputError(f"{out_dir}: {start} images encoded, the split declares {count}")
        means.flush()
        stds.flush()
        del means, stds
    mean_c, std_c = channels.mean, channels.std
    stats = {
        "count": count,
        "latent_shape": list(latent_shape),
        "channel_mean": mean_c.flatten().tolist(),
        "channel_std": std_c.flatten().tolist(),
        "posterior": posterior,
        "mean_posterior_std": std_sum / max(1, count * int(np.prod(latent_shape))),
        **(extra or {}),
    }
    write_json(out_dir / "stats.json", stats)
    return stats


def native_moments(tokenizer) -> Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
    """``encode_moments`` of a pretrained tokenizer in its own normalised space (``latent_norm:
    native``, the one place it is applied): the posterior mean through ``native_normalize`` and the
    std scaled with it (the normalisations of spec zoo.md are affine with positive scales, so the
    posterior stays Gaussian with std ``N(mean + std) - N(mean)``)."""

    def encode(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean, std = tokenizer.encode_moments(x)
        z = tokenizer.native_normalize(mean)
        return z, tokenizer.native_normalize(mean + std) - z

    return encode


@torch.inference_mode()
def decoded_fid(tokenizer, extractor, latents: torch.Tensor, reference: FeatureStats, batch_size: int = 250) -> float:
    """Fréchet distance between the decoded ``latents`` and the reference statistics, streamed."""
    stats = FeatureStats()
    device = next(tokenizer.parameters()).device
    for i in range(0, len(latents), batch_size):
        stats.update(extractor(tokenizer.decode(latents[i : i + batch_size].to(device))))
    return stats.fd(reference)
