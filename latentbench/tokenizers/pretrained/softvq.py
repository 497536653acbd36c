"""C7: SoftVQ-VAE ``SoftVQVAE/softvq-l-64`` (spec zoo.md §2 C7, §3 row ``softvq``; models.md §2.2 SOFT-VQ).

The network is :mod:`~latentbench.tokenizers.pretrained.ct_vit` with a soft vector quantiser.
Its hyper-parameters come from the repository's only tokenizer config,
Hhhhhhao/continuous_tokenizer @7cc3e96 ``configs/softvq-l-64.yaml`` (DINOv2-L/14 re-patched to
16 as encoder *and* decoder, 64 latent tokens of 32 channels, 4 codebooks of 8192 codewords,
tau 0.07) and ``ModelArgs`` defaults for the keys it leaves out (absolute positions, no RoPE,
decoder class token, linear to-pixel, no encoder token drop). The released ``config.json`` was not
seen (zoo.md [U]: 391 M or 609 M parameters): the loader asserts it equals this pin.
"""

from __future__ import annotations

from pathlib import Path

from latentbench.tokenizers.base import WeightRef
from latentbench.tokenizers.pretrained.base import ZooRow
from latentbench.tokenizers.pretrained.ct_vit import (
    LatentViTTokenizer,
    build_latent_vit,
)

REPO = "SoftVQVAE/softvq-l-64"
STEM = "softvq-l-64"  # manifest file names: softvq-l-64-config.json, softvq-l-64-model.safetensors

ROWS: tuple[ZooRow, ...] = (
    ZooRow(
        name="softvq",
        arch="C7",
        latent_shape=(64, 32),
        encode="deterministic",
        aliases=("SOFT-VQ", "SoftVQ-VAE", "softvq-l-64"),
        config={
            "encoder_model": "vit_large_patch14_dinov2.lvd142m",
            "decoder_model": "vit_large_patch14_dinov2.lvd142m",
            "num_latent_tokens": 64,
            "codebook_embed_dim": 32,
            "quantizer": "softvq",
            "codebook_size": 8192,
            "num_codebooks": 4,
            "tau": 0.07,
        },
        files=("softvq-l-64-config", "softvq-l-64-model"),
        norm="(z - vq_mean) / vq_std, scalars of config.json",
        params=None,  # zoo.md: [U] 391 M or 609 M; the pinned build counts 608,924,448
        unverified=(
            (
                "config.json not seen: built from configs/softvq-l-64.yaml + ModelArgs defaults (ViT-L encoder and decoder, "
                "608.9 M parameters); the loader refuses a config.json that differs"
            ),
            "model.safetensors key set not seen; training-only modules (repa_model, projection) are dropped if present",
            "vq_mean / vq_std values: read from config.json at load",
        ),
    ),
)


def build(row: ZooRow, weights: Path | None) -> LatentViTTokenizer:
    """SoftVQ adapter of ``row``: random init, or the Hub snapshot (config.json + model.safetensors)."""
    refs = (WeightRef(REPO, "config.json", "Apache-2.0"), WeightRef(REPO, "model.safetensors", "Apache-2.0"))
    return build_latent_vit(row, weights, refs, STEM)
