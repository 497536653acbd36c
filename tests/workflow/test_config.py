import copy
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from latentbench.config import ConfigError, check_config, load_config, model_pairs, model_spec, study_family

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def demo():
    return yaml.safe_load((ROOT / "config.yaml").read_text())


def test_demo_config_valid_with_defaults(demo):
    config = check_config(copy.deepcopy(demo))
    assert config["tokenizers"]["baseline"]["kl_weight"] == 1e-6
    assert config["sampling"]["method"] == "euler"


@pytest.mark.parametrize(
    "edit, where",
    [
        (lambda c: c.update(bogus=1), "<top level>: Additional properties are not allowed ('bogus'"),
        (lambda c: c["tokenizers"]["baseline"].update(fammily="x"), "tokenizers.baseline: Additional properties"),
        (lambda c: c["tokenizers"]["vf"].update(regularizer="vff"), "tokenizers.vf.regularizer: 'vff' is not one of"),
        (lambda c: c["tokenizers"]["vf"].update(family="nope"), "tokenizers.vf.family: 'nope' is not one of"),
        (lambda c: c.update(metrics=["rfid", "fidd"]), "metrics.1: 'fidd' is not one of"),
        (lambda c: c["data"].update(train="many"), "data.train: 'many' is not of type 'integer'"),
        (lambda c: c["backbones"]["sit-demo"].update(recipe="dit"), "backbones.sit-demo.recipe: 'dit' is not one of"),
    ],
)
def test_bad_config_one_line_naming_the_key(demo, edit, where):
    edit(demo)
    with pytest.raises(ConfigError) as info:
        check_config(demo)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("config error at " + where.split(":")[0])
    assert where.split(": ", 1)[1] in message


@pytest.mark.parametrize("n, shards, ok", [(10, 4, True), (5, 4, False), (5, 5, True), (3, 5, False), (1000, 1000, True), (7, 7, True)])
def test_sampling_shards_never_leave_a_shard_empty(demo, n, shards, ok):
    demo["sampling"].update(num_samples=n, shards=shards)
    if ok:
        check_config(demo)
        per = -(-n // shards)
        assert min(n - i * per for i in range(shards)) >= 1  # the split the sample stage makes
        return
    with pytest.raises(ConfigError, match=r"^config error at sampling\.shards: .* empty \(\d+ shards would not\)$") as info:
        check_config(demo)
    most = int(str(info.value).rsplit("(", 1)[1].split()[0])
    demo["sampling"]["shards"] = most
    check_config(demo)  # the advice holds


def test_load_config_names_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="nope.yaml: config file not found"):
        load_config(tmp_path / "nope.yaml")


def test_snakemake_stops_on_bad_config(tmp_path, demo):
    demo["tokenizers"]["vf"]["regularizer"] = "vff"
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(demo))
    proc = subprocess.run(
        [sys.executable, "-m", "snakemake", "-n", "--cores", "1", "--configfile", str(bad)],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode != 0
    assert "config error at tokenizers.vf.regularizer: 'vff' is not one of" in proc.stdout + proc.stderr


def test_study_family_labels_and_analysis_keys():
    assert study_family({"family": "conv_kl"}) == "conv-demo"  # the schema's default arch
    assert study_family({"family": "trans_kl", "arch": "f16d32"}) == "trans-f16d32"
    assert study_family({"family": "conv_kl", "arch": "f16d32", "latent_channels": 64}) == "conv-f16d32-d64"
    assert study_family({"family": "conv_kl", "arch": {"ch": 8}}) == "conv-custom"
    assert study_family({"family": "conv_kl", "arch": "demo_d8", "study_family": "conv-f16d64"}) == "conv-f16d64"
    spec = {"family": "conv_kl", "arch": "demo", "label": "x", "study_family": "f", "backbones": ["b"]}
    assert model_spec(spec) == {"family": "conv_kl", "arch": "demo"}  # relabelling never retrains


def test_model_pairs_follow_per_tokenizer_backbones(demo):
    config = check_config(copy.deepcopy(demo))
    pairs = model_pairs(config)
    assert len(pairs) == sum(len(s.get("backbones") or config["backbones"]) for s in config["tokenizers"].values())
    only = next(iter(config["backbones"]))
    assert {b for _, b in model_pairs(config, [only])} == {only}


@pytest.mark.parametrize(
    "edit, where",
    [
        (lambda c: c["tokenizers"]["lcr"].update(variant="w0.5-thbad"), "tokenizers.lcr.variant: unknown variant 'w0.5-thbad' for 'lcr'"),
        (lambda c: c["tokenizers"]["vf"].update(variant="DINOv9"), "tokenizers.vf.variant: unknown variant 'DINOv9'"),
        (lambda c: c["tokenizers"]["baseline"].update(variant="x"), "tokenizers.baseline.variant: unknown variant 'x'"),
        (lambda c: c["tokenizers"]["eq"].update(arch="f99"), "tokenizers.eq.arch: 'f99' is not one of"),
        (lambda c: c["tokenizers"]["eq"].update(arch={"preset": "demo", "bogus": 1}), "tokenizers.eq.arch: unknown arch keys ['bogus']"),
        (lambda c: c["tokenizers"]["t-mae"].update(arch="f16d64"), "tokenizers.t-mae.arch: unknown arch 'f16d64'"),
        (lambda c: c["tokenizers"]["vf"].update(reg_options={"vf_wieght": 1}), "tokenizers.vf.reg_options: Additional properties"),
        (lambda c: c["tokenizers"]["vf"].update(reg_options={"repa_hidden": 0.5}), "tokenizers.vf.reg_options.repa_hidden: 0.5 is not of type 'integer'"),
        (lambda c: c["backbones"]["sit-demo"].update(patch_size=3), "backbones.sit-demo.patch_size: 3 does not tile the 8x8 latent grid"),
        (lambda c: c["backbones"]["sit-demo"].update(patch_size="autp"), "backbones.sit-demo.patch_size: 'autp' is not of type"),
        (lambda c: c["backbones"]["sit-demo"].update(size="XXL"), "backbones.sit-demo.size: 'XXL' is not one of"),
    ],
)
def test_training_keys_fail_at_parse_time_naming_the_key(demo, edit, where):
    edit(demo)
    with pytest.raises(ConfigError) as info:
        check_config(demo)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("config error at " + where.split(":")[0] + ":"), message
    assert where.split(": ", 1)[1] in message


def test_backbone_patch_size_auto_is_accepted(demo):
    # resolved per tokenizer where the backbone is built (recipes.resolve_patch_size): 1 on the demo's 8x8 grid
    demo["backbones"]["sit-demo"]["patch_size"] = "auto"
    assert check_config(demo)["backbones"]["sit-demo"]["patch_size"] == "auto"


def test_reg_options_schema_lists_every_regulariser_option():
    from latentbench.config import load_schema
    from latentbench.tokenizers.variants import DEFAULT_OPTIONS

    schema = load_schema()["$defs"]["trained_tokenizer"]["properties"]["reg_options"]
    assert set(schema["properties"]) == set(DEFAULT_OPTIONS)
    assert not any("default" in v for v in schema["properties"].values())  # DEFAULT_OPTIONS is the one default


def test_pretrained_entry_is_accepted_and_its_name_checked(demo, monkeypatch):
    demo["tokenizers"]["sdvae"] = {"family": "pretrained", "name": "sd_vae", "weights": "w/sd.safetensors",
                                   "label": "SD-VAE", "study_family": "zoo", "backbones": ["sit-demo"]}
    config = check_config(copy.deepcopy(demo))
    entry = config["tokenizers"]["sdvae"]
    assert entry["latent_norm"] == "none" and "regularizer" not in entry  # raw posterior by default; no training defaults
    assert model_spec(entry) == {"family": "pretrained", "name": "sd_vae", "weights": "w/sd.safetensors", "latent_norm": "none"}
    demo["tokenizers"]["sdvae"]["latent_norm"] = "bogus"
    with pytest.raises(ConfigError, match="tokenizers.sdvae.latent_norm: 'bogus' is not one of"):
        check_config(copy.deepcopy(demo))
    demo["tokenizers"]["sdvae"].update(latent_norm="none", name="nope-vae")
    with pytest.raises(ConfigError, match="config error at tokenizers.sdvae.name: unknown pretrained tokenizer 'nope-vae'"):
        check_config(copy.deepcopy(demo))
    demo["tokenizers"]["sdvae"].update(name="SD-VAE", kl_weight=0.1)  # a training key on a pretrained entry
    with pytest.raises(ConfigError, match="tokenizers.sdvae: Additional properties"):
        check_config(copy.deepcopy(demo))


def test_snakemake_stops_on_bad_variant_at_parse_time(tmp_path, demo):
    demo["tokenizers"]["lcr"]["variant"] = "w0.5-thbad"
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(demo))
    proc = subprocess.run(
        [sys.executable, "-m", "snakemake", "-n", "--cores", "1", "--configfile", str(bad)],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode != 0
    assert "config error at tokenizers.lcr.variant: unknown variant 'w0.5-thbad' for 'lcr'" in proc.stdout + proc.stderr
