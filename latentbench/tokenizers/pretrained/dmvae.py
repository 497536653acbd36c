"""C2: DM-VAE ``VAE(z_channels=32, model_size="large")`` (spec zoo.md §2 C2, §3 row ``dmvae``).

Written from sen-ye/dmvae @d2be8e0 ``models/vae.py`` and ``models/flux_ae.py``. Encoder: timm
``vit_large_patch14_dinov2.lvd142m`` re-patched to 16 px at 256 px (built here with
``pretrained=False``; upstream downloads DINOv2 at construction), fed ImageNet-normalised
images (upstream maps its [-1, 1] input back to [0, 1] with a ``Denormalize(0.5, 0.5)`` and then
``Normalize(ImageNet)``; both keep their constants as persistent buffers, so they are in the
file); its 256 patch tokens go through ``bottle_neck`` = Linear(1024, 2048)-SiLU-Linear(2048, 32)
to the deterministic latent (256 tokens x 32). Decoder: the FLUX / LDM conv decoder (ch 128,
ch_mult (1, 2, 4, 4), 2 res blocks, no level attention, mid attention) whose ``conv_in`` is
replaced (``Decoder.post_init``) by nearest x2 + conv3x3 on the 32 channels, then conv3x3
32 -> 512: tokens laid out as a 16x16 grid (row-major) become a 32x32 map, decoded to 256 px
in [-1, 1]. The FLUX decoder has the same module names as the project's LDM
:class:`~latentbench.tokenizers.kl_vae.Decoder`, which is reused here.

Latent normalisation (``native_normalize``, DM-VAE README and ``sample_50k.py``):
``(z - 0.0685) * 0.1763``; inverse ``z / 0.1763 + 0.0685``.

Parity (run once against upstream ``VAE`` from the snapshot, not vendored; full decoder, a
one-block DINOv2-L encoder, 256 px, ``vae.pt`` layout): latents identical (max |diff| 0),
decoded image max |diff| 1.9e-6.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import timm
import torch
from torch import nn

from latentbench.tokenizers.base import WeightRef, check_images
from latentbench.tokenizers.kl_vae import ArchConfig, Decoder, Upsample
from latentbench.tokenizers.pretrained.base import (
    PretrainedTokenizer,
    ZooRow,
    check_latent_shape,
    strict_load,
)
from latentbench.tokenizers.pretrained.checkpoints import find_file
from latentbench.weights_io import read_state

CHECKPOINT = "dmvae-vae.pt"  # the repo's ``vae.pt`` under its manifest name
LATENT_MEAN, LATENT_SCALE = 0.0685, 0.1763  # DM-VAE README: latent_mean, latent_scale
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)

ROWS: tuple[ZooRow, ...] = (
    ZooRow(
        name="dmvae",
        arch="C2",
        latent_shape=(256, 32),
        encode="deterministic",
        aliases=("DM-VAE",),
        config={
            "encoder": "vit_large_patch14_dinov2.lvd142m",
            "encoder_kwargs": {},
            "image_size": 256,
            "patch_size": 16,
            "z_channels": 32,
            "hidden": 2048,
            "decoder": {"ch": 128, "ch_mult": (1, 2, 4, 4), "num_res_blocks": 2, "norm_groups": 32},
            "state_key": "vae_wo_ddp",  # iFID loads vae_wo_ddp; the file also holds vae_ema
        },
        files=("dmvae-vae",),
        norm=f"(z - {LATENT_MEAN}) * {LATENT_SCALE}",
        params=355_205_443,
        unverified=("vae.pt read through sen-ye/dmvae's loader code (keys vae_wo_ddp / vae_ema); not opened here",),
    ),
)


class _ChannelAffine(nn.Module):
    """``(x - mean) / std`` (or its inverse) per channel with persistent ``mean``/``std`` buffers."""

    def __init__(self, mean: tuple[float, ...], std: tuple[float, ...], inverse: bool) -> None:
        super().__init__()
        self.inverse = inverse
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.std + self.mean if self.inverse else (x - self.mean) / self.std


class DinoEncoder(nn.Module):
    """[-1, 1] images -> DINOv2 patch tokens (B, (H/p)(W/p), width); names as upstream ``DINOEncoder``."""

    def __init__(self, name: str, image_size: int, patch_size: int, **kwargs: Any) -> None:
        super().__init__()
        self.de_scale = _ChannelAffine((0.5, 0.5, 0.5), (0.5, 0.5, 0.5), inverse=True)
        self.scale = _ChannelAffine(IMAGENET_MEAN, IMAGENET_STD, inverse=False)
        self.model = timm.create_model(name, pretrained=False, img_size=image_size, patch_size=patch_size, **kwargs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.model.forward_features(self.scale(self.de_scale(x)))
        return tokens[:, self.model.num_prefix_tokens :]


class _Bottleneck(nn.Module):
    """``mlp`` = Linear(width, hidden) - SiLU - Linear(hidden, z)."""

    def __init__(self, width: int, hidden: int, z: int) -> None:
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(width, hidden), nn.SiLU(), nn.Linear(hidden, z))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mlp(x)


class DMVAE(nn.Module):
    """``encoder`` + ``bottle_neck`` + ``decoder`` (the checkpoint's top-level names)."""

    def __init__(self, cfg: dict[str, Any]) -> None:
        super().__init__()
        z = cfg["z_channels"]
        self.encoder = DinoEncoder(cfg["encoder"], cfg["image_size"], cfg["patch_size"], **cfg["encoder_kwargs"])
        self.bottle_neck = _Bottleneck(self.encoder.model.embed_dim, cfg["hidden"], z)
        dec = ArchConfig(
            **cfg["decoder"], attn_resolutions=(), z_channels=16, embed_dim=16, resolution=cfg["image_size"]
        )
        self.decoder = Decoder(dec)
        # flux_ae Decoder.post_init: the latent grid is upsampled once before the first conv
        self.decoder.conv_in = nn.Sequential(Upsample(z), nn.Conv2d(z, dec.ch * dec.ch_mult[-1], 3, padding=1))
        _init_weights(self.bottle_neck)
        _init_weights(self.decoder)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """[-1, 1] images -> (B, L, z) tokens."""
        return self.bottle_neck(self.encoder(x))

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """(B, L, z) tokens (a square, row-major grid) -> [-1, 1] images."""
        b, n, c = z.shape
        side = math.isqrt(n)
        if side * side != n:
            raise ValueError(f"dmvae: {n} latent tokens do not form a square grid")
        return self.decoder(z.transpose(1, 2).reshape(b, c, side, side))


def _init_weights(module: nn.Module, std: float = 0.02) -> None:
    # models/init_param.py init_weights(conv_std_or_gain=0.02): trunc-normal weights, zero biases
    for m in module.modules():
        if isinstance(m, (nn.Linear, nn.Conv2d)):
            nn.init.trunc_normal_(m.weight, std=std)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


class DMVAETokenizer(PretrainedTokenizer):
    """Adapter: [0, 1] images <-> (B, 256, 32) DM-VAE tokens (deterministic)."""

    is_1d = True
    posterior = "deterministic"

    def __init__(self, row: ZooRow, net: DMVAE) -> None:
        super().__init__()
        self.row = row
        self.net = net
        grid = row.config["image_size"] // row.config["patch_size"]
        self.latent_shape = (grid * grid, row.config["z_channels"])
        self.native_norm = row.norm
        self.weights = (WeightRef("sen-ye/dmvae", "vae.pt", "none stated (no licence file)"),)

    def encode_moments(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        check_images(x)
        z = self.net.encode(x * 2 - 1)
        return z, torch.zeros_like(z)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.net.decode(z) * 0.5 + 0.5

    def native_normalize(self, z: torch.Tensor) -> torch.Tensor:
        return (z - LATENT_MEAN) * LATENT_SCALE

    def native_denormalize(self, z: torch.Tensor) -> torch.Tensor:
        return z / LATENT_SCALE + LATENT_MEAN


def build(row: ZooRow, weights: Path | None) -> DMVAETokenizer:
    """DM-VAE adapter of ``row``: random init, or ``vae.pt`` loaded strictly from ``row.config['state_key']``."""
    if weights is None:
        tok = DMVAETokenizer(row, DMVAE(row.config))
    else:
        path = find_file(weights, (CHECKPOINT, "vae.pt"), "DM-VAE checkpoint") if Path(weights).is_dir() else Path(weights)
        with torch.device("meta"):
            net = DMVAE(row.config)
        strict_load(net, read_state(path, row.config["state_key"]), path)
        tok = DMVAETokenizer(row, net)
    check_latent_shape(tok, tok.latent_shape, weights)
    return tok.eval()
