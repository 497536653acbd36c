"""The shape and cost of a study's DAG: jobs per rule and GPU-hours at the study's REAL sizes.

A study config fixes how many jobs each rule fans out to (tokenizers x backbones x guidance
scales x shards, ...). Its optional ``compute_estimate`` block (documented in the config schema)
gives, per rule, the GPU-hours of ONE job at the real sizes of the paper the study reproduces,
with the source of each number. :func:`plan` multiplies the two; :func:`format_plan` renders the
table that ``snakemake -n`` prints (Snakefile hook). Nothing here knows about Snakemake: the
rules' fan-out is the table :data:`RULE_FANOUT`, which ``tests/workflow/test_scale.py`` checks
against Snakemake's own job counts.

Where no spec gives a GPU budget the numbers are derived from FLOPs with the helpers below,
on the spec's assumption (models.md §1.9, [COMPUTED estimate]): an H100 in bf16 at 40 % model
FLOP utilisation sustains about 400 TFLOP/s, and a training step costs about 3x the forward
FLOPs (forward + backward).
"""

from __future__ import annotations

import fnmatch
import math
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from latentbench.config import model_pairs

__all__ = [
    "EFFECTIVE_TFLOPS",
    "RULE_FANOUT",
    "RulePlan",
    "flops_to_gpu_hours",
    "format_plan",
    "job_counts",
    "jobs_per_value",
    "plan",
    "print_estimate",
    "training_gpu_hours",
    "wildcard_values",
]

# Sustained bf16 throughput of one H100 at 40 % MFU (spec models.md §1.9: "H100 bf16 at 40 % MFU
# ≈ 400 TFLOP/s"; 40 % of the 989 TFLOP/s dense bf16 peak of the H100 SXM datasheet).
EFFECTIVE_TFLOPS = 400.0
# Training FLOPs per sample = this x forward FLOPs (forward + backward; spec models.md §1.9).
TRAIN_FACTOR = 3.0

# Wildcards each rule fans out over (rules/*.smk). A rule absent here (e.g. fetch_weights: one job
# per missing weight file) is listed with an unknown job count. The {images} wildcard takes one
# value per split, so splits count. fdr6_split: the splits FDr6 needs reference statistics of when
# the study asks for FDr6 (at real sizes its weights are there; a machine without them runs none).
RULE_FANOUT: dict[str, tuple[str, ...]] = {
    "dataset": (),
    "feature_net": (),
    "reference_stats": ("split",),
    "fdr6_reference_stats": ("fdr6_split",),
    "train_tokenizer": ("tok",),
    "pretrained_tokenizer": ("tok",),
    "encode_latents": ("tok", "split"),
    "reconstruction_metrics": ("tok",),
    "latent_metrics": ("tok",),
    "baseline_metrics": ("tok",),
    "ifid_variants": ("tok",),
    "train_diffusion": ("tok", "backbone"),
    "sample": ("tok", "backbone", "scale", "shard"),
    "generation_metrics": ("tok", "backbone"),
    "diffusion_loss": ("tok", "backbone"),
    "trajectory_metrics": ("tok", "backbone"),
    "gfid_t": ("tok", "backbone"),
    # Seesaw (rules/seesaw.smk): none unless seesaw.enabled; controlnet_* over seesaw.controlnet.pairs
    "dense_demo_net": ("dense_net",),
    "drift": ("tok",),
    "probe": ("tok", "condition"),
    "controlnet_train": ("tok", "backbone", "condition"),
    "controlnet_evaluate": ("tok", "backbone", "condition"),
    "collect": (),
    "correlate": (),
    "report": (),
    "all": (),
}


# Rules left out of the printed estimate: one job per weight file missing on this disk, no GPU.
DOWNLOAD_RULES = frozenset({"fetch_weights", "weights"})


@dataclass(frozen=True)
class RulePlan:
    """One row of the plan: a rule's job count and its GPU-hours at real sizes (None: no estimate)."""

    rule: str
    jobs: int | None
    gpu_hours: float | None
    source: str = ""


def flops_to_gpu_hours(flops: float, effective_tflops: float = EFFECTIVE_TFLOPS) -> float:
    """GPU-hours to execute ``flops`` at ``effective_tflops`` sustained TFLOP/s."""
    if not flops >= 0:
        raise ValueError(f"flops must be >= 0, got {flops!r}")
    if not effective_tflops > 0:
        raise ValueError(f"effective_tflops must be > 0, got {effective_tflops!r}")
    return flops / (effective_tflops * 1e12) / 3600.0


def training_gpu_hours(
    forward_gflops: float, steps: int, batch_size: int, train_factor: float = TRAIN_FACTOR,
    effective_tflops: float = EFFECTIVE_TFLOPS,
) -> float:
    """GPU-hours of ``steps`` x ``batch_size`` training samples of a model with ``forward_gflops`` per sample.

    FLOPs = train_factor x forward FLOPs x samples (spec models.md §1.9: "training ≈ 3x forward FLOPs").
    """
    if steps < 0 or batch_size < 0:
        raise ValueError(f"steps and batch_size must be >= 0, got {steps!r}, {batch_size!r}")
    return flops_to_gpu_hours(train_factor * forward_gflops * 1e9 * steps * batch_size, effective_tflops)


def wildcard_values(config: Mapping[str, Any]) -> dict[str, list[str]]:
    """The values each wildcard takes in a validated study config, formatted as the rules format them."""
    sampling = config["sampling"]
    if "fdr6" not in config.get("metrics", ()):
        fdr6_splits = []
    else:  # rules/common.smk fdr6_references: val only for recomputed divisors
        fdr6_splits = ["train", "val"] if config.get("fdr6_divisors", "recomputed") == "recomputed" else ["train"]
    return {
        "tok": sorted(config["tokenizers"]),
        "backbone": sorted(config["backbones"]),
        "split": ["train", "val"],
        "fdr6_split": fdr6_splits,
        "scale": [f"{w:g}" for w in sampling["cfg_scales"]],  # rules/common.smk CFG_SCALES
        "shard": [f"{i:03d}" for i in range(sampling["shards"])],  # rules/common.smk SHARDS
    }


def rule_values(name: str, config: Mapping[str, Any]) -> dict[str, list[str]]:
    """The wildcard values of one rule: :func:`wildcard_values`, except where a rule takes a subset
    (gfid_t: the backbones of ``ifid.gfid_t_backbones``, rules/common.smk GFID_T_BACKBONES;
    train_tokenizer: the trained entries, pretrained_tokenizer: the ``family: pretrained`` ones,
    rules/tokenizers.smk tokenizer_file)."""
    values = wildcard_values(config)
    if name == "gfid_t" and config.get("ifid", {}).get("gfid_t_backbones"):
        values["backbone"] = sorted(config["ifid"]["gfid_t_backbones"])
    if name in ("train_tokenizer", "pretrained_tokenizer"):
        pretrained = name == "pretrained_tokenizer"
        values["tok"] = [t for t in values["tok"] if (config["tokenizers"][t]["family"] == "pretrained") == pretrained]
    seesaw = config.get("seesaw") or {}
    if name in SEESAW_RULES:  # rules/common.smk SEESAW, SEESAW_STAND_INS, PROBE_CONDITIONS
        from latentbench.config import seesaw_stand_ins

        on = bool(seesaw.get("enabled"))
        values["dense_net"] = ["demo-dense"] if on and seesaw_stand_ins(config) else []
        values["tok"] = values["tok"] if on else []
        if on and name == "probe" and seesaw["probe"].get("tokenizers"):
            values["tok"] = sorted(seesaw["probe"]["tokenizers"])
        values["condition"] = (
            list(seesaw["controlnet"]["conditions"]) if name.startswith("controlnet")
            else ["canny", "depth"] if on and seesaw["probe"]["enabled"] else []
        )
    return values


SEESAW_RULES = frozenset({"dense_demo_net", "drift", "probe", "controlnet_train", "controlnet_evaluate"})


def rule_pairs(name: str, config: Mapping[str, Any], backbones: list[str]) -> list[tuple[str, str]]:
    """The (tokenizer, backbone) pairs a paired rule runs on: the ControlNet rules' configured pairs
    (rules/common.smk CONTROLNET_PAIRS), else every trained pair."""
    if name.startswith("controlnet"):
        seesaw = config.get("seesaw") or {}
        if not seesaw.get("enabled"):
            return []
        return [(p["tokenizer"], p["backbone"]) for p in seesaw["controlnet"]["pairs"] if p["backbone"] in backbones]
    return model_pairs(config, backbones)


def jobs_per_value(name: str, config: Mapping[str, Any], wildcard: str | None = None) -> dict[str, int]:
    """Jobs of rule ``name`` per value of ``wildcard`` (``None``: one entry ``""`` with all its jobs).

    A rule over both ``tok`` and ``backbone`` runs once per trained (tokenizer, backbone) pair
    (:func:`latentbench.config.model_pairs`: a tokenizer's ``backbones``, else all), times its
    other wildcards' value counts; any other rule runs once per combination of its wildcards.
    """
    fanout, values = RULE_FANOUT[name], rule_values(name, config)
    paired = "tok" in fanout and "backbone" in fanout
    pairs = rule_pairs(name, config, values["backbone"]) if paired else []
    factors = [w for w in fanout if not (paired and w in ("tok", "backbone"))]
    if wildcard is None or wildcard not in fanout:
        return {"": (len(pairs) if paired else 1) * math.prod(len(values[w]) for w in factors)}
    rest = math.prod(len(values[w]) for w in factors if w != wildcard)
    if paired and wildcard in ("tok", "backbone"):
        at = 0 if wildcard == "tok" else 1
        return {v: rest * sum(1 for pair in pairs if pair[at] == v) for v in values[wildcard]}
    return {v: rest * (len(pairs) if paired else 1) for v in values[wildcard]}


def job_counts(config: Mapping[str, Any], rules: Iterable[str] | None = None) -> dict[str, int | None]:
    """Jobs per rule of a full run (None for a rule whose fan-out is unknown).

    ``rules`` (default: every rule of :data:`RULE_FANOUT`) restricts and orders the result, e.g. to
    the rules a workflow actually defines.
    """
    names = list(RULE_FANOUT) if rules is None else list(rules)
    return {name: jobs_per_value(name, config)[""] if name in RULE_FANOUT else None for name in names}


def _rule_hours(name: str, entry: Mapping[str, Any], config: Mapping[str, Any]) -> float:
    """Total GPU-hours of one rule: per-job hours (with ``by`` overrides) summed over its jobs."""
    fanout = RULE_FANOUT.get(name, ())
    default = float(entry["gpu_hours_per_job"])
    by = entry.get("by") or {}
    if len(by) > 1:
        raise ValueError(f"compute_estimate.rules.{name}.by: give overrides for one wildcard, got {sorted(by)}")
    if by:
        (wildcard, patterns), = by.items()
        if wildcard not in fanout:
            raise ValueError(
                f"compute_estimate.rules.{name}.by: rule {name!r} has no wildcard {wildcard!r} "
                f"(its wildcards: {', '.join(fanout) or 'none'})"
            )
        # first matching glob wins, like a case statement
        total = sum(
            jobs * next((float(h) for p, h in patterns.items() if fnmatch.fnmatchcase(v, p)), default)
            for v, jobs in jobs_per_value(name, config, wildcard).items()
        )
    else:
        total = default * jobs_per_value(name, config)[""]
    if entry.get("per_samples"):
        # hours are stated for per_samples generated samples; a job draws num_samples / shards
        sampling = config["sampling"]
        if "shard" not in fanout:
            raise ValueError(f"compute_estimate.rules.{name}.per_samples: rule {name!r} is not sharded over samples")
        per_job = math.ceil(sampling["num_samples"] / sampling["shards"])
        total *= per_job / float(entry["per_samples"])
    return total


def plan(
    config: Mapping[str, Any], compute: Mapping[str, Any] | None = None, rules: Iterable[str] | None = None
) -> list[RulePlan]:
    """Jobs and real-size GPU-hours per rule.

    ``config`` is a validated study config; ``compute`` its ``compute_estimate`` block (default:
    ``config["compute_estimate"]``), with ``rules: {rule: {gpu_hours_per_job, by?, per_samples?,
    source}}``. Rules without an entry get ``gpu_hours=None``. ``rules`` as in :func:`job_counts`.
    """
    compute = config.get("compute_estimate") if compute is None else compute
    table = (compute or {}).get("rules", {})
    names = list(RULE_FANOUT) if rules is None else list(rules)
    unknown = sorted(set(table) - set(names))
    if unknown:
        raise ValueError(f"compute_estimate.rules: no such rule(s) in the workflow: {', '.join(unknown)}")
    counts = job_counts(config, names)
    rows = []
    for name in names:
        entry = table.get(name)
        hours = _rule_hours(name, entry, config) if entry is not None else None
        rows.append(RulePlan(name, counts[name], hours, entry.get("source", "") if entry else ""))
    return rows


def format_plan(rows: Iterable[RulePlan], device: str = "H100 80GB, bf16") -> str:
    """The plan as a fixed-width text table: rule, jobs, GPU-hours per job and in total, plus the total."""
    rows = list(rows)
    header = f"GPU-hours estimate (real sizes, {device}):"
    # GPU-h/job is the mean over the rule's jobs (per-backbone overrides make them differ)
    lines = [header, f"  {'rule':<24}{'jobs':>8}{'GPU-h/job':>12}{'GPU-h':>12}", "  " + "-" * 56]
    total, known_jobs = 0.0, 0
    for row in rows:
        jobs = "?" if row.jobs is None else str(row.jobs)
        if row.gpu_hours is None:
            per, hours = "-", "no estimate"
        else:
            per = f"{row.gpu_hours / row.jobs:.3g}" if row.jobs else "-"
            hours = f"{row.gpu_hours:,.1f}"
            total += row.gpu_hours
        known_jobs += row.jobs or 0
        lines.append(f"  {row.rule:<24}{jobs:>8}{per:>12}{hours:>12}")
    lines.append("  " + "-" * 56)
    lines.append(f"  {'total':<24}{known_jobs:>8}{'':>12}{total:>12,.1f}")
    lines.append("  (jobs of a full run with every weight present; Snakemake's job table counts what runs here)")
    return "\n".join(lines)


def print_estimate(config: Mapping[str, Any], rules: Iterable[str] | None = None, file=None) -> None:
    """Print the plan of ``config``'s ``compute_estimate`` to ``file`` (stderr): the Snakefile's dry-run hook."""
    compute = config.get("compute_estimate")
    if not compute:
        return
    if rules is not None:  # the download rules (rules/weights.smk) use no GPU and depend on the disk
        rules = [r for r in rules if r not in DOWNLOAD_RULES]
    try:
        text = format_plan(plan(config, compute, rules), compute.get("device", "H100 80GB, bf16"))
    except ValueError as err:  # a stale table must not stop the dry run it annotates
        text = f"GPU-hours estimate (real sizes) unavailable: {err}"
    print(text, file=sys.stderr if file is None else file, flush=True)
