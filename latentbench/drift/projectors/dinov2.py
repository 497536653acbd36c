"""DINOv2 similarity's projector: ViT-B/14 class token after the final norm (spec §7.4, seesaw-notes §2.14).

Implementation choice: timm ``vit_base_patch14_dinov2.lvd142m`` (manifest ``dinov2-base``,
Apache-2.0), ``forward_features(x)[:, 0]`` = the layer-normed CLS token (what HF
``Dinov2Model.pooler_output`` and torch.hub ``dinov2_vitb14`` return), 768-d. The model is built
for 224^2 inputs; the file's 37x37 position-embedding grid (518^2 pretraining) is resized once
at load to 16x16 as transformers' ``Dinov2Embeddings.interpolate_pos_encoding`` does it
(bicubic, align_corners False, no antialiasing, float32) -- not with timm's loader, which
antialiases.
Parity (recorded 2026-12-03, random weights with non-trivial layer scales and position
embeddings): a transformers ``Dinov2Model`` (ViT-B/14, image_size 518) converted key by key to
timm's layout and loaded through this projector gives its ``pooler_output`` on the same
224^2 input exactly (max |diff| 0.0). Preprocessing [DEFAULT spec §7.4]:
resize short side 256 bicubic (a no-op on 256^2 images), centre crop 224, ImageNet mean/std.
Note: not independent of RAE/UAE, whose encoders are DINOv2-B (seesaw-notes §2.14).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from latentbench.drift.projectors import register_projector
from latentbench.drift.projectors.timm_embedding import (
    EmbeddingSpec,
    TimmEmbeddingProjector,
)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)



def resize_pos_embed(pos_embed: torch.Tensor, grid: int) -> torch.Tensor:
    """(1, 1 + g*g, D) -> (1, 1 + grid*grid, D): the patch part resized bicubically (no antialias,
    align_corners False, float32), the class-token part kept; as HF Dinov2's interpolation."""
    cls, patches = pos_embed[:, :1], pos_embed[:, 1:]
    side = int(patches.shape[1] ** 0.5)
    if side * side != patches.shape[1]:
        raise ValueError(f"pos_embed: {patches.shape[1]} patch positions are not a square grid")
    if side == grid:
        return pos_embed
    x = patches.reshape(1, side, side, -1).permute(0, 3, 1, 2).float()
    x = F.interpolate(x, size=(grid, grid), mode="bicubic", align_corners=False)
    return torch.cat((cls, x.permute(0, 2, 3, 1).reshape(1, grid * grid, -1).to(pos_embed.dtype)), 1)


def _adapt_state(state: dict, model) -> dict:
    grid = model.patch_embed.grid_size[0]
    return {**state, "pos_embed": resize_pos_embed(state["pos_embed"], grid)}


DINOV2_SPEC = EmbeddingSpec(
    model="vit_base_patch14_dinov2.lvd142m",
    create_kwargs=(("num_classes", 0), ("img_size", 224)),
    manifest_entry="dinov2-base",
    resize=256,
    crop=224,
    mean=IMAGENET_MEAN,
    std=IMAGENET_STD,
    pooling="cls",
    adapt_state=_adapt_state,
)


@register_projector("dinov2-vitb14", "dinov2")
def build_dinov2(weights=None, device="cpu", random_init: bool = False, batch_size: int = 64) -> TimmEmbeddingProjector:
    """The DINOv2 ViT-B/14 CLS-embedding projector (768-d)."""
    return TimmEmbeddingProjector(DINOV2_SPEC, weights, device, random_init, batch_size)
