"""The latent cache (rules/latents.smk): posterior mean and std of a split, memory-mapped."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from latentbench.data.shards import ShardedSplit, images_to_tensor
from latentbench.device import compute_device
from latentbench.errors import InputError
from latentbench.io import atomic_path, load_npy, read_json, write_json
from latentbench.metrics.normalization import channel_stats
from latentbench.tokenizers import load_tokenizer

log = logging.getLogger(__name__)

@torch.inference_mode()
def encode_split(tokenizer: str | Path, split: str | Path, out_dir: str | Path, batch_size: int = 250) -> None:
    """Encode a split once: ``mean.npy`` and ``std.npy`` (N x latent_shape, float32) and ``stats.json``.

    ``stats.json`` holds the per-channel mean/std of the posterior means over (N, H, W), unbiased
    (spec metrics-diffusability.md §1.5; LightningDiT ``latents_stats.pt``), used by the recipes
    with ``latent_norm: channel_stats`` and by the latent metrics.
    """
    device = compute_device()
    model = load_tokenizer(tokenizer).eval().to(device)
    images = ShardedSplit(Path(split).parent)
    out_dir = Path(out_dir)
    shape = (len(images), *model.latent_shape)
    with atomic_path(out_dir / "mean.npy") as tmp_mean, atomic_path(out_dir / "std.npy") as tmp_std:
        means = np.lib.format.open_memmap(tmp_mean, mode="w+", dtype=np.float32, shape=shape)
        stds = np.lib.format.open_memmap(tmp_std, mode="w+", dtype=np.float32, shape=shape)
        start = 0
        for batch in images.iter_batches(batch_size, ("image",)):
            mean, std = model.encode_moments(images_to_tensor(batch["image"]).to(device))
            means[start : start + len(mean)] = mean.cpu().numpy()
            stds[start : start + len(std)] = std.cpu().numpy()
            start += len(mean)
        means.flush()
        stds.flush()
        del means, stds
    mean_c, std_c = channel_stats(torch.from_numpy(np.asarray(load_npy(out_dir / "mean.npy"))))
    write_json(
        out_dir / "stats.json",
        {
            "count": shape[0],
            "latent_shape": list(model.latent_shape),
            "channel_mean": mean_c.tolist(),
            "channel_std": std_c.tolist(),
            "posterior": model.posterior,
            "mean_posterior_std": float(np.asarray(load_npy(out_dir / "std.npy")).mean()),
        },
    )
    log.info("encoded %d images to %s", shape[0], out_dir)

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

    def channel_stats(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-channel (mean, std) of the posterior means, shaped for broadcasting over NCHW."""
        shape = (1, -1) + (1,) * (self.mean.ndim - 2)
        return (
            torch.tensor(self.stats["channel_mean"]).view(shape),
            torch.tensor(self.stats["channel_std"]).view(shape),
        )
