"""LDM-format releases (K1 f8d4, K3 f16dC) in the project's conv_kl ``AutoencoderKL`` (spec zoo.md §4.1).

The conv_kl autoencoder (latentbench/tokenizers/kl_vae.py) has the LDM state-dict layout, so the
15 LDM-format rows of spec zoo.md §3 load their files with no key map, strictly. Three file
formats (zoo.md §4.3-4.4):

- ``plain``: a bare state dict (REPA-E ``<name>.pt``; End2End-Diffusion/REPA-E
  ``train_ldm_only.py`` loads it with ``vae.load_state_dict``); latent statistics in
  ``<stem>-latents-stats.pt`` beside it: ``{latents_scale, latents_bias}``, normalisation
  ``(z - bias) * scale`` (REPA-E ``train_ldm_only.py::sample_posterior``).
- ``lightning``: a hustvl Lightning checkpoint, weights under ``state_dict`` next to the training
  loss (``loss.*``: LPIPS + discriminator), the VF-loss foundation model (``foundation_model.*``)
  and its projection (``linear_proj.*``) (hustvl/LightningDiT ``vavae/ldm/models/autoencoder.py``).
  Those three are dropped and nothing else may be left over. The released VA-VAE has per-channel
  ``latents_stats.pt`` (``{mean, std}``, (1, C, 1, 1)) beside it: ``(z - mean) / std``
  (LightningDiT ``datasets/img_latent_dataset.py``; ``latent_multiplier`` 1.0).
- ``sit``: a whole REPA-E training checkpoint, the VAE under key ``vae`` and the latent statistics
  in the SiT's BatchNorm buffers ``ema['bn.running_mean' / 'bn.running_var']``: bias = running
  mean, scale = rsqrt(running var) (REPA-E ``save_vae_weights.py``). A file that is already the
  output of ``save_vae_weights.py`` (a plain state dict) is read as ``plain``.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from latentbench.tokenizers.kl_vae import ARCH_PRESETS, ArchConfig, AutoencoderKL
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

SD_SCALE = 0.18215  # SD-VAE latent scale (stabilityai/sd-vae-ft-mse config.json scaling_factor)

# The released LDM layouts (spec zoo.md §2 K1, K3): ch_mult -> conv_kl preset.
_LAYOUTS: dict[tuple[int, ...], str] = {(1, 2, 4, 4): "f8d4", (1, 1, 2, 2, 4): "f16d32"}
_IFID_BUG = (1, 1, 2, 2, 4, 4)
# Keys the ddconfig of a zoo row may override (narrow copies in tests); the rest is the layout's.
_OVERRIDABLE = ("ch", "norm_groups", "num_res_blocks")
# hustvl training-only modules in a VA-VAE Lightning checkpoint (zoo.md §4.3).
HUSTVL_DROP = ("loss.", "foundation_model.", "linear_proj.")


def ldm_arch(params: Mapping[str, Any]) -> ArchConfig:
    """The conv_kl architecture of LDM ``params`` (``embed_dim``, ``ch_mult``, optional
    ``z_channels`` and the narrow-copy overrides ``ch``, ``norm_groups``, ``num_res_blocks``).

    Only the released layouts are accepted: f8d4 ``ch_mult (1,2,4,4)`` and f16 ``(1,1,2,2,4)``.
    The iFID code's ``INVAE/VAVAE/VAVAE64.yaml`` six-level ``ch_mult [1,1,2,2,4,4]`` is rejected
    (spec zoo.md §2: an f32 model with 8×8 latents whose sixth level ``strict=False`` left random).
    """
    try:
        c = int(params["embed_dim"])
        ch_mult = tuple(int(m) for m in params["ch_mult"])
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"LDM params need integer embed_dim and a ch_mult list, got {dict(params)!r} ({exc})") from None
    if ch_mult == _IFID_BUG:
        raise ValueError(
            f"ch_mult {list(ch_mult)} is the iFID configs' bug (INVAE/VAVAE/VAVAE64.yaml): six levels = f32, "
            "8x8 latents, a sixth level no released file has; the f16 releases use ch_mult [1, 1, 2, 2, 4] (spec zoo.md §2)"
        )
    narrow = bool(params.get("narrow_copy"))
    if ch_mult not in _LAYOUTS and not narrow:
        raise ValueError(f"ch_mult {list(ch_mult)} is not a released LDM layout; known: {[list(k) for k in _LAYOUTS]}")
    if int(params.get("z_channels", c)) != c:
        raise ValueError(f"LDM params: z_channels {params['z_channels']} != embed_dim {c} (every released file has them equal)")
    # A narrow copy (``arch`` override of a study entry: tests, small custom LDM files) may also
    # change the level layout and the resolution; a zoo row proper keeps the released layout.
    arch = ARCH_PRESETS[_LAYOUTS[ch_mult]] if ch_mult in _LAYOUTS else ArchConfig(ch_mult=ch_mult, attn_resolutions=())
    arch = arch.with_latent_channels(c)
    overrides: dict[str, Any] = {k: int(params[k]) for k in _OVERRIDABLE if k in params}
    if narrow:
        overrides.update({k: params[k] for k in ("resolution", "attn_resolutions") if k in params})
    return ArchConfig(**{**arch.to_dict(), **overrides})


def latent_shape_of(row: ZooRow) -> tuple[int, ...]:
    """The latent shape a (possibly overridden) row's config gives at ``row.resolution``."""
    arch = ldm_arch(row.config)
    side = row.resolution // arch.downsample_factor
    return (arch.embed_dim, side, side)


class LDMTokenizer(GaussianAdapter):
    """A zoo row in the conv_kl ``AutoencoderKL`` (images [-1, 1] inside, [0, 1] outside)."""

    def __init__(self, row: ZooRow, arch: ArchConfig) -> None:
        super().__init__(row)
        self.arch = arch
        self.vae = AutoencoderKL(arch)

    def _moments(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        post = self.vae.encode(x)
        return post.mean, post.std

    def _decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.vae.decode(z)


# ---------------------------------------------------------------------------------------------
# Rows (spec zoo.md §3). config: LDM params + ``format`` (file layout) + ``stats`` (norm source).

_HUSTVL_X = "hustvl/va-vae-imagenet256-experimental-variants"


def _row(
    name: str,
    arch: str,
    c: int,
    fmt: str,
    stats: str,
    norm: str,
    files: tuple[str, ...],
    encode: str = "-",
    aliases: tuple[str, ...] = (),
    unverified: tuple[str, ...] = (),
) -> ZooRow:
    f16 = arch == "K3"
    side = 16 if f16 else 32
    params = {16: 69_610_963, 32: 69_836_067, 64: 70_293_955}[c] if f16 else 83_653_863
    config = {"embed_dim": c, "ch_mult": (1, 1, 2, 2, 4) if f16 else (1, 2, 4, 4), "format": fmt, "stats": stats}
    return ZooRow(name=name, arch=arch, latent_shape=(c, side, side), encode=encode, aliases=aliases, config=config,
                  files=files, norm=norm, params=params, unverified=unverified)  # fmt: skip


_REPAE_NORM = "REPA-E latent stats: (z - latents_bias) * latents_scale"
_HUSTVL_NORM = "per-channel (z - mean) / std from latents_stats.pt"
_NONE_NORM = "none published"

ROWS: tuple[ZooRow, ...] = (
    _row("sdvae", "K1", 4, "plain", "sd", f"z * {SD_SCALE}", ("zoo-sdvae",), "sample", ("SD-VAE",)),
    _row("invae", "K3", 32, "plain", "repae", _REPAE_NORM, ("zoo-invae", "zoo-invae-stats"), "sample", ("IN-VAE",)),
    _row("vavae_f16d32", "K3", 32, "lightning", "hustvl", _HUSTVL_NORM, ("zoo-vavae_f16d32", "zoo-vavae_f16d32-stats"),
         "sample", ("VA-VAE",)),
    _row("e2e-sdvae", "K1", 4, "plain", "repae", _REPAE_NORM, ("zoo-e2e-sdvae", "zoo-e2e-sdvae-stats"), "sample",
         ("REPAE-VAE",)),
    *(
        _row(f"ldm_f16d{c}_50ep", "K3", c, "lightning", "none", _NONE_NORM, (f"zoo-ldm_f16d{c}_50ep",),
             unverified=("no latent statistics published",))
        for c in (16, 32, 64)
    ),
    *(
        # f16d64-dinov2's file name is iFID's VAVAE64.yaml; the others come from a public listing of the repo
        _row(f"vavae_f16d{c}_{vf}_50ep", "K3", c, "lightning", "none", _NONE_NORM, (f"zoo-vavae_f16d{c}_{vf}_50ep",),
             unverified=(*(() if (c, vf) == (64, "dinov2") else ("file name not seen in the repo itself",)),
                         "no latent statistics published"))
        for c in (32, 64)
        for vf in ("mae", "dinov2")
    ),
    _row("e2e-invae", "K3", 32, "plain", "repae", _REPAE_NORM, ("zoo-e2e-invae", "zoo-e2e-invae-stats")),
    _row("e2e-vavae", "K3", 32, "plain", "repae", _REPAE_NORM, ("zoo-e2e-vavae", "zoo-e2e-vavae-stats")),
    _row("vavae", "K3", 32, "plain", "repae", _REPAE_NORM, ("zoo-vavae", "zoo-vavae-stats"),
         unverified=("file names vavae-f16d32.pt / -latents-stats.pt follow REPA-E's naming, not seen",)),
    _row("e2e-vae", "K3", 32, "sit", "sit", "REPA-E latent stats from the SiT BatchNorm buffers", ("zoo-e2e-vae",),
         aliases=("REPA-E",),
         unverified=(("no public repo named e2e-vae: the VAE of REPA-E/sit-repae-vavae (key vae), or that file "
                      "extracted by save_vae_weights.py"),)),
)  # fmt: skip


# ---------------------------------------------------------------------------------------------
# Loading


def stats_path(row: ZooRow, weights: Path) -> Path | None:
    """Where the row's latent statistics sit next to ``weights`` (None: inside it or none)."""
    kind = row.config["stats"]
    if kind == "repae" or (kind == "sit" and weights.suffix == ".pt"):
        # REPA-E train_ldm_only.py: args.vae_ckpt.replace(".pt", "-latents-stats.pt")
        return weights.with_name(weights.name.replace(".pt", "-latents-stats.pt"))
    if kind == "hustvl":
        return weights.parent / "latents_stats.pt"
    return None


def _stats_entry(stats: Any, key: str, path: Path) -> torch.Tensor:
    if not isinstance(stats, Mapping) or key not in stats:
        have = sorted(stats) if isinstance(stats, Mapping) else type(stats).__name__
        raise WeightsError(f"{path}: latent statistics need key {key!r}, file has {have}")
    return stats[key]


def _norm_from_stats(kind: str, stats: Any, path: Path) -> AffineNorm:
    """The row's :class:`AffineNorm` from a loaded stats object (format ``kind``)."""
    if kind in ("repae", "sit"):
        return AffineNorm.from_shift_scale(
            _stats_entry(stats, "latents_bias", path), _stats_entry(stats, "latents_scale", path), str(path)
        )
    if kind == "hustvl":
        return AffineNorm.from_mean_std(_stats_entry(stats, "mean", path), _stats_entry(stats, "std", path), str(path))
    raise AssertionError(kind)


def read_state(row: ZooRow, weights: Path) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor] | None]:
    """(the autoencoder's state dict, latent stats carried inside the file or None) of ``weights``.

    Drops the training-only parts of hustvl files; the strict load that follows fails on anything
    else left over.
    """
    obj = load_weights_file(weights)
    if not isinstance(obj, Mapping):
        raise WeightsError(f"{weights}: expected a state dict, got {type(obj).__name__}")
    fmt = row.config["format"]
    inner = None
    if fmt == "lightning" and "state_dict" in obj:
        obj = obj["state_dict"]
    elif fmt == "sit" and "vae" in obj:  # a whole REPA-E checkpoint (save_vae_weights.py reads the same keys)
        ema = obj.get("ema", {})
        if "bn.running_mean" in ema and "bn.running_var" in ema:
            inner = {"latents_bias": ema["bn.running_mean"], "latents_scale": ema["bn.running_var"].rsqrt()}
        obj = obj["vae"]
    drop = HUSTVL_DROP if fmt == "lightning" else ()
    state = {k: v for k, v in obj.items() if not k.startswith(drop)}
    bad = [k for k, v in state.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise WeightsError(f"{weights}: not a state dict of tensors (e.g. key {bad[0]!r})")
    return state, inner


def _set_norm(tok: LDMTokenizer, row: ZooRow, weights: Path | None, inner: Mapping | None) -> None:
    """Attach the row's native normalisation, or the reason it is unavailable."""
    kind = row.config["stats"]
    if kind == "sd":
        tok.latent_norm = AffineNorm.from_shift_scale(0.0, SD_SCALE, "SD-VAE scaling_factor 0.18215")
        return
    if kind == "none":
        tok.norm_missing = f"{row.name}: no latent statistics were published for this model (spec zoo.md §3); use another latent_norm"
        return
    if weights is None:
        tok.norm_missing = f"{row.name}: native latent normalisation needs the released statistics; this model was built without weights"
        return
    if inner is not None:
        tok.latent_norm = _norm_from_stats(kind, inner, weights)
    else:
        path = stats_path(row, weights)
        if path is None or not path.is_file():
            tok.norm_missing = f"{row.name}: native latent normalisation needs {path} (not found next to {weights.name})"
            return
        tok.latent_norm = _norm_from_stats(kind, load_weights_file(path), path)
    c = row.config["embed_dim"]
    for t in (tok.latent_norm.shift, tok.latent_norm.scale):
        if t.numel() not in (1, c):
            raise WeightsError(f"{tok.latent_norm.source}: latent statistics for {t.numel()} channels, {row.name} has {c}")


def build(row: ZooRow, weights: Path | None) -> LDMTokenizer:
    """The row's LDM autoencoder: random init (``weights=None``) or ``weights`` loaded strictly."""
    arch = ldm_arch(row.config)
    with empty_module(weights):
        tok = LDMTokenizer(row, arch)
    check_latent_shape(tok, arch.latent_shape)
    inner = None
    if weights is not None:
        weights = Path(weights)
        state, inner = read_state(row, weights)
        strict_load(tok.vae, as_float32(state), weights)
    _set_norm(tok, row, weights, inner)
    return tok.eval().requires_grad_(False)
