"""Canny edges as ControlNet-1.0's annotator computes them (spec metrics-ifid-seesaw §7.2).

lllyasviel/ControlNet ``annotator/canny/__init__.py``: ``cv2.Canny(img, low, high)`` on the
RGB uint8 image with thresholds 100/200 (apertureSize 3, L2gradient False), no blur, no grey
conversion (OpenCV takes the largest gradient over the three channels), at the image's own
resolution (seesaw-notes §1, §4: never upsample first). Output {0, 255} -> /255 -> {0, 1} map.
"""

from __future__ import annotations

import numpy as np

from latentbench.drift.projectors import check_images, register_projector


class CannyProjector:
    """uint8 RGB (N, H, W, 3) -> binary edge maps float32 (N, H, W) in {0, 1}."""

    kind = "map"

    def __init__(self, low: int = 100, high: int = 200, weights=None, device=None) -> None:
        del weights, device  # no network: accepted so every projector builds the same way
        if not 0 <= low <= high:
            raise ValueError(f"canny thresholds: expected 0 <= low <= high, got {low}, {high}")
        self.low, self.high = low, high

    def __call__(self, images: np.ndarray) -> np.ndarray:
        import cv2

        images = check_images(images)
        return np.stack([cv2.Canny(img, self.low, self.high) for img in images]).astype(np.float32) / 255.0


register_projector("canny", "canny")(CannyProjector)
