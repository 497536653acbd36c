"""Diffusers-format releases: ``AutoencoderKL`` (K1, K2, K3) and ``AutoencoderKLQwenImage`` (K4).

A release is a directory holding ``config.json`` and ``diffusion_pytorch_model.safetensors``
(a Hugging Face repo or its ``vae`` subfolder). The model is built offline from the row's pinned
config (``<class>.from_config(dict)``, no ``from_pretrained``), the directory's ``config.json``
must agree with it on every architecture key, and the safetensors file is loaded strictly.
Configs: spec zoo.md §2 (K1 = ``stabilityai/sd-vae-ft-mse``; K2 = FLUX.1 / SD-3.5 VAE; K3 in
diffusers form; K4 = diffusers' ``AutoencoderKLQwenImage`` defaults) and models.md §2.2.

Native normalisation (zoo.md §3), from the directory's config.json when loaded, else the pinned
published values: ``latents_mean``/``latents_std`` -> ``(z - mean) / std`` per channel (Qwen-Image
pipeline); else ``(z - shift_factor) * scaling_factor`` (diffusers' SD / FLUX / SD-3 pipelines).
K4 takes a video tensor ``(B, 3, T, H, W)``: images go in as T = 1 and the T axis is squeezed
(iFID ``ifid/vae/diffuservae.py::QWVAE``).

:func:`ldm_to_diffusers` converts an LDM state dict to this layout (diffusers'
``convert_ldm_vae_checkpoint`` plus the level attention it leaves out, zoo.md §4.2).
"""

from __future__ import annotations

import inspect
import json
import re
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from latentbench.tokenizers.pretrained.base import (
    AffineNorm,
    GaussianAdapter,
    WeightsError,
    ZooRow,
    as_float32,
    check_latent_shape,
    empty_module,
    load_weights_file,
    strict_load,
)

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "diffusion_pytorch_model.safetensors"

_DOWN, _UP = "DownEncoderBlock2D", "UpDecoderBlock2D"
# K1: stabilityai/sd-vae-ft-mse config.json (scaling_factor: diffusers' default, the SD value).
K1 = {"_class_name": "AutoencoderKL", "act_fn": "silu", "block_out_channels": [128, 256, 512, 512],
      "down_block_types": [_DOWN] * 4, "up_block_types": [_UP] * 4, "in_channels": 3, "out_channels": 3,
      "latent_channels": 4, "layers_per_block": 2, "norm_num_groups": 32, "sample_size": 256}  # fmt: skip
# K2: K1 with 16 latent channels, no quant convs (black-forest-labs/FLUX.1-dev vae/config.json).
K2 = {**K1, "latent_channels": 16, "use_quant_conv": False, "use_post_quant_conv": False,
      "mid_block_add_attention": True}  # fmt: skip
# K3 (LDM f16dC, ch_mult (1,1,2,2,4), attention at 16 px) in diffusers blocks, one head.
K3 = {**K1, "block_out_channels": [128, 128, 256, 256, 512], "down_block_types": [_DOWN] * 4 + ["AttnDownEncoderBlock2D"],
      "up_block_types": ["AttnUpDecoderBlock2D"] + [_UP] * 4, "latent_channels": 32}  # fmt: skip
# K4: diffusers AutoencoderKLQwenImage defaults (= Qwen/Qwen-Image vae/config.json, latents_* included).
K4 = {"_class_name": "AutoencoderKLQwenImage", "base_dim": 96, "z_dim": 16, "dim_mult": [1, 2, 4, 4],
      "num_res_blocks": 2, "attn_scales": [], "temperal_downsample": [False, True, True], "dropout": 0.0,
      "latents_mean": [-0.7571, -0.7089, -0.9113, 0.1075, -0.1745, 0.9653, -0.1517, 1.5508,
                       0.4134, -0.0715, 0.5517, -0.3632, -0.1922, -0.9497, 0.2503, -0.2921],
      "latents_std": [2.8184, 1.4541, 2.3275, 2.6558, 1.2196, 1.7708, 2.6052, 2.0743,
                      3.2687, 2.1526, 2.8652, 1.5579, 1.6382, 1.1253, 2.8251, 1.9160]}  # fmt: skip

# Config keys that do not change the network (norm constants, pipeline hints, bookkeeping).
NORM_KEYS = ("scaling_factor", "shift_factor", "latents_mean", "latents_std")
_NOT_ARCH = {*NORM_KEYS, "sample_size", "force_upcast"}
_PARAMS = {"K1": 83_653_863, "K2": 83_819_683, "K3": 69_836_067, "K4": 126_892_531}


def _diffusers_class(name: str) -> type:
    import diffusers  # lazy: importing diffusers takes seconds

    if name not in ("AutoencoderKL", "AutoencoderKLQwenImage"):
        raise ValueError(f"unsupported diffusers class {name!r}")
    return getattr(diffusers, name)


def arch_keys(cls: type, config: Mapping[str, Any]) -> dict[str, Any]:
    """The architecture of ``config`` for diffusers class ``cls``: every constructor argument
    except the normalisation / pipeline ones, missing keys filled with the constructor defaults."""
    sig = inspect.signature(cls.__init__)
    out = {}
    for name, p in sig.parameters.items():
        if name == "self" or name in _NOT_ARCH or p.kind in (p.VAR_KEYWORD, p.VAR_POSITIONAL):
            continue
        value = config.get(name, p.default)
        out[name] = list(value) if isinstance(value, tuple) else value
    return out


def read_config(directory: Path, pinned: Mapping[str, Any]) -> dict[str, Any]:
    """The directory's ``config.json``, checked against the pinned architecture (one-line error)."""
    path = directory / CONFIG_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path}: diffusers config not found (weights must be a diffusers model directory)")
    try:
        cfg = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise WeightsError(f"{path}: not valid JSON ({exc})") from None
    want_cls = pinned["_class_name"]
    if cfg.get("_class_name", want_cls) != want_cls:
        raise WeightsError(f"{path}: _class_name {cfg.get('_class_name')!r}, expected {want_cls!r}")
    cls = _diffusers_class(want_cls)
    want, got = arch_keys(cls, pinned), arch_keys(cls, cfg)
    diff = [k for k in want if want[k] != got[k]]
    if diff:
        shown = ", ".join(f"{k}: {got[k]!r} (pinned {want[k]!r})" for k in diff[:4])
        raise WeightsError(f"{path}: architecture differs from the pinned config in {diff}: {shown}")
    return cfg


def norm_from_config(cfg: Mapping[str, Any], source: str) -> AffineNorm | None:
    """The diffusers pipelines' latent normalisation a config declares, or None."""
    mean, std = cfg.get("latents_mean"), cfg.get("latents_std")
    if mean is not None and std is not None:
        return AffineNorm.from_mean_std(mean, std, f"{source} latents_mean/latents_std")
    if cfg.get("scaling_factor") is not None:
        shift = cfg.get("shift_factor") or 0.0
        return AffineNorm.from_shift_scale(shift, cfg["scaling_factor"], f"{source} scaling_factor/shift_factor")
    return None


_DEPRECATED_ATTN = re.compile(r"^(.*\.attentions\.\d+\.)(query|key|value|proj_attn)\.(weight|bias)$")
_NEW_ATTN = {"query": "to_q", "key": "to_k", "value": "to_v", "proj_attn": "to_out.0"}


def rename_deprecated_attention(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Old diffusers attention names (``query/key/value/proj_attn``, e.g. sd-vae-ft-mse's 2022 file)
    as today's ``to_q/to_k/to_v/to_out.0`` (diffusers ``ModelMixin._fix_state_dict_keys_on_load``)."""
    out = {}
    for k, v in state.items():
        m = _DEPRECATED_ATTN.match(k)
        out[f"{m[1]}{_NEW_ATTN[m[2]]}.{m[3]}" if m else k] = v
    return out


class DiffusersKLTokenizer(GaussianAdapter):
    """A zoo row in a diffusers autoencoder (images [-1, 1] inside, [0, 1] outside).

    K4's decoder clamps its output to [-1, 1] inside diffusers (``AutoencoderKLQwenImage._decode``);
    that is the released model's behaviour and is kept.
    """

    def __init__(self, row: ZooRow, config: Mapping[str, Any]) -> None:
        super().__init__(row)
        cls = _diffusers_class(config["_class_name"])
        self.video = config["_class_name"] == "AutoencoderKLQwenImage"
        skip = ("narrow_copy", "resolution")  # build_pretrained's override markers, not diffusers keys
        self.vae = cls.from_config({k: v for k, v in config.items() if not k.startswith("_") and k not in skip})

    def _moments(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.video:
            dist = self.vae.encode(x[:, :, None]).latent_dist
            return dist.mean[:, :, 0], dist.std[:, :, 0]
        dist = self.vae.encode(x).latent_dist
        return dist.mean, dist.std

    def _decode(self, z: torch.Tensor) -> torch.Tensor:
        if self.video:
            return self.vae.decode(z[:, :, None]).sample[:, :, 0]
        return self.vae.decode(z).sample


# ---------------------------------------------------------------------------------------------
# Rows (spec zoo.md §3). config: the pinned diffusers config; norm keys only where published.

_NO_NORM = ("scaling_factor", "shift_factor", "latents_mean", "latents_std")


def _strip_norm(cfg: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in cfg.items() if k not in _NO_NORM}


def _row(name: str, arch: str, config: Mapping[str, Any], norm: str, encode: str = "-",
         aliases: tuple[str, ...] = (), unverified: tuple[str, ...] = ()) -> ZooRow:  # fmt: skip
    c = config.get("latent_channels", config.get("z_dim"))
    side = 16 if arch == "K3" else 32
    return ZooRow(name=name, arch=arch, latent_shape=(c, side, side), encode=encode, aliases=aliases,
                  config=dict(config), files=(f"zoo-{name}-config", f"zoo-{name}-weights"), norm=norm,
                  params=_PARAMS[arch], unverified=unverified)  # fmt: skip


_U_CFG = "config.json not seen: architecture pinned from the class, checked at load"
_U_NORM = "normalisation read from config.json at load (latents_mean/std, else scaling/shift)"

ROWS: tuple[ZooRow, ...] = (
    _row("flux-vae", "K2", {**K2, "scaling_factor": 0.3611, "shift_factor": 0.1159}, "(z - 0.1159) * 0.3611",
         "sample", ("FLUX-VAE",)),
    _row("sd3-vae", "K2", {**K2, "scaling_factor": 1.5305, "shift_factor": 0.0609}, "(z - 0.0609) * 1.5305",
         "sample", ("SD3-VAE",)),
    _row("eq-vae", "K1", K1, "SD-style scaling_factor from config.json", "sample", ("EQ-VAE",),
         ("which of zelaki/eq-vae and zelaki/eq-vae-ema iFID used (default: -ema)", _U_CFG, _U_NORM)),
    _row("qwenimage-vae", "K4", K4, "per-channel (z - latents_mean) / latents_std (16)", "sample", ("QwenImage-VAE",)),
    _row("e2e-flux-vae", "K2", K2, "from config.json", unverified=(_U_CFG, _U_NORM)),
    _row("e2e-sd3.5-vae", "K2", K2, "from config.json", unverified=(_U_CFG, _U_NORM)),
    _row("e2e-qwenimage-vae", "K4", _strip_norm(K4), "from config.json", unverified=(_U_CFG, _U_NORM)),
    _row("e2e-invae-hf", "K3", K3, "from config.json", unverified=(_U_CFG, _U_NORM)),
    _row("e2d-vavae-hf", "K3", K3, "from config.json", unverified=(_U_CFG, _U_NORM, "Seesaw's name (sic) for REPA-E/e2e-vavae-hf")),
    _row("e2e-sdvae-hf", "K1", K1, "from config.json", unverified=(_U_CFG, _U_NORM)),
)  # fmt: skip


def _pinned_norm(row: ZooRow) -> bool:
    """Whether the row's pinned config carries a published normalisation (FLUX, SD-3.5, Qwen)."""
    return any(k in row.config for k in ("scaling_factor", "latents_mean"))


def latent_shape_of(row: ZooRow) -> tuple[int, ...]:
    """The latent shape a (possibly overridden) row's config gives at ``row.resolution``."""
    cfg = row.config
    c = cfg.get("latent_channels", cfg.get("z_dim"))
    down = 2 ** (len(cfg.get("block_out_channels", cfg.get("dim_mult", ()))) - 1)
    return (c, row.resolution // down, row.resolution // down)


def build(row: ZooRow, weights: Path | None) -> DiffusersKLTokenizer:
    """The row's diffusers autoencoder: random init (``weights=None``) or the directory ``weights``
    (``config.json`` + ``diffusion_pytorch_model.safetensors``) loaded strictly."""
    cfg = dict(row.config)
    source = f"{row.name} pinned config"
    if weights is not None:
        weights = Path(weights)
        if not weights.is_dir():
            raise WeightsError(f"{weights}: {row.name} needs a diffusers model directory ({CONFIG_FILE} + {WEIGHTS_FILE})")
        file_cfg = read_config(weights, row.config)
        cfg.update({k: file_cfg[k] for k in NORM_KEYS if k in file_cfg})
        source = str(weights / CONFIG_FILE)
    with empty_module(weights):
        tok = DiffusersKLTokenizer(row, cfg)
    check_latent_shape(tok, latent_shape_of(replace(row, config=cfg)), weights)
    if weights is not None:
        path = weights / WEIGHTS_FILE
        strict_load(tok.vae, as_float32(rename_deprecated_attention(load_weights_file(path))), path)
    norm = norm_from_config(cfg, source) if (weights is not None or _pinned_norm(row)) else None
    if norm is None:
        tok.norm_missing = (
            f"{row.name}: no native latent normalisation: "
            + ("its config.json declares none" if weights is not None else "not published in a pinned config; load the weights directory")
        )
    tok.latent_norm = norm
    return tok.eval().requires_grad_(False)


# ---------------------------------------------------------------------------------------------
# LDM -> diffusers (zoo.md §4.2)

_LEVEL_ATTN = re.compile(r"^(encoder\.down|decoder\.up)\.(\d+)\.attn\.(\d+)\.(norm|q|k|v|proj_out)\.(weight|bias)$")
_ATTN_NAMES = {"norm": "group_norm", "q": "to_q", "k": "to_k", "v": "to_v", "proj_out": "to_out.0"}


def ldm_to_diffusers(state: Mapping[str, torch.Tensor], config: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """An LDM KL-VAE state dict in diffusers ``AutoencoderKL`` names.

    diffusers' ``convert_ldm_vae_checkpoint`` maps everything but the attention inside resolution
    levels (K3's 16-px level); those map ``encoder.down.i.attn.j.*`` -> ``encoder.down_blocks.i.
    attentions.j.*`` and ``decoder.up.i.attn.j.*`` -> ``decoder.up_blocks.(n-1-i).attentions.j.*``
    with ``norm/q/k/v/proj_out`` -> ``group_norm/to_q/to_k/to_v/to_out.0`` and the 1×1 conv
    weights squeezed to Linear. Raises ValueError if any key is left unconverted.
    """
    from diffusers.loaders.single_file_utils import convert_ldm_vae_checkpoint

    level_attn = {k: _LEVEL_ATTN.match(k) for k in state}
    # convert_ldm_vae_checkpoint would pass level-attention keys through its resnet renaming as junk
    out = convert_ldm_vae_checkpoint({k: v for k, v in state.items() if not level_attn[k]}, dict(config))
    n_up = len(config["up_block_types"])
    handled = 0
    for k, v in state.items():
        m = level_attn[k]
        if not m:
            continue
        side, level, j, part, kind = m.groups()
        block = f"encoder.down_blocks.{level}" if side == "encoder.down" else f"decoder.up_blocks.{n_up - 1 - int(level)}"
        if kind == "weight" and v.ndim == 4:
            v = v[:, :, 0, 0]
        out[f"{block}.attentions.{j}.{_ATTN_NAMES[part]}.{kind}"] = v
        handled += 1
    if len(out) != len(state):
        raise ValueError(f"LDM -> diffusers: {len(state)} keys in, {len(out)} out ({handled} level-attention keys mapped)")
    return out
