"""C3: RAE (representation autoencoder) and UAE (spec zoo.md §2 C3, §4.5-4.6; models.md §2.4).

Encoder: a DINOv2-with-registers ViT-B/14 (``transformers.Dinov2WithRegistersModel`` built from an
in-code config, never ``from_pretrained``) whose final LayerNorm is non-affine; the image in [0, 1]
is resized bicubically to 224 and ImageNet-normalised inside; the 256 patch tokens (CLS and 4
registers dropped) form the (768, 16, 16) latent, token n at row n // 16, column n % 16.
Decoder: the ViT-MAE-style ``GeneralDecoder`` of RAE (bytetriper/RAE src/stage1/decoders/decoder.py):
Linear 768 -> 1152, a trainable CLS token, fixed 2-D sin-cos positions, 28 ``ViTMAELayer`` (16 heads,
MLP 4096, LN eps 1e-12), LayerNorm, Linear 1152 -> 16*16*3, CLS dropped, unpatchified to 256 px,
then ImageNet de-normalisation (bytetriper/RAE src/stage1/rae.py ``RAE.decode``).

Released files use the transformers-4 attention names; this module uses transformers 5's
``ViTMAELayer`` / ``Dinov2WithRegistersModel`` and renames the six patterns of :data:`T4_TO_T5`.

Latent normalisation: RAE applies its ``stat.pt`` statistics *inside* encode/decode
(``(z - mean) / sqrt(var + 1e-5)``, src/stage1/rae.py). Here they are the separate named step
:meth:`RAETokenizer.native_normalize` instead, so ``encode`` returns the raw DINOv2 features like
every other adapter and a study chooses the normalisation (``latent_norm: native`` reproduces RAE
exactly: ``decode(native_denormalize(native_normalize(z)))`` == RAE's ``decode(encode(x))``).
UAE (WeichenFan/UAE src/stage1/uae.py) has the same layout with a fine-tuned encoder and no
statistics. Its optional DCT module maps the latent to frequencies and back, the identity unless a
band mask drops coefficients; this adapter encodes the full band (as the iFID adapter, ifid/vae/uae.py,
with ``freq_ratio`` 1.0), so encode = the encoder's patch tokens.

Parity (2026-12-03, random weights, narrow copy): the decoder against bytetriper/RAE @a4d18c4
``GeneralDecoder`` + ``unpatchify`` loaded with the same (renamed) state dict: max |diff| 3e-8
(SDPA vs eager attention); the sin-cos positions equal upstream's. The encoder is transformers'
own class (upstream ran transformers 4.x; position interpolation across versions not compared).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from transformers import (
    Dinov2WithRegistersConfig,
    Dinov2WithRegistersModel,
    ViTMAEConfig,
)
from transformers.models.vit_mae.modeling_vit_mae import ViTMAELayer

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

# transformers 4.x ViT/DINOv2 attention and MLP names -> transformers 5.x (zoo.md §4.5-4.6; the same
# renames as transformers 5.25 conversion_mapping.py for Dinov2WithRegistersModel / ViTMAE); ordered:
# ".attention.output.dense." must be renamed before the bare ".output.dense." of the MLP.
T4_TO_T5: tuple[tuple[str, str], ...] = (
    (".attention.attention.query.", ".attention.q_proj."),
    (".attention.attention.key.", ".attention.k_proj."),
    (".attention.attention.value.", ".attention.v_proj."),
    (".attention.output.dense.", ".attention.o_proj."),
    (".intermediate.dense.", ".mlp.fc1."),
    (".output.dense.", ".mlp.fc2."),
)
STAT_EPS = 1e-5  # RAE(eps=1e-5), src/stage1/rae.py


def rename_t4(key: str) -> str:
    """A transformers-4 ViT / DINOv2 layer key in transformers-5 form."""
    for old, new in T4_TO_T5:
        key = key.replace(old, new)
    return key


@dataclass(frozen=True)
class RAEConfig:
    """Sizes of C3 (defaults: the released RAE / UAE DINOv2-B + ViT-XL decoder)."""

    enc_hidden: int = 768
    enc_layers: int = 12
    enc_heads: int = 12
    enc_patch: int = 14
    enc_registers: int = 4
    enc_image_size: int = 518  # facebook/dinov2-with-registers-base config.json: 37x37 learned positions
    input_size: int = 224  # encoder_input_size of configs/stage1/pretrained/DINOv2-B.yaml
    dec_hidden: int = 1152  # configs/decoder/ViTXL/config.json
    dec_layers: int = 28
    dec_heads: int = 16
    dec_mlp: int = 4096
    dec_patch: int = 16

    @property
    def grid(self) -> int:
        return self.input_size // self.enc_patch

    @property
    def out_size(self) -> int:
        return self.grid * self.dec_patch


def sincos_2d(dim: int, grid: int, cls_row: bool = True) -> torch.Tensor:
    """MAE's fixed 2-D sin-cos positions, (grid² [+1], dim): the first half of the channels encodes
    the column, the second the row; each half is [sin, cos] of pos / 10000^(2i/(dim/2))
    (facebookresearch/mae util/pos_embed.py, as copied into RAE's decoder)."""
    if dim % 4:
        raise ValueError(f"sin-cos position width must be divisible by 4, got {dim}")
    omega = 1.0 / 10000 ** (torch.arange(dim // 4, dtype=torch.float64) / (dim / 4))
    rows, cols = torch.meshgrid(torch.arange(grid, dtype=torch.float64), torch.arange(grid, dtype=torch.float64), indexing="ij")

    def axis(pos: torch.Tensor) -> torch.Tensor:
        out = pos.reshape(-1, 1) * omega
        return torch.cat([out.sin(), out.cos()], dim=1)

    emb = torch.cat([axis(cols), axis(rows)], dim=1)
    if cls_row:
        emb = torch.cat([torch.zeros(1, dim, dtype=emb.dtype), emb])
    return emb.float()


class MAEDecoder(nn.Module):
    """RAE's ``GeneralDecoder`` (inference path: ``drop_cls_token=False``, no interpolation), with the
    file's module names and transformers 5's ``ViTMAELayer`` blocks."""

    def __init__(self, cfg: RAEConfig) -> None:
        super().__init__()
        layer_cfg = ViTMAEConfig(
            hidden_size=cfg.dec_hidden,
            num_attention_heads=cfg.dec_heads,
            intermediate_size=cfg.dec_mlp,
            hidden_act="gelu",
            layer_norm_eps=1e-12,
            qkv_bias=True,
        )
        layer_cfg._attn_implementation = "sdpa"
        self.cfg = cfg
        n = cfg.grid**2
        self.decoder_embed = nn.Linear(cfg.enc_hidden, cfg.dec_hidden)
        self.decoder_pos_embed = nn.Parameter(torch.zeros(1, n + 1, cfg.dec_hidden), requires_grad=False)
        self.decoder_layers = nn.ModuleList(ViTMAELayer(layer_cfg) for _ in range(cfg.dec_layers))
        self.decoder_norm = nn.LayerNorm(cfg.dec_hidden, eps=1e-12)
        self.decoder_pred = nn.Linear(cfg.dec_hidden, cfg.dec_patch**2 * 3)
        self.trainable_cls_token = nn.Parameter(torch.zeros(1, 1, cfg.dec_hidden))
        if self.decoder_pos_embed.device.type != "meta":
            with torch.no_grad():
                self.decoder_pos_embed.copy_(sincos_2d(cfg.dec_hidden, cfg.grid)[None])

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, N, enc_hidden) tokens -> (B, 3, out, out) ImageNet-normalised pixels."""
        x = self.decoder_embed(tokens)
        x = torch.cat([self.trainable_cls_token.expand(x.shape[0], -1, -1), x], dim=1) + self.decoder_pos_embed
        for layer in self.decoder_layers:
            x = layer(x)
        patches = self.decoder_pred(self.decoder_norm(x))[:, 1:]
        b, g, p = patches.shape[0], self.cfg.grid, self.cfg.dec_patch
        # unpatchify: patch (h, w) holds (p, q, c) row-major (RAE decoder.py ``unpatchify``)
        return patches.reshape(b, g, g, p, p, 3).permute(0, 5, 1, 3, 2, 4).reshape(b, 3, g * p, g * p)


def build_encoder(cfg: RAEConfig) -> Dinov2WithRegistersModel:
    """DINOv2-with-registers with a non-affine final LayerNorm (RAE encoders/dinov2.py, normalize=True)."""
    enc_cfg = Dinov2WithRegistersConfig(
        hidden_size=cfg.enc_hidden,
        num_hidden_layers=cfg.enc_layers,
        num_attention_heads=cfg.enc_heads,
        intermediate_size=4 * cfg.enc_hidden,
        patch_size=cfg.enc_patch,
        num_register_tokens=cfg.enc_registers,
        image_size=cfg.enc_image_size,
        layer_norm_eps=1e-6,
    )
    enc_cfg._attn_implementation = "sdpa"
    model = Dinov2WithRegistersModel(enc_cfg)
    model.layernorm = nn.LayerNorm(cfg.enc_hidden, eps=enc_cfg.layer_norm_eps, elementwise_affine=False)
    return model


class RAETokenizer(PretrainedTokenizer):
    """RAE / UAE adapter: [0, 1] images <-> raw (768, 16, 16) DINOv2 features."""

    posterior = "deterministic"

    def __init__(self, row: ZooRow) -> None:
        super().__init__()
        known = {f.name for f in fields(RAEConfig)}
        cfg = RAEConfig(**{k: v for k, v in dict(row.config).items() if k in known})
        self.row, self.cfg = row, cfg
        self.latent_shape = tuple(row.latent_shape)
        self.native_norm = row.norm
        self.encoder = build_encoder(cfg)
        self.decoder = MAEDecoder(cfg)
        # stat.pt (RAE only): per-element mean / var of the latent; None until loaded
        self.latent_mean: torch.Tensor | None = None
        self.latent_var: torch.Tensor | None = None

    def encode_moments(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        check_images(x)
        size = self.cfg.input_size
        if x.shape[-2:] != (size, size):
            x = F.interpolate(x, size=(size, size), mode="bicubic", align_corners=False)
        tokens = self.encoder(pixel_values=to_imagenet(x)).last_hidden_state[:, 1 + self.cfg.enc_registers :]
        b, n, c = tokens.shape
        side = math.isqrt(n)
        return zero_std(tokens.transpose(1, 2).reshape(b, c, side, side))

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        b, c, h, w = z.shape
        return from_imagenet(self.decoder(z.reshape(b, c, h * w).transpose(1, 2)))

    def _stats(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.latent_mean is None or self.latent_var is None:
            raise ValueError(f"{self.row.name}: native normalisation needs the stat.pt file (build with weights)")
        mean, var = self.latent_mean.to(z), self.latent_var.to(z)
        return mean, torch.sqrt(var + STAT_EPS)

    def native_normalize(self, z: torch.Tensor) -> torch.Tensor:
        """RAE's per-element latent normalisation ``(z - mean) / sqrt(var + 1e-5)`` (stat.pt)."""
        if self.row.config.get("stats") is None:
            return z
        mean, scale = self._stats(z)
        return (z - mean) / scale

    def native_denormalize(self, z: torch.Tensor) -> torch.Tensor:
        """Inverse of :meth:`native_normalize`."""
        if self.row.config.get("stats") is None:
            return z
        mean, scale = self._stats(z)
        return z * scale + mean

    # ---- loading released files ----
    def load_rae(self, encoder: Path, decoder: Path, stats: Path) -> None:
        """RAE: HF DINOv2 safetensors (affine final LN dropped), the decoder ``model.pt`` and ``stat.pt``."""
        enc = {f"encoder.{rename_t4(k)}": v for k, v in read_state(encoder).items()}
        enc = {k: v for k, v in enc.items() if k not in ("encoder.layernorm.weight", "encoder.layernorm.bias")}
        dec = {f"decoder.{rename_t4(k)}": v for k, v in read_state(decoder).items()}
        strict_load(self, enc | dec, f"{encoder} + {decoder}")
        self.load_stats(stats)

    def load_uae(self, path: Path) -> None:
        """UAE: one file, the whole model under key ``model`` (``encoder.encoder.*``, ``decoder.*``)."""
        state = {}
        for k, v in read_state(path, key="model").items():
            if k.startswith("encoder.encoder."):
                k = k[len("encoder.") :]
            state[rename_t4(k)] = v
        strict_load(self, state, path)

    def load_stats(self, path: Path) -> None:
        stats = read_state(path)
        if "mean" not in stats or "var" not in stats:
            raise WeightsError(f"{path}: expected keys 'mean' and 'var', found {list(stats)[:5]}")
        mean, var = stats["mean"].float(), stats["var"].float()
        want = tuple(self.latent_shape)
        for name, t in (("mean", mean), ("var", var)):
            if tuple(t.shape[-3:]) != want or t.numel() != math.prod(want):
                raise WeightsError(f"{path}: {name} has shape {tuple(t.shape)}, expected {want}")
        self.latent_mean, self.latent_var = mean.reshape(want), var.reshape(want)


_RAE_FILES = ("rae-dinov2-wreg-base-encoder", "rae-dinov2-wreg-base-vitxl-n08-decoder", "rae-dinov2-wreg-base-in1k-stat")
_UAE_FILES = ("uae-dinov2-b-ep-last",)
_UAE_U = (
    (
        "Seesaw's uae-stage2/3/4 names come from an earlier HF release; the current weepiess2383/UAE "
        "release ships one checkpoint (checkpoints/DINOv2-B/ep-last.pt): which stage it is, is unverified"
    ),
    "key 'model' (iFID adapter) vs 'ema' (UAE's own instantiate_from_config prefers 'ema' when present)",
    "full-band encode: the release's config.yaml may enable eval-time band splitting (configs/stage1/dinov2/stage2.yaml keeps 36 DCT bands)",
)
_PARAMS = 501_934_720  # measured on the meta device (encoder 86,582,016 + decoder 415,352,704)

ROWS: tuple[ZooRow, ...] = (
    ZooRow(
        name="rae_dinov2_reconstruction",
        arch="C3",
        latent_shape=(768, 16, 16),
        encode="deterministic",
        aliases=("RAE",),
        config={"kind": "rae", "stats": "stat.pt"},
        files=_RAE_FILES,
        norm="stat.pt per-element (z - mean) / sqrt(var + 1e-5) (RAE applies it inside encode/decode; here native_normalize)",
        params=_PARAMS,
        unverified=(
            "encoder safetensors keys assumed unprefixed transformers-4 Dinov2WithRegistersModel names",
            "stat.pt layout {'mean','var'} of 768x16x16 (read in src/stage1/rae.py; file not seen)",
        ),
    ),
    ZooRow(name="uae", arch="C3", latent_shape=(768, 16, 16), config={"kind": "uae"}, files=_UAE_FILES, params=_PARAMS, unverified=_UAE_U),
    ZooRow(name="uae-stage4", arch="C3", latent_shape=(768, 16, 16), config={"kind": "uae"}, files=_UAE_FILES, params=_PARAMS, unverified=_UAE_U),
    # stage-2/3 files were never located: build them from an explicit file path
    ZooRow(name="uae-stage2", arch="C3", latent_shape=(768, 16, 16), config={"kind": "uae"}, params=_PARAMS, unverified=_UAE_U + ("no public file",)),
    ZooRow(name="uae-stage3", arch="C3", latent_shape=(768, 16, 16), config={"kind": "uae"}, params=_PARAMS, unverified=_UAE_U + ("no public file",)),
)


def build(row: ZooRow, weights: Path | None) -> RAETokenizer:
    """The RAE / UAE adapter of ``row``: random init or loaded strictly from ``weights``."""
    model = RAETokenizer(row)
    if weights is not None:
        kind = row.config.get("kind")
        if kind == "rae":
            enc, dec, stat = (weight_path(weights, manifest_file(f)) for f in row.files)
            model.load_rae(enc, dec, stat)
        else:
            main = manifest_file(row.files[0]) if row.files else "<an explicit checkpoint file>"
            model.load_uae(weight_path(weights, main, main=True))
        check_latent_shape(model, (model.cfg.enc_hidden, model.cfg.grid, model.cfg.grid), weights)
    model.eval()
    return model
