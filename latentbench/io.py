"""Atomic file output and small serialisation helpers.

Every output of the DAG is written through these helpers: data goes to a temporary file
in the destination folder, which is renamed over the final name only once complete, so an
interrupted job never leaves a file that looks finished (DESIGN.md, Conventions).
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator

import numpy as np


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it to ``path`` on success.

    The temporary name keeps ``path``'s suffix (or ``suffix``) so libraries that infer
    a format from the extension (numpy, PIL, matplotlib) still work.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(
        dir=path.parent, prefix=f".{path.name}.", suffix=suffix or "".join(path.suffixes) or ".tmp"
    )
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def _json_default(obj: Any) -> Any:
    if isinstance(obj, (np.floating, np.integer)):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write ``obj`` as indented JSON, atomically. NaN/inf are written as null."""
    text = json.dumps(_finite(obj), indent=2, sort_keys=True, default=_json_default)
    with atomic_path(path) as tmp:
        tmp.write_text(text + "\n")


def _finite(obj: Any) -> Any:
    """Replace non-finite floats by None so the JSON stays standard."""
    if isinstance(obj, float):
        return obj if np.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


def read_json(path: str | os.PathLike) -> Any:
    """Read a JSON file, naming the file in the error if it is missing or corrupt."""
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: file not found") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not valid JSON ({exc})") from None


def save_npy(path: str | os.PathLike, array: np.ndarray) -> None:
    """Save a numpy array atomically (memory-mappable ``.npy``)."""
    with atomic_path(path, suffix=".npy") as tmp:
        np.save(tmp, array)


def load_npy(path: str | os.PathLike, mmap: bool = True) -> np.ndarray:
    """Load a ``.npy`` array, memory-mapped by default; corrupt files raise naming the file."""
    path = Path(path)
    try:
        return np.load(path, mmap_mode="r" if mmap else None)
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: file not found") from None
    except (ValueError, OSError, EOFError) as exc:
        raise ValueError(f"{path}: corrupt or truncated array file ({exc})") from None
