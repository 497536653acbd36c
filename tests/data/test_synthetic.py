import numpy as np
import pytest

from latentbench.data.shards import ShardedSplit, images_to_tensor, write_split
from latentbench.data.synthetic import NUM_CLASSES, SHAPES, TEXTURES, SyntheticSpec, generate


def test_generate_is_deterministic_and_range_independent():
    spec = SyntheticSpec(40, 32, seed=3)
    whole = generate(spec)
    part = generate(spec, start=10, count=15)
    for key in whole:
        np.testing.assert_array_equal(whole[key][10:25], part[key])
    again = generate(spec)
    np.testing.assert_array_equal(whole["image"], again["image"])
    other = generate(SyntheticSpec(40, 32, seed=4))
    assert not np.array_equal(whole["image"], other["image"])


def test_fields_shapes_and_consistency():
    data = generate(SyntheticSpec(60, 32, seed=0))
    assert data["image"].shape == (60, 32, 32, 3) and data["image"].dtype == np.uint8
    assert data["mask"].shape == data["seg"].shape == data["depth"].shape == (60, 32, 32)
    # balanced classes, all of them present
    assert np.bincount(data["label"], minlength=NUM_CLASSES).tolist() == [6] * NUM_CLASSES
    # segmentation = (label + 1) on the foreground mask, 0 elsewhere
    expected = data["mask"] * (data["label"][:, None, None] + 1)
    np.testing.assert_array_equal(data["seg"], expected)
    # every image has a visible object and a visible background
    coverage = data["mask"].mean(axis=(1, 2))
    assert (coverage > 0.03).all() and (coverage < 0.8).all()
    # the object is in front of the background plane
    depth = data["depth"].astype(float)
    fg = (depth * data["mask"]).sum((1, 2)) / data["mask"].sum((1, 2))
    bg = (depth * (1 - data["mask"])).sum((1, 2)) / (1 - data["mask"]).sum((1, 2))
    assert (fg < bg).all()


def test_classes_differ_in_shape_and_texture():
    assert len(set(zip(SHAPES, TEXTURES))) == NUM_CLASSES
    assert len(set(SHAPES)) == NUM_CLASSES


def test_configurable_resolution():
    data = generate(SyntheticSpec(5, 48, seed=0))
    assert data["image"].shape == (5, 48, 48, 3)


def _write(tmp_path, n=25, shard=10):
    spec = SyntheticSpec(n, 32, seed=1)
    write_split(tmp_path / "train", n, shard, lambda s, c: generate(spec, s, c), {"num_classes": NUM_CLASSES})
    return ShardedSplit(tmp_path / "train")


def test_shards_roundtrip_and_batches(tmp_path):
    split = _write(tmp_path)
    assert len(split) == 25 and len(split.manifest["shards"]) == 3
    whole = generate(SyntheticSpec(25, 32, seed=1))
    loaded = split.load_all()
    np.testing.assert_array_equal(loaded["image"], whole["image"])
    sizes = [len(b["label"]) for b in split.iter_batches(7)]
    assert sizes == [7, 7, 7, 4]
    batches = np.concatenate([b["label"] for b in split.iter_batches(7)])
    np.testing.assert_array_equal(batches, whole["label"])
    x = images_to_tensor(loaded["image"][:2])
    assert x.shape == (2, 3, 32, 32) and 0.0 <= float(x.min()) and float(x.max()) <= 1.0


def test_corrupt_shard_is_named(tmp_path):
    split = _write(tmp_path)
    shard = tmp_path / "train" / "shard-00001.npz"
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0xFF
    shard.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="shard-00001.npz: corrupt shard"):
        split.load_all()


def test_missing_manifest_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="manifest.json"):
        ShardedSplit(tmp_path / "nothing")


def test_load_subset_is_an_even_stride_across_shards(tmp_path):
    from latentbench.data.shards import ShardedSplit, write_split

    write_split(tmp_path, 23, 5, lambda s, c: {"image": np.arange(s, s + c, dtype=np.uint8).reshape(c, 1, 1, 1),
                                               "label": np.arange(s, s + c)})
    split = ShardedSplit(tmp_path)
    assert split.load_subset(100, ("label",))["label"].tolist() == list(range(23))
    assert split.load_subset(8, ("label",))["label"].tolist() == list(range(0, 23, 3))
    assert split.load_subset(1, ("label",))["label"].tolist() == [0]
