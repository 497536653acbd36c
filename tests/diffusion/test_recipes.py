"""Tests of the backbone recipes' helpers (latentbench.diffusion.recipes): ``patch_size: auto``."""

from __future__ import annotations

import pytest
import torch

from latentbench.diffusion.io import LatentNormalizer, load_diffusion, save_backbone
from latentbench.diffusion.recipes import backbone_config, build_backbone, resolve_patch_size


@pytest.mark.parametrize(
    ("shape", "patch"),
    [
        ((4, 32, 32), 2),  # SD-VAE, EQ-VAE, REPAE-VAE: SiT-*/2 (spec A.6 sit_config)
        ((16, 32, 32), 2),  # FLUX, SD3, QwenImage: SiT-*/2
        ((4, 64, 64), 2),  # f8 at 512 px: the grid is >= 32
        ((32, 16, 16), 1),  # IN-VAE, VA-VAE: SiT-*/1
        ((768, 16, 16), 1),  # RAE: SiT-XL/1
        ((4, 32, 16), 1),  # the smaller side decides
        ((64, 32), 1),  # SOFT-VQ tokens: SiT-*/1D
        ((256, 32), 1),  # DM-VAE: 256 tokens, still 1-D
    ],
)
def test_auto_patch_is_the_ifid_choice(shape, patch):
    assert resolve_patch_size("auto", shape) == patch


@pytest.mark.parametrize("shape", [(4, 32, 32), (16, 32, 32), (32, 16, 16), (768, 16, 16), (256, 16)])
def test_auto_patch_gives_256_tokens_on_the_256px_latents(shape):
    # models.md §1.2: every study keeps 256 tokens for its 256-px latents
    config = backbone_config("B", "ifid_sit", shape, resolve_patch_size("auto", shape))
    assert config.num_tokens == 256


def test_an_explicit_patch_size_wins():
    assert resolve_patch_size(1, (4, 32, 32)) == 1
    assert resolve_patch_size(4, (4, 32, 32)) == 4
    assert resolve_patch_size(2, (32, 16, 16)) == 2


def test_a_saved_auto_backbone_loads_at_its_resolved_patch(tmp_path):
    # load_diffusion rebuilds the model from the config entry ("auto") and the saved latent shape
    shape = (4, 32, 32)
    torch.manual_seed(0)
    model = build_backbone("demo", "ifid_sit", shape, resolve_patch_size("auto", shape), num_classes=4)
    backbone = {"size": "demo", "recipe": "ifid_sit", "patch_size": "auto"}
    normalizer = LatentNormalizer("bn_online", torch.zeros(4), torch.ones(4))
    save_backbone(tmp_path / "m.pt", model, backbone, shape, 4, normalizer, {})
    loaded, _, _, payload = load_diffusion(tmp_path / "m.pt")
    assert loaded.patch_size == 2 and payload["backbone"]["patch_size"] == "auto"
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
