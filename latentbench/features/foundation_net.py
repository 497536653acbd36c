"""Build a foundation encoder of spec metrics-diffusability.md §11.3 and read its 16x16 token grid.

The table of encoders and how each is read is :data:`latentbench.features.foundation.FOUNDATION_SPECS`
(module docstring there). Networks are built from their configuration (timm ``pretrained=False``,
transformers from a ``Dinov2Config``), then loaded from the weights-manifest file
(latentbench.weights_fetch.resolve_entry; never downloaded): a missing file raises
WeightMissing naming the file and where to get it.
"""

from __future__ import annotations

from contextlib import nullcontext
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from latentbench.features.checkpoints import (
    load_state_strict,
    load_timm_weights,
    read_state_dict,
)
from latentbench.features.foundation import FOUNDATION_SPECS, GRID, FoundationSpec
from latentbench.weights_io import load_weights_file

__all__ = ["FoundationEncoder", "build_foundation_encoder", "convert_mocov3", "foundation_weight_path"]

# iREPA ldm/vision_encoder.py fix_mocov3_state_dict: key typos of the MoCo v3 ViT-L checkpoint
_MOCOV3_TYPOS = {
    "blocks.13.norm13": "blocks.13.norm1",
    "blocks.13.mlp.fc13": "blocks.13.mlp.fc1",
    "blocks.14.norm14": "blocks.14.norm2",
    "blocks.14.mlp.fc14": "blocks.14.mlp.fc2",
}
_MOCOV3_PREFIX = "module.base_encoder."


def convert_mocov3(checkpoint: dict) -> dict[str, torch.Tensor]:
    """A MoCo v3 training checkpoint -> timm ViT keys (iREPA's ``fix_mocov3_state_dict``).

    Keeps the momentum-free ``base_encoder`` without its projection head (``head.*``, ``fc.*``),
    repairs the key typos of blocks 13-14. The position embedding keeps its 14x14 grid (timm
    resamples it to 16x16 at 256 px, as iREPA's ``resample_abs_pos_embed``).
    """
    state = checkpoint.get("state_dict", checkpoint)
    out = {}
    for key, value in state.items():
        if not key.startswith(_MOCOV3_PREFIX):
            continue
        key = key[len(_MOCOV3_PREFIX) :]
        for typo, fixed in _MOCOV3_TYPOS.items():
            key = key.replace(typo, fixed)
        if key.split(".")[0] not in ("head", "fc"):
            out[key] = value
    if not out:
        raise ValueError(f"not a MoCo v3 checkpoint: no '{_MOCOV3_PREFIX}*' keys")
    return out


def foundation_weight_path(key: str, weights_dir: str | Path | None) -> Path:
    """The encoder's weight file (manifest entry), or WeightMissing saying what to fetch from where."""
    from latentbench.weights_fetch import resolve_entry

    return resolve_entry(_spec(key).weights, weights_dir)


def _spec(key: str) -> FoundationSpec:
    if key not in FOUNDATION_SPECS:
        raise ValueError(f"unknown foundation encoder {key!r}; known: {', '.join(FOUNDATION_SPECS)}")
    return FOUNDATION_SPECS[key]


def _build(spec: FoundationSpec, path: Path | None) -> tuple[nn.Module, int, int]:
    """(model, feature dim, prefix tokens), loaded from ``path`` unless None (random init)."""
    if spec.backend == "timm":
        import timm

        model = timm.create_model(spec.model, pretrained=False, dynamic_img_size=True, **spec.kwargs)
        if path is not None:
            state = convert_mocov3(load_weights_file(path)) if spec.convert == "mocov3" else None
            load_timm_weights(model, path, state)
        if not spec.final_norm:
            model.norm = nn.Identity()  # iREPA reads these encoders' tokens before their final norm
        return model, int(model.num_features), int(model.num_prefix_tokens)
    if spec.backend == "transformers":
        from transformers import Dinov2Config, Dinov2Model

        config = Dinov2Config(**spec.kwargs)
        model = Dinov2Model(config)
        if path is not None:
            load_state_strict(model, read_state_dict(path), path, f"transformers Dinov2Model ({spec.key})")
        return model, int(config.hidden_size), 1 + int(getattr(config, "num_register_tokens", 0) or 0)
    raise ValueError(f"{spec.key}: unknown backend {spec.backend!r}")


class FoundationEncoder:
    """Frozen encoder: [0, 1] images [N, 3, H, W] -> patch-token grid [N, D, 16, 16] (float32).

    A plain callable (not a Module), so a regulariser holding it never saves or trains it.
    """

    def __init__(self, spec: FoundationSpec, model: nn.Module, dim: int, prefix_tokens: int, device: torch.device) -> None:
        self.spec, self.model, self.dim, self.prefix_tokens, self.device = spec, model, dim, prefix_tokens, device
        self.name = spec.key
        self.mean = torch.tensor(spec.mean, device=device).view(1, 3, 1, 1)
        self.std = torch.tensor(spec.std, device=device).view(1, 3, 1, 1)

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """Resize to the encoder's input size (its own interpolation), then its mean/std."""
        if images.ndim != 4 or images.shape[1] != 3 or not images.is_floating_point():
            raise ValueError(f"{self.name}: expected float [N, 3, H, W] images in [0, 1], got {tuple(images.shape)} {images.dtype}")
        x = images.to(self.device, torch.float32)
        size = self.spec.input_size
        if tuple(x.shape[-2:]) != (size, size):
            x = F.interpolate(x, size=(size, size), mode=self.spec.resize, antialias=self.spec.antialias, align_corners=False)
        return (x - self.mean) / self.std

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        x = self.preprocess(images)
        if self.spec.backend == "transformers":
            tokens = self.model(pixel_values=x).last_hidden_state
        else:
            tokens = self.model.forward_features(x)
        patches = tokens[:, self.prefix_tokens :]
        if patches.shape[1] != GRID * GRID:
            raise ValueError(f"{self.name}: {patches.shape[1]} patch tokens, expected {GRID}x{GRID}")
        return patches.transpose(1, 2).reshape(len(x), self.dim, GRID, GRID).float()


def build_foundation_encoder(
    key: str,
    weights_dir: str | Path | None = None,
    device: str | torch.device = "cpu",
    random_init: bool = False,
    weights: str | Path | None = None,
) -> FoundationEncoder:
    """The frozen encoder ``key`` (a Table 1 variant, e.g. ``DINOv2-B``) in eval mode.

    Weights: ``weights`` (a file) or the manifest entry's file under ``weights_dir`` (and the
    Hugging Face cache); resolved before the network is built, so a missing file fails at once.
    ``random_init`` keeps the random initialisation (tests only); ``device="meta"`` builds the
    full-size network without memory (shapes only; implies ``random_init``).
    """
    spec = _spec(key)
    device = torch.device(device)
    random_init = random_init or device.type == "meta"
    path = None if random_init else Path(weights) if weights is not None else foundation_weight_path(key, weights_dir)
    with torch.device("meta") if device.type == "meta" else nullcontext():
        model, dim, prefix = _build(spec, path)
    model = model.to(device).eval().requires_grad_(False)
    return FoundationEncoder(spec, model, dim, prefix, device)
