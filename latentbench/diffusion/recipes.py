"""The four named training/sampling recipes, the size presets and :func:`build_backbone`.

A recipe pins everything of spec models.md §1.6/§1.7 that differs between the studies
(table §1.10): architecture flags, time convention, t-sampler, shifts, loss, latent
normalisation, optimiser, EMA, precision, sampler and CFG quirks. Values marked "assumed" are
the spec's defaults where the papers are silent (§1.6 ⚠ rows).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from typing import Any, Literal, Mapping, Sequence

from latentbench.diffusion.models import DiT, DiTConfig
from latentbench.diffusion.transport import Transport, auto_shift

# (hidden, depth, heads): DiT presets (spec models.md §1.3) and the CPU demo SiT (§4).
SIZE_PRESETS: dict[str, tuple[int, int, int]] = {
    "demo": (64, 2, 2),
    "S": (384, 12, 6),
    "B": (768, 12, 12),
    "L": (1024, 24, 16),
    "XL": (1152, 28, 16),
}

Shift = float | Literal["auto"]


@dataclass(frozen=True)
class Recipe:
    """One named recipe (spec models.md §1.10). ``"auto"`` shifts mean ``sqrt(numel/4096)``."""

    name: str
    # architecture flags
    ffn: Literal["mlp", "swiglu"]
    norm: Literal["layernorm", "rmsnorm"]
    rope: Literal["none", "2d"]
    qk_norm: bool
    latent_bn: bool
    # transport
    time_convention: Literal["data_at_1", "noise_at_1"]
    t_sampler: Literal["uniform", "logit_normal"]
    train_shift: Shift
    loss: Literal["mse", "mse_cos"]
    latent_norm: Literal["bn_online", "channel_stats", "scale_shift"]
    # optimisation
    lr: float
    betas: tuple[float, float]
    batch_size: int
    train_steps: Mapping[str, int]  # per size; key "*" is the default
    grad_clip: float | None
    ema_decay: float
    ema_buffers: bool  # EMA also float buffers (iFID: the BN running stats)
    precision: Literal["fp32", "bf16"]
    # sampling
    sampler: Literal["euler", "sde"]
    sample_steps: int
    sample_shift: Shift
    cfg_channels: Literal["all", "first3"]
    cfg_interval: tuple[float, float] | None
    weight_decay: float = 0.0
    adam_eps: float = 1e-8
    class_dropout_prob: float = 0.1
    logit_normal_mean: float = 0.0
    logit_normal_std: float = 1.0
    notes: str = field(default="", compare=False)

    def resolve_shift(self, shift: Shift, latent_shape: Sequence[int]) -> float:
        """A recipe shift as a number for this latent shape."""
        return auto_shift(latent_shape) if shift == "auto" else float(shift)

    def transport(self, latent_shape: Sequence[int]) -> Transport:
        """The training Transport for latents of ``latent_shape`` (C, H, W) or (T, C)."""
        return Transport(
            time_convention=self.time_convention,
            t_sampler=self.t_sampler,
            train_shift=self.resolve_shift(self.train_shift, latent_shape),
            loss=self.loss,
            logit_normal_mean=self.logit_normal_mean,
            logit_normal_std=self.logit_normal_std,
        )

    def sampling(self, latent_shape: Sequence[int]) -> dict[str, Any]:
        """Keyword arguments of :func:`latentbench.diffusion.samplers.sample` fixed by the recipe."""
        return {
            "method": self.sampler,
            "steps": self.sample_steps,
            "sample_shift": self.resolve_shift(self.sample_shift, latent_shape),
            "cfg_channels": self.cfg_channels,
            "cfg_interval": self.cfg_interval,
        }

    def steps_for(self, size: str) -> int:
        """Training steps for a size preset."""
        return int(self.train_steps.get(size, self.train_steps["*"]))


RECIPES: dict[str, Recipe] = {
    # iFID (seed 000): ifid/sit/sit.py, train.py, generate.py, README; spec §1.6 "iFID SiT".
    "ifid_sit": Recipe(
        name="ifid_sit",
        ffn="mlp",
        norm="layernorm",
        rope="none",
        qk_norm=False,
        latent_bn=True,
        time_convention="noise_at_1",
        t_sampler="uniform",
        train_shift="auto",
        loss="mse",
        latent_norm="bn_online",
        lr=1e-4,
        betas=(0.9, 0.999),
        batch_size=128,
        train_steps={"*": 400_000},  # SiT-XL assumed equal to SiT-B (spec §1.6 ⚠)
        grad_clip=1.0,
        ema_decay=0.9999,
        ema_buffers=True,
        precision="fp32",  # TF32 on
        sampler="sde",
        sample_steps=250,
        sample_shift="auto",
        cfg_channels="all",
        cfg_interval=(0.0, 1.0),  # guidance_low/high in shifted noise-time
    ),
    # Diffusability study (seed 001 Tab. 2) "SiT-B / XL": QK-norm on, data-time, uniform t.
    "study_sit": Recipe(
        name="study_sit",
        ffn="mlp",
        norm="layernorm",
        rope="none",
        qk_norm=True,
        latent_bn=False,
        time_convention="data_at_1",
        t_sampler="uniform",
        train_shift=1.0,
        loss="mse",
        latent_norm="channel_stats",
        lr=1e-4,
        betas=(0.9, 0.999),
        batch_size=256,
        train_steps={"XL": 80_000, "*": 400_000},
        grad_clip=1.0,  # assumed
        ema_decay=0.9999,  # assumed
        ema_buffers=False,
        precision="bf16",  # assumed
        sampler="euler",
        sample_steps=50,
        sample_shift=1.0,
        cfg_channels="all",
        cfg_interval=None,
    ),
    # hustvl/LightningDiT configs/lightningdit_xl_vavae_f16d32.yaml + inference (spec §1.6, §1.7).
    "lightningdit_official": Recipe(
        name="lightningdit_official",
        ffn="swiglu",
        norm="rmsnorm",
        rope="2d",
        qk_norm=False,
        latent_bn=False,
        time_convention="data_at_1",
        t_sampler="logit_normal",
        train_shift=1.0,
        loss="mse_cos",
        latent_norm="channel_stats",
        lr=2e-4,
        betas=(0.9, 0.95),
        batch_size=1024,
        train_steps={"*": 80_000},
        grad_clip=None,
        ema_decay=0.9999,
        ema_buffers=False,
        precision="bf16",
        sampler="euler",
        sample_steps=249,  # num_sampling_steps = 250 torchdiffeq points = 249 Euler steps
        sample_shift=0.3,  # timestep_shift in data-time
        cfg_channels="first3",  # forward_with_cfg guides channels [:3] (DiT#41, LightningDiT#21)
        cfg_interval=(0.11, 1.0),  # cfg_interval_start: unguided for shifted t < 0.11
    ),
}

# Diffusability study LightningDiT-B / XL (seed 001 Tab. 2): the official recipe plus QK-norm, 100k steps,
# and the study's sampler (50-step Euler, no shift, guidance on all channels without interval; spec §1.10).
RECIPES["study_lightningdit"] = replace(
    RECIPES["lightningdit_official"],
    name="study_lightningdit",
    qk_norm=True,
    train_steps={"*": 100_000},
    sample_steps=50,
    sample_shift=1.0,
    cfg_channels="all",
    cfg_interval=None,
)


def get_recipe(recipe: str | Recipe) -> Recipe:
    """Look up a recipe by name (or pass a Recipe through)."""
    if isinstance(recipe, Recipe):
        return recipe
    if recipe not in RECIPES:
        raise ValueError(f"recipe must be one of {sorted(RECIPES)}, got {recipe!r}")
    return RECIPES[recipe]


_OVERRIDABLE = {f.name for f in fields(DiTConfig)} - {"latent_shape", "patch_size", "num_classes"}


def backbone_config(
    size: str,
    recipe: str | Recipe,
    latent_shape: Sequence[int],
    patch_size: int,
    num_classes: int = 1000,
    **overrides: Any,
) -> DiTConfig:
    """The :class:`DiTConfig` that :func:`build_backbone` builds (no weights allocated)."""
    if size not in SIZE_PRESETS:
        raise ValueError(f"size must be one of {list(SIZE_PRESETS)}, got {size!r}")
    unknown = set(overrides) - _OVERRIDABLE
    if unknown:
        raise ValueError(f"unknown overrides {sorted(unknown)}; allowed: {sorted(_OVERRIDABLE)}")
    r = get_recipe(recipe)
    hidden, depth, heads = SIZE_PRESETS[size]
    latent_shape = tuple(int(s) for s in latent_shape)
    rope = r.rope
    if rope == "2d" and len(latent_shape) == 2:
        # LightningDiT has no 1-D path; 1-D RoPE over the token index is our assumption (spec §1.8).
        rope = "1d"
    params: dict[str, Any] = dict(
        hidden=hidden,
        depth=depth,
        heads=heads,
        ffn=r.ffn,
        norm=r.norm,
        rope=rope,
        qk_norm=r.qk_norm,
        latent_bn=r.latent_bn,
        class_dropout_prob=r.class_dropout_prob,
    )
    params.update(overrides)
    return DiTConfig(latent_shape=latent_shape, patch_size=int(patch_size), num_classes=int(num_classes), **params)


def build_backbone(
    size: str,
    recipe: str | Recipe,
    latent_shape: Sequence[int],
    patch_size: int,
    num_classes: int = 1000,
    **overrides: Any,
) -> DiT:
    """Build the DiT of ``recipe`` at ``size`` for ``latent_shape`` (C, H, W) or (T, C).

    ``size`` in {"demo", "S", "B", "L", "XL"}; ``recipe`` a name of :data:`RECIPES`;
    ``overrides`` replace any :class:`DiTConfig` flag (hidden, depth, heads, qk_norm,
    attention_backend, learn_sigma, ...). Build under ``torch.device("meta")`` to count
    parameters without allocating them.
    """
    return DiT(backbone_config(size, recipe, latent_shape, patch_size, num_classes, **overrides))


def resolve_patch_size(patch_size: int | str, latent_shape: tuple[int, ...]) -> int:
    """A backbone's patch size on ``latent_shape``; ``"auto"`` is the iFID paper's choice: patch 2 on
    latent grids of 32 or more (f8 tokenizers, 32x32 at 256 px), 1 on 16x16 grids and on 1-D tokens
    (spec models.md §1.8; iFID ``train.py`` trains SiT-*/2 on SD-VAE-like and SiT-*/1 on f16 latents)."""
    if patch_size != "auto":
        return int(patch_size)
    if len(latent_shape) != 3:
        return 1
    return 2 if min(latent_shape[1:]) >= 32 else 1
