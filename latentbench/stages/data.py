"""Dataset, demo feature network and reference feature statistics (rules/data.smk)."""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import torch

from latentbench.data.shards import ShardedSplit, images_to_tensor, write_split
from latentbench.data.synthetic import (
    NUM_CLASSES,
    SHAPES,
    TEXTURES,
    SyntheticSpec,
    generate,
)
from latentbench.device import compute_device
from latentbench.errors import InputError
from latentbench.features import load_feature_extractor
from latentbench.features.demo_net import save_demo_net, train_demo_net
from latentbench.io import write_json
from latentbench.metrics.fid import FeatureStats
from latentbench.progress import progress
from latentbench.seeding import derive_seed

log = logging.getLogger(__name__)
SPLIT_SEED = {"train": 0, "val": 1}


def make_dataset(settings: dict, out: str | Path, threads: int = 1) -> None:
    """Write the train and val splits as verified shards: generated (synthetic) or imported (imagefolder)."""
    data = settings["data"]
    if data["kind"] == "imagefolder":
        import_image_folder(data, out, threads)
        return
    for split in ("train", "val"):
        spec = SyntheticSpec(data[split], data["resolution"], derive_seed(settings["seed"], "data", split))
        meta = {
            "kind": data["kind"],
            "split": split,
            "resolution": data["resolution"],
            "num_classes": NUM_CLASSES,
            "classes": [f"{s}/{t}" for s, t in zip(SHAPES, TEXTURES)],
        }
        write_split(
            Path(out) / split, data[split], data["shard_size"], lambda s, c: generate(spec, s, c), meta
        )
        log.info("wrote %s: %d images", split, data[split])


def import_key(meta: dict, items: list) -> str:
    """The resume key of an import: a hash of the split's metadata and its file list."""
    return hashlib.sha256(json.dumps({**meta, "files": [str(p) for p, _ in items]}, sort_keys=True).encode()).hexdigest()


def import_image_folder(data: dict, out_root: str | Path, workers: int = 1) -> None:
    """ImageFolder splits -> ADM centre-cropped uint8 shards (resumable: finished shards are kept).

    The config states the image count of each split (``data.train``, ``data.val``: e.g. ImageNet
    1281167 and 50000); a folder holding a different number stops the job naming both numbers.
    """
    from latentbench.data.imagefolder import list_classes, list_images, load_images

    root = Path(data["root"])
    classes = list_classes(root / data["train_dir"])
    for split in ("train", "val"):
        folder = root / data[f"{split}_dir"]
        items = list_images(folder, classes)
        if len(items) != data[split]:
            raise InputError(f"data.{split}: the config says {data[split]} images, {folder} holds {len(items)}")
        meta = {"kind": "imagefolder", "split": split, "resolution": data["resolution"], "num_classes": len(classes),
                "classes": classes, "source": str(folder)}
        write_split(
            Path(out_root) / split, len(items), data["shard_size"],
            lambda s, c: load_images(items[s : s + c], data["resolution"], workers), meta,
            resume_key=import_key(meta, items),
        )
        log.info("imported %s: %d images of %d classes from %s", split, len(items), len(classes), folder)


def train_feature_net(settings: dict, train: str | Path, val: str | Path, out: str | Path, summary: str | Path) -> None:
    """Train the demo feature network on the train split; record its val accuracy."""
    fn = settings["feature_net"]
    # a bounded, evenly spread subset: the demo net is a small stand-in, also on ImageNet-sized splits
    tr = ShardedSplit(Path(train).parent).load_subset(fn["max_images"], ("image", "label"))
    va = ShardedSplit(Path(val).parent).load_subset(fn["max_images"], ("image", "label"))
    num_classes = int(ShardedSplit(Path(train).parent).meta["num_classes"])
    net, metrics = train_demo_net(
        images_to_tensor(tr["image"]),
        torch.from_numpy(tr["label"]),
        images_to_tensor(va["image"]),
        torch.from_numpy(va["label"]),
        num_classes,
        epochs=fn["epochs"],
        batch_size=fn["batch_size"],
        lr=fn["lr"],
        seed=derive_seed(settings["seed"], "feature_net"),
        log=log.info,
    )
    save_demo_net(net, out)
    write_json(summary, metrics)


def split_feature_stats(split_dir: str | Path, feature_net: dict, weights: str | Path, batch_size: int = 500) -> FeatureStats:
    """Streaming feature statistics of every image of a split in the study's feature space."""
    extractor = load_feature_extractor(feature_net, weights, compute_device())
    stats = FeatureStats()
    split = ShardedSplit(split_dir)
    batches = split.iter_batches(batch_size, ("image",))
    for batch in progress(batches, len(split), f"reference stats {split_dir}", "img", weight=lambda b: len(b["image"])):
        stats.update(extractor(images_to_tensor(batch["image"])))
    return stats


def fdr6_reference_stats(plan: dict, split: str | Path, out: str | Path, batch_size: int = 250) -> None:
    """Statistics of one split in each of FDr6's six spaces, one pass over the images (spec diffusability §10)."""
    from latentbench.features.representations import fdr6_extractors
    from latentbench.metrics.fid import save_stats_group

    if "spaces" not in plan:
        raise InputError(f"fdr6 plan: {plan.get('not_run', 'no weights given')}")
    nets = fdr6_extractors(plan["spaces"], compute_device())
    group = {key: FeatureStats() for key in nets}
    images_split = ShardedSplit(Path(split).parent)
    batches = images_split.iter_batches(batch_size, ("image",))
    for batch in progress(batches, len(images_split), "FDr6 reference stats", "img", weight=lambda b: len(b["image"])):
        images = images_to_tensor(batch["image"])
        for key, net in nets.items():
            group[key].update(net(images))
    save_stats_group(out, group)
    log.info("FDr6 reference stats: %s", {k: v.count for k, v in group.items()})


def reference_stats(settings: dict, split: str | Path, weights: str | Path, out: str | Path) -> None:
    """Reference statistics of one split in the study's feature space (computed once, reused).

    The file is keyed by (split, feature net, image count) in its path (rules/data.smk), so a
    study that changes any of the three gets new statistics instead of stale ones.
    """
    stats = split_feature_stats(Path(split).parent, settings["feature_net"], weights)
    expected = settings.get("data", {}).get(Path(split).parent.name)
    if expected is not None and stats.count != expected:
        raise InputError(f"{split}: {stats.count} images, but the config's data section says {expected}")
    stats.save(out)
    log.info("reference stats (%s): %d images, dim %d", settings["feature_net"]["name"], stats.count, len(stats.mean))
