"""CLIP and DINOv2 projectors on randomly initialised models of the exact configuration."""

import numpy as np
import pytest
import torch

from latentbench.drift.projectors import build_projector
from latentbench.drift.projectors.timm_embedding import resize_centre_crop


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(0).integers(0, 256, (2, 256, 256, 3), dtype=np.uint8)


def test_clip_is_the_quickgelu_vit_b32_with_clips_own_preprocessing(images):
    clip = build_projector("clip-vit-b32", random_init=True)
    assert clip.dim == 512 and clip.model.num_classes == 512  # the visual projection: encode_image
    act = clip.model.blocks[0].mlp.act
    assert "quick" in type(act).__name__.lower()  # QuickGELU, as OpenAI's weights were trained
    x = clip.preprocess(images)
    assert x.shape == (2, 3, 224, 224)
    # resize 256 -> 224 bicubic (no crop_pct: timm's 0.9 would resize to 248 and crop), CLIP mean/std
    expected = resize_centre_crop(images[0], 224, 224).astype(np.float32) / 255.0
    mean, std = np.array([0.48145466, 0.4578275, 0.40821073]), np.array([0.26862954, 0.26130258, 0.27577711])
    np.testing.assert_allclose(x[0].permute(1, 2, 0).numpy(), (expected - mean) / std, atol=1e-5)
    emb = clip(images)
    assert emb.shape == (2, 512) and emb.dtype == np.float32


def test_dinov2_is_the_normed_cls_token_of_vit_b14(images):
    dino = build_projector("dinov2-vitb14", random_init=True)
    assert dino.dim == 768 and dino.model.patch_embed.patch_size == (14, 14)
    x = dino.preprocess(images)
    assert x.shape == (2, 3, 224, 224)  # resize 256 (no-op here), centre crop 224
    np.testing.assert_allclose(
        (x[0] * dino.std[0] + dino.mean[0]).permute(1, 2, 0).numpy() * 255, images[0, 16:240, 16:240], atol=1e-3
    )
    emb = dino(images)
    with torch.inference_mode():
        tokens = dino.model.forward_features(x)
        ref = dino.model.norm(dino.model.blocks(dino.model._pos_embed(dino.model.patch_embed(x))))
    np.testing.assert_allclose(emb, tokens[:, 0].numpy(), atol=1e-6)  # class token after the final norm
    np.testing.assert_allclose(emb, ref[:, 0].numpy(), atol=1e-4)
    assert emb.shape == (2, 768)


def test_resize_centre_crop_matches_torchvision_semantics():
    img = np.random.default_rng(1).integers(0, 256, (300, 200, 3), dtype=np.uint8)
    out = resize_centre_crop(img, 224, 224)
    assert out.shape == (224, 224, 3)  # 200x300 -> 224x336, rows 56..280


def test_dinov2_pos_embed_resize_matches_transformers_interpolation():
    from transformers import Dinov2Config
    from transformers.models.dinov2.modeling_dinov2 import Dinov2Embeddings

    from latentbench.drift.projectors.dinov2 import resize_pos_embed

    config = Dinov2Config(hidden_size=8, image_size=518, patch_size=14)
    emb = Dinov2Embeddings(config).eval()
    pos = torch.randn(1, 1 + 37 * 37, 8, generator=torch.Generator().manual_seed(0))
    emb.position_embeddings.data.copy_(pos)
    reference = emb.interpolate_pos_encoding(torch.zeros(1, 1 + 16 * 16, 8), 224, 224)
    torch.testing.assert_close(resize_pos_embed(pos, 16), reference)
    assert resize_pos_embed(pos, 37) is pos


def test_weight_file_loads_strictly_on_meta_with_the_state_adapter(tmp_path, images):
    """The loading path of both wrappers, on timm's tiny ``test_vit`` written as a safetensors file."""
    import timm
    from safetensors.torch import save_file

    from latentbench.drift.projectors.dinov2 import _adapt_state
    from latentbench.drift.projectors.timm_embedding import (
        EmbeddingSpec,
        TimmEmbeddingProjector,
    )

    source = timm.create_model("test_vit", num_classes=0, img_size=224)  # grid 14: a resize to 10 on load
    state = {k: v.contiguous() for k, v in source.state_dict().items()}
    save_file(state, str(tmp_path / "tiny.safetensors"))
    spec = EmbeddingSpec("test_vit", (("num_classes", 0), ("img_size", 160)), "dinov2-base", 160, 160,
                         (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), "cls", _adapt_state)
    proj = TimmEmbeddingProjector(spec, weights=tmp_path / "tiny.safetensors")
    torch.testing.assert_close(proj.model.blocks[0].attn.qkv.weight, source.blocks[0].attn.qkv.weight)
    assert proj.model.pos_embed.shape == (1, 1 + 10 * 10, 64)
    assert proj(images).shape == (2, 64)
    del state["norm.weight"]
    save_file(state, str(tmp_path / "broken.safetensors"))
    with pytest.raises(RuntimeError, match="norm.weight"):
        TimmEmbeddingProjector(spec, weights=tmp_path / "broken.safetensors")
