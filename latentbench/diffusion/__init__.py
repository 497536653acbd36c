"""Diffusion backbones (SiT, iFID-SiT, LightningDiT), flow-matching transport and samplers.

Entry points: :func:`build_backbone` (a :class:`DiT` for a size preset and a named recipe),
:class:`Transport` (``training_loss`` is all a training step needs; ``validation_loss`` is the
held-out diffusion-loss metric) and :func:`sample` (Euler ODE / SDE with CFG). The time
convention lives on the recipe and the Transport, never on the model (spec models.md §1.1).
"""

from latentbench.diffusion.models import DiT, DiTConfig
from latentbench.diffusion.recipes import RECIPES, SIZE_PRESETS, Recipe, backbone_config, build_backbone, get_recipe
from latentbench.diffusion.samplers import partial_noise, sample, time_grid
from latentbench.diffusion.transport import (
    Transport,
    auto_shift,
    convert_shift,
    from_noise_time,
    shift_time,
    stratified_times,
    to_noise_time,
    velocity_to_noise_time,
)

__all__ = [
    "DiT",
    "DiTConfig",
    "RECIPES",
    "SIZE_PRESETS",
    "Recipe",
    "Transport",
    "auto_shift",
    "backbone_config",
    "build_backbone",
    "convert_shift",
    "from_noise_time",
    "get_recipe",
    "partial_noise",
    "sample",
    "shift_time",
    "stratified_times",
    "time_grid",
    "to_noise_time",
    "velocity_to_noise_time",
]
