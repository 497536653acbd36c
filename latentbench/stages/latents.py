"""The encode job (rules/latents.smk): one split through one tokenizer into the latent cache."""

from __future__ import annotations

import logging
from pathlib import Path

from latentbench.data.shards import ShardedSplit, images_to_tensor
from latentbench.device import compute_device
from latentbench.latents import encode_to_cache, native_moments
from latentbench.tokenizers import load_tokenizer, tokenizer_latent_norm

log = logging.getLogger(__name__)


def encode_split(tokenizer: str | Path, split: str | Path, out_dir: str | Path, batch_size: int = 250) -> None:
    """Encode a split once: ``mean.npy`` and ``std.npy`` (N x latent_shape, float32) and ``stats.json``.

    ``tokenizer``: the trained tokenizer file. ``split``: the split's manifest.json.
    ``out_dir``: the cache folder (latentbench.latents describes its files).
    """
    device = compute_device()
    model = load_tokenizer(tokenizer).eval().to(device)
    encode, latent_norm = model.encode_moments, "none"
    if tokenizer_latent_norm(tokenizer) == "native":
        encode, latent_norm = native_moments(model), f"native: {model.native_norm}"
    images = ShardedSplit(Path(split).parent)
    batches = (images_to_tensor(b["image"]) for b in images.iter_batches(batch_size, ("image",)))
    stats = encode_to_cache(
        encode, batches, len(images), model.latent_shape, out_dir, model.posterior, device, extra={"latent_norm": latent_norm}
    )
    log.info("encoded %d images to %s (latent %s)", stats["count"], out_dir, stats["latent_shape"])
