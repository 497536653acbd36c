"""A trained backbone on disk: save and load with its recipe, latent shape and latent normaliser."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from latentbench.diffusion.recipes import resolve_patch_size, Recipe, build_backbone, get_recipe
from latentbench.errors import InputError
from latentbench.io import atomic_path

LATENT_NORMS = ("channel_stats", "bn_online")


class LatentNormalizer:
    """The recipe's latent normalisation outside the model (spec models.md §1.6 ``latent_norm``).

    ``channel_stats``: (z − mean_c)/std_c with the cache's per-channel statistics (LightningDiT);
    ``bn_online``: identity here, the model's own BatchNorm normalises (iFID SiT).
    """

    def __init__(self, kind: str, mean: torch.Tensor, std: torch.Tensor) -> None:
        if kind not in LATENT_NORMS:
            raise InputError(f"latent_norm {kind!r} is not available for tokenizers trained in the DAG")
        self.kind, self.mean, self.std = kind, mean, std

    def __call__(self, z: torch.Tensor) -> torch.Tensor:
        return (z - self.mean) / self.std if self.kind == "channel_stats" else z

    def invert(self, u: torch.Tensor) -> torch.Tensor:
        return u * self.std + self.mean if self.kind == "channel_stats" else u

    def to(self, device: torch.device | str) -> LatentNormalizer:
        return LatentNormalizer(self.kind, self.mean.to(device), self.std.to(device))


def save_backbone(
    path: str | Path, model: torch.nn.Module, backbone: dict, latent_shape: tuple[int, ...], num_classes: int,
    normalizer: LatentNormalizer, train_settings: dict[str, Any],
) -> None:
    """Write the (EMA) model with everything :func:`load_diffusion` needs to rebuild it."""
    with atomic_path(path, suffix=".pt") as tmp:
        torch.save(
            {
                "backbone": backbone,
                "latent_shape": list(latent_shape),
                "num_classes": num_classes,
                "state_dict": model.state_dict(),
                "channel_mean": normalizer.mean.cpu(),
                "channel_std": normalizer.std.cpu(),
                "train_settings": train_settings,
            },
            tmp,
        )


def load_diffusion(path: str | Path, device: torch.device | str = "cpu") -> tuple[torch.nn.Module, Recipe, LatentNormalizer, dict]:
    """The EMA model (eval mode, on ``device``), its recipe, its latent normaliser and the saved payload."""
    payload = torch.load(path, map_location="cpu", weights_only=False)
    bb = payload["backbone"]
    recipe = get_recipe(bb["recipe"])
    shape = tuple(payload["latent_shape"])
    model = build_backbone(bb["size"], recipe.name, shape, resolve_patch_size(bb["patch_size"], shape), num_classes=payload["num_classes"])
    model.load_state_dict(payload["state_dict"])
    model.eval().requires_grad_(False).to(device)
    normalizer = LatentNormalizer(recipe.latent_norm, payload["channel_mean"], payload["channel_std"]).to(device)
    return model, recipe, normalizer, payload
