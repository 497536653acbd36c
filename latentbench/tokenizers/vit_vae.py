"""The transformer KL autoencoder of the diffusability study's "Trans." family (``trans_kl``).

The paper does not give the architecture (spec metrics-diffusability.md §11.1, models.md §3.2:
[ASSUMPTION]). Built here as the spec's default: a ViT-B/16 encoder and a ViT-B/16 decoder
(12 pre-LN blocks, width 768, 12 heads, MLP 4x, learned absolute position embeddings, no
class token). The encoder's patch tokens go through a final LayerNorm and ``Linear(768 -> 2C)``
to the posterior moments (mean || logvar), laid out ``(B, 2C, H/p, W/p)`` like the conv
family's so every metric, regulariser and backbone is shared; the decoder maps each latent
position with ``Linear(C -> 768)``, runs its blocks, and ``Linear(768 -> p*p*3)`` + unpatchify
gives the image (MAE ``unpatchify`` order). This is the plain ViT variant of §3.2, not the
DeTok-like one (RMSNorm / SwiGLU / RoPE).

Block layout and initialisation follow timm ``vision_transformer.py`` (``Block``: LN ->
attention with qkv bias -> residual, LN -> Linear-GELU-Linear -> residual, LayerNorm eps 1e-6;
truncated-normal std 0.02 for Linear weights and position embeddings, zero biases). A
learned ``mask_token`` (normal std 0.02, as MAE) replaces masked input patch tokens: the
``mae`` regulariser's MAETok-style encoder masking (spec §11.2). Position embeddings are
resampled bicubically when a grid differs from the native one (timm
``resample_abs_pos_embed``), so EQ-VAE's downscaled inputs and latents also run.

Images are in [-1, 1] here; :class:`TransKLTokenizer` takes and returns the suite's [0, 1].
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from latentbench.tokenizers import register_family
from latentbench.tokenizers.kl_base import (
    KLAutoencoder,
    KLTokenizer,
    resolve_preset,
    validated_arch,
)
from latentbench.tokenizers.posterior import DiagonalGaussian


@dataclass(frozen=True)
class ViTArchConfig:
    """Encoder/decoder hyper-parameters of the ViT autoencoder (both halves share them)."""

    patch_size: int = 16
    width: int = 768
    depth: int = 12
    heads: int = 12
    mlp_ratio: float = 4.0
    z_channels: int = 32
    resolution: int = 256

    def __post_init__(self) -> None:
        for name in ("patch_size", "width", "depth", "heads", "z_channels", "resolution"):
            v, least = getattr(self, name), 0 if name == "depth" else 1  # depth 0: a per-patch linear AE
            if isinstance(v, bool) or not isinstance(v, int) or v < least:
                raise ValueError(f"arch.{name} must be an integer >= {least}, got {v!r}")
        if self.width % self.heads:
            raise ValueError(f"arch.width {self.width} is not divisible by arch.heads {self.heads}")
        if self.resolution % self.patch_size:
            raise ValueError(f"arch.resolution {self.resolution} is not divisible by arch.patch_size {self.patch_size}")
        if not self.mlp_ratio > 0:
            raise ValueError(f"arch.mlp_ratio must be > 0, got {self.mlp_ratio!r}")

    @property
    def embed_dim(self) -> int:
        """Latent channels C."""
        return self.z_channels

    @property
    def downsample_factor(self) -> int:
        """Pixels per latent position along one side (the patch size)."""
        return self.patch_size

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        side = self.resolution // self.patch_size
        return (self.z_channels, side, side)

    def with_latent_channels(self, c: int) -> ViTArchConfig:
        """The same architecture with ``c`` latent channels."""
        return replace(self, z_channels=c)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# f16d32: spec models.md §3.2 (ViT-B/16 pair, 85.8 M per trunk at 256 px, latent 32x16x16).
# demo: the CPU demo's size, the same 4x8x8 latent as the conv demo at 32 px (patch 4, so 64
# tokens), width 64, 2 blocks per half, 2 heads of 32 (0.22 M parameters in all).
VIT_PRESETS: dict[str, ViTArchConfig] = {
    "f16d32": ViTArchConfig(),
    "demo": ViTArchConfig(patch_size=4, width=64, depth=2, heads=2, z_channels=4, resolution=32),
}


def resolve_vit_arch(arch: str | dict | ViTArchConfig) -> ViTArchConfig:
    """A ViT preset name, a :class:`ViTArchConfig`, or a dict of fields (optionally ``preset``)."""
    return resolve_preset(arch, ViTArchConfig, VIT_PRESETS)


class Attention(nn.Module):
    """Multi-head self-attention with a fused qkv projection (bias on) and an output projection."""

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v)  # softmax(q k^T / sqrt(d_head)) v
        return self.proj(out.transpose(1, 2).reshape(b, n, d))


class Block(nn.Module):
    """Pre-LN transformer block: x + Attn(LN(x)), then x + MLP(LN(x)) (timm ViT ``Block``)."""

    def __init__(self, width: int, heads: int, mlp_ratio: float) -> None:
        super().__init__()
        hidden = int(width * mlp_ratio)
        self.norm1 = nn.LayerNorm(width, eps=1e-6)
        self.attn = Attention(width, heads)
        self.norm2 = nn.LayerNorm(width, eps=1e-6)
        self.mlp = nn.Sequential(nn.Linear(width, hidden), nn.GELU(), nn.Linear(hidden, width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class _Trunk(nn.Module):
    """Learned absolute position embedding + blocks + final LayerNorm over a token grid."""

    def __init__(self, cfg: ViTArchConfig) -> None:
        super().__init__()
        self.grid = cfg.resolution // cfg.patch_size
        self.pos_embed = nn.Parameter(torch.zeros(1, self.grid * self.grid, cfg.width))
        self.blocks = nn.ModuleList(Block(cfg.width, cfg.heads, cfg.mlp_ratio) for _ in range(cfg.depth))
        self.norm = nn.LayerNorm(cfg.width, eps=1e-6)

    def position_embedding(self, h: int, w: int) -> torch.Tensor:
        """[1, h*w, width]; bicubically resampled from the native grid when (h, w) differs."""
        if (h, w) == (self.grid, self.grid):
            return self.pos_embed
        pe = self.pos_embed.reshape(1, self.grid, self.grid, -1).permute(0, 3, 1, 2)
        pe = F.interpolate(pe, size=(h, w), mode="bicubic", align_corners=False)
        return pe.permute(0, 2, 3, 1).reshape(1, h * w, -1)

    def forward(self, tokens: torch.Tensor, h: int, w: int) -> torch.Tensor:
        x = tokens + self.position_embedding(h, w)
        for block in self.blocks:
            x = block(x)
        return self.norm(x)


class ViTEncoder(nn.Module):
    """Image [-1, 1] -> patch tokens (row-major) -> trunk -> ``head`` Linear(width -> 2C) moments."""

    def __init__(self, cfg: ViTArchConfig) -> None:
        super().__init__()
        self.patch_size = cfg.patch_size
        self.patch_embed = nn.Conv2d(3, cfg.width, cfg.patch_size, stride=cfg.patch_size)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, cfg.width))
        self.trunk = _Trunk(cfg)
        self.head = nn.Linear(cfg.width, 2 * cfg.z_channels)

    def forward(self, x: torch.Tensor, token_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Moments ``(B, 2C, H/p, W/p)``; ``token_mask`` ``(B, H/p, W/p)`` bool replaces those patch tokens."""
        tokens = self.patch_embed(x)  # B, width, h, w
        b, _, h, w = tokens.shape
        tokens = tokens.flatten(2).transpose(1, 2)  # B, h*w, width (row-major)
        if token_mask is not None:
            mask = token_mask.to(tokens.device).reshape(b, h * w, 1)
            tokens = torch.where(mask, self.mask_token.to(tokens.dtype), tokens)
        moments = self.head(self.trunk(tokens, h, w))  # B, h*w, 2C
        return moments.transpose(1, 2).reshape(b, -1, h, w)


class ViTDecoder(nn.Module):
    """Latent ``(B, C, h, w)`` -> Linear(C -> width) per position -> trunk -> ``head`` -> pixels."""

    def __init__(self, cfg: ViTArchConfig) -> None:
        super().__init__()
        self.patch_size = cfg.patch_size
        self.embed = nn.Linear(cfg.z_channels, cfg.width)
        self.trunk = _Trunk(cfg)
        self.head = nn.Linear(cfg.width, cfg.patch_size * cfg.patch_size * 3)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        b, _, h, w = z.shape
        p = self.patch_size
        patches = self.head(self.trunk(self.embed(z.flatten(2).transpose(1, 2)), h, w))  # B, h*w, p*p*3
        # MAE ``unpatchify``: (h, w, p, q, c) -> (c, h*p, w*q).
        return patches.reshape(b, h, w, p, p, 3).permute(0, 5, 1, 3, 2, 4).reshape(b, 3, h * p, w * p)


class ViTAutoencoderKL(KLAutoencoder):
    """ViT encoder -> diagonal Gaussian posterior -> ViT decoder, on images in [-1, 1]."""

    def __init__(self, cfg: ViTArchConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.encoder = ViTEncoder(cfg)
        self.decoder = ViTDecoder(cfg)
        self.apply(_init_weights)
        nn.init.trunc_normal_(self.encoder.trunk.pos_embed, std=0.02)
        nn.init.trunc_normal_(self.decoder.trunk.pos_embed, std=0.02)
        nn.init.normal_(self.encoder.mask_token, std=0.02)

    def encode(self, x: torch.Tensor, token_mask: torch.Tensor | None = None) -> DiagonalGaussian:
        return DiagonalGaussian(self.encoder(x, token_mask))

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(z)

    def last_layers(self) -> tuple[nn.Module, nn.Module]:
        """(encoder, decoder) output layers: the moment head and the pixel head (the conv family's ``conv_out``)."""
        return self.encoder.head, self.decoder.head


def _init_weights(module: nn.Module) -> None:
    # timm vision_transformer ``init_weights_vit_timm``: trunc-normal(0.02) Linear weights, zero biases.
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02)
        nn.init.zeros_(module.bias)


class TransKLTokenizer(KLTokenizer):
    """The trainable ViT KL autoencoder (spec models.md §3.2) as a :class:`Tokenizer`."""

    masks_tokens = True  # the ``mae`` regulariser masks encoder input tokens (MAETok), not pixels

    def __init__(self, arch: str | dict | ViTArchConfig = "demo") -> None:
        arch = resolve_vit_arch(arch)
        super().__init__(arch, ViTAutoencoderKL(arch))


@register_family("trans_kl")
def build_trans_kl(cfg: dict[str, Any]) -> TransKLTokenizer:
    """Registry builder for ``family: trans_kl`` (``arch`` defaults to ``"demo"``)."""
    return TransKLTokenizer(validated_arch(cfg, resolve_vit_arch))
