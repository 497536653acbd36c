"""Image grids written as PNG (interpolation strips, sample thumbnails), with numpy and Pillow.

(Not torchvision: importing it costs a job about a second, as it pulls in ``torch._dynamo``.)
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from latentbench.io import atomic_path


def grid_array(rows: list[torch.Tensor], scale: int = 3, pad: int = 2) -> np.ndarray:
    """Rows of images (each [N,3,H,W] in [0, 1], same N, H, W) as one uint8 [H',W',3] grid: a
    ``pad``-pixel white border around every image, then upscaled ``scale``x (nearest neighbour)."""
    images = torch.stack([r.detach().float().cpu().clamp(0, 1) for r in rows])  # [R, N, 3, H, W]
    n_rows, n_cols, _, h, w = images.shape
    # as torchvision.utils.make_grid: round half up to uint8 (x * 255 + 0.5)
    pixels = (images.permute(0, 1, 3, 4, 2).numpy() * 255 + 0.5).clip(0, 255).astype(np.uint8)
    grid = np.full((n_rows * (h + pad) + pad, n_cols * (w + pad) + pad, 3), 255, np.uint8)
    for r in range(n_rows):
        for c in range(n_cols):
            top, left = pad + r * (h + pad), pad + c * (w + pad)
            grid[top : top + h, left : left + w] = pixels[r, c]
    return grid.repeat(scale, axis=0).repeat(scale, axis=1)


def save_grid(rows: list[torch.Tensor], path: str | Path, scale: int = 3, pad: int = 2) -> None:
    """Save rows of images (each [N,3,H,W] in [0, 1], same N) as one PNG grid (:func:`grid_array`)."""
    with atomic_path(path, suffix=".png") as tmp:
        Image.fromarray(grid_array(rows, scale, pad)).save(tmp, format="png")
