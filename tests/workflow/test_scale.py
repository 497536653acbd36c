"""Scale of the DAG: the diffusability study's shape (configs/scale-test.yaml) dry-runs at the paper's
job count, and the dry run prints the real-size GPU-hours estimate (issue 6, part 4)."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
import yaml

from latentbench.config import load_config
from latentbench.features.representations import fdr6_plan
from latentbench.plan import DOWNLOAD_RULES, job_counts

ROOT = Path(__file__).resolve().parents[2]
SCALE = ROOT / "configs" / "scale-test.yaml"

# Jobs of each rule, by what it fans out over (rules/*.smk), written out here independently of
# latentbench.plan so that the two are checked against each other and against Snakemake.
PER_TOKENIZER = {"train_tokenizer": 1, "encode_latents": 2, "reconstruction_metrics": 1, "latent_metrics": 1,
                 "baseline_metrics": 1, "ifid_variants": 1}  # encode_latents: train + val
PER_PAIR = {"train_diffusion": 1, "generation_metrics": 1, "diffusion_loss": 1, "trajectory_metrics": 1, "gfid_t": 1}
ONCE = {"dataset": 1, "feature_net": 1, "reference_stats": 2, "collect": 1, "correlate": 1, "report": 1, "all": 1}


def fdr6_jobs(config: dict, runnable: bool) -> int:
    """FDr6 reference-statistics jobs: train (+ val for recomputed divisors) when FDr6 can run."""
    if "fdr6" not in config["metrics"] or not runnable:
        return 0
    return 2 if config["fdr6_divisors"] == "recomputed" else 1


def expected_jobs(config: dict, fdr6_runnable: bool) -> dict[str, int]:
    """Jobs per rule of a full run of ``config``: tokenizers x per-tokenizer rules + trained (tokenizer,
    backbone) pairs x (scales x shards + per-pair rules) + the study-wide rules (+ FDr6's references
    where its weights are). A tokenizer's ``backbones`` list, else every backbone, gives its pairs."""
    n_tok = len(config["tokenizers"])
    n_pairs = sum(len(spec.get("backbones") or config["backbones"]) for spec in config["tokenizers"].values())
    sampling = config["sampling"]
    jobs = {rule: n * n_tok for rule, n in PER_TOKENIZER.items()}
    jobs |= {rule: n * n_pairs for rule, n in PER_PAIR.items()}
    jobs["sample"] = n_pairs * len(sampling["cfg_scales"]) * sampling["shards"]
    if fdr6_jobs(config, fdr6_runnable):
        jobs["fdr6_reference_stats"] = fdr6_jobs(config, fdr6_runnable)
    return jobs | ONCE


def fdr6_runnable(config: dict) -> bool:
    """Whether this machine has FDr6's six weight files (else the DAG leaves FDr6 out, reported "not run")."""
    return "spaces" in fdr6_plan(config["weights_dir"])


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory):
    results = tmp_path_factory.mktemp("scale")
    cmd = [sys.executable, "-m", "snakemake", "-n", "--nolock", "--configfile", str(SCALE),
           "--config", f"results_dir={results}"]
    start = time.monotonic()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)
    elapsed = time.monotonic() - start
    log = proc.stdout + proc.stderr
    if proc.returncode != 0:
        if "MissingInputException" in log and any("+" in t for t in yaml.safe_load(SCALE.read_text())["tokenizers"]):
            at = log.index("MissingInputException")
            pytest.fail("the Table 1 names contain '+' (mcos+mdms): the tok wildcard constraint in rules/common.smk "
                        "must be built with re.escape; snakemake said:\n" + log[at : at + 1500])
        pytest.fail(f"snakemake -n failed (exit {proc.returncode}):\n{log[-4000:]}")
    print(f"scale-test dry run: {elapsed:.1f} s")
    return log


def snakemake_job_stats(log: str) -> dict[str, int]:
    """Snakemake's 'Job stats' table (rule -> count, plus 'total'), without the download jobs: one
    fetch_weights job per weight file missing on this disk (the VF/REPA variants' foundation encoders),
    which the plan leaves out too (latentbench.plan.DOWNLOAD_RULES)."""
    table = log[log.index("Job stats:"):]
    rows = re.findall(r"^(\w+)\s+(\d+)\s*$", table.split("\n\n")[0], flags=re.MULTILINE)
    stats = {rule: int(count) for rule, count in rows}
    stats["total"] -= sum(stats.pop(rule, 0) for rule in DOWNLOAD_RULES)
    return stats


def estimate_table(log: str) -> dict[str, tuple[int, str]]:
    """The printed GPU-hours table: rule -> (jobs, total GPU-h column)."""
    table = log[log.index("GPU-hours estimate (real sizes"):]
    rows = re.findall(r"^  (\w+)\s+(\d+)\s+\S*\s+([\d,.]+|no estimate)\s*$", table, flags=re.MULTILINE)
    return {rule: (int(jobs), hours) for rule, jobs, hours in rows}


def test_scale_config_has_the_paper_shape():
    config = load_config(SCALE)
    assert len(config["tokenizers"]) == 86  # metrics-diffusability §11.4
    assert len(config["backbones"]) == 4  # §12
    assert config["sampling"]["num_samples"] == 50_000 and config["sampling"]["shards"] >= 2
    scales = config["sampling"]["cfg_scales"]
    assert min(scales) == 1.0 and max(scales) == 3.0 and len(scales) == 11  # §13 Fig. 7 grid
    recipes = sorted(b["recipe"] for b in config["backbones"].values())
    assert recipes == ["study_lightningdit"] * 2 + ["study_sit"] * 2
    # Table 1 families (43 / 22 / 21); all four backbones on conv-f16d32, SiT-B alone on the others (Fig. 6)
    families = Counter(spec["study_family"] for spec in config["tokenizers"].values())
    assert families == {"conv-f16d32": 43, "conv-f16d64": 22, "trans-f16d32": 21}
    for spec in config["tokenizers"].values():
        assert (spec["family"] == "trans_kl") == (spec["study_family"] == "trans-f16d32")
        assert spec.get("backbones") == (None if spec["study_family"] == "conv-f16d32" else ["sit-b"])


def test_dry_run_job_count_matches_the_config(dry_run):
    config = load_config(SCALE)
    stats = snakemake_job_stats(dry_run)
    expected = expected_jobs(config, fdr6_runnable(config))
    assert stats.pop("total") == sum(expected.values())
    assert sum(expected_jobs(config, False).values()) == 6415  # 86 x 7 + 215 pairs x (5 + 11 x 2) + 8
    assert stats == expected
    # plan.py agrees with the DAG; it counts FDr6's references as at real size (weights present)
    planned = {rule: n for rule, n in job_counts(config).items() if n}
    assert planned == expected_jobs(config, True)


def test_dry_run_prints_the_gpu_hours_estimate(dry_run):
    config = load_config(SCALE)
    table = estimate_table(dry_run)
    stats = snakemake_job_stats(dry_run)
    for rule, count in stats.items():
        if rule != "total":
            assert table[rule][0] == count, rule
    unscheduled = fdr6_jobs(config, True) - fdr6_jobs(config, fdr6_runnable(config))
    assert table["total"][0] == stats["total"] + unscheduled
    total = float(table["total"][1].replace(",", ""))
    # ~80 H100-h of diffusion training per conv-f16d32 tokenizer (four backbones, spec models.md §1.9),
    # SiT-B's 9.8 per tokenizer of the two other families; the spec's "~7,000 H100-h" study overall
    training = 43 * (9.8 + 10.1 + 9.8 + 50.5) + 43 * 9.8
    assert float(table["train_diffusion"][1].replace(",", "")) == pytest.approx(training, abs=0.1)
    assert 6_000 < total < 8_000
