"""Image grids written as PNG (interpolation strips, sample thumbnails), via torchvision."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torchvision.utils import make_grid, save_image

from latentbench.io import atomic_path


def save_grid(rows: list[torch.Tensor], path: str | Path, scale: int = 3, pad: int = 2) -> None:
    """Save rows of images (each [N,3,H,W] in [0, 1], same N) as one PNG grid, upscaled ``scale``x
    (nearest neighbour) on a white background."""
    images = torch.cat([r.detach().float().cpu().clamp(0, 1) for r in rows])
    grid = make_grid(images, nrow=len(rows[0]), padding=pad, pad_value=1.0)
    grid = F.interpolate(grid[None], scale_factor=scale, mode="nearest")[0]
    with atomic_path(path, suffix=".png") as tmp:
        save_image(grid, tmp, format="png")
