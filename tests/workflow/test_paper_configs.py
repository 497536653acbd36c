"""The three paper studies (configs/ifid.yaml, diffusability.yaml, seesaw.yaml) validate and plan.

Cheap by design (no Snakemake run): each config goes through the one validator
(latentbench.config.check_config), its job table is computed by latentbench.plan and compared
with counts derived here from the papers' shapes, every compute_estimate entry is used, and what
check_config cannot see for pretrained tokenizers (their latent shape is only known to the zoo)
is checked here: each backbone's patch size tiles the latent of every tokenizer it is trained on.
The full `snakemake -n` of each config was measured by hand (configs/README.md); test_scale.py
checks plan.py against Snakemake's own job counts on the same DAG shape.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from pathlib import Path

import pytest
import yaml

from latentbench.config import load_config, model_pairs
from latentbench.diffusion.recipes import backbone_config
from latentbench.plan import RULE_FANOUT, job_counts, plan, training_gpu_hours
from latentbench.report.paper_values import load_paper_table
from latentbench.tokenizers.pretrained import zoo_row
from latentbench.tokenizers.pretrained.base import canonical
from latentbench.tokenizers.zoo import TABLE1, tokenizer_config

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = {name: ROOT / "configs" / f"{name}.yaml" for name in ("ifid", "diffusability", "seesaw")}
IMAGENET = {"kind": "imagefolder", "train": 1_281_167, "val": 50_000, "resolution": 256}


@pytest.fixture(scope="module")
def studies() -> dict[str, dict]:
    return {name: load_config(path) for name, path in CONFIGS.items()}


def expected_jobs(config: dict) -> dict[str, int]:
    """Jobs per rule, written out from the study's shape (rules/*.smk), independently of latentbench.plan."""
    toks = config["tokenizers"]
    n_pre = sum(spec["family"] == "pretrained" for spec in toks.values())
    pairs = [(t, b) for t, spec in toks.items() for b in (spec.get("backbones") or config["backbones"])]
    gfid_t = config["ifid"]["gfid_t_backbones"] or list(config["backbones"])
    s = config["sampling"]
    fdr6 = 0 if "fdr6" not in config["metrics"] else (2 if config["fdr6_divisors"] == "recomputed" else 1)
    jobs = {
        "dataset": 1, "feature_net": 1, "reference_stats": 2, "fdr6_reference_stats": fdr6,
        "train_tokenizer": len(toks) - n_pre, "pretrained_tokenizer": n_pre, "encode_latents": 2 * len(toks),
        "train_diffusion": len(pairs), "sample": len(pairs) * len(s["cfg_scales"]) * s["shards"],
        "gfid_t": sum(b in gfid_t for _, b in pairs), "collect": 1, "correlate": 1, "report": 1, "all": 1,
    }
    jobs |= {r: len(toks) for r in ("reconstruction_metrics", "latent_metrics", "baseline_metrics", "ifid_variants")}
    jobs |= {r: len(pairs) for r in ("generation_metrics", "diffusion_loss", "trajectory_metrics")}
    return jobs


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_config_validates_on_imagenet_and_plans_every_rule(studies, name):
    config = studies[name]
    assert config["study"] == name
    assert {k: config["data"][k] for k in IMAGENET} == IMAGENET and config["data"]["root"]
    assert config["feature_net"]["name"] == "inception-v3-compat"
    assert job_counts(config) == expected_jobs(config)
    rows = {row.rule: row for row in plan(config)}
    assert set(config["compute_estimate"]["rules"]) == set(RULE_FANOUT) - {
        r for r, n in expected_jobs(config).items() if n == 0
    }, "one compute_estimate entry per rule that has jobs"
    for rule, row in rows.items():
        assert row.gpu_hours is not None or row.jobs == 0, rule
        if row.gpu_hours is not None:
            assert row.source, rule


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_every_backbone_tiles_the_latents_it_is_trained_on(studies, name):
    # check_config skips pretrained entries (their latent shape lives in the zoo): check it here.
    config = studies[name]
    for tok, bb in model_pairs(config):
        spec, backbone = config["tokenizers"][tok], config["backbones"][bb]
        if spec["family"] == "pretrained":
            shape = zoo_row(spec["name"]).latent_shape
            # raises where the patch size does not tile the grid, or is not 1 on a 1-D latent
            backbone_config(backbone["size"], backbone["recipe"], shape, backbone["patch_size"])
            # 256 tokens everywhere but the two short 1-D tokenizers (SiT-*/1D, models.md §1.8)
            tokens = shape[0] if len(shape) == 2 else (shape[1] // backbone["patch_size"]) * (shape[2] // backbone["patch_size"])
            assert tokens == 256 or (len(shape) == 2 and tokens in (64, 128)), (tok, bb, shape)


def test_ifid_study_is_table2_with_sit_b_and_xl(studies):
    config = studies["ifid"]
    table2 = load_paper_table("ifid_table2")["vae"].tolist()
    assert list(config["tokenizers"]) == table2  # 13 VAEs, the paper's order
    for key, spec in config["tokenizers"].items():
        row = zoo_row(spec["name"])
        assert canonical(key) in {canonical(a) for a in row.aliases}, key  # the zoo row behind the iFID name
        assert spec["latent_norm"] == "none"  # the ifid_sit SiT normalises with its own BatchNorm
    assert {b["recipe"] for b in config["backbones"].values()} == {"ifid_sit"}
    sizes = Counter(config["backbones"][b]["size"] for _, b in model_pairs(config))
    assert sizes == {"B": 12, "XL": 13}  # SiT-B skips RAE (spec §2.3)
    assert all(config["backbones"][b]["size"] == "XL" for t, b in model_pairs(config) if t == "RAE")
    assert {config["backbones"][b]["size"] for b in config["ifid"]["gfid_t_backbones"]} == {"XL"}  # Table 1
    s = config["sampling"]
    assert s["num_samples"] == 50_000 and s["method"] == "sde" and s["steps"] == 250
    assert 1.0 in s["cfg_scales"] and any(w > 1.0 for w in s["cfg_scales"])  # w/o and w/ cfg
    table3 = {"psnr", "ssim", "lpips", "rfid", "diffusion_loss", "eq_loss", "se_loss", "vf_loss", "gmm_loss", "ifid"}
    assert table3 <= set(config["metrics"])
    ifid = config["ifid"]
    assert (ifid["k"], ifid["alpha"], ifid["interpolation"], ifid["latent"]) == (10, 0.5, "slerp", "sample")
    assert [round(f * 1_281_167, -3) for f in ifid["reference_fractions"]] == [50_000, 200_000]  # Table 4
    assert ifid["alpha_grid"] == [0.0, 0.1, 0.2, 0.3, 0.4, 0.5]  # Table 5


def test_ifid_training_hours_follow_from_flops(studies):
    # 400k x 128 ifid_sit training per pair at TF32 (200 TFLOP/s); SiT fwd GFLOPs by token count (models.md §1.5)
    config = studies["ifid"]
    fwd = {("B", 256): 45.9, ("XL", 256): 236.8, ("B", 64): 11.0, ("XL", 64): 57.6, ("B", 128): 22.3, ("XL", 128): 116.3}
    expected = 0.0
    for tok, bb in model_pairs(config):
        shape = zoo_row(config["tokenizers"][tok]["name"]).latent_shape
        tokens = shape[0] if len(shape) == 2 else 256
        expected += training_gpu_hours(fwd[config["backbones"][bb]["size"], tokens], 400_000, 128, effective_tflops=200.0)
    got = next(r.gpu_hours for r in plan(config) if r.rule == "train_diffusion")
    assert got == pytest.approx(expected, rel=0.01)
    assert 600 < got < 800  # spec models.md §1.9: ≈400 H100-h bf16 for the whole study, ≈2x in TF32


def test_diffusability_study_is_table1_at_paper_size(studies):
    config = studies["diffusability"]
    raw = yaml.safe_load(CONFIGS["diffusability"].read_text())["tokenizers"]
    assert list(raw) == [row.name for row in TABLE1]
    for row in TABLE1:
        spec = dict(raw[row.name])
        backbones = spec.pop("backbones", None)
        assert spec == tokenizer_config(row), row.name
        assert backbones == (None if row.family == "conv-f16d32" else ["sit-b"]), row.name
    assert Counter(spec["arch"] for spec in config["tokenizers"].values()) == {"f16d32": 64, "f16d64": 22}
    assert {(b["size"], b["recipe"]) for b in config["backbones"].values()} == {
        ("B", "study_sit"), ("XL", "study_sit"), ("B", "study_lightningdit"), ("XL", "study_lightningdit")}
    assert len(model_pairs(config)) == 43 * 4 + 43
    s = config["sampling"]
    assert (s["steps"], s["method"], len(s["cfg_scales"]), min(s["cfg_scales"]), max(s["cfg_scales"])) == (50, "euler", 11, 1.0, 3.0)
    t = config["tokenizer_training"]  # 16 epochs of ImageNet (§11.1); upstream disc_start 5001 steps x 256 images
    assert t["steps"] == math.ceil(16 * 1_281_167 / t["batch_size"])
    assert t["disc_start"] == round(5001 * 256 / t["batch_size"])
    hours = {r.rule: r.gpu_hours for r in plan(config)}
    assert hours["train_diffusion"] == pytest.approx(43 * (9.8 + 10.1 + 9.8 + 50.5) + 43 * 9.8, abs=0.1)
    assert 6_000 < sum(h for h in hours.values() if h) < 8_000  # spec models.md §1.9 "≈ 7,000 H100-h"


def test_seesaw_study_is_table5_with_table2_labels(studies):
    config = studies["seesaw"]
    text = CONFIGS["seesaw"].read_text()
    table5 = load_paper_table("seesaw_table5")["weight_name"].tolist()
    commented = re.findall(r"^  # ([\w.-]+):\s+\{family: pretrained", text, flags=re.MULTILINE)
    assert sorted([*config["tokenizers"], *commented]) == sorted(table5)  # all 33 rows, live or commented
    # the commented rows are exactly those whose files nobody has published (zoo.md "stage files [U]")
    assert sorted(commented) == sorted(n for n in table5 if not zoo_row(n).files) == ["uae-stage2", "uae-stage3"]
    for key, spec in config["tokenizers"].items():
        assert zoo_row(spec["name"]).name == key
    labels = {spec["label"]: key for key, spec in config["tokenizers"].items() if "label" in spec}
    assert sorted(labels) == sorted(load_paper_table("seesaw_table2")["model"])
    # spec A.7 row mapping; REPA-E = e2e-vae (seesaw-notes §2.6)
    assert labels == {"VA-VAE": "vavae_f16d32", "REPA-E": "e2e-vae", "RAE": "rae_dinov2_reconstruction",
                      "VTP-B": "vtp_b", "SVG": "svg", "UAE": "uae"}
    assert set(config["metrics"]) == {"rfid", "psnr", "ssim", "lpips"}
    assert {spec["study_family"] for spec in config["tokenizers"].values()} == {"seesaw"}
    # one backbone per AE only because the schema needs one: w = 1, one diffusion model each
    assert len(model_pairs(config)) == len(config["tokenizers"]) and config["sampling"]["cfg_scales"] == [1.0]
