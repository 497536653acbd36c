"""Sharded image datasets with a manifest: write, verify, stream.

A split lives in a folder ``<root>/<split>/`` holding ``shard-00000.npz`` ..., a
``labels.npy`` with every image's class (so reading labels never reads an image) and a
``manifest.json`` that lists every shard with its image count and sha256 (and the labels
file's). The manifest is written last (atomically), so a folder without one is incomplete.
Readers load only the fields they ask for and verify each file's checksum before use,
stopping with an error naming the corrupt file.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from latentbench.errors import InputError, MissingInput
from latentbench.io import atomic_path, load_npy, read_json, save_npy, write_json

FIELDS = ("image", "label", "mask", "depth", "seg")
LABELS_FILE = "labels.npy"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def write_split(
    out_dir: str | Path,
    num_images: int,
    shard_size: int,
    make: Callable[[int, int], dict[str, np.ndarray]],
    meta: dict | None = None,
    resume_key: str | None = None,
) -> Path:
    """Write a split as shards produced by ``make(start, count)``; return the manifest path.

    With ``resume_key`` (e.g. a hash of the settings) every finished shard is recorded in
    ``.progress.json``; a rerun with the same key keeps the recorded shards whose checksum
    still matches and writes only the rest (long imports survive preemption).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    progress_path = out_dir / ".progress.json"
    done: dict[str, dict] = {}
    if resume_key is not None and progress_path.exists():
        progress = read_json(progress_path)
        if progress.get("key") == resume_key:
            done = {e["file"]: e for e in progress["shards"]}
    shards, labels = [], []
    for index, start in enumerate(range(0, num_images, shard_size)):
        count = min(shard_size, num_images - start)
        name = f"shard-{index:05d}.npz"
        previous = done.get(name)
        if previous and previous["count"] == count and (out_dir / name).exists() and _sha256(out_dir / name) == previous["sha256"]:
            shards.append(previous)
            with np.load(out_dir / name) as data:
                labels.append(data["label"])
            continue
        arrays = make(start, count)
        missing = [f for f in ("image", "label") if f not in arrays]
        if missing:
            raise ValueError(f"shard {index} of {out_dir}: missing fields {missing}")
        with atomic_path(out_dir / name, suffix=".npz") as tmp:
            np.savez(tmp, **arrays)
        labels.append(np.asarray(arrays["label"]))
        shards.append({"file": name, "count": count, "sha256": _sha256(out_dir / name)})
        if resume_key is not None:
            write_json(progress_path, {"key": resume_key, "shards": shards})
    save_npy(out_dir / LABELS_FILE, np.concatenate(labels) if labels else np.zeros(0, np.int64))
    manifest = {
        "num_images": num_images,
        "shards": shards,
        "labels": {"file": LABELS_FILE, "sha256": _sha256(out_dir / LABELS_FILE)},
        "fields": sorted(make(0, 1).keys()) if num_images else [],
        "meta": meta or {},
    }
    write_json(out_dir / "manifest.json", manifest)
    progress_path.unlink(missing_ok=True)
    return out_dir / "manifest.json"


class ShardedSplit:
    """Read access to one split written by :func:`write_split`."""

    def __init__(self, split_dir: str | Path, verify: bool = True) -> None:
        self.dir = Path(split_dir)
        manifest_path = self.dir / "manifest.json"
        if not manifest_path.exists():
            raise MissingInput(f"{manifest_path}: no manifest; the split is missing or incomplete")
        self.manifest = read_json(manifest_path)
        self.verify = verify
        self._verified: set[str] = set()

    def __len__(self) -> int:
        return int(self.manifest["num_images"])

    @property
    def meta(self) -> dict:
        return self.manifest.get("meta", {})

    def _check(self, path: Path, sha256: str, what: str = "shard") -> None:
        if not path.exists():
            raise MissingInput(f"{path}: {what} listed in the manifest is missing")
        if self.verify and path.name not in self._verified:
            if _sha256(path) != sha256:
                raise InputError(f"{path}: corrupt {what} (sha256 does not match the manifest)")
            self._verified.add(path.name)

    def read_shard(self, index: int, fields: tuple[str, ...] = FIELDS) -> dict[str, np.ndarray]:
        """The ``fields`` (those present) of shard ``index``; only those arrays are read from the file."""
        entry = self.manifest["shards"][index]
        path = self.dir / entry["file"]
        self._check(path, entry["sha256"])
        try:
            with np.load(path) as data:
                arrays = {k: data[k] for k in fields if k in data.files}
        except Exception as exc:  # noqa: BLE001 - any decode failure means a corrupt shard
            raise InputError(f"{path}: corrupt shard ({exc})") from None
        for k, v in arrays.items():
            if len(v) != entry["count"]:
                raise InputError(f"{path}: {k} holds {len(v)} rows, manifest says {entry['count']}")
        return arrays

    def iter_shards(self, fields: tuple[str, ...] = FIELDS) -> Iterator[dict[str, np.ndarray]]:
        """Yield shard dicts in order, restricted to ``fields`` present in the data (only those are read)."""
        for index in range(len(self.manifest["shards"])):
            yield self.read_shard(index, fields)

    def has_field(self, field: str) -> bool:
        """Whether the split's shards hold ``field`` (e.g. ``mask``)."""
        if "fields" in self.manifest:
            return field in self.manifest["fields"]
        return bool(self.manifest["shards"]) and field in self.read_shard(0, (field,))

    def labels(self) -> np.ndarray:
        """Every image's class label, from ``labels.npy`` (no image is read); older splits without
        the file read the label arrays of the shards only."""
        entry = self.manifest.get("labels")
        if entry is None:
            return np.concatenate([s["label"] for s in self.iter_shards(("label",))])
        self._check(self.dir / entry["file"], entry["sha256"], "labels file")
        labels = np.asarray(load_npy(self.dir / entry["file"], mmap=False))
        if len(labels) != len(self):
            raise InputError(f"{self.dir / entry['file']}: {len(labels)} labels, manifest says {len(self)} images")
        return labels

    def load_first(self, count: int, fields: tuple[str, ...] = FIELDS) -> dict[str, np.ndarray]:
        """The first ``count`` images (all if fewer), reading only the shards that hold them."""
        parts, held = [], 0
        for index, entry in enumerate(self.manifest["shards"]):
            if held >= count:
                break
            shard = self.read_shard(index, fields)
            parts.append({k: v[: count - held] for k, v in shard.items()})
            held += min(entry["count"], count - held)
        return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}

    def iter_batches(self, batch_size: int, fields: tuple[str, ...] = FIELDS) -> Iterator[dict[str, np.ndarray]]:
        """Yield batches of exactly ``batch_size`` (last one shorter) across shard borders, in order."""
        buffer: dict[str, list[np.ndarray]] = {}
        held = 0
        for shard in self.iter_shards(fields):
            for k, v in shard.items():
                buffer.setdefault(k, []).append(v)
            held += len(next(iter(shard.values())))
            while held >= batch_size:
                joined = {k: np.concatenate(v) for k, v in buffer.items()}
                yield {k: v[:batch_size] for k, v in joined.items()}
                buffer = {k: [v[batch_size:]] for k, v in joined.items()}
                held -= batch_size
        if held:
            yield {k: np.concatenate(v) for k, v in buffer.items()}

    def load_subset(self, max_images: int, fields: tuple[str, ...] = FIELDS) -> dict[str, np.ndarray]:
        """At most ``max_images`` images spread evenly over the split (every k-th), streamed shard by
        shard so memory holds only the subset; the whole split when it is small enough."""
        if max_images < 1:
            raise InputError(f"max_images: must be positive, got {max_images}")
        stride = max(1, -(-len(self) // max_images))
        parts, start = [], 0
        for shard in self.iter_shards(fields):
            n = len(next(iter(shard.values())))
            keep = np.arange((-start) % stride, n, stride)
            parts.append({k: v[keep] for k, v in shard.items()})
            start += n
        return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}

    def load_all(self, fields: tuple[str, ...] = FIELDS) -> dict[str, np.ndarray]:
        """Load the whole split into memory (for demo-sized splits only)."""
        parts = list(self.iter_shards(fields))
        return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def images_to_tensor(images: np.ndarray):
    """uint8 NHWC -> float32 NCHW in [0, 1] (the suite's image convention)."""
    import torch

    return torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float().div_(255.0)
