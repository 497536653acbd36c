"""C8: MAETok ``MAETok/maetok-b-128`` (spec zoo.md §2 C8, §3 row ``maetok``; models.md §2.2 MAE-TOK).

A plain autoencoder (``AEModel``: no KL, no VQ) on :mod:`~latentbench.tokenizers.pretrained.ct_vit`:
DINOv2-B/14 re-patched to 16 as encoder and decoder, 128 latent tokens of 32 channels, mixed
2-D RoPE in both halves (the encoder also keeps its absolute positions), and an encoder
``mask_token`` for MAE-style token dropping in training. The auxiliary HOG / DINOv2 / CLIP
decoders of MAETok training are not part of the inference model; their keys are dropped if
the released file carries them.

No MAETok config is in Hhhhhhao/continuous_tokenizer @7cc3e96 (zoo.md [U]). The pin below
combines the MAETok description (ViT-B, 128 tokens x 32, mixed RoPE, mask modelling) with the
``ModelArgs`` values MAETok-style configs use in public code (use_ape false, use_rope and
rope_mixed true, enc_token_drop 0.4: the iFID code's ``ContinuousTokenizerVAE`` config) and the
``ModelArgs`` default for the decoder class token (``dec_cls_token`` true; one third-party
MAETok port defaults it to false). The loader asserts the released ``config.json`` equals it.
"""

from __future__ import annotations

from pathlib import Path

from latentbench.tokenizers.base import WeightRef
from latentbench.tokenizers.pretrained.base import ZooRow
from latentbench.tokenizers.pretrained.ct_vit import (
    LatentViTTokenizer,
    build_latent_vit,
)

REPO = "MAETok/maetok-b-128"
STEM = "maetok-b-128"  # manifest file names: maetok-b-128-config.json, maetok-b-128-model.safetensors

ROWS: tuple[ZooRow, ...] = (
    ZooRow(
        name="maetok",
        arch="C8",
        latent_shape=(128, 32),
        encode="deterministic",
        aliases=("MAE-TOK", "maetok-b-128"),
        config={
            "encoder_model": "vit_base_patch14_dinov2.lvd142m",
            "decoder_model": "vit_base_patch14_dinov2.lvd142m",
            "num_latent_tokens": 128,
            "codebook_embed_dim": 32,
            "quantizer": "none",
            "use_ape": False,
            "use_rope": True,
            "rope_mixed": True,
            "rope_theta": 10.0,
            "enc_token_drop": 0.4,
            "dec_cls_token": True,
        },
        files=("maetok-b-128-config", "maetok-b-128-model"),
        norm="(z - vq_mean) / vq_std, scalars of config.json",
        params=None,  # zoo.md's 172.7 M is [U]; this pinned build counts 172,681,760
        unverified=(
            (
                "config.json not seen: use_ape/use_rope/rope_mixed, enc_token_drop > 0 and dec_cls_token are a best reading; "
                "the loader refuses a config.json that differs"
            ),
            "parameter count: zoo.md's 172.7 M is itself [U]; the pinned build counts 172,681,760 (= 172.7 M)",
            "model.safetensors key set not seen; MAETok's auxiliary decoders / repa modules are dropped if present",
        ),
    ),
)


def build(row: ZooRow, weights: Path | None) -> LatentViTTokenizer:
    """MAETok adapter of ``row``: random init, or the Hub snapshot (config.json + model.safetensors)."""
    refs = (WeightRef(REPO, "config.json", "Apache-2.0"), WeightRef(REPO, "model.safetensors", "Apache-2.0"))
    return build_latent_vit(row, weights, refs, STEM)
