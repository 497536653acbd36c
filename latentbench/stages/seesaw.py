"""The Tilted Seesaw jobs (rules/seesaw.smk): condition drift, latent probes, ControlNet.

- ``dense_demo_net``: the demo's dense depth/segmentation stand-in, trained once per study on
  the synthetic train split's ground truth (seesaw-notes §4);
- ``drift_job``: every drift measure of one tokenizer from its val reconstructions, which the
  reconstruction job wrote once (``metrics/<tok>/val_reconstructions.npy``, uint8 NHWC memory
  map): originals and reconstructions are streamed batch by batch, nothing is decoded again
  (spec metrics-ifid-seesaw §7);
- ``probe_job``: the latent condition probe of one (tokenizer, condition) on the cached
  posterior means (spec §8);
- ``controlnet_train`` / ``controlnet_evaluate``: a control branch on a frozen backbone and its
  Table 3 numbers (FID in the study's feature space, condition L1 through the SAME projector
  as the drift job; spec §9).

Projectors: the paper's (weights from the manifest; a missing file makes the measure
"not run: needs ...", never a number) or, when the rule passes ``dense`` (and ``demo_cnn``),
the demo's stand-ins, recorded by name in every JSON.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from latentbench.data.shards import ShardedSplit
from latentbench.device import compute_device
from latentbench.errors import InputError
from latentbench.io import load_npy, write_json

log = logging.getLogger(__name__)

SPATIAL_CONDITIONS = ("canny", "depth")  # the probe's and the ControlNet's conditions


# ---------------------------------------------------------------------------------------------
# Shared helpers
# ---------------------------------------------------------------------------------------------


def projector_config(seesaw: dict, dense: str | Path | None = None,
                     demo_cnn: str | Path | None = None) -> tuple[dict[str, str], dict[str, dict]]:
    """(projector_names, projector_options) of a study: the demo's stand-ins when ``dense`` is
    given (demo-cnn studies), else the paper's with the configured face backend and seg input order."""
    from latentbench.drift.projectors import FACE_BACKENDS

    if dense is not None:
        from latentbench.drift.projectors.demo import demo_projector_config

        return demo_projector_config(str(dense), None if demo_cnn is None else str(demo_cnn))
    return ({"face": FACE_BACKENDS[seesaw["face_backend"]]},
            {"seg": {"seg_input_order": seesaw["seg_input_order"]}})


def map_projector(condition: str, seesaw: dict, weights_dir: str | Path | None, dense: str | Path | None,
                  demo_cnn: str | Path | None, device) -> tuple[Any, str | None]:
    """The projector of a map condition (canny, depth) as the drift job builds it, or
    (None, "not run: needs ...") when its weights are missing."""
    from latentbench.drift.projectors import resolve_projectors

    names, options = projector_config(seesaw, dense, demo_cnn)
    built, not_run = resolve_projectors([condition], names, options, weights_dir, str(device))
    if condition in built:
        return built[condition], None
    return None, not_run[condition]


def project_maps(project, images: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """``project`` over uint8 NHWC ``images`` in batches: float32 (N, H, W) maps in [0, 1]."""
    return np.concatenate([np.asarray(project(images[s:s + batch_size]), np.float32)
                           for s in range(0, len(images), batch_size)])


def maps_to_uint8(maps: np.ndarray) -> np.ndarray:
    """Condition maps in [0, 1] as uint8 0..255 (lossless for Canny's {0, 1} and the paper's
    normalised depth, both k / 255): a quarter of the memory of float32."""
    return np.clip(np.rint(np.asarray(maps, np.float32) * 255.0), 0, 255).astype(np.uint8)


def select_rows(split: ShardedSplit, rows: np.ndarray, fields: tuple[str, ...] = ("image",), project=None) -> dict[str, np.ndarray]:
    """The sorted ``rows`` of a split, streamed shard by shard (memory holds the subset only);
    with ``project`` the images are replaced by their uint8 condition maps (``"map"``) shard by
    shard, so the subset's images are never all in memory."""
    rows = np.sort(np.asarray(rows))
    parts, start = [], 0
    for shard in split.iter_shards(fields):
        n = len(next(iter(shard.values())))
        keep = rows[(rows >= start) & (rows < start + n)] - start
        part = {k: v[keep] for k, v in shard.items()}
        if project is not None:
            part["map"] = maps_to_uint8(project_maps(project, part.pop("image")))
        parts.append(part)
        start += n
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def reconstruction_pairs(val: str | Path, reconstructions: str | Path, batch_size: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(originals, reconstructions) uint8 NHWC batches: the val shards beside the memory-mapped
    reconstructions (rows in split order); a count or shape mismatch raises naming the file."""
    recon = load_npy(reconstructions)
    split = ShardedSplit(Path(val).parent)
    if recon.dtype != np.uint8 or recon.ndim != 4 or len(recon) != len(split):
        raise InputError(f"{reconstructions}: expected uint8 (N={len(split)}, H, W, 3) reconstructions of {val}, "
                         f"got {recon.dtype} {recon.shape}; re-run reconstruction_metrics")
    start = 0
    for batch in split.iter_batches(batch_size, ("image",)):
        x = batch["image"]
        y = np.array(recon[start:start + len(x)])  # a writable copy of the mapped rows
        if y.shape != x.shape:
            raise InputError(f"{reconstructions}: rows {start}.. have shape {y.shape[1:]}, images {x.shape[1:]}")
        yield x, y
        start += len(x)


def _finite_or_none(value: Any) -> Any:
    return None if isinstance(value, float) and not np.isfinite(value) else value


# ---------------------------------------------------------------------------------------------
# The demo's dense stand-in
# ---------------------------------------------------------------------------------------------


def dense_demo_net(train: str | Path, val: str | Path, settings: dict, out: str | Path, summary: str | Path) -> None:
    """Train the demo's dense depth/segmentation stand-in on the train split's ground truth.

    ``train`` / ``val``: the split manifests (their ``depth`` and ``seg`` fields). ``out``: the
    weights. ``summary``: JSON with the training losses, val depth L1 and seg pixel accuracy.
    """
    from latentbench.drift.demo_dense import save_dense_demo_net, train_dense_demo_net
    from latentbench.seeding import derive_seed

    cfg = settings["seesaw"]["dense_net"]
    fields = ("image", "depth", "seg")
    train_split, val_split = ShardedSplit(Path(train).parent), ShardedSplit(Path(val).parent)
    for split, path in ((train_split, train), (val_split, val)):
        missing = [f for f in ("depth", "seg") if not split.has_field(f)]
        if missing:
            raise InputError(f"{path}: no {missing} fields; the dense demo net needs the synthetic dataset's ground truth")
    data = train_split.load_all(fields)
    held = val_split.load_subset(cfg["val_images"], fields)
    num_classes = int(train_split.meta["num_classes"]) + 1  # 0 = background, k + 1 = class k
    net, metrics = train_dense_demo_net(
        data["image"], data["depth"], data["seg"], num_classes=num_classes,
        val=(held["image"], held["depth"], held["seg"]), epochs=cfg["epochs"],
        seed=derive_seed(settings["seed"], "dense-demo-net"), log=log.info,
    )
    metrics.update(train_images=len(data["image"]), val_images=len(held["image"]), stand_in_for=["midas-dpt-hybrid", "uniformer-s-ade20k"])
    save_dense_demo_net(net, out, {"metrics": metrics})
    write_json(summary, metrics)


# ---------------------------------------------------------------------------------------------
# Drift (spec §7)
# ---------------------------------------------------------------------------------------------


def drift_job(settings: dict, val: str | Path, reconstructions: str | Path, out: str | Path,
              dense: str | Path | None = None, demo_cnn: str | Path | None = None, batch_size: int = 100) -> None:
    """Every drift measure of one tokenizer in one streamed pass over its val reconstructions.

    ``val``: the val manifest (originals). ``reconstructions``: the uint8 NHWC ``.npy`` the
    reconstruction job wrote. ``dense`` / ``demo_cnn``: the demo stand-ins' weights (demo-cnn
    studies); without them the paper's projectors from ``weights_dir``.
    """
    from latentbench.drift.measures import drift_measures

    cfg = settings["seesaw"]
    names, options = projector_config(cfg, dense, demo_cnn)
    result = drift_measures(
        reconstruction_pairs(val, reconstructions, batch_size), list(cfg["conditions"]),
        projector_names=names, projector_options=options, weights_dir=settings["weights_dir"],
        device=str(compute_device()), options=cfg["drift"],
    )
    result["stand_ins"] = dense is not None
    write_json(out, {k: _finite_or_none(v) for k, v in result.items()})
    log.info("drift: %s", {c: result.get(c) for c in cfg["conditions"]})


# ---------------------------------------------------------------------------------------------
# Latent probe (spec §8)
# ---------------------------------------------------------------------------------------------


def probe_splits(n_train: int, val_fraction: float, max_train: int | None, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Sorted disjoint seeded (fit, early-stopping) row indices of the train latents (spec §8 [DEFAULT]:
    a disjoint seeded train subset validates; the val split is the test set)."""
    from latentbench.seeding import derive_seed

    if not 0 < val_fraction < 1:
        raise InputError(f"seesaw.probe.val_fraction: expected in (0, 1), got {val_fraction}")
    perm = np.random.default_rng(derive_seed(seed, "probe-split")).permutation(n_train)
    n_val = max(2, round(val_fraction * n_train))
    fit = perm[n_val:] if max_train is None else perm[n_val:n_val + max_train]
    if len(fit) < 2:
        raise InputError(f"probe: {n_train} train latents leave {len(fit)} to fit on")
    return np.sort(fit), np.sort(perm[:n_val])


def probe_job(settings: dict, condition: str, latents: str | Path, train: str | Path, val: str | Path, out: str | Path,
              dense: str | Path | None = None, demo_cnn: str | Path | None = None) -> None:
    """Train the latent condition probe of one tokenizer for ``condition`` (canny | depth) and test it.

    ``latents``: the tokenizer's cache folder (posterior means of ``train/`` fit and validate,
    ``val/`` tests). ``train`` / ``val``: the split manifests; targets are the condition
    projector on the ORIGINAL images (the drift job's projector).
    """
    from latentbench.drift.probe import train_probe

    if condition not in SPATIAL_CONDITIONS:
        raise InputError(f"probe condition: expected one of {SPATIAL_CONDITIONS}, got {condition!r}")
    cfg, seed = settings["seesaw"]["probe"], settings["seed"]
    device = compute_device()
    project, not_run = map_projector(condition, settings["seesaw"], settings["weights_dir"], dense, demo_cnn, device)
    record: dict[str, Any] = {"condition": condition, "projector": getattr(project, "name", None), "stand_ins": dense is not None}
    if project is None:
        write_json(out, {**record, "test_l1": None, "not_run": {condition: not_run}})
        return
    train_mean = load_npy(Path(latents) / "train" / "mean.npy")
    val_mean = load_npy(Path(latents) / "val" / "mean.npy")
    fit, early = probe_splits(len(train_mean), cfg["val_fraction"], cfg["max_train"], seed)
    train_split, val_split = ShardedSplit(Path(train).parent), ShardedSplit(Path(val).parent)
    if len(train_split) != len(train_mean) or len(val_split) != len(val_mean):
        raise InputError(f"{latents}: latent counts differ from the splits' images; re-encode")
    fit_maps = select_rows(train_split, fit, project=project)["map"]  # uint8 targets, streamed
    early_maps = select_rows(train_split, early, project=project)["map"]
    test_maps = select_rows(val_split, np.arange(len(val_split)), project=project)["map"]
    model, result = train_probe(
        (train_mean[fit], fit_maps), (train_mean[early], early_maps), (val_mean, test_maps),
        task=condition, widths=tuple(cfg["widths"]), lr=cfg["lr"], batch_size=cfg["batch_size"],
        max_epochs=cfg["max_epochs"], patience=cfg["patience"], seed=seed, device=device, log=log.info,
    )
    del model
    write_json(out, {**record, **result, "latent": "mean", "n_fit": len(fit), "n_early_stopping": len(early),
                     "n_test": len(val_mean), "not_run": {}})
    log.info("probe %s: test L1 %.4f", condition, result["test_l1"])
