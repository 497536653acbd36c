"""Image grids for the report: thumbnails written as PNG."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from latentbench.io import atomic_path


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """Float NCHW in [0, 1] (clamped) -> uint8 NHWC."""
    return (images.detach().float().clamp(0, 1) * 255).round().byte().permute(0, 2, 3, 1).cpu().numpy()


def save_grid(rows: list[torch.Tensor], path: str | Path, scale: int = 3, pad: int = 2) -> None:
    """Save rows of images (each a [N,3,H,W] tensor, same N) as one PNG grid, upscaled ``scale``x."""
    arrays = [to_uint8(r) for r in rows]
    n, h, w = arrays[0].shape[:3]
    grid = np.full((len(arrays) * (h + pad) + pad, n * (w + pad) + pad, 3), 255, np.uint8)
    for i, row in enumerate(arrays):
        for j in range(n):
            y, x = pad + i * (h + pad), pad + j * (w + pad)
            grid[y : y + h, x : x + w] = row[j]
    image = Image.fromarray(grid).resize((grid.shape[1] * scale, grid.shape[0] * scale), Image.NEAREST)
    with atomic_path(path, suffix=".png") as tmp:
        image.save(tmp)
