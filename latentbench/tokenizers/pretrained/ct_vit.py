"""The 1-D ViT autoencoders of continuous_tokenizer (SoftVQ-VAE, zoo.md C7; MAETok, C8), ported.

Written from Hhhhhhao/continuous_tokenizer @7cc3e96: ``modelling/tokenizer.py`` (``ModelArgs``,
``VQModel``/``SoftVQModel``/``AEModel``), ``modelling/modules/timm_vit/timm_vit_models.py``
(``TimmViTEncoder``/``TimmViTDecoder``), ``.../rope_utils.py`` (mixed 2-D RoPE), ``.../to_pixel.py``
and ``modelling/quantizers/softvq.py``; the later copy in
tongdaxu/Making-rFID-Predictive-of-Diffusion-gFID ``ifid/vae/continous_tokenizer`` agrees on
every part used here. Upstream is never imported: it overwrites 104 timm model names on import
(zoo.md §5). The backbones are timm's own ``VisionTransformer`` (built ``pretrained=False``;
upstream builds its private timm copy, whose parameter names are timm's), and the forward
passes below reuse each timm block's modules.

Layout (parameter names as upstream, so ``model.safetensors`` loads strictly):

- ``encoder.model``: a DINOv2-style timm ViT re-patched to ``enc_patch_size`` at ``image_size``
  (LayerScale, class token, learned positions). Its patch tokens (+ class token, + absolute
  positions: upstream's encoder adds them even when RoPE is on) are followed by
  ``num_latent_tokens`` learned ``encoder.latent_tokens`` + ``encoder.latent_pos_embed``; after
  the blocks and the final norm the latent tokens are the output. ``encoder.mask_token`` exists
  when ``enc_token_drop > 0`` (MAE-style training only).
- ``quant_conv``: Linear(width -> codebook_embed_dim); SoftVQ then ``quantize`` (below).
- ``post_quant_conv``: Linear(codebook_embed_dim -> decoder width); ``decoder.model`` a second
  timm ViT whose input is ``decoder.mask_token`` at every patch position (+ class token unless
  ``dec_cls_token`` is false, + absolute positions when ``use_ape``), followed by the latent
  tokens + ``decoder.latent_pos_embed``; after the final norm the patch tokens go through
  ``decoder.to_pixel.model`` Linear(width -> p*p*3) and are unpatchified (channel order p, q, c).
- RoPE (``use_rope`` with ``rope_mixed``, "RoPE-Mixed", Heo et al. 2024): learned per-block,
  per-head 2-D frequencies ``freqs`` (2, depth, heads * head_dim/2) and the grid coordinates
  ``freqs_t_x``/``freqs_t_y`` as persistent buffers; each block rotates the channel pairs
  (2i, 2i+1) of q and k of the *patch* tokens only by ``t_x * fx + t_y * fy``.
- Soft VQ (``SoftVectorQuantizer``): the token sequence is cut into ``num_codebooks``
  consecutive segments, each token L2-normalised and replaced by
  ``softmax(<z, c_k> / tau) @ c`` over its segment's codebook of L2-normalised codewords.

Images are in [-1, 1] inside (upstream demos normalise with mean = std = 0.5); the adapters
take and return [0, 1]. Latent normalisation: ``(z - vq_mean) / vq_std`` with the two scalars
of the released ``config.json`` (upstream ``train_sit.py``: latents_bias / latents_scale).

The released configs are not in the repository (zoo.md [U]): each row pins the ``ModelArgs``
values it is built from, and :func:`check_hub_config` refuses a ``config.json`` that differs.

Parity (run once against upstream ``SoftVQModel`` / ``AEModel`` from the snapshot, not vendored,
in a separate process; DINOv2-S, 32 px, 8 latent tokens, ``model.safetensors`` + ``config.json``
written by upstream's state dict and ``asdict(ModelArgs)``): SoftVQ latents max |diff| 2.1e-6,
decode 8e-7; AE with mixed RoPE + token-drop mask token, with and without the decoder class
token: latents 1.2e-6, decode 1e-6.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import timm
import torch
import torch.nn.functional as F
from torch import nn

from latentbench.tokenizers.base import WeightRef, check_images
from latentbench.tokenizers.pretrained.base import (
    PretrainedTokenizer,
    WeightsError,
    ZooRow,
    check_latent_shape,
    strict_load,
)
from latentbench.tokenizers.pretrained.checkpoints import find_file, read_json

# upstream ``ModelArgs`` defaults (modelling/tokenizer.py @7cc3e96) of the keys a row pins: a
# config.json written before a key existed means this value
MODELARGS_DEFAULTS: dict[str, Any] = {
    "image_size": 256,
    "base_image_size": 256,
    "codebook_size": 16384,
    "codebook_embed_dim": 8,
    "codebook_l2_norm": True,
    "codebook_show_usage": True,
    "tau": 0.1,
    "num_codebooks": 1,
    "enc_type": "cnn",
    "dec_type": "cnn",
    "encoder_model": "llamagen_encoder",
    "decoder_model": "llamagen_decoder",
    "num_latent_tokens": 256,
    "to_pixel": "linear",
    "enc_patch_size": 16,
    "dec_patch_size": 16,
    "enc_tuning_method": "full",
    "dec_tuning_method": "full",
    "dec_cls_token": True,
    "use_ape": True,
    "use_rope": False,
    "rope_mixed": False,
    "rope_theta": 10.0,
    "enc_token_drop": 0.0,
    "vq_mean": 0.0,
    "vq_std": 1.0,
}

# Modules of the training-time model that inference does not use; the released
# ``model.safetensors`` may carry them (``repa`` / MAETok's auxiliary HOG, DINOv2 and CLIP
# decoders, modelling/tokenizer.py MaskAEModel). The only key filter the loader applies.
TRAINING_ONLY_PREFIXES: tuple[str, ...] = (
    "repa_model.",
    "projection.",
    "hog_generator.",
    "decoder_hog.",
    "post_quant_conv_hog.",
    "to_pixel_hog.",
    "decoder_dino.",
    "post_quant_conv_dino.",
    "to_pixel_dino.",
    "clip_model.",
    "decoder_clip.",
    "post_quant_conv_clip.",
    "to_pixel_clip.",
)


@dataclass(frozen=True)
class CTConfig:
    """The ``ModelArgs`` subset that fixes the inference network (+ ``timm_overrides`` for tests)."""

    encoder_model: str
    decoder_model: str
    num_latent_tokens: int
    codebook_embed_dim: int
    quantizer: str = "none"  # "softvq" (SoftVQModel) or "none" (AEModel)
    image_size: int = 256
    base_image_size: int = 256
    enc_patch_size: int = 16
    dec_patch_size: int = 16
    enc_type: str = "vit"
    dec_type: str = "vit"
    enc_tuning_method: str = "full"
    dec_tuning_method: str = "full"
    to_pixel: str = "linear"
    dec_cls_token: bool = True
    use_ape: bool = True
    use_rope: bool = False
    rope_mixed: bool = False
    rope_theta: float = 10.0
    enc_token_drop: float = 0.0
    codebook_size: int = 16384
    num_codebooks: int = 1
    tau: float = 0.1
    codebook_l2_norm: bool = True
    codebook_show_usage: bool = True
    timm_overrides: dict = field(default_factory=dict)  # e.g. narrow widths in tests; not a ModelArgs key

    def __post_init__(self) -> None:
        where = "continuous_tokenizer config"
        if (self.enc_type, self.dec_type) != ("vit", "vit"):
            raise ValueError(f"{where}: only enc_type/dec_type 'vit' are ported, got {self.enc_type}/{self.dec_type}")
        if (self.enc_tuning_method, self.dec_tuning_method) != ("full", "full"):
            raise ValueError(f"{where}: only tuning_method 'full' is ported (LoRA renames the ViT keys)")
        if self.to_pixel != "linear":
            raise ValueError(f"{where}: only to_pixel 'linear' is ported, got {self.to_pixel!r}")
        if "movq" in self.decoder_model:
            raise ValueError(f"{where}: MoVQ decoders are not ported ({self.decoder_model})")
        if self.use_rope and not self.rope_mixed:
            raise ValueError(f"{where}: axial RoPE (use_rope without rope_mixed) is not ported")
        if self.use_ape and not self.use_rope and not self.dec_cls_token:
            raise ValueError(f"{where}: absolute positions without the decoder class token do not fit upstream's pos_embed")
        if self.base_image_size != self.image_size:
            raise ValueError(f"{where}: base_image_size {self.base_image_size} != image_size {self.image_size}")
        if self.quantizer not in ("softvq", "none"):
            raise ValueError(f"{where}: quantizer must be 'softvq' or 'none', got {self.quantizer!r}")
        if self.quantizer == "softvq" and self.num_latent_tokens % self.num_codebooks:
            raise ValueError(f"{where}: {self.num_latent_tokens} tokens do not split into {self.num_codebooks} codebooks")

    @property
    def latent_shape(self) -> tuple[int, int]:
        return (self.num_latent_tokens, self.codebook_embed_dim)

    def pinned(self) -> dict[str, Any]:
        """The ``config.json`` values this network's layout depends on.

        Not pinned: ``rope_theta`` (only initialises the learned ``freqs``), the codebook keys of
        a model without quantiser; ``enc_token_drop`` only as "> 0" (whether ``mask_token`` exists).
        """
        skip = {"quantizer", "timm_overrides", "rope_theta"}
        if self.quantizer == "none":
            skip |= {"codebook_size", "num_codebooks", "tau", "codebook_l2_norm", "codebook_show_usage"}
        pins = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in skip}
        pins["enc_token_drop"] = self.enc_token_drop > 0
        return pins


def hub_config(path: Path) -> dict[str, Any]:
    """The ``ModelArgs`` dict of a PyTorchModelHubMixin ``config.json`` (flat, or under ``config``)."""
    data = read_json(path)
    return data["config"] if isinstance(data.get("config"), dict) else data


def check_hub_config(cfg: CTConfig, shipped: dict[str, Any], path: Path) -> None:
    """One WeightsError line unless ``shipped`` (missing keys = upstream defaults) equals ``cfg.pinned()``."""
    effective = {**MODELARGS_DEFAULTS, **shipped}
    if isinstance(effective.get("enc_token_drop"), (int, float)):
        effective["enc_token_drop"] = effective["enc_token_drop"] > 0
    bad = [f"{k}={effective.get(k, '<absent>')!r} (expected {v!r})" for k, v in cfg.pinned().items() if effective.get(k) != v]
    if bad:
        raise WeightsError(f"{path}: config differs from the pinned {cfg.encoder_model} build: " + ", ".join(bad))


# ---------------------------------------------------------------------------------------------
# Mixed 2-D RoPE (continuous_tokenizer rope_utils.py: init_random_2d_freqs, init_t_xy,
# compute_mixed_cis, apply_rotary_emb)


def init_mixed_freqs(depth: int, heads: int, head_dim: int, theta: float) -> torch.Tensor:
    """Initial learned frequencies (2, depth, heads * head_dim/2): x- and y-components.

    Per head, ``head_dim/4`` magnitudes ``theta^(-4i/head_dim)`` along a random direction and
    along the perpendicular one.
    """
    mag = theta ** (-torch.arange(0, head_dim, 4)[: head_dim // 4].float() / head_dim)
    angles = torch.rand(depth, heads, 1) * 2 * math.pi
    fx = torch.cat([mag * torch.cos(angles), mag * torch.cos(angles + math.pi / 2)], dim=-1)
    fy = torch.cat([mag * torch.sin(angles), mag * torch.sin(angles + math.pi / 2)], dim=-1)
    return torch.stack([fx, fy]).reshape(2, depth, -1)


def grid_coords(width: int, height: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Column and row index of each token of a row-major ``height x width`` grid (float)."""
    t = torch.arange(width * height, dtype=torch.float32)
    return t % width, torch.div(t, width, rounding_mode="floor")


def mixed_angles(freqs: torch.Tensor, t_x: torch.Tensor, t_y: torch.Tensor, heads: int) -> torch.Tensor:
    """Rotation angles (depth, heads, N, head_dim/2) = ``t_x * fx + t_y * fy`` per block and head."""
    depth = freqs.shape[1]
    ang = t_x.float()[None, :, None] * freqs[0].float()[:, None, :] + t_y.float()[None, :, None] * freqs[1].float()[:, None, :]
    return ang.view(depth, t_x.shape[0], heads, -1).permute(0, 2, 1, 3)


def rotate_pairs(x: torch.Tensor, angle: torch.Tensor) -> torch.Tensor:
    """Rotate channel pairs (2i, 2i+1) of ``x`` (B, heads, N, head_dim) by ``angle`` (heads, N, head_dim/2).

    The complex product ``(x_2i + i x_2i+1) * exp(i angle)``, computed in float32.
    """
    pairs = x.float().unflatten(-1, (-1, 2))
    re, im = pairs[..., 0], pairs[..., 1]
    cos, sin = angle.cos(), angle.sin()
    return torch.stack((re * cos - im * sin, re * sin + im * cos), dim=-1).flatten(-2).to(x.dtype)


class _MixedRope(nn.Module):
    """Holds ``freqs`` (learned) and the persistent grid buffers ``freqs_t_x``/``freqs_t_y``."""

    def _init_rope(self, vit: nn.Module, side: int, theta: float) -> None:
        heads = vit.blocks[0].attn.num_heads
        self.freqs = nn.Parameter(init_mixed_freqs(len(vit.blocks), heads, vit.embed_dim // heads, theta))
        t_x, t_y = grid_coords(side, side)
        self.register_buffer("freqs_t_x", t_x)
        self.register_buffer("freqs_t_y", t_y)


def _rope_attention(attn: nn.Module, x: torch.Tensor, angle: torch.Tensor, start: int, stop: int) -> torch.Tensor:
    """timm ``Attention`` forward with RoPE on q, k of tokens ``start:stop``."""
    b, n, c = x.shape
    q, k, v = attn.qkv(x).reshape(b, n, 3, attn.num_heads, c // attn.num_heads).permute(2, 0, 3, 1, 4)
    q, k = attn.q_norm(q), attn.k_norm(k)
    q = torch.cat([q[:, :, :start], rotate_pairs(q[:, :, start:stop], angle), q[:, :, stop:]], dim=2)
    k = torch.cat([k[:, :, :start], rotate_pairs(k[:, :, start:stop], angle), k[:, :, stop:]], dim=2)
    out = F.scaled_dot_product_attention(q, k, v)
    return attn.proj_drop(attn.proj(attn.norm(out.transpose(1, 2).reshape(b, n, c))))


def run_blocks(vit: nn.Module, x: torch.Tensor, angles: torch.Tensor | None, start: int, stop: int) -> torch.Tensor:
    """The ViT's blocks; with ``angles`` (depth, heads, N, head_dim/2) each block's attention uses RoPE."""
    for i, blk in enumerate(vit.blocks):
        if angles is None:
            x = blk(x)
            continue
        x = x + blk.drop_path1(blk.ls1(_rope_attention(blk.attn, blk.norm1(x), angles[i], start, stop)))
        x = x + blk.drop_path2(blk.ls2(blk.mlp(blk.norm2(x))))
    return x


def _vit(name: str, cfg: CTConfig, patch: int) -> nn.Module:
    # Never a download: pretrained=False; the released file brings every weight.
    return timm.create_model(name, pretrained=False, img_size=cfg.image_size, patch_size=patch, **cfg.timm_overrides)


# ---------------------------------------------------------------------------------------------
# Encoder, decoder, quantiser, autoencoder


class LatentViTEncoder(_MixedRope):
    """[-1, 1] images -> (B, num_latent_tokens, width) (upstream ``TimmViTEncoder``)."""

    def __init__(self, cfg: CTConfig) -> None:
        super().__init__()
        self.model = _vit(cfg.encoder_model, cfg, cfg.enc_patch_size)
        d, n_lat = self.model.embed_dim, cfg.num_latent_tokens
        self.latent_tokens = nn.Parameter(torch.randn(1, n_lat, d) * 0.02)
        self.latent_pos_embed = nn.Parameter(nn.init.trunc_normal_(torch.zeros(1, n_lat, d), std=0.02))
        if cfg.enc_token_drop > 0:
            self.mask_token = nn.Parameter(torch.randn(1, 1, d) * 0.02)  # MAE-style token drop, training only
        self.use_rope = cfg.use_rope
        if cfg.use_rope:
            self._init_rope(self.model, cfg.image_size // cfg.enc_patch_size, cfg.rope_theta)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        vit = self.model
        h = vit.patch_drop(vit._pos_embed(vit.patch_embed(x)))  # class token + absolute positions
        start, stop = vit.num_prefix_tokens, h.shape[1]
        lat = self.latent_tokens.expand(h.shape[0], -1, -1) + self.latent_pos_embed
        h = vit.norm_pre(torch.cat([h, lat], dim=1))
        angles = self._angles(stop - start) if self.use_rope else None
        h = vit.norm(run_blocks(vit, h, angles, start, stop))
        return h[:, -self.latent_tokens.shape[1] :]

    def _angles(self, n: int) -> torch.Tensor:
        if self.freqs_t_x.shape[0] != n:
            raise ValueError(f"continuous_tokenizer: RoPE grid has {self.freqs_t_x.shape[0]} positions, input has {n} patches")
        return mixed_angles(self.freqs, self.freqs_t_x, self.freqs_t_y, self.model.blocks[0].attn.num_heads)


class ToPixel(nn.Module):
    """``model`` Linear(width -> p*p*3), then unpatchify (channel order p, q, c; upstream ``ToPixel``)."""

    def __init__(self, width: int, patch: int) -> None:
        super().__init__()
        self.patch = patch
        self.model = nn.Linear(width, 3 * patch * patch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        side, p = math.isqrt(n), self.patch
        x = self.model(x).view(b, side, side, p, p, 3)
        return x.permute(0, 5, 1, 3, 2, 4).reshape(b, 3, side * p, side * p)


class LatentViTDecoder(_MixedRope):
    """(B, num_latent_tokens, width) -> [-1, 1] images (upstream ``TimmViTDecoder``)."""

    def __init__(self, cfg: CTConfig) -> None:
        super().__init__()
        self.model = _vit(cfg.decoder_model, cfg, cfg.dec_patch_size)
        d = self.model.embed_dim
        self.mask_token = nn.Parameter(torch.randn(1, 1, d) * 0.02)
        self.latent_pos_embed = nn.Parameter(nn.init.trunc_normal_(torch.zeros(1, cfg.num_latent_tokens, d), std=0.02))
        self.to_pixel = ToPixel(d, cfg.dec_patch_size)
        self.use_ape, self.use_rope = cfg.use_ape and not cfg.use_rope, cfg.use_rope
        if not cfg.dec_cls_token:
            self.model.cls_token = None  # upstream drops the parameter (pos_embed keeps its slot)
        self.prefix = self.model.num_prefix_tokens - (0 if cfg.dec_cls_token else 1)
        if cfg.use_rope:
            self._init_rope(self.model, cfg.image_size // cfg.dec_patch_size, cfg.rope_theta)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        vit, b = self.model, z.shape[0]
        n = vit.patch_embed.num_patches
        x = self.mask_token.expand(b, n, -1)
        if vit.cls_token is not None:
            x = torch.cat([vit.cls_token.expand(b, -1, -1), x], dim=1)
        if self.use_ape:
            x = x + vit.pos_embed
        x = vit.patch_drop(vit.pos_drop(x))
        x = vit.norm_pre(torch.cat([x, z + self.latent_pos_embed], dim=1))
        start, stop = self.prefix, self.prefix + n
        angles = None
        if self.use_rope:
            angles = mixed_angles(self.freqs, self.freqs_t_x, self.freqs_t_y, vit.blocks[0].attn.num_heads)
        x = vit.norm(run_blocks(vit, x, angles, start, stop))
        return self.to_pixel(x[:, start:stop])


class SoftVectorQuantizer(nn.Module):
    """Soft VQ: ``embedding`` (num_codebooks, codebook_size, dim); ``codebook_used`` usage buffer."""

    def __init__(self, cfg: CTConfig) -> None:
        super().__init__()
        self.tau, self.l2 = cfg.tau, cfg.codebook_l2_norm
        emb = torch.empty(cfg.num_codebooks, cfg.codebook_size, cfg.codebook_embed_dim).uniform_(
            -1.0 / cfg.codebook_size, 1.0 / cfg.codebook_size
        )
        self.embedding = nn.Parameter(F.normalize(emb, dim=-1) if self.l2 else emb)
        if cfg.codebook_show_usage:
            self.register_buffer("codebook_used", torch.zeros(cfg.num_codebooks, 65536))  # training statistic

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        b, n, c = z.shape
        books = self.embedding.shape[0]
        seg = z.view(b, books, n // books, c)  # consecutive token segments, one codebook each
        emb = self.embedding
        if self.l2:
            seg, emb = F.normalize(seg, dim=-1), F.normalize(emb, dim=-1)
        probs = torch.softmax(torch.einsum("bnsc,nkc->bnsk", seg, emb) / self.tau, dim=-1)
        return torch.einsum("bnsk,nkc->bnsc", probs, emb).reshape(b, n, c)


class LatentViTAutoencoder(nn.Module):
    """``encoder``, ``quant_conv``, [``quantize``], ``post_quant_conv``, ``decoder`` (upstream names)."""

    def __init__(self, cfg: CTConfig) -> None:
        super().__init__()
        self.encoder = LatentViTEncoder(cfg)
        self.quant_conv = nn.Linear(self.encoder.model.embed_dim, cfg.codebook_embed_dim)
        self.decoder = LatentViTDecoder(cfg)
        self.post_quant_conv = nn.Linear(cfg.codebook_embed_dim, self.decoder.model.embed_dim)
        self.quantize = SoftVectorQuantizer(cfg) if cfg.quantizer == "softvq" else None

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """[-1, 1] images -> (B, L, C) latent tokens."""
        z = self.quant_conv(self.encoder(x))
        return z if self.quantize is None else self.quantize(z)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """(B, L, C) -> [-1, 1] images."""
        return self.decoder(self.post_quant_conv(z))


# ---------------------------------------------------------------------------------------------
# Adapter and loader (shared by softvq.py and maetok.py)


class LatentViTTokenizer(PretrainedTokenizer):
    """Adapter: [0, 1] images <-> (B, L, C) tokens (deterministic)."""

    is_1d = True
    posterior = "deterministic"

    def __init__(self, row: ZooRow, net: LatentViTAutoencoder, cfg: CTConfig, weight_refs: tuple[WeightRef, ...]) -> None:
        super().__init__()
        self.row, self.net = row, net
        self.latent_shape = cfg.latent_shape
        self.native_norm = row.norm
        self.weights = weight_refs
        self.vq_mean: float | None = None
        self.vq_std: float | None = None

    def encode_moments(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        check_images(x)
        z = self.net.encode(x * 2 - 1)
        return z, torch.zeros_like(z)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.net.decode(z) * 0.5 + 0.5

    def _stats(self) -> tuple[float, float]:
        if self.vq_mean is None or self.vq_std is None:
            raise ValueError(f"{self.row.name}: native normalisation needs vq_mean/vq_std from config.json; built without weights")
        return self.vq_mean, self.vq_std

    def native_normalize(self, z: torch.Tensor) -> torch.Tensor:
        mean, std = self._stats()
        return (z - mean) / std

    def native_denormalize(self, z: torch.Tensor) -> torch.Tensor:
        mean, std = self._stats()
        return z * std + mean


def build_latent_vit(row: ZooRow, weights: Path | None, weight_refs: tuple[WeightRef, ...], stem: str) -> LatentViTTokenizer:
    """Random init, or ``config.json`` (checked against the pin) + ``model.safetensors`` loaded strictly.

    ``weights``: a directory (Hub snapshot names, or the manifest's ``<stem>-config.json`` /
    ``<stem>-model.safetensors``) or the safetensors file with the config beside it.
    """
    cfg = CTConfig(**row.config)
    if weights is None:
        tok = LatentViTTokenizer(row, LatentViTAutoencoder(cfg), cfg, weight_refs)
    else:
        from safetensors.torch import load_file

        if Path(weights).is_file():
            model_file = Path(weights)
        else:
            model_file = find_file(weights, (f"{stem}-model.safetensors", "model.safetensors"), "model.safetensors")
        config_file = find_file(model_file, (f"{stem}-config.json", "config.json"), "config.json")
        shipped = hub_config(config_file)
        check_hub_config(cfg, shipped, config_file)
        with torch.device("meta"):
            net = LatentViTAutoencoder(cfg)
        try:
            state = load_file(model_file)
        except Exception as exc:  # noqa: BLE001
            raise WeightsError(f"{model_file}: cannot read as safetensors ({type(exc).__name__}: {exc})") from None
        strict_load(net, state, model_file, drop_prefixes=TRAINING_ONLY_PREFIXES)
        tok = LatentViTTokenizer(row, net, cfg, weight_refs)
        tok.vq_mean = float(shipped.get("vq_mean", MODELARGS_DEFAULTS["vq_mean"]))
        tok.vq_std = float(shipped.get("vq_std", MODELARGS_DEFAULTS["vq_std"]))
    check_latent_shape(tok, cfg.latent_shape, weights)
    return tok.eval()
