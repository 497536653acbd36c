"""FDr6 representation spaces: the real timm configurations build, pooling and preprocessing
match timm's own calls, local weights load, missing weights are named (spec diffusability §10).

Real checkpoints cannot be downloaded here; the real architectures are built on the meta
device (no memory), and the numeric tests use small timm models through the same code path.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import timm
import torch
import torch.nn.functional as F

from latentbench.features import available_feature_extractors
from latentbench.features.representations import (
    REPRESENTATION_SPACES,
    RepresentationSpace,
    TimmRepresentation,
    representation_weights,
)
from latentbench.weights import WeightMissing

torch.set_num_threads(1)
TINY_VIT = RepresentationSpace("tiny", "vit_tiny_patch16_224", "cls", 64)
TINY_CONVNEXT = RepresentationSpace("tinyconv", "convnextv2_atto", "avg", 64)


def _images(n: int = 3, size: int = 40) -> torch.Tensor:
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("key", sorted(REPRESENTATION_SPACES))
def test_real_spaces_exist_in_timm_with_their_pooling(key):
    space = REPRESENTATION_SPACES[key]
    kwargs = {"dynamic_img_size": True} if space.model.startswith("vit_") else {}
    with torch.device("meta"):
        model = timm.create_model(space.model, pretrained=False, **kwargs)
    assert model.pretrained_cfg["hf_hub_id"] == space.repo
    if space.pooling == "cls":
        assert model.global_pool == "token" and model.num_prefix_tokens >= 1
    elif space.pooling == "attn":
        assert model.global_pool == "map"
    else:
        assert type(model).__name__ == "ConvNeXt"
    assert f"fdr-{key}" in available_feature_extractors()


def test_cls_pooling_and_preprocessing_follow_timm():
    rep = TimmRepresentation(TINY_VIT, random_init=True)
    x = _images()
    expected_input = F.interpolate(x, size=(64, 64), mode="bicubic", antialias=True, align_corners=False)
    cfg = rep.model.pretrained_cfg
    expected_input = (expected_input - torch.tensor(cfg["mean"]).view(1, 3, 1, 1)) / torch.tensor(cfg["std"]).view(1, 3, 1, 1)
    torch.testing.assert_close(rep.preprocess(x), expected_input)
    with torch.no_grad():
        expected = rep.model.forward_features(expected_input)[:, 0]
    out = rep(x)
    assert out.shape == (3, rep.dim) == (3, 192) and out.dtype == torch.float32
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(rep(x[:1]), out[:1], rtol=1e-4, atol=1e-5)  # batch independent


def test_avg_pooling_is_timm_pre_logits():
    rep = TimmRepresentation(TINY_CONVNEXT, random_init=True)
    x = _images()
    with torch.no_grad():
        expected = rep.model.forward_head(rep.model.forward_features(rep.preprocess(x)), pre_logits=True)
    torch.testing.assert_close(rep(x), expected, rtol=1e-5, atol=1e-5)


def test_weights_load_from_the_weights_dir(tmp_path: Path):
    from safetensors.torch import save_file

    source = TimmRepresentation(TINY_VIT, random_init=True)
    save_file({k: v.contiguous() for k, v in source.model.state_dict().items()}, str(tmp_path / f"{TINY_VIT.model}.safetensors"))
    loaded = TimmRepresentation(TINY_VIT, weights=tmp_path)
    x = _images()
    torch.testing.assert_close(loaded(x), source(x))
    assert representation_weights(TINY_VIT, tmp_path) == tmp_path / f"{TINY_VIT.model}.safetensors"


def test_missing_weights_name_file_and_repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    space = REPRESENTATION_SPACES["dinov2_cls"]
    with pytest.raises(WeightMissing, match=r"vit_large_patch14_dinov2\.lvd142m\.safetensors.*timm/vit_large_patch14_dinov2"):
        representation_weights(space, tmp_path / "weights")


def test_bad_images_raise():
    rep = TimmRepresentation(TINY_VIT, random_init=True)
    with pytest.raises(ValueError, match="images"):
        rep(torch.zeros(2, 1, 8, 8))
