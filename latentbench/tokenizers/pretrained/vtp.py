"""C4: VTP (MiniMax-AI/VTP) reconstruction path, spec zoo.md §2 C4, models.md §2.3.

``VTPModel(VTPConfig(train_clip=False))`` without its text tower (vtp/models/vtp_hf/modeling_vtp.py):
``trunk`` = a DINOv3-style ViT (vtp/models/encoders/vision_transformer.py: patch 16, CLS token, axial
RoPE on the patch tokens with periods and sin/cos in **bfloat16**, SwiGLU FFN, RMSNorm) whose normed
patch tokens pass the bias-free ``feature_bottleneck`` Linear (768 -> 64)
(vision_transformer_bottleneck.py); ``pixel_decoder`` = 1x1 conv 64 -> 768, the same kind of
blocks with LayerNorm, 1x1 conv to 16*16*3 and PixelShuffle(16) (decoders/pixel_decoder.py).
Parameter names follow the released ``model.safetensors`` so it loads after dropping the text tower.

Both the encoder input and the decoder output are ImageNet mean/std-normalised 256 px images
(generation/tokenizer/vtp_tokenizer.py ``normalize_type="imagenet"``, ``transform_inv``); this adapter
converts both ways. (The iFID wrapper feeds [-1, 1] and returns the raw output: a bug, not copied.)

Parity (2026-12-03, random weights, narrow copy): against MiniMax-AI/VTP @5ce1eb6
``DinoVisionTransformerWithBottleneck`` / ``DinoV3PixelDecoder`` with the upstream state dict loaded
strictly: max |diff| 0.0 for both the latents and the decoded image.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, fields, replace
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from latentbench.tokenizers.base import check_images
from latentbench.tokenizers.pretrained._common import (
    from_imagenet,
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

# what VTPModel holds besides the reconstruction path (CLIP text tower and projection)
TEXT_TOWER = ("text_transformer.", "token_embedding.", "positional_embedding", "ln_final.", "text_projection",
              "logit_scale", "logit_bias", "visual_proj.")  # fmt: skip


@dataclass(frozen=True)
class VTPConfig:
    """The reconstruction fields of upstream ``VTPConfig`` (defaults = its defaults)."""

    image_size: int = 256
    vision_patch_size: int = 16
    vision_embed_dim: int = 768
    vision_depth: int = 12
    vision_num_heads: int = 12
    vision_mlp_ratio: float = 4.0
    vision_ffn_layer: str = "swiglu"
    vision_norm_layer: str = "rmsnorm"
    vision_init_values: float | None = None
    vision_use_qk_norm: bool = False
    vision_feature_bottleneck: int = 64
    decoder_embed_dim: int = 768
    decoder_num_heads: int = 12
    decoder_depth: int = 12
    decoder_ffn_layer: str = "swiglu"
    decoder_norm_layer: str = "layernorm"
    decoder_init_values: float | None = None
    decoder_use_qk_norm: bool = False


class RMSNorm(nn.Module):
    """x / rms(x) * weight, computed in fp32 (vtp/models/layers/normalization.py)."""

    def __init__(self, dim: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = x.float()
        return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)).type_as(x) * self.weight


def make_norm(kind: str, dim: int) -> nn.Module:
    """``norm_layer_dict`` of vision_transformer.py."""
    if kind == "rmsnorm":
        return RMSNorm(dim)
    if kind == "layernorm":
        return nn.LayerNorm(dim, eps=1e-6)
    if kind == "layernormbf16":
        return nn.LayerNorm(dim, eps=1e-5)
    raise ValueError(f"VTP: unknown norm layer {kind!r}")


class SwiGLU(nn.Module):
    """silu(w1 x) * (w2 x) -> w3, hidden = 2/3 of the MLP width rounded up to 8 (layers/ffn.py)."""

    def __init__(self, dim: int, hidden: int, align: int = 8) -> None:
        super().__init__()
        d = int(hidden * 2 / 3)
        d += -d % align
        self.w1, self.w2, self.w3 = nn.Linear(dim, d), nn.Linear(dim, d), nn.Linear(d, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w3(F.silu(self.w1(x)) * self.w2(x))


class GeluMlp(nn.Module):
    """fc1 -> GELU -> fc2 (layers/ffn.py ``Mlp``)."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(dim, hidden), nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class LayerScale(nn.Module):
    def __init__(self, dim: int, init: float) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.full((dim,), float(init)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma


class RopeEmbedding(nn.Module):
    """DINOv3 axial RoPE, base 100, coordinates normalised per axis to [-1, 1]; the persistent
    ``periods`` and all angle arithmetic in ``dtype`` (bfloat16 in VTP) (layers/embeddings.py
    ``RopePositionEmbedding``, inference path)."""

    def __init__(self, dim: int, heads: int, base: float = 100.0, dtype: torch.dtype = torch.bfloat16) -> None:
        super().__init__()
        head_dim = dim // heads
        if dim % (4 * heads):
            raise ValueError(f"VTP RoPE: width {dim} must be divisible by 4 x {heads} heads")
        self.dtype = dtype
        periods = base ** (2 * torch.arange(head_dim // 4, dtype=dtype) / (head_dim // 2))
        self.register_buffer("periods", periods)

    def forward(self, h: int, w: int) -> tuple[torch.Tensor, torch.Tensor]:
        dd = {"device": self.periods.device, "dtype": self.dtype}
        ch, cw = torch.arange(0.5, h, **dd) / h, torch.arange(0.5, w, **dd) / w
        coords = 2.0 * torch.stack(torch.meshgrid(ch, cw, indexing="ij"), dim=-1).flatten(0, 1) - 1.0
        angles = (2 * math.pi * coords[:, :, None] / self.periods[None, None, :]).flatten(1, 2).tile(2)
        return angles.sin(), angles.cos()


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    a, b = x.chunk(2, dim=-1)
    return torch.cat([-b, a], dim=-1)


class SelfAttention(nn.Module):
    """qkv -> (optional qk RMSNorm) -> RoPE on the last N - prefix tokens, applied in the RoPE dtype
    -> SDPA -> proj (layers/attention.py ``SelfAttention``)."""

    def __init__(self, dim: int, heads: int, qk_norm: bool) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, dim * 3, bias=True)
        self.proj = nn.Linear(dim, dim, bias=True)
        self.q_norm = RMSNorm(dim // heads) if qk_norm else nn.Identity()
        self.k_norm = RMSNorm(dim // heads) if qk_norm else nn.Identity()

    def forward(self, x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        b, n, c = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, c // self.heads).unbind(2)
        q, k, v = self.q_norm(q.transpose(1, 2)), self.k_norm(k.transpose(1, 2)), v.transpose(1, 2)
        sin, cos = rope
        prefix = n - sin.shape[-2]

        def apply(t: torch.Tensor) -> torch.Tensor:
            r = t.to(sin.dtype)
            body = r[:, :, prefix:] * cos + _rotate_half(r[:, :, prefix:]) * sin
            return torch.cat([r[:, :, :prefix], body], dim=2).to(t.dtype)

        out = F.scaled_dot_product_attention(apply(q), apply(k), v)
        return self.proj(out.transpose(1, 2).reshape(b, n, c))


class Block(nn.Module):
    """Pre-norm attention + FFN with optional LayerScale (layers/block.py ``SelfAttentionBlock``)."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float, ffn: str, norm: str, ls: float | None, qk_norm: bool) -> None:
        super().__init__()
        self.norm1 = make_norm(norm, dim)
        self.attn = SelfAttention(dim, heads, qk_norm)
        self.ls1 = LayerScale(dim, ls) if ls else nn.Identity()
        self.norm2 = make_norm(norm, dim)
        hidden = int(dim * mlp_ratio)
        if ffn == "mlp":
            self.mlp: nn.Module = GeluMlp(dim, hidden)
        elif ffn.startswith("swiglu"):
            self.mlp = SwiGLU(dim, hidden, int(ffn[6:] or 8))
        else:
            raise ValueError(f"VTP: unknown ffn layer {ffn!r}")
        self.ls2 = LayerScale(dim, ls) if ls else nn.Identity()

    def forward(self, x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        x = x + self.ls1(self.attn(self.norm1(x), rope))
        return x + self.ls2(self.mlp(self.norm2(x)))


class PatchEmbed(nn.Module):
    def __init__(self, patch: int, dim: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(3, dim, kernel_size=patch, stride=patch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x)


class Trunk(nn.Module):
    """The vision encoder with the 64-d bottleneck (``DinoVisionTransformerWithBottleneck``, no
    storage tokens, tied CLS/patch norm, as VTPConfig builds it)."""

    def __init__(self, cfg: VTPConfig) -> None:
        super().__init__()
        d = cfg.vision_embed_dim
        self.patch_embed = PatchEmbed(cfg.vision_patch_size, d)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, d))
        self.rope_embed = RopeEmbedding(d, cfg.vision_num_heads)
        self.blocks = nn.ModuleList(
            Block(d, cfg.vision_num_heads, cfg.vision_mlp_ratio, cfg.vision_ffn_layer, cfg.vision_norm_layer,
                  cfg.vision_init_values, cfg.vision_use_qk_norm)
            for _ in range(cfg.vision_depth)
        )
        self.norm = make_norm(cfg.vision_norm_layer, d)
        self.mask_token = nn.Parameter(torch.zeros(1, d))
        self.feature_bottleneck = nn.Linear(d, cfg.vision_feature_bottleneck, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """ImageNet-normalised images -> (B, bottleneck, H/16, W/16)."""
        t = self.patch_embed(x)
        b, _, h, w = t.shape
        cls = (self.cls_token + 0 * self.mask_token).expand(b, -1, -1)  # as prepare_tokens_with_masks
        t = torch.cat([cls, t.flatten(2).transpose(1, 2)], dim=1)
        rope = self.rope_embed(h, w)
        for blk in self.blocks:
            t = blk(t, rope)
        z = self.feature_bottleneck(self.norm(t)[:, 1:])
        return z.transpose(1, 2).reshape(b, -1, h, w)


class PixelDecoder(nn.Module):
    """``DinoV3PixelDecoder``: latents (B, 64, h, w) -> ImageNet-normalised (B, 3, 16h, 16w)."""

    def __init__(self, cfg: VTPConfig, upscale: int = 16) -> None:
        super().__init__()
        d = cfg.decoder_embed_dim
        self.proj_in = nn.Conv2d(cfg.vision_feature_bottleneck, d, kernel_size=1)
        self.rope_embed = RopeEmbedding(d, cfg.decoder_num_heads)
        self.blocks = nn.ModuleList(
            Block(d, cfg.decoder_num_heads, 4.0, cfg.decoder_ffn_layer, cfg.decoder_norm_layer,
                  cfg.decoder_init_values, cfg.decoder_use_qk_norm)
            for _ in range(cfg.decoder_depth)
        )
        self.norm = make_norm(cfg.decoder_norm_layer, d)
        self.proj_out = nn.Conv2d(d, 3 * upscale**2, kernel_size=1)
        self.pixel_shuffle = nn.PixelShuffle(upscale)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        b, _, h, w = z.shape
        t = self.proj_in(z).flatten(2).transpose(1, 2)
        rope = self.rope_embed(h, w)
        for blk in self.blocks:
            t = blk(t, rope)
        t = self.norm(t).transpose(1, 2).reshape(b, -1, h, w)
        return self.pixel_shuffle(self.proj_out(t))


class VTPTokenizer(PretrainedTokenizer):
    """VTP adapter: [0, 1] images <-> (64, 16, 16) bottleneck latents."""

    posterior = "deterministic"

    def __init__(self, row: ZooRow, cfg: VTPConfig | None = None) -> None:
        super().__init__()
        if cfg is None:
            known = {f.name for f in fields(VTPConfig)}
            cfg = VTPConfig(**{k: v for k, v in dict(row.config).items() if k in known})
        self.row, self.cfg = row, cfg
        self.latent_shape = tuple(row.latent_shape)
        self.native_norm = row.norm
        self.trunk = Trunk(cfg)
        self.pixel_decoder = PixelDecoder(cfg)
        self.latent_mean: torch.Tensor | None = None
        self.latent_std: torch.Tensor | None = None

    def encode_moments(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        check_images(x)
        return zero_std(self.trunk(to_imagenet(x)))

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return from_imagenet(self.pixel_decoder(z))

    def _stats(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.latent_mean is None or self.latent_std is None:
            raise ValueError(f"{self.row.name}: native normalisation needs latents_stats.pt (build with weights)")
        return self.latent_mean.to(z), self.latent_std.to(z)

    def native_normalize(self, z: torch.Tensor) -> torch.Tensor:
        """Per-channel ``(z - mean) / std`` (latents_stats.pt; their LightningDiT, latent_multiplier 1)."""
        mean, std = self._stats(z)
        return (z - mean) / std

    def native_denormalize(self, z: torch.Tensor) -> torch.Tensor:
        mean, std = self._stats(z)
        return z * std + mean

    def load(self, path: Path) -> None:
        """``model.safetensors`` of ``VTPModel``, text tower dropped, strict."""
        strict_load(self, read_state(path), path, drop_prefixes=TEXT_TOWER)

    def load_stats(self, path: Path) -> None:
        stats = read_state(path)
        if "mean" not in stats or "std" not in stats:
            raise WeightsError(f"{path}: expected keys 'mean' and 'std', found {list(stats)[:5]}")
        c = self.latent_shape[0]
        mean, std = stats["mean"].float(), stats["std"].float()
        if mean.numel() != c or std.numel() != c:
            raise WeightsError(f"{path}: statistics of {mean.numel()} channels, the latent has {c}")
        self.latent_mean, self.latent_std = mean.reshape(c, 1, 1), std.reshape(c, 1, 1)


def config_from_json(path: Path, base: VTPConfig) -> VTPConfig:
    """The reconstruction fields of a released ``config.json`` over ``base``."""
    try:
        raw = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise WeightsError(f"{path}: cannot read config.json ({exc})") from None
    if raw.get("train_reconstruction") is False:
        raise WeightsError(f"{path}: train_reconstruction is false: no pixel decoder")
    known = {f.name for f in fields(VTPConfig)}
    return replace(base, **{k: v for k, v in raw.items() if k in known})


_U_SL = "S / L configs presumed (DINOv3 vit_small / vit_large trunks, B's decoder); the released config.json is read when present"
_SIZES = {
    "s": ("Small", {"vision_embed_dim": 384, "vision_num_heads": 6}, None, (_U_SL,)),
    "b": ("Base", {}, 171_399_168, ("VTPConfig defaults == VTP-Base config.json (read at load time)",)),
    "l": ("Large", {"vision_embed_dim": 1024, "vision_depth": 24, "vision_num_heads": 16}, None, (_U_SL,)),
}

ROWS: tuple[ZooRow, ...] = tuple(
    ZooRow(
        name=f"vtp_{s}",
        arch="C4",
        latent_shape=(64, 16, 16),
        encode="deterministic",
        config=cfg,
        files=(f"vtp-{s}-config", f"vtp-{s}-model", f"vtp-{s}-latent-stats"),
        norm="per-channel (z - mean) / std (generation/latent_stats/vtp_*/latents_stats.pt)",
        params=params,
        unverified=u,
    )
    for s, (_, cfg, params, u) in _SIZES.items()
)



def build(row: ZooRow, weights: Path | None) -> VTPTokenizer:
    """The VTP adapter of ``row``: random init, or config.json + safetensors + stats from ``weights``."""
    if weights is None:
        model = VTPTokenizer(row)
    else:
        config_name, model_name, stats_name = (manifest_file(f) for f in row.files)
        ckpt = weight_path(weights, model_name, main=True)
        known = {f.name for f in fields(VTPConfig)}
        cfg = VTPConfig(**{k: v for k, v in dict(row.config).items() if k in known})
        config_path = weight_path(weights, config_name)
        model = VTPTokenizer(row, config_from_json(config_path, cfg))
        model.load(ckpt)
        model.load_stats(weight_path(weights, stats_name))
        side = model.cfg.image_size // model.cfg.vision_patch_size
        check_latent_shape(model, (model.cfg.vision_feature_bottleneck, side, side), weights)
    model.eval()
    return model
