"""Read released weight files: the one reader every adapter, projector and encoder uses.

:func:`load_weights_file` returns what a file holds without a second in-memory copy;
:func:`read_state` unwraps a state dict of tensors from it (optionally under ``key``). Every
failure is one :class:`~latentbench.errors.WeightsError` line naming the file.
"""

from __future__ import annotations

import logging
import pickle
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from latentbench.errors import WeightsError

log = logging.getLogger(__name__)

__all__ = ["load_weights_file", "read_state"]


def load_weights_file(path: Path | str) -> Any:
    """The object stored in a released weights file, without a second in-memory copy.

    ``.safetensors``: :func:`safetensors.torch.load_file`. Pickled torch files (``.pt``,
    ``.pth``, ``.ckpt``) are memory-mapped (``torch.load(mmap=True)``): tensors stay backed by
    the file until used, so dropping the parts an adapter does not need (a discriminator, a
    foundation model) costs no memory. ``weights_only=True`` first; a file that pickles other
    objects (Lightning / training checkpoints keep their hyper-parameters, argparse namespaces)
    is re-read with ``weights_only=False`` and a warning: only load files from the manifest.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: weights file not found")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path), device="cpu")
        for weights_only in (True, False):
            try:
                return torch.load(path, map_location="cpu", mmap=True, weights_only=weights_only)
            except pickle.UnpicklingError:
                if not weights_only:
                    raise
                log.warning("%s: holds non-tensor objects; loading it with weights_only=False", path)
            except RuntimeError as exc:  # legacy (pre-zip) files cannot be memory-mapped
                if "mmap" not in str(exc):
                    raise
                return torch.load(path, map_location="cpu", weights_only=weights_only)
    except Exception as exc:  # noqa: BLE001 (any unreadable file becomes one line naming it)
        raise WeightsError(f"{path}: cannot read weights ({type(exc).__name__}: {exc})") from None
    raise AssertionError("unreachable")


def read_state(path: Path | str, key: str | None = None) -> dict[str, torch.Tensor]:
    """The state dict of tensors in ``path`` (under ``key`` when given); WeightsError otherwise."""
    path = Path(path)
    blob = load_weights_file(path)
    if key is not None:
        if not isinstance(blob, Mapping) or key not in blob:
            found = list(blob)[:8] if isinstance(blob, Mapping) else type(blob).__name__
            raise WeightsError(f"{path}: expected the state dict under key {key!r}, found {found}")
        blob = blob[key]
    if not isinstance(blob, Mapping) or not all(isinstance(v, torch.Tensor) for v in blob.values()):
        raise WeightsError(f"{path}: {key or 'file'} is not a state dict of tensors")
    return dict(blob)
