"""DINOv2 similarity's projector: ViT-B/14 class token after the final norm (spec §7.4, seesaw-notes §2.14).

Implementation choice: timm ``vit_base_patch14_dinov2.lvd142m`` (manifest ``dinov2-base``,
Apache-2.0), ``forward_features(x)[:, 0]`` = the layer-normed CLS token (what HF
``Dinov2Model.pooler_output`` and torch.hub ``dinov2_vitb14`` return), 768-d. The model keeps
its 518^2 position embeddings and interpolates them to the 224^2 input at run time
(``dynamic_img_size``), as the reference implementations do. Preprocessing [DEFAULT spec §7.4]:
resize short side 256 bicubic (a no-op on 256^2 images), centre crop 224, ImageNet mean/std.
Note: not independent of RAE/UAE, whose encoders are DINOv2-B (seesaw-notes §2.14).
"""

from __future__ import annotations

from latentbench.drift.projectors import register_projector
from latentbench.drift.projectors.timm_embedding import (
    EmbeddingSpec,
    TimmEmbeddingProjector,
)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

DINOV2_SPEC = EmbeddingSpec(
    model="vit_base_patch14_dinov2.lvd142m",
    create_kwargs=(("num_classes", 0), ("dynamic_img_size", True)),
    manifest_entry="dinov2-base",
    resize=256,
    crop=224,
    mean=IMAGENET_MEAN,
    std=IMAGENET_STD,
    pooling="cls",
)


@register_projector("dinov2-vitb14", "dinov2")
def build_dinov2(weights=None, device="cpu", random_init: bool = False, batch_size: int = 64) -> TimmEmbeddingProjector:
    """The DINOv2 ViT-B/14 CLS-embedding projector (768-d)."""
    return TimmEmbeddingProjector(DINOV2_SPEC, weights, device, random_init, batch_size)
