"""Small helpers shared by the representation autoencoders (RAE/UAE, VTP, SVG): ImageNet
normalisation at the adapter boundary and locating / reading a row's released files.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

import torch

from latentbench.tokenizers.pretrained.base import WeightsError
from latentbench.weights_io import read_state  # noqa: F401 (re-exported for the adapters)

# torchvision / timm ImageNet statistics (timm.data.constants IMAGENET_DEFAULT_MEAN/STD); the RAE,
# UAE, VTP and SVG preprocessors all use these values.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _stat(values: tuple[float, ...], like: torch.Tensor) -> torch.Tensor:
    return torch.tensor(values, dtype=like.dtype, device=like.device).view(1, 3, 1, 1)


def to_imagenet(x01: torch.Tensor) -> torch.Tensor:
    """[0, 1] images -> ImageNet mean/std-normalised images."""
    return (x01 - _stat(IMAGENET_MEAN, x01)) / _stat(IMAGENET_STD, x01)


def from_imagenet(x: torch.Tensor) -> torch.Tensor:
    """ImageNet-normalised images -> the [0, 1] scale (not clamped)."""
    return x * _stat(IMAGENET_STD, x) + _stat(IMAGENET_MEAN, x)


@cache
def manifest_file(entry: str) -> str:
    """The file name of weights-manifest entry ``entry`` (latentbench/weights_manifest.yaml)."""
    from latentbench.weights_fetch import load_manifest

    manifest = load_manifest()
    if entry not in manifest:
        raise ValueError(f"weights manifest has no entry {entry!r}")
    return manifest[entry].file


def weight_path(weights: Path, filename: str, main: bool = False) -> Path:
    """The file ``filename`` of a row: ``weights`` is the directory holding the row's files (named as
    in the weights manifest) or, for the row's main checkpoint (``main``), that file itself."""
    weights = Path(weights)
    if weights.is_file():
        path = weights if main else weights.parent / filename
    else:
        path = weights / filename
    if not path.is_file():
        raise WeightsError(f"{path}: weight file not found (expected the manifest file {filename!r})")
    return path




def zero_std(mean: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Moments of a deterministic encoder: the latent and a zero std."""
    return mean, torch.zeros_like(mean)
