"""latentbench.plan: job counts per rule and real-size GPU-hours from a study config."""

from __future__ import annotations

import copy
import io
from pathlib import Path

import pytest
import yaml

from latentbench.config import ConfigError, check_config, load_config
from latentbench.plan import (
    DOWNLOAD_RULES,
    EFFECTIVE_TFLOPS,
    RULE_FANOUT,
    flops_to_gpu_hours,
    format_plan,
    job_counts,
    plan,
    print_estimate,
    training_gpu_hours,
)

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def study():
    """3 tokenizers x 2 backbones x 2 guidance scales x 3 shards, validated."""
    config = {
        "study": "t",
        "data": {"kind": "synthetic"},
        "tokenizers": {name: {"family": "conv_kl"} for name in ("a", "b-trans-x", "c")},
        "backbones": {"sit-b": {"size": "demo", "recipe": "study_sit"}, "sit-xl": {"size": "demo", "recipe": "study_sit"}},
        "sampling": {"cfg_scales": [1.0, 1.5], "shards": 3, "num_samples": 3000},
    }
    return check_config(config)


def test_job_counts_are_products_of_wildcard_values(study):
    counts = job_counts(study)
    assert counts["dataset"] == 1 and counts["all"] == 1
    assert counts["reference_stats"] == 2  # train, val
    assert counts["fdr6_reference_stats"] == 2  # fdr6 is a default metric; recomputed divisors need val too
    assert counts["train_tokenizer"] == 3 and counts["encode_latents"] == 6
    assert counts["train_diffusion"] == 6 and counts["gfid_t"] == 6
    assert counts["sample"] == 3 * 2 * 2 * 3
    assert sum(counts.values()) == 1 + 1 + 2 + 2 + 3 * 7 + 6 * (5 + 2 * 3) + 4


@pytest.mark.parametrize("metrics, divisors, jobs", [(["rfid"], "recomputed", 0), (["fdr6"], "published", 1), (["fdr6"], "recomputed", 2)])
def test_fdr6_reference_jobs_follow_metrics_and_divisors(study, metrics, divisors, jobs):
    study.update(metrics=metrics, fdr6_divisors=divisors)
    assert job_counts(study)["fdr6_reference_stats"] == jobs


def test_job_counts_restricted_to_given_rules(study):
    assert job_counts(study, ["sample", "fetch_weights"]) == {"sample": 36, "fetch_weights": None}


def test_flops_to_gpu_hours_unit():
    assert flops_to_gpu_hours(EFFECTIVE_TFLOPS * 1e12 * 3600) == pytest.approx(1.0)
    assert flops_to_gpu_hours(1e15, effective_tflops=1000.0) == pytest.approx(1 / 3600)
    with pytest.raises(ValueError, match="effective_tflops"):
        flops_to_gpu_hours(1.0, effective_tflops=0)


def test_training_hours_reproduce_the_spec_per_tokenizer_budget():
    # spec models.md §1.9: SiT-B 400k x 256 + SiT-XL 80k x 256 + LDiT-B 100k x 1024 + LDiT-XL 100k x 1024
    # "≈ 10 + 10 + 10 + 51 ≈ 80 H100-h", with fwd GFLOPs 45.9 (B) / 236.8 (XL) from §1.5
    hours = [
        training_gpu_hours(45.9, 400_000, 256), training_gpu_hours(236.8, 80_000, 256),
        training_gpu_hours(45.9, 100_000, 1024), training_gpu_hours(236.8, 100_000, 1024),
    ]
    assert [round(h) for h in hours] == [10, 10, 10, 51]
    assert sum(hours) == pytest.approx(80, abs=1)


def test_plan_applies_glob_overrides_first_match_wins(study):
    compute = {"rules": {
        "train_diffusion": {"gpu_hours_per_job": 2.0, "by": {"backbone": {"*-xl": 10.0, "sit-*": 99.0}}, "source": "s"},
        "train_tokenizer": {"gpu_hours_per_job": 20.0, "by": {"tok": {"*-trans-*": 8.0}}, "source": "s"},
        "dataset": {"gpu_hours_per_job": 0, "source": "cpu"},
    }}
    rows = {r.rule: r for r in plan(study, compute)}
    # sit-b matches "sit-*" (99), sit-xl matches "*-xl" first (10); three tokenizers each
    assert rows["train_diffusion"].gpu_hours == pytest.approx(3 * (99.0 + 10.0))
    assert rows["train_tokenizer"].gpu_hours == pytest.approx(20.0 + 8.0 + 20.0)
    assert rows["dataset"].gpu_hours == 0.0 and rows["dataset"].source == "cpu"
    assert rows["sample"].gpu_hours is None  # no entry: no estimate


def test_plan_scales_sampling_hours_with_samples_per_shard(study):
    compute = {"rules": {"sample": {"gpu_hours_per_job": 0.5, "per_samples": 1000, "source": "s"}}}
    (row,) = [r for r in plan(study, compute) if r.rule == "sample"]
    # 3000 samples in 3 shards: 1000 per job -> 0.5 h per job x 36 jobs
    assert row.gpu_hours == pytest.approx(36 * 0.5)
    study["sampling"]["shards"] = 1  # 12 jobs of 3000 samples each
    (row,) = [r for r in plan(study, compute) if r.rule == "sample"]
    assert row.jobs == 12 and row.gpu_hours == pytest.approx(12 * 1.5)


@pytest.mark.parametrize(
    "rules, message",
    [
        ({"train_diffusion": {"gpu_hours_per_job": 1, "by": {"shard": {"*": 1}}, "source": "s"}}, "no wildcard 'shard'"),
        ({"dataset": {"gpu_hours_per_job": 1, "per_samples": 10, "source": "s"}}, "not sharded"),
        ({"no_such_rule": {"gpu_hours_per_job": 1, "source": "s"}}, "no_such_rule"),
    ],
)
def test_plan_rejects_entries_that_do_not_fit_the_rule(study, rules, message):
    with pytest.raises(ValueError, match=message):
        plan(study, {"rules": rules})


def test_format_plan_lists_rules_and_total(study):
    compute = {"rules": {"train_diffusion": {"gpu_hours_per_job": 1.25, "source": "s"}}}
    text = format_plan(plan(study, compute), "H100")
    assert text.startswith("GPU-hours estimate (real sizes, H100):")
    assert "no estimate" in text  # rules without an entry
    line = next(ln for ln in text.splitlines() if ln.split()[:1] == ["train_diffusion"])
    assert line.split()[1:] == ["6", "1.25", "7.5"]
    total = text.splitlines()[-2].split()
    assert total[0] == "total" and total[-1] == "7.5" and int(total[1]) == sum(job_counts(study).values())


def test_print_estimate_only_with_a_compute_block(study):
    out = io.StringIO()
    print_estimate(study, file=out)
    assert out.getvalue() == ""
    study["compute_estimate"] = {"rules": {"sample": {"gpu_hours_per_job": 1, "source": "s"}}}
    check_config(study)  # fills the device default
    print_estimate(study, file=out)
    assert "GPU-hours estimate (real sizes, H100 80GB, bf16)" in out.getvalue()
    out = io.StringIO()
    print_estimate(study, ["sample", "fetch_weights", "weights"], file=out)  # download rules are left out
    assert "sample" in out.getvalue() and "weights" not in out.getvalue().split("bf16)")[1]
    out = io.StringIO()
    print_estimate(study, ["dataset"], file=out)  # the table names a rule the workflow lacks
    assert out.getvalue().startswith("GPU-hours estimate (real sizes) unavailable: compute_estimate.rules: no such rule")


def test_schema_validates_the_compute_block(study):
    bad = copy.deepcopy(study)
    bad["compute_estimate"] = {"rules": {"sample": {"gpu_hours_per_job": 1}}}  # no source
    with pytest.raises(ConfigError, match="compute_estimate.rules.sample: 'source' is a required property"):
        check_config(bad)
    bad["compute_estimate"] = {"rules": {"sample": {"gpu_hours_per_job": 1, "source": "s", "by": {"a": {}, "b": {}}}}}
    with pytest.raises(ConfigError, match="compute_estimate.rules.sample.by"):
        check_config(bad)


def test_fanout_table_covers_every_rule_of_the_workflow():
    defined = set()
    for smk in (ROOT / "rules").glob("*.smk"):
        defined |= {line.split()[1].rstrip(":") for line in smk.read_text().splitlines() if line.startswith("rule ")}
    defined.add("all")  # the Snakefile's target
    assert defined - DOWNLOAD_RULES <= set(RULE_FANOUT)


def test_scale_config_numbers_follow_their_derivations():
    config = load_config(ROOT / "configs" / "scale-test.yaml")
    rules = config["compute_estimate"]["rules"]
    train = rules["train_diffusion"]
    by = train["by"]["backbone"]
    # Appendix Table 2 recipes (metrics-diffusability §12) with models.md §1.5 forward GFLOPs
    assert train["gpu_hours_per_job"] == pytest.approx(training_gpu_hours(45.9, 400_000, 256), abs=0.05)
    assert by["sit-xl"] == pytest.approx(training_gpu_hours(236.8, 80_000, 256), abs=0.05)
    assert by["lightningdit-xl"] == pytest.approx(training_gpu_hours(236.8, 100_000, 1024), abs=0.05)
    # sampling: 1000 images x (50 steps x 2 CFG forwards + decoder 234 + Inception 11.42 + FDr6 nets 704) GFLOPs
    for fwd, hours in ((45.9, rules["sample"]["gpu_hours_per_job"]), (236.8, rules["sample"]["by"]["backbone"]["*-xl"])):
        assert hours == pytest.approx(flops_to_gpu_hours(1000 * (100 * fwd + 234 + 11.42 + 704) * 1e9), rel=0.01)
    raw = yaml.safe_load((ROOT / "configs" / "scale-test.yaml").read_text())
    assert set(raw["compute_estimate"]["rules"]) <= set(RULE_FANOUT)


def test_gfid_t_runs_on_the_listed_backbones_only(study):
    assert job_counts(study)["gfid_t"] == 3 * 2
    study["ifid"]["gfid_t_backbones"] = ["sit-b"]
    assert job_counts(study)["gfid_t"] == 3 and job_counts(study)["train_diffusion"] == 3 * 2
    study["ifid"]["gfid_t_backbones"] = ["nope"]
    with pytest.raises(ConfigError, match="gfid_t_backbones: nope"):
        check_config(study)


def test_per_tokenizer_backbones_count_trained_pairs_only(study):
    # b-trans-x is trained with sit-b alone (the study's Fig. 6 families: SiT-B only)
    study["tokenizers"]["b-trans-x"]["backbones"] = ["sit-b"]
    counts = job_counts(study)
    assert counts["train_diffusion"] == 5 and counts["generation_metrics"] == 5
    assert counts["sample"] == 5 * 2 * 3 and counts["train_tokenizer"] == 3
    study["ifid"]["gfid_t_backbones"] = ["sit-xl"]
    assert job_counts(study)["gfid_t"] == 2  # a and c; b-trans-x has no sit-xl model
    compute = {"rules": {"train_diffusion": {"gpu_hours_per_job": 1.0, "by": {"backbone": {"*-xl": 10.0}}, "source": "s"},
                         "sample": {"gpu_hours_per_job": 1.0, "by": {"tok": {"b-*": 7.0}}, "source": "s"}}}
    rows = {r.rule: r for r in plan(study, compute)}
    assert rows["train_diffusion"].gpu_hours == pytest.approx(3 * 1.0 + 2 * 10.0)
    assert rows["sample"].gpu_hours == pytest.approx((4 * 1.0 + 1 * 7.0) * 2 * 3)
    study["tokenizers"]["a"]["backbones"] = ["sit-b", "nope"]
    with pytest.raises(ConfigError, match="tokenizers.a.backbones: nope"):
        check_config(study)
