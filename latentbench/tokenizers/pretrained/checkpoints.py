"""Reading the released files of the pretrained adapters: where a file is, and what it holds.

A row's ``weights`` is either the main weights file itself or a directory holding it (a
weights directory with the manifest's file names, or a Hugging Face snapshot with the Hub's
names); :func:`find_file` resolves either. Errors are one :class:`WeightsError` line naming
the file.
"""

from __future__ import annotations

import io
import json
import pickle
from collections import OrderedDict
from collections.abc import Iterable
from pathlib import Path
from typing import Any, ClassVar

import torch

from latentbench.tokenizers.pretrained.base import WeightsError


def find_file(weights: Path, names: Iterable[str], what: str) -> Path:
    """The first of ``names`` inside directory ``weights`` (or beside file ``weights``).

    ``weights`` itself is returned when it is a file whose name is one of ``names``.
    """
    names = tuple(names)
    weights = Path(weights).expanduser()
    if weights.is_file() and weights.name in names:
        return weights
    folder = weights if weights.is_dir() else weights.parent
    for name in names:
        if (folder / name).is_file():
            return folder / name
    raise WeightsError(f"{weights}: no {what} found (looked for {', '.join(names)} in {folder})")




def read_json(path: Path) -> dict[str, Any]:
    """A JSON object from ``path`` (one WeightsError line if it is not one)."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise WeightsError(f"{path}: cannot read JSON ({exc})") from None
    if not isinstance(data, dict):
        raise WeightsError(f"{path}: expected a JSON object, got {type(data).__name__}")
    return data


def _storage_from_bytes(data: bytes) -> Any:
    # A pickled tensor's storage is a nested legacy torch.save blob; read it onto the CPU even
    # when it was saved from a GPU (torch.storage._load_from_bytes would need CUDA).
    return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)


class _TensorUnpickler(pickle.Unpickler):
    """Unpickles plain containers of torch tensors only (no other code runs)."""

    _ALLOWED: ClassVar[dict[tuple[str, str], Any]] = {
        ("torch._utils", "_rebuild_tensor_v2"): torch._utils._rebuild_tensor_v2,
        ("torch._utils", "_rebuild_tensor"): torch._utils._rebuild_tensor,
        ("collections", "OrderedDict"): OrderedDict,
        ("torch.storage", "_load_from_bytes"): _storage_from_bytes,
    }

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in self._ALLOWED:
            return self._ALLOWED[(module, name)]
        raise pickle.UnpicklingError(f"{module}.{name} is not allowed in a tensor pickle")


def read_tensor_pickle(path: Path) -> Any:
    """A ``pickle.dump`` of dicts/tuples of torch tensors (saved on CPU or GPU), read onto the CPU."""
    try:
        with open(path, "rb") as fh:
            return _TensorUnpickler(fh).load()
    except FileNotFoundError:
        raise WeightsError(f"{path}: file not found") from None
    except Exception as exc:  # noqa: BLE001
        raise WeightsError(f"{path}: cannot read as a pickle of tensors ({type(exc).__name__}: {exc})") from None
