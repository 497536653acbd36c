"""PatchGAN discriminator (taming-transformers ``NLayerDiscriminator``) used by Eq. 12's GAN term.

Layout (spec models.md §3.3, taming ``modules/discriminator/model.py``): Conv4x4 s2 (bias) ->
LeakyReLU(0.2); ``n_layers - 1`` x [Conv4x4 s2 (no bias) -> BatchNorm -> LeakyReLU]; one
Conv4x4 s1 (no bias) -> BatchNorm -> LeakyReLU; Conv4x4 s1 -> 1 logit per patch. Channel
multiplier ``min(2**n, 8)``. Initialisation: conv weights N(0, 0.02), BatchNorm weight
N(1, 0.02) and bias 0 (taming ``weights_init``). Paper scale: 3 layers, ndf 64; demo: 2
layers, ndf 16 (spec §4). Images in [-1, 1].
"""

from __future__ import annotations

from torch import nn


class NLayerDiscriminator(nn.Sequential):
    """Patch logits [N, 1, h, w] for images [N, input_nc, H, W]."""

    def __init__(self, input_nc: int = 3, ndf: int = 64, n_layers: int = 3) -> None:
        if n_layers < 1:
            raise ValueError(f"n_layers must be >= 1, got {n_layers}")
        if ndf < 1:
            raise ValueError(f"ndf must be >= 1, got {ndf}")
        layers: list[nn.Module] = [nn.Conv2d(input_nc, ndf, 4, stride=2, padding=1), nn.LeakyReLU(0.2, True)]
        mult = 1
        for n in range(1, n_layers):
            prev, mult = mult, min(2**n, 8)
            layers += [
                nn.Conv2d(ndf * prev, ndf * mult, 4, stride=2, padding=1, bias=False),
                nn.BatchNorm2d(ndf * mult),
                nn.LeakyReLU(0.2, True),
            ]
        prev, mult = mult, min(2**n_layers, 8)
        layers += [
            nn.Conv2d(ndf * prev, ndf * mult, 4, stride=1, padding=1, bias=False),
            nn.BatchNorm2d(ndf * mult),
            nn.LeakyReLU(0.2, True),
            nn.Conv2d(ndf * mult, 1, 4, stride=1, padding=1),
        ]
        super().__init__(*layers)
        self.config = {"input_nc": input_nc, "ndf": ndf, "n_layers": n_layers}
        self.apply(_weights_init)


def _weights_init(m: nn.Module) -> None:
    """taming ``weights_init``: conv N(0, 0.02); BatchNorm weight N(1, 0.02), bias 0."""
    if isinstance(m, nn.Conv2d):
        nn.init.normal_(m.weight, 0.0, 0.02)
    elif isinstance(m, nn.BatchNorm2d):
        nn.init.normal_(m.weight, 1.0, 0.02)
        nn.init.zeros_(m.bias)
