"""Image grids: the same pixels as torchvision's ``make_grid`` + ``save_image`` (the oracle)."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torchvision.utils import make_grid

from latentbench.images import grid_array, save_grid


def _torchvision_grid(rows: list[torch.Tensor], scale: int, pad: int) -> np.ndarray:
    grid = make_grid(torch.cat(rows).clamp(0, 1), nrow=len(rows[0]), padding=pad, pad_value=1.0)
    grid = F.interpolate(grid[None], scale_factor=scale, mode="nearest")[0]
    # torchvision.utils.save_image: mul(255).add_(0.5).clamp_(0, 255) -> uint8, HWC
    return grid.mul(255).add_(0.5).clamp_(0, 255).permute(1, 2, 0).to(torch.uint8).numpy()


def test_grid_equals_torchvision(tmp_path) -> None:
    gen = torch.Generator().manual_seed(0)
    rows = [torch.rand(4, 3, 5, 7, generator=gen) * 1.2 - 0.1 for _ in range(3)]
    for scale, pad in [(1, 2), (3, 2), (2, 0)]:
        np.testing.assert_array_equal(grid_array(rows, scale, pad), _torchvision_grid(rows, scale, pad))
    save_grid(rows, tmp_path / "g.png")
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "g.png")), _torchvision_grid(rows, 3, 2))
