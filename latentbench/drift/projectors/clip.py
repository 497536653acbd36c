"""CLIP similarity's projector: OpenAI CLIP ViT-B/32 image embedding (spec §7.4, seesaw-notes §2.13).

timm ``vit_base_patch32_clip_quickgelu_224`` (the QuickGELU variant: OpenAI's weights were
trained with QuickGELU; the plain ``vit_base_patch32_clip_224`` would use GELU), 512 classes =
CLIP's visual projection, so ``model(x)`` is ``encode_image``. Weights: the manifest's
``clip-vit-b32`` (``timm/vit_base_patch32_clip_224.openai``, MIT). Preprocessing: CLIP's own,
resize 224 bicubic, centre crop 224, CLIP mean/std (not timm's crop_pct 0.9).
Parity (recorded 2026-12-03, random weights): open_clip ``ViT-B-32-quickgelu``'s visual tower,
converted by timm's OpenAI-checkpoint filter, loads strictly; our preprocessing equals
open_clip's transform exactly and our embedding its ``encode_image`` to 1.9e-6.
"""

from __future__ import annotations

from latentbench.drift.projectors import register_projector
from latentbench.drift.projectors.timm_embedding import (
    EmbeddingSpec,
    TimmEmbeddingProjector,
)

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)  # OpenAI CLIP clip.py _transform
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

CLIP_SPEC = EmbeddingSpec(
    model="vit_base_patch32_clip_quickgelu_224",
    create_kwargs=(("num_classes", 512),),
    manifest_entry="clip-vit-b32",
    resize=224,
    crop=224,
    mean=CLIP_MEAN,
    std=CLIP_STD,
    pooling="head",
)


@register_projector("clip-vit-b32", "clip")
def build_clip(weights=None, device="cpu", random_init: bool = False, batch_size: int = 64) -> TimmEmbeddingProjector:
    """The CLIP ViT-B/32 image-embedding projector (512-d)."""
    return TimmEmbeddingProjector(CLIP_SPEC, weights, device, random_init, batch_size)
