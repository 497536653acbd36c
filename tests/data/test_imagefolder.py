"""ImageFolder import: the ADM centre crop, class/label order, resumable shard writing."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from latentbench.config import ConfigError, check_config
from latentbench.data.imagefolder import center_crop_arr, list_classes, list_images, load_images
from latentbench.data.shards import ShardedSplit
from latentbench.stages.data import import_key, make_dataset


def test_center_crop_identity_constant_and_box_halving():
    rng = np.random.default_rng(0)
    square = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
    np.testing.assert_array_equal(center_crop_arr(Image.fromarray(square), 16), square)  # already the size
    const = np.full((40, 90, 3), 77, np.uint8)
    out = center_crop_arr(Image.fromarray(const), 16)
    assert out.shape == (16, 16, 3) and (out == 77).all()
    # 4x blocks: two BOX halvings are exact block means -> the 8x8 block image, no bicubic change
    blocks = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
    big = np.repeat(np.repeat(blocks, 4, axis=0), 4, axis=1)  # 32 x 32
    np.testing.assert_array_equal(center_crop_arr(Image.fromarray(big), 8), blocks)


def test_center_crop_takes_the_middle_of_the_long_side():
    # 8 x 24 (H x W): no resize; columns 8..15 survive
    arr = np.zeros((8, 24, 3), np.uint8)
    arr[:, 8:16] = 200
    assert (center_crop_arr(Image.fromarray(arr), 8) == 200).all()


def _folder(root, split, counts, size=(20, 30)):
    rng = np.random.default_rng(len(split))
    for cls, n in counts.items():
        (root / split / cls).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(root / split / cls / f"img{i}.png")


def test_classes_and_labels_follow_sorted_folders(tmp_path):
    _folder(tmp_path, "train", {"b_cls": 2, "a_cls": 3})
    classes = list_classes(tmp_path / "train")
    assert classes == ["a_cls", "b_cls"]
    items = list_images(tmp_path / "train", classes)
    assert [label for _, label in items] == [0, 0, 0, 1, 1]
    batch = load_images(items, 16, workers=2)
    assert batch["image"].shape == (5, 16, 16, 3) and batch["image"].dtype == np.uint8
    _folder(tmp_path, "val", {"zzz": 1})
    with pytest.raises(ValueError, match="zzz"):
        list_images(tmp_path / "val", classes)


def test_import_writes_verified_shards_and_resumes(tmp_path):
    _folder(tmp_path / "data", "train", {"a": 5, "b": 6})
    _folder(tmp_path / "data", "val", {"a": 2, "b": 2})
    data = {"kind": "imagefolder", "root": str(tmp_path / "data"), "train_dir": "train", "val_dir": "val",
            "resolution": 16, "train": 11, "val": 4, "shard_size": 4}
    make_dataset({"data": data, "seed": 0}, tmp_path / "out")
    train = ShardedSplit(tmp_path / "out" / "train")
    assert len(train) == 11 and train.meta["classes"] == ["a", "b"]
    first = train.load_all(("image", "label"))
    assert first["label"].tolist() == [0] * 5 + [1] * 6
    # an interrupted rerun: the manifest is gone, the progress file lists finished shards
    (tmp_path / "out" / "train" / "manifest.json").unlink()
    stamp = (tmp_path / "out" / "train" / "shard-00000.npz").stat().st_mtime_ns
    from latentbench.io import write_json
    manifest_shards = [{"file": e["file"], "count": e["count"], "sha256": e["sha256"]} for e in train.manifest["shards"][:2]]
    key = import_key(train.meta, list_images(tmp_path / "data" / "train", ["a", "b"]))
    write_json(tmp_path / "out" / "train" / ".progress.json", {"key": key, "shards": manifest_shards})
    make_dataset({"data": data, "seed": 0}, tmp_path / "out")
    assert (tmp_path / "out" / "train" / "shard-00000.npz").stat().st_mtime_ns == stamp  # kept, not rewritten
    assert not (tmp_path / "out" / "train" / ".progress.json").exists()
    np.testing.assert_array_equal(ShardedSplit(tmp_path / "out" / "train").load_all(("image",))["image"], first["image"])


def test_wrong_count_and_missing_root_are_named(tmp_path):
    _folder(tmp_path / "data", "train", {"a": 3})
    _folder(tmp_path / "data", "val", {"a": 1})
    data = {"kind": "imagefolder", "root": str(tmp_path / "data"), "train_dir": "train", "val_dir": "val",
            "resolution": 16, "train": 30, "val": 1, "shard_size": 4}
    with pytest.raises(ValueError, match=r"data.train: the config says 30 images, .* holds 3"):
        make_dataset({"data": data, "seed": 0}, tmp_path / "out")
    with pytest.raises(FileNotFoundError, match="nowhere"):
        list_classes(tmp_path / "nowhere")
    config = {"study": "x", "data": {"kind": "imagefolder"}, "tokenizers": {"a": {"family": "conv_kl"}}, "backbones": {"b": {"size": "demo", "recipe": "study_sit"}}}
    with pytest.raises(ConfigError, match="data.root"):
        check_config(config)
