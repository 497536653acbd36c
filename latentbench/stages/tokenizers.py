"""Tokenizer training job (rules/tokenizers.smk)."""

from __future__ import annotations

import logging
from pathlib import Path

from latentbench.data.shards import ShardedSplit
from latentbench.device import compute_device
from latentbench.features.demo_net import load_demo_net
from latentbench.seeding import derive_seed
from latentbench.tokenizers.train import train_tokenizer

log = logging.getLogger(__name__)


def train_tokenizer_job(
    name: str, spec: dict, settings: dict, train: str | Path, checkpoint: str | Path, out: str | Path,
    feature_net: str | None = None, weights_dir: str | None = None,
) -> None:
    """Train one configured tokenizer on the train split, resuming from ``checkpoint`` if present.

    ``feature_net`` (demo-cnn studies): the demo net supplies the perceptual term (LPIPS stand-in)
    and, for variant ``demo-cnn``, the alignment target (spec models.md §4). Otherwise LPIPS-VGG and
    the foundation encoder the variant names are loaded from ``weights_dir``.
    """
    t = settings["tokenizer_training"]
    metrics = train_tokenizer(
        spec,
        ShardedSplit(Path(train).parent),
        out,
        checkpoint_path=checkpoint,
        feature_net=load_demo_net(feature_net) if feature_net else None,
        weights_dir=weights_dir,
        steps=t["steps"],
        batch_size=t["batch_size"],
        lr=t["lr"],
        disc_start=t["disc_start"],
        seed=derive_seed(settings["seed"], "tokenizer", name),
        checkpoint_every=t["checkpoint_every"],
        log=log.info,
        device=compute_device(),
    )
    log.info("trained %s: %s", name, metrics)
