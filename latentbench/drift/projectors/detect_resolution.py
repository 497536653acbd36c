"""Detection resolution of the map projectors (spec metrics-ifid-seesaw §7.2, seesaw-notes §2.3).

``native`` (default): every detector runs on the image as given (the DAG's 256^2 images).
``controlnet``: as ControlNet-1.0's UIs do, each image is first resized so that its SHORTER side
is the detector's resolution (:data:`CONTROLNET_DETECT_RESOLUTION`: Canny 512 = the canny UI's
image resolution, MiDaS depth 384, UniFormer seg 512), the detector runs there, and its map is
resized back to the image's size: bilinear for Canny and depth maps, nearest for seg label maps.

The up-front resize is ControlNet's ``resize_image`` (lllyasviel/ControlNet
``annotator/util.py``, commit 5b9908e)::

    k = resolution / min(H, W); H, W = round(H * k / 64) * 64, round(W * k / 64) * 64
    cv2.resize(img, (W, H), interpolation=INTER_LANCZOS4 if k > 1 else INTER_AREA)

and the way back is that of its UIs (``gradio_depth2image.py``: ``cv2.resize(detected_map, (W, H),
interpolation=cv2.INTER_LINEAR)`` on the uint8 map; ``gradio_seg2image.py``: ``INTER_NEAREST`` on
the colour map, i.e. on the labels). Maps therefore go back through uint8 (lossless for Canny's
{0, 1} and the paper's depth, both k / 255) and stay on the k / 255 grid.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from latentbench.drift.projectors import check_images

__all__ = [
    "CONTROLNET_DETECT_RESOLUTION",
    "DETECT_RESOLUTIONS",
    "controlnet_size",
    "detect_at",
    "detect_at_role",
    "resize_image",
]

DETECT_RESOLUTIONS = ("native", "controlnet")

# ControlNet-1.0 UI defaults per map role: gradio_canny2image image_resolution 512 (Canny runs
# on the resized image), gradio_depth2image detect_resolution 384, gradio_seg2image 512.
CONTROLNET_DETECT_RESOLUTION: dict[str, int] = {"canny": 512, "depth": 384, "seg": 512}

# How a role's map goes back to the image size: maps bilinear, label maps nearest.
_BACK = {"canny": "linear", "depth": "linear", "seg": "nearest"}


def controlnet_size(height: int, width: int, resolution: int) -> tuple[int, int, float]:
    """(H, W, k) of ControlNet's ``resize_image``: short side to ``resolution`` (k = resolution /
    min(H, W)), each side then rounded to a multiple of 64 (numpy round: half to even)."""
    if height <= 0 or width <= 0 or resolution <= 0:
        raise ValueError(f"detect resolution: expected positive sizes, got {height}x{width} -> {resolution}")
    k = float(resolution) / min(float(height), float(width))
    return int(np.round(height * k / 64.0)) * 64, int(np.round(width * k / 64.0)) * 64, k


def resize_image(image: np.ndarray, resolution: int) -> np.ndarray:
    """One uint8 (H, W, 3) image resized as ControlNet's ``annotator.util.resize_image``."""
    import cv2

    h, w, k = controlnet_size(image.shape[0], image.shape[1], resolution)
    return cv2.resize(image, (w, h), interpolation=cv2.INTER_LANCZOS4 if k > 1 else cv2.INTER_AREA)


def _resize_back(maps: np.ndarray, height: int, width: int, back: str) -> np.ndarray:
    """Detector maps (N, h, w) -> (N, height, width): ``linear`` for [0, 1] maps (via uint8, as
    ControlNet resizes its uint8 detected map), ``nearest`` for integer label maps."""
    import cv2

    if back == "nearest":
        labels = np.asarray(maps)
        if labels.size and (labels.min() < 0 or labels.max() > np.iinfo(np.int32).max):
            raise ValueError(f"label maps: classes must lie in [0, 2^31), got {labels.min()}..{labels.max()}")
        out = [cv2.resize(m.astype(np.int32), (width, height), interpolation=cv2.INTER_NEAREST) for m in labels]
        return np.stack(out).astype(labels.dtype)
    as_uint8 = np.clip(np.rint(np.asarray(maps, np.float32) * 255.0), 0, 255).astype(np.uint8)
    out = [cv2.resize(m, (width, height), interpolation=cv2.INTER_LINEAR) for m in as_uint8]
    return np.stack(out).astype(np.float32) / 255.0


def detect_at(detect: Callable[[np.ndarray], np.ndarray], images: np.ndarray, resolution: int, back: str,
              chunk: int = 16) -> np.ndarray:
    """Run ``detect`` (uint8 (N, H, W, 3) -> maps (N, H', W')) at ControlNet's ``resolution`` and
    return its maps at the images' own (H, W), resized back ``back`` = ``linear`` | ``nearest``.
    ``chunk`` images at a time, so the up-sampled batch (and the detector's activations at
    512^2) stay small whatever the caller's batch size."""
    if back not in ("linear", "nearest"):
        raise ValueError(f"back: expected 'linear' or 'nearest', got {back!r}")
    images = check_images(images)
    if len(images) == 0:
        return detect(images)
    height, width = images.shape[1:3]
    out = []
    for start in range(0, len(images), chunk):
        big = np.stack([resize_image(img, resolution) for img in images[start : start + chunk]])
        out.append(_resize_back(np.asarray(detect(big)), height, width, back))
    return np.concatenate(out)


def detect_at_role(role: str, detect: Callable[[np.ndarray], np.ndarray], images: np.ndarray, mode: str) -> np.ndarray:
    """The map of map role ``role`` (canny, depth, seg) under ``detect_resolution`` = ``mode``:
    ``native`` calls ``detect(images)``; ``controlnet`` runs it through :func:`detect_at` at the
    role's :data:`CONTROLNET_DETECT_RESOLUTION` with the role's way back."""
    if mode not in DETECT_RESOLUTIONS:
        raise ValueError(f"detect_resolution: expected one of {DETECT_RESOLUTIONS}, got {mode!r}")
    if role not in CONTROLNET_DETECT_RESOLUTION:
        raise ValueError(f"detect_resolution applies to the map roles {sorted(_BACK)}, not {role!r}")
    if mode == "native":
        return detect(images)
    return detect_at(detect, images, CONTROLNET_DETECT_RESOLUTION[role], _BACK[role])
