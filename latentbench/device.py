"""Where a job computes: the GPU when there is one, else the CPU (``LATENTBENCH_DEVICE`` overrides)."""

from __future__ import annotations

import os

import torch

__all__ = ["compute_device"]


def compute_device() -> torch.device:
    """``$LATENTBENCH_DEVICE`` if set (e.g. "cpu", "cuda:1"), else ``cuda`` when available, else ``cpu``.

    Inference jobs (encoding, metrics, sampling) run on this device; training jobs pick theirs
    per DDP rank (``latentbench.stages.diffusion.init_distributed``).
    """
    name = os.environ.get("LATENTBENCH_DEVICE") or ("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise ValueError(f"LATENTBENCH_DEVICE: {exc}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"LATENTBENCH_DEVICE={name}: CUDA is not available on this machine")
    return device
