"""Small helpers shared by the representation autoencoders (RAE/UAE, VTP, SVG): ImageNet
normalisation at the adapter boundary and locating / reading a row's released files.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import cache
from pathlib import Path

import torch

from latentbench.tokenizers.pretrained.base import WeightsError

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


def read_state(path: Path, key: str | None = None) -> Mapping[str, torch.Tensor]:
    """A state dict from a ``.safetensors`` or torch file, unwrapped from ``key`` when given."""
    path = Path(path)
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # noqa: BLE001 (one line naming the file)
        raise WeightsError(f"{path}: cannot read weights ({type(exc).__name__}: {exc})") from None
    if key is not None:
        if not isinstance(state, Mapping) or key not in state:
            found = list(state)[:5] if isinstance(state, Mapping) else type(state).__name__
            raise WeightsError(f"{path}: expected the weights under key {key!r}, found {found}")
        state = state[key]
    if not isinstance(state, Mapping):
        raise WeightsError(f"{path}: expected a state dict, got {type(state).__name__}")
    return state


def zero_std(mean: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Moments of a deterministic encoder: the latent and a zero std."""
    return mean, torch.zeros_like(mean)
