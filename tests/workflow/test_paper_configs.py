"""The three paper studies (configs/ifid.yaml, diffusability.yaml, seesaw.yaml) validate and plan.

Cheap by design (no Snakemake run): each config goes through the one validator
(latentbench.config.check_config), its job table is computed by latentbench.plan and compared
with counts derived here from the papers' shapes, every compute_estimate entry is used, and what
check_config cannot see for pretrained tokenizers (their latent shape is only known to the zoo)
is checked here: each backbone's patch size (``auto`` resolved on the zoo's latent shape) tiles the
latent of every tokenizer it is trained on.
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
from latentbench.diffusion.recipes import backbone_config, resolve_patch_size
from latentbench.plan import RULE_FANOUT, flops_to_gpu_hours, job_counts, plan, training_gpu_hours
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
    seesaw = config["seesaw"]
    on = seesaw["enabled"]
    conditions = len(seesaw["controlnet"]["conditions"])
    probes = len(seesaw["probe"]["tokenizers"] or toks) * 2 if on and seesaw["probe"]["enabled"] else 0
    jobs |= {"dense_demo_net": 0, "drift": len(toks) if on else 0, "probe": probes,  # real projectors: no stand-in net
             "controlnet_train": len(seesaw["controlnet"]["pairs"]) * conditions if on else 0,
             "controlnet_evaluate": len(seesaw["controlnet"]["pairs"]) * conditions if on else 0}
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
            patch = resolve_patch_size(backbone["patch_size"], shape)
            # raises where the patch size does not tile the grid, or is not 1 on a 1-D latent
            backbone_config(backbone["size"], backbone["recipe"], shape, patch)
            # 256 tokens everywhere but the two short 1-D tokenizers (SiT-*/1D, models.md §1.8)
            tokens = shape[0] if len(shape) == 2 else (shape[1] // patch) * (shape[2] // patch)
            assert tokens == 256 or (len(shape) == 2 and tokens in (64, 128)), (tok, bb, shape)


def test_ifid_study_is_table2_with_sit_b_and_xl(studies):
    config = studies["ifid"]
    table2 = load_paper_table("ifid_table2")["vae"].tolist()
    assert list(config["tokenizers"]) == table2  # 13 VAEs, the paper's order
    for key, spec in config["tokenizers"].items():
        row = zoo_row(spec["name"])
        assert canonical(key) in {canonical(a) for a in row.aliases}, key  # the zoo row behind the iFID name
        assert spec["latent_norm"] == "none"  # the ifid_sit SiT normalises with its own BatchNorm
    # one backbone per paper column (Table 3: SiT-B, SiT-XL), its patch chosen per tokenizer
    assert {name: (b["size"], b["recipe"], b["patch_size"]) for name, b in config["backbones"].items()} == {
        "sit-b": ("B", "ifid_sit", "auto"), "sit-xl": ("XL", "ifid_sit", "auto")}
    sizes = Counter(config["backbones"][b]["size"] for _, b in model_pairs(config))
    assert sizes == {"B": 12, "XL": 13}  # SiT-B skips RAE (spec §2.3)
    assert all(config["backbones"][b]["size"] == "XL" for t, b in model_pairs(config) if t == "RAE")
    assert config["ifid"]["gfid_t_backbones"] == ["sit-xl"]  # Table 1 is SiT-XL
    s = config["sampling"]
    assert s["num_samples"] == 50_000 and s["method"] == "sde" and s["steps"] == 250
    assert 1.0 in s["cfg_scales"] and any(w > 1.0 for w in s["cfg_scales"])  # w/o and w/ cfg
    table3 = {"psnr", "ssim", "lpips", "rfid", "diffusion_loss", "eq_loss", "se_loss", "vf_loss", "gmm_loss", "ifid"}
    assert table3 <= set(config["metrics"])
    ifid = config["ifid"]
    assert (ifid["k"], ifid["alpha"], ifid["interpolation"], ifid["latent"]) == (10, 0.5, "slerp", "sample")
    assert [round(f * 1_281_167, -3) for f in ifid["reference_fractions"]] == [50_000, 200_000]  # Table 4
    assert ifid["alpha_grid"] == [0.0, 0.1, 0.2, 0.3, 0.4, 0.5]  # Table 5


def test_ifid_models_are_the_readme_sit_configs(studies):
    # Each (VAE, backbone) pair, named as the iFID README names the SiT it trains (spec A.6 sit_config:
    # "SiT-XL/2" on 32x32 latents, "/1" on 16x16 grids, "/1D" on token latents), is the README's set.
    config = studies["ifid"]
    readme = load_paper_table("ifid_readme_values").set_index("vae")["sit_config"]
    names = {"QwenImage-VAE": "QW-VAE"}  # the README's spelling
    ours: dict[str, set[str]] = {}
    for tok, bb in model_pairs(config):
        shape = zoo_row(config["tokenizers"][tok]["name"]).latent_shape
        backbone = config["backbones"][bb]
        suffix = "1D" if len(shape) == 2 else str(resolve_patch_size(backbone["patch_size"], shape))
        ours.setdefault(tok, set()).add(f"SiT-{backbone['size']}/{suffix}")
    assert ours == {tok: set(readme[names.get(tok, tok)].split(";")) for tok in config["tokenizers"]}


def test_ifid_sit_hours_follow_from_flops(studies):
    # Per (VAE, backbone) pair at TF32 (200 TFLOP/s), SiT fwd GFLOPs by the token count at the resolved
    # patch (models.md §1.5); decoder GFLOPs of the adapters and Inception 11.4 as the config header.
    config = studies["ifid"]
    fwd = {("B", 256): 45.9, ("XL", 256): 236.8, ("B", 64): 11.0, ("XL", 64): 57.6, ("B", 128): 22.3, ("XL", 128): 116.3}
    decode = {"QwenImage-VAE": 706.0, "IN-VAE": 252.2, "VA-VAE": 252.2, "SOFT-VQ": 204.4, "MAE-TOK": 71.2,
              "DE-TOK": 46.2, "DM-VAE": 622.5, "RAE": 221.6}  # the others: f8 SD-like decoders, 622.2-622.3
    tf32 = 200.0
    expected = Counter()
    for tok, bb in model_pairs(config):
        backbone = config["backbones"][bb]
        shape = zoo_row(config["tokenizers"][tok]["name"]).latent_shape
        patch = resolve_patch_size(backbone["patch_size"], shape)
        tokens = shape[0] if len(shape) == 2 else (shape[1] // patch) * (shape[2] // patch)
        f, d = fwd[backbone["size"], tokens], decode.get(tok, 622.2) + 11.4
        expected["train_diffusion"] += training_gpu_hours(f, 400_000, 128, effective_tflops=tf32)
        # 2 scales x 50k samples of 250 SDE steps, one forward at w = 1 and two at w = 1.5
        expected["sample"] += flops_to_gpu_hours(50_000 * (250 * 3 * f + 2 * d) * 1e9, tf32)
        if bb in config["ifid"]["gfid_t_backbones"]:  # 525 forwards and 5 decodes per val image
            expected["gfid_t"] += flops_to_gpu_hours(50_000 * (525 * f + 5 * d) * 1e9, tf32)
    got = {r.rule: r.gpu_hours for r in plan(config)}
    for rule, hours in expected.items():
        assert got[rule] == pytest.approx(hours, rel=0.005), rule
    assert 600 < got["train_diffusion"] < 800  # spec models.md §1.9: ≈400 H100-h bf16 for the whole study, ≈2x in TF32


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
