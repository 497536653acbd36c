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
    name: str, spec: dict, settings: dict, train: str | Path, feature_net: str | Path, checkpoint: str | Path, out: str | Path
) -> None:
    """Train one configured tokenizer on the train split, resuming from ``checkpoint`` if present.

    The demo feature net supplies the perceptual term (LPIPS stand-in) and, for the VF/REPA
    regularisers, the alignment target (DINOv2 stand-in), as spec models.md §4 prescribes.
    """
    t = settings["tokenizer_training"]
    metrics = train_tokenizer(
        spec,
        ShardedSplit(Path(train).parent),
        out,
        checkpoint_path=checkpoint,
        feature_net=load_demo_net(feature_net),
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
