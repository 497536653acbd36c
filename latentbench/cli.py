"""Command line: one subcommand per Snakemake rule, each with explicit input and output paths.

Rules pass config fragments as JSON (``--settings``, ``--spec``), so a job re-runs exactly
when the part of the config it depends on changes. Every subcommand logs to stdout/stderr
(the rule redirects both to its log file) and exits non-zero with a one-line message on
bad input.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from typing import Callable

COMMANDS: dict[str, Callable[[argparse.Namespace], None]] = {}


def command(name: str):
    """Register a subcommand handler."""

    def wrap(fn):
        COMMANDS[name] = fn
        return fn

    return wrap


def _threads(args: argparse.Namespace) -> None:
    """Torch threads: the job's CPUs, shared among the processes torchrun starts on this node."""
    import os

    from latentbench.seeding import set_threads

    per_node = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    set_threads(max(1, getattr(args, "threads", 1) // per_node))


@command("validate-config")
def _validate_config(args):
    from latentbench.config import load_config

    load_config(args.config)
    print(f"{args.config}: valid")


@command("dataset")
def _dataset(args):
    from latentbench.stages.data import make_dataset

    make_dataset(args.settings, args.out, args.threads)


@command("train-feature-net")
def _train_feature_net(args):
    from latentbench.stages.data import train_feature_net

    _threads(args)
    train_feature_net(args.settings, args.train, args.val, args.out, args.summary)


@command("reference-stats")
def _reference_stats(args):
    from latentbench.stages.data import reference_stats

    _threads(args)
    reference_stats(args.settings, args.split, args.weights, args.out)


@command("train-tokenizer")
def _train_tokenizer(args):
    from latentbench.stages.tokenizers import train

    _threads(args)
    train(args.name, args.spec, args.settings, args.train, args.feature_net, args.checkpoint, args.out)


@command("encode")
def _encode(args):
    from latentbench.stages.latents import encode_split

    _threads(args)
    encode_split(args.tokenizer, args.split, args.out_dir)


@command("reconstruction-metrics")
def _reconstruction_metrics(args):
    from latentbench.stages.metrics import reconstruction_metrics

    _threads(args)
    reconstruction_metrics(
        args.settings, args.tokenizer, args.val, args.latents, args.feature_net, args.val_stats, args.out, args.strip
    )


@command("latent-metrics")
def _latent_metrics(args):
    from latentbench.stages.latent_metrics import latent_metrics

    _threads(args)
    latent_metrics(args.settings, args.tokenizer, args.latents, args.train, args.val, args.out)


@command("baseline-metrics")
def _baseline_metrics(args):
    from latentbench.stages.baselines import baseline_metrics

    _threads(args)
    baseline_metrics(args.settings, args.tokenizer, args.latents, args.train, args.val, args.feature_net, args.out)


@command("ifid-variants")
def _ifid_variants(args):
    from latentbench.stages.metrics import ifid_variants

    _threads(args)
    ifid_variants(args.settings, args.tokenizer, args.latents, args.feature_net, args.val_stats, args.out)


@command("gfid-t")
def _gfid_t(args):
    from latentbench.stages.diffusion import gfid_t

    _threads(args)
    gfid_t(args.settings, args.model, args.tokenizer, args.latents, args.labels, args.feature_net, args.val_stats, args.out)


@command("trajectory-metrics")
def _trajectory_metrics(args):
    from latentbench.stages.latent_metrics import trajectory

    _threads(args)
    trajectory(args.settings, args.model, args.out)


@command("train-diffusion")
def _train_diffusion(args):
    from latentbench.stages.diffusion import train

    _threads(args)
    train(args.backbone, args.settings, args.latents, args.labels, args.checkpoint, args.out)


@command("sample")
def _sample(args):
    from latentbench.stages.diffusion import sample

    _threads(args)
    sample(
        args.settings, args.model, args.tokenizer, args.feature_net, args.scale, args.shard, args.out, args.scores,
        args.fdr6_plan, args.fdr6_out,
    )


@command("fdr6-reference-stats")
def _fdr6_reference_stats(args):
    from latentbench.stages.data import fdr6_reference_stats

    _threads(args)
    fdr6_reference_stats(args.plan, args.split, args.out)


@command("generation-metrics")
def _generation_metrics(args):
    from latentbench.stages.diffusion import generation_metrics

    generation_metrics(
        args.settings, args.shards, args.scores, args.reference, args.out, args.fdr6_plan, args.fdr6_shards, args.fdr6_references
    )


@command("diffusion-loss")
def _diffusion_loss(args):
    from latentbench.stages.diffusion import diffusion_loss

    _threads(args)
    diffusion_loss(args.settings, args.model, args.latents, args.labels, args.out)


@command("collect")
def _collect(args):
    from latentbench.stages.report import collect

    collect(args.metrics_dir, args.latents_dir, args.tokenizers, args.backbones, args.out)


@command("correlate")
def _correlate(args):
    from latentbench.stages.report import correlate_study

    correlate_study(args.metrics, args.settings, args.out, args.tables_dir)


@command("report")
def _report(args):
    from latentbench.report.render import render_report

    render_report(args.results, args.config, args.out)


@command("fetch-weights")
def _fetch_weights(args):
    from latentbench.stages.weights import fetch_weights

    fetch_weights(
        args.weights_dir, names=args.names, settings=args.settings, into_dir=args.into_dir,
        verify_present=args.verify, stamp=args.stamp,
    )


def _json(text: str):
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"not valid JSON: {exc}") from None


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand and its explicit paths."""
    parser = argparse.ArgumentParser(prog="latentbench", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    def add(name: str, *options: tuple[str, dict]) -> None:
        p = sub.add_parser(name)
        for flag, kw in options:
            p.add_argument(flag, **kw)

    req = {"required": True}
    js = {"required": True, "type": _json}
    threads = ("--threads", {"type": int, "default": 1})
    add("validate-config", ("config", {}))
    add("dataset", ("--settings", js), ("--out", req), threads)
    add("train-feature-net", ("--settings", js), ("--train", req), ("--val", req), ("--out", req), ("--summary", req), threads)
    add("reference-stats", ("--settings", js), ("--split", req), ("--weights", req), ("--out", req), threads)
    add(
        "train-tokenizer",
        ("--name", req), ("--spec", js), ("--settings", js), ("--train", req), ("--feature-net", req),
        ("--checkpoint", req), ("--out", req), threads,
    )
    add("encode", ("--tokenizer", req), ("--split", req), ("--out-dir", req), threads)
    add(
        "reconstruction-metrics",
        ("--settings", js), ("--tokenizer", req), ("--val", req), ("--latents", req), ("--feature-net", req),
        ("--val-stats", req), ("--out", req), ("--strip", req), threads,
    )
    add(
        "latent-metrics",
        ("--settings", js), ("--tokenizer", req), ("--latents", req), ("--train", req), ("--val", req), ("--out", req), threads,
    )
    add(
        "baseline-metrics",
        ("--settings", js), ("--tokenizer", req), ("--latents", req), ("--train", req), ("--val", req),
        ("--feature-net", req), ("--out", req), threads,
    )
    add(
        "ifid-variants",
        ("--settings", js), ("--tokenizer", req), ("--latents", req), ("--feature-net", req), ("--val-stats", req),
        ("--out", req), threads,
    )
    add(
        "gfid-t",
        ("--settings", js), ("--model", req), ("--tokenizer", req), ("--latents", req), ("--labels", req),
        ("--feature-net", req), ("--val-stats", req), ("--out", req), threads,
    )
    add("trajectory-metrics", ("--settings", js), ("--model", req), ("--out", req), threads)
    add(
        "train-diffusion",
        ("--backbone", js), ("--settings", js), ("--latents", req), ("--labels", req), ("--checkpoint", req),
        ("--out", req), threads,
    )
    add(
        "sample",
        ("--settings", js), ("--model", req), ("--tokenizer", req), ("--feature-net", req), ("--scale", {"type": float, "required": True}),
        ("--shard", {"type": int, "required": True}), ("--out", req), ("--scores", req), ("--fdr6-plan", js), ("--fdr6-out", req),
        threads,
    )
    add(
        "generation-metrics",
        ("--settings", js), ("--shards", {"nargs": "+", "required": True}), ("--scores", {"nargs": "+", "required": True}),
        ("--reference", req), ("--out", req), ("--fdr6-plan", js), ("--fdr6-shards", {"nargs": "+", "required": True}),
        ("--fdr6-references", {"nargs": "*", "default": []}),
    )
    add("fdr6-reference-stats", ("--plan", js), ("--split", req), ("--out", req), threads)
    add("diffusion-loss", ("--settings", js), ("--model", req), ("--latents", req), ("--labels", req), ("--out", req), threads)
    add("collect", ("--metrics-dir", req), ("--latents-dir", req), ("--tokenizers", js), ("--backbones", js), ("--out", req))
    add("correlate", ("--metrics", req), ("--settings", js), ("--out", req), ("--tables-dir", {"default": ""}))
    add("report", ("--results", req), ("--config", js), ("--out", req))
    add(
        "fetch-weights",
        ("--weights-dir", req), ("--names", {"nargs": "*", "default": []}), ("--settings", {"type": _json, "default": None}),
        ("--into-dir", {"action": "store_true"}), ("--verify", {"action": "store_true"}), ("--stamp", {"default": None}),
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``latentbench`` command."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", stream=sys.stdout)
    try:
        COMMANDS[args.command](args)
    except (ValueError, FileNotFoundError) as exc:  # bad input: one line; bugs keep their traceback
        print(f"latentbench {args.command}: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
