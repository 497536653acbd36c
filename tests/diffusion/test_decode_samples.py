"""Samples are decoded from the model's space: the iFID recipe's in-model BatchNorm is undone first.

Found in review: ``sample`` and ``gfid_t`` decoded ``normalizer.invert(u)`` without
``model.denormalize``, so ``ifid_sit`` samples reached the tokenizer still BN-normalised.
"""

from __future__ import annotations

import torch

from latentbench.diffusion.io import LatentNormalizer
from latentbench.diffusion.recipes import build_backbone, resolve_patch_size
from latentbench.stages.diffusion import decode_samples


class Identity(torch.nn.Module):
    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return z


def test_ifid_recipe_samples_are_denormalised_before_decoding():
    net = build_backbone("demo", "ifid_sit", (4, 8, 8), 1, num_classes=10).eval()
    net.bn.running_mean.fill_(3.0)
    net.bn.running_var.fill_(4.0)
    u = torch.randn(2, 4, 8, 8)
    normalizer = LatentNormalizer("bn_online", torch.zeros(1), torch.ones(1))
    out = decode_samples(Identity(), normalizer, net, u)
    assert torch.allclose(out, u * 2.0 + 3.0)
    # and normalize -> denormalize is the identity in eval mode (running stats), up to BN's eps
    assert torch.allclose(net.denormalize(net.normalize(out)), out, atol=1e-3)


def test_channel_stats_recipe_is_unchanged():
    net = build_backbone("demo", "study_sit", (4, 8, 8), 1, num_classes=10).eval()
    mean, std = torch.full((1, 4, 1, 1), 1.5), torch.full((1, 4, 1, 1), 0.5)
    u = torch.randn(2, 4, 8, 8)
    out = decode_samples(Identity(), LatentNormalizer("channel_stats", mean, std), net, u)
    assert torch.allclose(out, u * 0.5 + 1.5)


def test_auto_patch_size():
    assert resolve_patch_size("auto", (4, 32, 32)) == 2 and resolve_patch_size("auto", (32, 16, 16)) == 1
    assert resolve_patch_size("auto", (256, 16)) == 1 and resolve_patch_size(2, (32, 16, 16)) == 2
