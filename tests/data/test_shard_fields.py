"""Per-field shard reads: labels without images, the first images without the rest."""

from __future__ import annotations

import numpy as np
import pytest

from latentbench.data.shards import ShardedSplit, write_split
from latentbench.errors import InputError


def _make(start: int, count: int) -> dict[str, np.ndarray]:
    idx = np.arange(start, start + count)
    return {"image": np.broadcast_to(idx[:, None, None, None] % 256, (count, 4, 4, 3)).astype(np.uint8),
            "label": (idx % 7).astype(np.int64)}


def test_labels_and_first_images_read_only_what_they_need(tmp_path):
    write_split(tmp_path, 25, 10, _make, {"num_classes": 7})
    split = ShardedSplit(tmp_path)
    first = split.load_first(12, ("image",))
    assert list(first) == ["image"] and first["image"].shape == (12, 4, 4, 3)
    assert np.array_equal(first["image"][:, 0, 0, 0], np.arange(12))
    (tmp_path / "shard-00002.npz").unlink()  # load_first(12) never needs the third shard
    assert ShardedSplit(tmp_path).load_first(12, ("image",))["image"].shape[0] == 12
    for shard in tmp_path.glob("shard-*.npz"):
        shard.unlink()  # labels come from labels.npy: no shard is opened
    assert np.array_equal(ShardedSplit(tmp_path).labels(), np.arange(25) % 7)
    assert ShardedSplit(tmp_path).has_field("label") and not ShardedSplit(tmp_path).has_field("mask")


def test_corrupt_labels_file_is_named(tmp_path):
    write_split(tmp_path, 5, 5, _make, {})
    np.save(tmp_path / "labels.npy", np.zeros(5, np.int64))
    with pytest.raises(InputError, match="labels.npy: corrupt labels file"):
        ShardedSplit(tmp_path).labels()
