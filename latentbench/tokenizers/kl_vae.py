"""The LDM / VA-VAE convolutional KL autoencoder ("VQGAN-KL"), from paper scale to the CPU demo.

Architecture exactly as spec models.md §3.1 (reference: LightningDiT
``vavae/ldm/modules/diffusionmodules/model.py`` Encoder/Decoder and
``vavae/ldm/models/autoencoder.py`` AutoencoderKL, which are the LDM modules). Parameter
names follow the LDM state-dict layout (``encoder.down.0.block.1.norm1.weight`` ...,
``quant_conv``, ``post_quant_conv``) so released LDM-format checkpoints (SD-VAE f8d4, IN-VAE,
VA-VAE f16d32/d64) load into :class:`AutoencoderKL` without key mapping.

The autoencoder works on images in [-1, 1]; :class:`ConvKLTokenizer` is the
:class:`~latentbench.tokenizers.base.Tokenizer` wrapper that takes and returns the suite's
[0, 1] images.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from latentbench.tokenizers import register_family
from latentbench.tokenizers.kl_base import (  # noqa: F401  (count_parameters: re-exported for its tests)
    KLAutoencoder,
    KLTokenizer,
    count_parameters,
    resolve_preset,
    validated_arch,
)
from latentbench.tokenizers.posterior import LOGVAR_MAX, LOGVAR_MIN, DiagonalGaussian  # noqa: F401


@dataclass(frozen=True)
class ArchConfig:
    """Encoder/decoder hyper-parameters (LDM ``ddconfig`` plus ``embed_dim``)."""

    ch: int = 128
    ch_mult: tuple[int, ...] = (1, 1, 2, 2, 4)
    num_res_blocks: int = 2
    attn_resolutions: tuple[int, ...] = (16,)
    z_channels: int = 32
    embed_dim: int = 32
    resolution: int = 256
    in_channels: int = 3
    out_ch: int = 3
    dropout: float = 0.0
    norm_groups: int = 32

    def __post_init__(self) -> None:
        object.__setattr__(self, "ch_mult", tuple(int(m) for m in self.ch_mult))
        object.__setattr__(self, "attn_resolutions", tuple(int(r) for r in self.attn_resolutions))
        for name in ("ch", "num_res_blocks", "z_channels", "embed_dim", "resolution", "norm_groups"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"arch.{name} must be a positive integer, got {getattr(self, name)!r}")
        if not self.ch_mult:
            raise ValueError("arch.ch_mult must list at least one level")
        if self.resolution % self.downsample_factor:
            raise ValueError(
                f"arch.resolution {self.resolution} is not divisible by the downsampling factor {self.downsample_factor}"
            )
        for c in {self.ch * m for m in self.ch_mult}:
            if c % self.norm_groups:
                raise ValueError(f"arch: channel count {c} is not divisible by norm_groups {self.norm_groups}")

    @property
    def downsample_factor(self) -> int:
        return 2 ** (len(self.ch_mult) - 1)

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        side = self.resolution // self.downsample_factor
        return (self.embed_dim, side, side)

    def with_latent_channels(self, c: int) -> ArchConfig:
        """The same architecture with ``c`` latent channels (``z_channels`` = ``embed_dim``)."""
        return replace(self, z_channels=c, embed_dim=c)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["ch_mult"] = list(self.ch_mult)
        d["attn_resolutions"] = list(self.attn_resolutions)
        return d


# Named architectures. f16d32/f16d64: spec models.md §3.1 (VA-VAE / IN-VAE, 69.84 M / 70.29 M).
# f8d4: SD-VAE layout (spec §2.2/§2.4). f16d32_s: the "S" small-compute tier (spec §3.4, ch 64).
# demo_ch32: spec §4 exactly — ch 32, ch_mult (1,2,2) = f4, attention at resolution 8, z = 4
# -> 4x8x8 at 32 px, 2 res blocks, 1.37 M parameters.
# demo: the default of the 15-minute CPU demo: the same layout at ch 16 with 1 res block
# (0.26 M). Measured on one CPU thread, batch 32 of 32x32 images, forward+backward of the
# autoencoder alone: 0.58 s at ch 32 / 1 block, 0.19 s at ch 16 / 1 block; equal-step
# reconstruction was nearly the same (val MSE 0.023 vs 0.024 after 400 steps), so the
# narrow model trains ~3x more steps in the demo's ~60 s per tokenizer.
# Group norm: LDM's 32 groups on 16 or 32 channels is per-channel (instance) normalisation,
# which erases each image's channel means right before ``conv_out``; it learned far slower
# (val MSE 0.049 vs 0.032 after 170 steps). The demo presets keep paper scale's 4 channels
# per group at the widest level (128 / 32) instead.
ARCH_PRESETS: dict[str, ArchConfig] = {
    "f16d32": ArchConfig(),
    "f16d64": ArchConfig(z_channels=64, embed_dim=64),
    "f16d32_s": ArchConfig(ch=64),
    "f8d4": ArchConfig(ch_mult=(1, 2, 4, 4), attn_resolutions=(), z_channels=4, embed_dim=4),
    "demo_ch32": ArchConfig(
        ch=32,
        ch_mult=(1, 2, 2),
        num_res_blocks=2,
        attn_resolutions=(8,),
        z_channels=4,
        embed_dim=4,
        resolution=32,
        norm_groups=8,
    ),
}
ARCH_PRESETS["demo"] = replace(ARCH_PRESETS["demo_ch32"], ch=16, num_res_blocks=1, norm_groups=4)
ARCH_PRESETS["demo_d8"] = replace(ARCH_PRESETS["demo"], z_channels=8, embed_dim=8)


def resolve_arch(arch: str | dict | ArchConfig) -> ArchConfig:
    """A conv preset name, an :class:`ArchConfig`, or a dict of fields (optionally ``preset`` + overrides)."""
    return resolve_preset(arch, ArchConfig, ARCH_PRESETS)


def _norm(channels: int, groups: int) -> nn.GroupNorm:
    # LDM ``Normalize``: GroupNorm(32 groups, eps 1e-6, affine).
    return nn.GroupNorm(num_groups=groups, num_channels=channels, eps=1e-6, affine=True)


class ResnetBlock(nn.Module):
    """GN-SiLU-Conv3x3-GN-SiLU-Dropout-Conv3x3 + skip (1x1 ``nin_shortcut`` when widths differ)."""

    def __init__(self, c_in: int, c_out: int, dropout: float, groups: int) -> None:
        super().__init__()
        self.norm1 = _norm(c_in, groups)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1)
        self.norm2 = _norm(c_out, groups)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1)
        self.nin_shortcut = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        skip = x if self.nin_shortcut is None else self.nin_shortcut(x)
        return skip + h


class AttnBlock(nn.Module):
    """Single-head self-attention over all h*w positions, 1x1 q/k/v/proj, residual (LDM AttnBlock)."""

    def __init__(self, channels: int, groups: int) -> None:
        super().__init__()
        self.norm = _norm(channels, groups)
        self.q = nn.Conv2d(channels, channels, 1)
        self.k = nn.Conv2d(channels, channels, 1)
        self.v = nn.Conv2d(channels, channels, 1)
        self.proj_out = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        hn = self.norm(x)
        q = self.q(hn).reshape(b, c, h * w).transpose(1, 2)  # b, hw, c
        k = self.k(hn).reshape(b, c, h * w).transpose(1, 2)
        v = self.v(hn).reshape(b, c, h * w).transpose(1, 2)
        out = F.scaled_dot_product_attention(q, k, v)  # softmax(q k^T / sqrt(c)) v, as LDM
        return x + self.proj_out(out.transpose(1, 2).reshape(b, c, h, w))


class Downsample(nn.Module):
    """Pad (0,1,0,1) with zeros, then Conv3x3 stride 2 (LDM: asymmetric padding)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.pad(x, (0, 1, 0, 1), mode="constant", value=0.0))


class Upsample(nn.Module):
    """Nearest x2, then Conv3x3."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class _Level(nn.Module):
    """One resolution level: ``block`` (ResnetBlocks), ``attn`` (empty or one per block), resampler."""

    def __init__(self) -> None:
        super().__init__()
        self.block = nn.ModuleList()
        self.attn = nn.ModuleList()

    def run_blocks(self, h: torch.Tensor) -> torch.Tensor:
        for i, block in enumerate(self.block):
            h = block(h)
            if len(self.attn):
                h = self.attn[i](h)
        return h


class _Mid(nn.Module):
    """Res - Attn - Res at the lowest resolution."""

    def __init__(self, channels: int, dropout: float, groups: int) -> None:
        super().__init__()
        self.block_1 = ResnetBlock(channels, channels, dropout, groups)
        self.attn_1 = AttnBlock(channels, groups)
        self.block_2 = ResnetBlock(channels, channels, dropout, groups)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.block_2(self.attn_1(self.block_1(h)))


class Encoder(nn.Module):
    """x (in_channels) -> 2*z_channels moments at 1/downsample_factor resolution (LDM Encoder)."""

    def __init__(self, cfg: ArchConfig) -> None:
        super().__init__()
        g = cfg.norm_groups
        self.conv_in = nn.Conv2d(cfg.in_channels, cfg.ch, 3, padding=1)
        self.down = nn.ModuleList()
        in_mult = (1, *cfg.ch_mult)
        res = cfg.resolution
        c = cfg.ch
        for level, mult in enumerate(cfg.ch_mult):
            lv = _Level()
            c = cfg.ch * in_mult[level]
            for _ in range(cfg.num_res_blocks):
                lv.block.append(ResnetBlock(c, cfg.ch * mult, cfg.dropout, g))
                c = cfg.ch * mult
                # Attention is placed by the *construction* resolution, as in LDM.
                if res in cfg.attn_resolutions:
                    lv.attn.append(AttnBlock(c, g))
            if level != len(cfg.ch_mult) - 1:
                lv.downsample = Downsample(c)
                res //= 2
            self.down.append(lv)
        self.mid = _Mid(c, cfg.dropout, g)
        self.norm_out = _norm(c, g)
        self.conv_out = nn.Conv2d(c, 2 * cfg.z_channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv_in(x)
        for lv in self.down:
            h = lv.run_blocks(h)
            if hasattr(lv, "downsample"):
                h = lv.downsample(h)
        h = self.mid(h)
        return self.conv_out(F.silu(self.norm_out(h)))


class Decoder(nn.Module):
    """z (z_channels) -> image (out_ch); num_res_blocks + 1 blocks per level (LDM Decoder)."""

    def __init__(self, cfg: ArchConfig) -> None:
        super().__init__()
        g = cfg.norm_groups
        levels = len(cfg.ch_mult)
        c = cfg.ch * cfg.ch_mult[-1]
        res = cfg.resolution // cfg.downsample_factor
        self.conv_in = nn.Conv2d(cfg.z_channels, c, 3, padding=1)
        self.mid = _Mid(c, cfg.dropout, g)
        up: list[_Level] = []
        for level in reversed(range(levels)):
            lv = _Level()
            for _ in range(cfg.num_res_blocks + 1):
                lv.block.append(ResnetBlock(c, cfg.ch * cfg.ch_mult[level], cfg.dropout, g))
                c = cfg.ch * cfg.ch_mult[level]
                if res in cfg.attn_resolutions:
                    lv.attn.append(AttnBlock(c, g))
            if level != 0:
                lv.upsample = Upsample(c)
                res *= 2
            up.insert(0, lv)  # stored low-index = high resolution, as LDM's ``self.up``
        self.up = nn.ModuleList(up)
        self.norm_out = _norm(c, g)
        self.conv_out = nn.Conv2d(c, cfg.out_ch, 3, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.mid(self.conv_in(z))
        for lv in reversed(self.up):
            h = lv.run_blocks(h)
            if hasattr(lv, "upsample"):
                h = lv.upsample(h)
        return self.conv_out(F.silu(self.norm_out(h)))


class AutoencoderKL(KLAutoencoder):
    """Encoder -> quant_conv (2z -> 2*embed) -> posterior; post_quant_conv (embed -> z) -> Decoder.

    Works on images in [-1, 1] (spec models.md §2.4).
    """

    def __init__(self, cfg: ArchConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.encoder = Encoder(cfg)
        self.decoder = Decoder(cfg)
        self.quant_conv = nn.Conv2d(2 * cfg.z_channels, 2 * cfg.embed_dim, 1)
        self.post_quant_conv = nn.Conv2d(cfg.embed_dim, cfg.z_channels, 1)

    def encode(self, x: torch.Tensor) -> DiagonalGaussian:
        return DiagonalGaussian(self.quant_conv(self.encoder(x)))

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.post_quant_conv(z))

    def last_layers(self) -> tuple[nn.Module, nn.Module]:
        """(encoder, decoder) output layers: ``encoder.conv_out``, ``decoder.conv_out`` (spec §3.3)."""
        return self.encoder.conv_out, self.decoder.conv_out


class ConvKLTokenizer(KLTokenizer):
    """The trainable conv KL-VAE (spec models.md §3.1) as a :class:`Tokenizer`."""

    def __init__(self, arch: str | dict | ArchConfig = "demo") -> None:
        arch = resolve_arch(arch)
        super().__init__(arch, AutoencoderKL(arch))


@register_family("conv_kl")
def build_conv_kl(cfg: dict[str, Any]) -> ConvKLTokenizer:
    """Registry builder for ``family: conv_kl`` (``arch`` defaults to ``"demo"``, the schema's default)."""
    return ConvKLTokenizer(validated_arch(cfg, resolve_arch))
