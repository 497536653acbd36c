"""Read a local weight file into a model built without weights (``pretrained=False``).

One loader for every timm network of the suite (FDr6's spaces, the foundation encoders): the
file's state dict goes through the model module's own ``checkpoint_filter_fn`` — what timm's
``load_pretrained`` applies after a download (timm ``_builder.py``): it converts released
formats (C-RADIO's ``radio_model.*`` keys) and resamples position embeddings to the built grid
— then into the model with ``strict=True``, so a wrong file fails naming its keys.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from torch import nn

from latentbench.weights_io import read_state

__all__ = ["load_timm_weights", "read_state_dict"]


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors of a ``.safetensors`` file or a torch checkpoint (latentbench.weights_io.read_state)."""
    return read_state(path)


def load_state_strict(model: nn.Module, state: dict[str, torch.Tensor], path: str | Path, what: str) -> None:
    """``model.load_state_dict(state, strict=True)``; a mismatch raises ValueError naming ``path`` and ``what``."""
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise ValueError(f"{path}: not the weights of {what}: {err}") from None


def load_timm_weights(model: nn.Module, path: str | Path, state: dict[str, torch.Tensor] | None = None) -> None:
    """Load ``path`` (or an already converted ``state``) into the timm ``model``, filtered as timm does."""
    if state is None:
        state = read_state_dict(path)
    filter_fn = getattr(sys.modules[type(model).__module__], "checkpoint_filter_fn", None)
    if filter_fn is not None:
        state = filter_fn(state, model)
    name = getattr(model, "pretrained_cfg", {}).get("architecture", type(model).__name__)
    load_state_strict(model, state, path, f"timm {name}")
