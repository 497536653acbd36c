"""C5 SVG and C6 SVG-T2I: frozen DINOv3 features (+ a residual ViT) decoded by an LDM conv decoder
(spec zoo.md §2 C5/C6, §4.7-4.8, §5 "batch-dependent encoders"; models.md §2.3).

Encoder (shiml20/SVG autoencoder/ldm/models/dino_decoder.py ``DinoDecoder.encode``; KlingTeam/SVG-T2I
autoencoder/ldm/models/dinov3_decoder_imagenet.py): the ImageNet-normalised 256 px image goes
through DINOv3 ViT-S/16+ (timm ``vit_small_plus_patch16_dinov3``, built offline) whose normed patch
tokens (384 ch) are the latent; with a residual branch a small ViT adds 8 channels, rescaled to the
DINO features' scalar mean / std **over the whole batch** (``match_distribution``), so a latent
depends on the other images it is encoded with. This adapter therefore encodes in chunks of the
fixed, recorded :attr:`SVGTokenizer.encode_batch_size` (default 1: every image's statistics are its
own, so a latent never depends on the caller's batch); a short last chunk is padded by repeating
its own images. Decoder: the project's LDM ``Decoder`` (z = C, no post_quant_conv), output [-1, 1].

Residual branches: SVG uses a torchvision ``VisionTransformer`` (256 px, patch 16, 6 layers, 8 heads,
384, MLP 1536) with the classifier replaced by 384 -> 384 -> 8; SVG-T2I "R" a rope-mixed DeiT-S/16
with LayerScale (SVG-T2I autoencoder/ldm/rope_vit/vit_rope.py ``rope_mixed_deit_small_patch16_LS``,
built at img_size 1024) with the same 8-d head. SVG-T2I's decoder puts attention at the lowest
resolution level whatever ``attn_resolutions`` says (SVG-T2I autoencoder/ldm/modules/
diffusionmodules/model.py line 518: ``if i_level == (self.num_resolutions - 1)``), which at 256 px
is the LDM ``attn_resolutions=(16,)`` layout.

Parity (2026-12-03, random weights): the timm DINOv3 ViT-S/16+ loaded through
:func:`dinov3_to_timm` from Meta's ``dinov3_vits16plus`` (SVG-T2I's vendored dinov3 @03f14b6) gives
the same ``x_norm_patchtokens`` (max |diff| 0.0); :class:`RopeMixedViT` against
``rope_vit_models`` (vit_rope.py, 2 blocks, upstream state dict loaded strictly): max |diff| 4e-7.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import timm
import torch
from timm.layers import Mlp, PatchEmbed
from timm.layers.pos_embed_sincos import RotaryEmbeddingDinoV3
from timm.models.eva import checkpoint_filter_fn
from torch import nn
from torchvision.models.vision_transformer import VisionTransformer

from latentbench.tokenizers.base import check_images
from latentbench.tokenizers.kl_vae import ArchConfig, Decoder
from latentbench.tokenizers.pretrained._common import (
    manifest_file,
    read_state,
    to_imagenet,
    weight_path,
    zero_std,
)
from latentbench.tokenizers.pretrained.base import (
    PretrainedTokenizer,
    WeightsError,
    ZooRow,
    check_latent_shape,
    strict_load,
)

OUTNORM_EPS = 1e-6  # match_distribution(eps=1e-6), SVG dino_decoder.py


def match_distribution(h: torch.Tensor, r: torch.Tensor, eps: float = OUTNORM_EPS) -> torch.Tensor:
    """Rescale residual features ``r`` (B, C2, N) to the DINO features ``h`` (B, C1, N): each side's
    scalar mean = mean over channels of the per-channel batch means, scalar std = mean over channels
    of the per-channel (unbiased) stds over batch and tokens (SVG dino_decoder.py ``match_distribution``)."""
    mean_h, std_h = h.mean(dim=(0, 2)).mean(), h.std(dim=(0, 2)).mean()
    mean_r, std_r = r.mean(dim=(0, 2)).mean(), r.std(dim=(0, 2)).mean()
    return (r - mean_r) / (std_r + eps) * std_h + mean_h


def tv_residual(image_size: int = 256, hidden: int = 384, layers: int = 6, heads: int = 8, mlp: int = 1536, out_dim: int = 8) -> VisionTransformer:
    """SVG's residual ViT: torchvision ``VisionTransformer`` with an MLP head to ``out_dim`` (SVG
    dino_decoder.py ``create_small_vit_s``; dropout 0.1 is inactive in eval mode)."""
    vit = VisionTransformer(
        image_size=image_size, patch_size=16, num_layers=layers, num_heads=heads, hidden_dim=hidden, mlp_dim=mlp,
        num_classes=out_dim, dropout=0.1, attention_dropout=0.1,
    )  # fmt: skip
    vit.heads = nn.Sequential(nn.Linear(hidden, hidden), nn.GELU(), nn.Linear(hidden, out_dim))
    return vit


def tv_residual_features(vit: VisionTransformer, x: torch.Tensor) -> torch.Tensor:
    """Patch-token head outputs (B, out_dim, N) of :func:`tv_residual` (CLS token dropped)."""
    t = vit._process_input(x)
    t = torch.cat([vit.class_token.expand(t.shape[0], -1, -1), t], dim=1)
    return vit.heads(vit.encoder(t)[:, 1:]).transpose(1, 2)


class _RopeAttention(nn.Module):
    """Attention with mixed 2-D RoPE on the patch tokens (CLS untouched); pairs of adjacent channels
    rotate by per-head learned angles (vit_rope.py ``RoPEAttention`` / ``apply_rotary_emb``)."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, dim * 3, bias=True)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, angles: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        cos, sin = angles.cos(), angles.sin()  # (heads, n - 1, head_dim / 2)

        def rotate(t: torch.Tensor) -> torch.Tensor:
            body = t[:, :, 1:].float()
            a, bb = body[..., 0::2], body[..., 1::2]
            rot = torch.stack([a * cos - bb * sin, a * sin + bb * cos], dim=-1).flatten(-2)
            return torch.cat([t[:, :, :1], rot.type_as(t)], dim=2)

        out = nn.functional.scaled_dot_product_attention(rotate(q), rotate(k), v)
        return self.proj(out.transpose(1, 2).reshape(b, n, c))


class _LayerScaleBlock(nn.Module):
    """Pre-norm block with LayerScale gammas (DeiT-III ``Layer_scale_init_Block``, SVG-T2I rope_vit/vit.py)."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = _RopeAttention(dim, heads)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), act_layer=nn.GELU)
        self.gamma_1 = nn.Parameter(torch.full((dim,), 1e-4))
        self.gamma_2 = nn.Parameter(torch.full((dim,), 1e-4))

    def forward(self, x: torch.Tensor, angles: torch.Tensor) -> torch.Tensor:
        x = x + self.gamma_1 * self.attn(self.norm1(x), angles)
        return x + self.gamma_2 * self.mlp(self.norm2(x))


def _grid_coords(side_x: int, side_y: int) -> tuple[torch.Tensor, torch.Tensor]:
    t = torch.arange(side_x * side_y, dtype=torch.float32)
    return t % side_x, torch.div(t, side_x, rounding_mode="floor")


class RopeMixedViT(nn.Module):
    """SVG-T2I's residual branch: rope-mixed DeiT-S/16 with LayerScale and an MLP head to ``out_dim``;
    parameter names as the released files (``freqs``, ``freqs_t_x/y`` at ``img_size``, the unused
    1000-class ``head``, the ``heads`` MLP)."""

    def __init__(
        self, dim: int = 384, depth: int = 12, heads: int = 6, mlp_ratio: float = 4.0, img_size: int = 1024,
        out_dim: int = 8, theta: float = 10.0, num_classes: int = 1000,
    ) -> None:  # fmt: skip
        super().__init__()
        self.heads_n = heads
        self.patch_embed = PatchEmbed(img_size=img_size, patch_size=16, in_chans=3, embed_dim=dim, strict_img_size=False)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.blocks = nn.ModuleList(_LayerScaleBlock(dim, heads, mlp_ratio) for _ in range(depth))
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.head = nn.Linear(dim, num_classes)
        # learned per-head frequencies (vit_rope.py init_random_2d_freqs): (2, depth, heads * head_dim / 2)
        head_dim = dim // heads
        mag = 1 / theta ** (torch.arange(0, head_dim, 4)[: head_dim // 4].float() / head_dim)
        ang = torch.rand(depth, heads, 1) * 2 * math.pi
        fx = torch.cat([mag * ang.cos(), mag * (ang + math.pi / 2).cos()], dim=-1)
        fy = torch.cat([mag * ang.sin(), mag * (ang + math.pi / 2).sin()], dim=-1)
        self.freqs = nn.Parameter(torch.stack([fx, fy]).reshape(2, depth, -1))
        tx, ty = _grid_coords(img_size // 16, img_size // 16)
        self.register_buffer("freqs_t_x", tx)
        self.register_buffer("freqs_t_y", ty)
        self.heads = nn.Sequential(nn.Linear(dim, dim), nn.GELU(), nn.Linear(dim, out_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, out_dim, N) head outputs of the patch tokens."""
        side_y, side_x = x.shape[-2] // 16, x.shape[-1] // 16
        t = self.patch_embed(x)
        t = torch.cat([self.cls_token.expand(t.shape[0], -1, -1), t], dim=1)
        tx, ty = _grid_coords(side_x, side_y)
        tx, ty = tx.to(t.device), ty.to(t.device)
        depth = len(self.blocks)
        # angles (depth, heads, N, head_dim / 2) = t_x * f_x + t_y * f_y (vit_rope.py compute_mixed_cis)
        ang = tx[None, :, None] * self.freqs[0][:, None, :] + ty[None, :, None] * self.freqs[1][:, None, :]
        ang = ang.float().reshape(depth, tx.numel(), self.heads_n, -1).permute(0, 2, 1, 3)
        for i, blk in enumerate(self.blocks):
            t = blk(t, ang[i])
        return self.heads(self.norm(t)[:, 1:]).transpose(1, 2)


def bf16_rope_periods(encoder: nn.Module) -> None:
    """Round timm's fp32 DINOv3 RoPE periods through bfloat16 as Meta's released weights store them
    (timm pos_embed_sincos.py ``RotaryEmbeddingDinoV3._compute_periods`` note; zoo.md §4.7)."""
    for m in encoder.modules():
        if isinstance(m, RotaryEmbeddingDinoV3) and m.periods.device.type != "meta":
            with torch.no_grad():
                m.periods.copy_(m.periods.to(torch.bfloat16).float())
            if m.feat_shape is not None and m.pos_embed_cached is not None:
                m._cache_embed(m.feat_shape)


def dinov3_to_timm(state: Mapping[str, torch.Tensor], encoder: nn.Module) -> dict[str, torch.Tensor]:
    """A DINOv3 state dict (Meta's layout, with ``storage_tokens``) in timm's Eva names; Meta's stored
    RoPE periods replace timm's computed ones. timm-layout dicts pass through unchanged."""
    state = dict(state)
    if "storage_tokens" not in state:
        return state
    own = dict(encoder.named_parameters())
    for key in [k for k in state if k.endswith("attn.qkv.bias")]:
        if key.replace("qkv.bias", "q_bias") not in own:
            # timm's bias-free variant drops these: only right when q and v biases are zero (the k
            # bias is masked in DINOv3); otherwise the ``_qkvb`` timm variant is the matching model
            q, _, v = state[key].chunk(3)
            if torch.count_nonzero(q) or torch.count_nonzero(v):
                raise WeightsError(f"{key}: non-zero q/v bias but the timm model has none (use the *_qkvb variant)")
            del state[key]
    periods = state.get("rope_embed.periods")
    out = checkpoint_filter_fn(state, encoder)
    if periods is not None:
        for m in encoder.modules():
            if isinstance(m, RotaryEmbeddingDinoV3) and m.periods.numel() == periods.numel():
                with torch.no_grad():
                    m.periods.copy_(periods.float())
                if m.feat_shape is not None and m.pos_embed_cached is not None:
                    m._cache_embed(m.feat_shape)
    return out


@dataclass(frozen=True)
class SVGConfig:
    """One SVG / SVG-T2I autoencoder (defaults: SVG, zoo.md C5)."""

    dino_model: str = "vit_small_plus_patch16_dinov3"
    dino_kwargs: Mapping[str, Any] = field(default_factory=dict)  # narrow test copies only
    residual: str | None = "vit-s"  # "vit-s" (SVG), "vit-rope-s" (SVG-T2I R) or None (P)
    residual_kwargs: Mapping[str, Any] = field(default_factory=dict)
    residual_dim: int = 8
    use_outnorm: bool = True
    decoder: Mapping[str, Any] = field(default_factory=dict)  # ArchConfig overrides (narrow copies)
    image_size: int = 256
    encode_batch_size: int = 1
    stats: str | None = None  # "svg" (dinov3_sp_stats.pt) or "t2i" (layer patch-token stats)


class SVGTokenizer(PretrainedTokenizer):
    """SVG / SVG-T2I adapter: [0, 1] images <-> (384 [+8], 16, 16) DINOv3 (+ residual) features."""

    posterior = "deterministic"

    def __init__(self, row: ZooRow) -> None:
        super().__init__()
        known = {f.name for f in fields(SVGConfig)}
        cfg = SVGConfig(**{k: v for k, v in dict(row.config).items() if k in known})
        self.row, self.cfg = row, cfg
        self.latent_shape = tuple(row.latent_shape)
        self.native_norm = row.norm
        self.encoder = timm.create_model(cfg.dino_model, pretrained=False, img_size=cfg.image_size, num_classes=0, **dict(cfg.dino_kwargs))
        bf16_rope_periods(self.encoder)
        self.extra_vit: nn.Module | None = None
        if cfg.residual == "vit-s":
            self.extra_vit = tv_residual(cfg.image_size, out_dim=cfg.residual_dim, **dict(cfg.residual_kwargs))
        elif cfg.residual == "vit-rope-s":
            self.extra_vit = RopeMixedViT(out_dim=cfg.residual_dim, **dict(cfg.residual_kwargs))
        elif cfg.residual is not None:
            raise ValueError(f"{row.name}: unknown residual branch {cfg.residual!r}")
        z = self.encoder.embed_dim + (cfg.residual_dim if self.extra_vit is not None else 0)
        arch = ArchConfig(ch_mult=(1, 1, 2, 2, 4), attn_resolutions=(16,), resolution=cfg.image_size)
        arch = ArchConfig(**{**arch.to_dict(), **dict(cfg.decoder), "z_channels": z, "embed_dim": z})
        self.decoder = Decoder(arch)
        self.batch_dependent = self.extra_vit is not None and cfg.use_outnorm
        # the DAG reads this: the chunk size latents are computed in (None: batch-independent model)
        self.encode_batch_size: int | None = int(cfg.encode_batch_size) if self.batch_dependent else None
        if self.encode_batch_size is not None and self.encode_batch_size < 1:
            raise ValueError(f"{row.name}: encode_batch_size must be >= 1, got {self.encode_batch_size}")
        self.latent_mean: torch.Tensor | None = None
        self.latent_std: torch.Tensor | None = None

    def _encode_chunk(self, xn: torch.Tensor) -> torch.Tensor:
        """ImageNet-normalised images -> (B, C, H/16, W/16) features (SVG ``DinoDecoder.encode``)."""
        h = self.encoder.forward_features(xn)[:, self.encoder.num_prefix_tokens :].transpose(1, 2)
        if self.extra_vit is not None:
            if isinstance(self.extra_vit, VisionTransformer):
                r = tv_residual_features(self.extra_vit, xn)
            else:
                r = self.extra_vit(xn)
            if self.cfg.use_outnorm:
                r = match_distribution(h, r)
            h = torch.cat([h, r], dim=1)
        return h.reshape(h.shape[0], h.shape[1], xn.shape[-2] // 16, xn.shape[-1] // 16)

    def encode_moments(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        check_images(x)
        size = self.cfg.image_size
        if tuple(x.shape[-2:]) != (size, size):
            raise ValueError(f"{self.row.name}: expects {size}x{size} images (no resize upstream), got {tuple(x.shape[-2:])}")
        xn = to_imagenet(x)
        if self.encode_batch_size is None:
            return zero_std(self._encode_chunk(xn))
        k, out = self.encode_batch_size, []
        for start in range(0, xn.shape[0], k):
            chunk = xn[start : start + k]
            n = chunk.shape[0]
            if n < k:  # pad with repeats of the chunk's own images so no other image enters
                chunk = chunk[torch.arange(k, device=chunk.device) % n]
            out.append(self._encode_chunk(chunk)[:n])
        return zero_std(torch.cat(out))

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return (self.decoder(z) + 1) / 2

    def _stats(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.latent_mean is None or self.latent_std is None:
            raise ValueError(f"{self.row.name}: native normalisation needs the latent statistics file (build with weights)")
        return self.latent_mean.to(z), self.latent_std.to(z)

    def native_normalize(self, z: torch.Tensor) -> torch.Tensor:
        """Per-channel ``(z - mean) / std`` of the authors' diffusion recipe (SVG train_svg.py,
        SVG-T2I train_svg_t2i.py ``dinov3_sp_mean/std``)."""
        mean, std = self._stats(z)
        return (z - mean) / std

    def native_denormalize(self, z: torch.Tensor) -> torch.Tensor:
        mean, std = self._stats(z)
        return z * std + mean

    # ---- loading released files ----
    def load(self, ckpt: Path, dinov3: Path | None) -> None:
        """The Lightning ``state_dict`` of ``ckpt`` without ``loss.*`` (and the training-only
        ``norm_vit`` / ``mask_token``); DINOv3 from ``encoder.*`` in it or else from ``dinov3``."""
        state = {k: v for k, v in read_state(ckpt, key="state_dict").items() if not k.startswith(("loss.", "norm_vit.", "mask_token"))}
        enc = {k[len("encoder.") :]: v for k, v in state.items() if k.startswith("encoder.")}
        rest = {k: v for k, v in state.items() if not k.startswith("encoder.")}
        source = ckpt
        if not enc:
            if dinov3 is None:
                raise WeightsError(f"{ckpt}: no encoder.* weights inside and no DINOv3 file given")
            enc, source = dict(read_state(dinov3)), dinov3
        enc = dinov3_to_timm(enc, self.encoder)
        strict_load(self, {f"encoder.{k}": v for k, v in enc.items()} | rest, f"{ckpt} (DINOv3 from {source})")

    def load_stats(self, path: Path) -> None:
        """``dinov3_sp_stats.pt`` (SVG: ``dinov3_sp_mean/std`` sliced to C channels) or the SVG-T2I
        layer statistics (``mean/std`` (layers, 384); last layer; the 8 residual channels get the
        mean of the 384 means / stds, train_svg_t2i.py lines 564-571)."""
        stats = read_state(path)
        c = self.latent_shape[0]
        if self.cfg.stats == "t2i":
            if "mean" not in stats or "std" not in stats:
                raise WeightsError(f"{path}: expected keys 'mean' and 'std', found {list(stats)[:5]}")
            mean, std = stats["mean"][-1].float(), stats["std"][-1].float()
            extra = c - mean.numel()
            if extra:
                mean = torch.cat([mean, mean.mean().expand(extra)])
                std = torch.cat([std, std.mean().expand(extra)])
        else:
            if "dinov3_sp_mean" not in stats or "dinov3_sp_std" not in stats:
                raise WeightsError(f"{path}: expected keys 'dinov3_sp_mean' and 'dinov3_sp_std', found {list(stats)[:5]}")
            mean, std = stats["dinov3_sp_mean"][..., :c].float(), stats["dinov3_sp_std"][..., :c].float()
            if mean.numel() == c:  # one value per channel, e.g. (1, 1, C)
                mean, std = mean.reshape(c), std.reshape(c)
            else:  # per token and channel, (1, N, C) -> (C, H, W)
                side = self.latent_shape[1]
                mean = mean.reshape(-1, c).T.reshape(c, side, -1)
                std = std.reshape(-1, c).T.reshape(c, side, -1)
        if mean.shape[0] != c or mean.shape[0] != std.shape[0]:
            raise WeightsError(f"{path}: statistics for {mean.shape[0]} channels, the latent has {c}")
        shape = (c, 1, 1) if mean.ndim == 1 else tuple(mean.shape)
        self.latent_mean, self.latent_std = mean.reshape(shape), std.reshape(shape)


_DINOV3 = "dinov3-vits16plus"
_COMMON_U = ("DINOv3 weights: Meta .pth or timm safetensors accepted; whether the SVG checkpoint embeds encoder.* is unverified",)

ROWS: tuple[ZooRow, ...] = (
    ZooRow(
        name="svg",
        arch="C5",
        latent_shape=(392, 16, 16),
        encode="deterministic",
        config={"residual": "vit-s", "use_outnorm": True, "stats": "svg"},
        files=("svg-autoencoder-dinov3s16p-vit-s-epoch40", _DINOV3, "svg-dinov3-sp-stats"),
        norm="per-channel (z - dinov3_sp_mean) / dinov3_sp_std (dinov3_sp_stats.pt, SVG train_svg.py); residual rescaled by batch statistics",
        params=82_952_587,
        unverified=_COMMON_U + ("howlin/SVG file paths and dinov3_sp_stats.pt layout",),
    ),
    ZooRow(
        name="svg_t2i_P_stage1_256",
        arch="C6",
        latent_shape=(384, 16, 16),
        config={"residual": None, "stats": "t2i"},
        files=("svg-t2i-autoencoder-p-stage1", _DINOV3, "svg-t2i-dinov3-layer-stats"),
        norm="per-channel (z - mean) / std of DINOv3 last-layer patch tokens (SVG-T2I layer stats file)",
        params=71_722_883,
        unverified=_COMMON_U + (
            "decoder level-4 attention per SVG-T2I model.py:518 (zoo.md's 68.57 M counts none); a strict load settles it",
        ),
    ),
    ZooRow(
        name="svg_t2i_R_stage1_256",
        arch="C6",
        latent_shape=(392, 16, 16),
        config={"residual": "vit-rope-s", "use_outnorm": True, "stats": "t2i"},
        files=("svg-t2i-autoencoder-r-stage1", _DINOV3, "svg-t2i-dinov3-layer-stats"),
        norm="per-channel (z - mean) / std (SVG-T2I layer stats, residual channels: mean of means / stds); residual rescaled by batch statistics",
        params=93_899_507,
        unverified=_COMMON_U + (
            "residual branch: the released svg_autoencoder_R_stage1_256.yaml and iFID's config build R like P (z 384, no residual)",
            "decoder level-4 attention per SVG-T2I model.py:518 (zoo.md's 90.74 M counts none)",
        ),
    ),
    ZooRow(
        name="svg_t2i_R_stage2_512",
        arch="C6",
        latent_shape=(392, 16, 16),
        config={"residual": "vit-rope-s", "use_outnorm": True, "stats": "t2i"},
        files=("svg-t2i-autoencoder-r-stage2", _DINOV3, "svg-t2i-dinov3-layer-stats"),
        norm="as svg_t2i_R_stage1_256 (trained at 512 px, evaluated at 256)",
        params=93_899_507,
        unverified=_COMMON_U + ("as svg_t2i_R_stage1_256",),
    ),
)



def build(row: ZooRow, weights: Path | None) -> SVGTokenizer:
    """The SVG / SVG-T2I adapter of ``row``: random init or loaded strictly from ``weights``."""
    model = SVGTokenizer(row)
    if weights is not None:
        ckpt_name, dino_name, stats_name = (manifest_file(f) for f in row.files)
        ckpt = weight_path(weights, ckpt_name, main=True)
        dino = ckpt.parent / dino_name  # optional: only read when the checkpoint lacks encoder.*
        model.load(ckpt, dino if dino.is_file() else None)
        model.load_stats(weight_path(weights, stats_name))
        c = model.decoder.conv_in.in_channels
        check_latent_shape(model, (c, model.cfg.image_size // 16, model.cfg.image_size // 16), weights)
    model.eval()
    return model
