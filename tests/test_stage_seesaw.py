"""The Seesaw DAG stages' own logic (latentbench/stages/seesaw.py, controlnet.py; the drift /
probe / ControlNet libraries have their own tests): the reconstruction memory map written by
the reconstruction job and streamed back beside the originals, the drift job end to end on
Canny, projector choice, probe splits, row selection, metrics.csv columns, config checks and
the dry-run job counts."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from latentbench.config import ConfigError, check_config
from latentbench.data.shards import write_split
from latentbench.errors import InputError
from latentbench.io import read_json, write_json
from latentbench.plan import job_counts
from latentbench.stages.controlnet import control_config
from latentbench.stages.metrics import ReconstructionWriter, to_uint8
from latentbench.stages.report import seesaw_columns
from latentbench.stages.seesaw import (
    drift_job,
    maps_to_uint8,
    probe_splits,
    projector_config,
    reconstruction_pairs,
    select_rows,
)

ROOT = Path(__file__).resolve().parents[1]


def _split(tmp_path: Path, n: int = 10, shard: int = 4) -> Path:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (n, 16, 16, 3), dtype=np.uint8)
    images[:, 4:12, 4:12] = 255  # a square: Canny finds its edges

    def make(start: int, count: int) -> dict[str, np.ndarray]:
        return {"image": images[start:start + count], "label": np.arange(start, start + count) % 3}

    return write_split(tmp_path / "val", n, shard, make, {"num_classes": 3})


def _settings(tmp_path: Path, conditions=("canny",)) -> dict:
    config = check_config(yaml.safe_load((ROOT / "config.yaml").read_text()))
    return {"seed": 0, "weights_dir": str(tmp_path / "no-weights"),
            "seesaw": {**config["seesaw"], "conditions": list(conditions)}}


def test_to_uint8_clamps_and_rounds():
    x = torch.tensor([0.2, -0.1, 1.2, 1.0]).view(1, 1, 2, 2).repeat(1, 3, 1, 1)
    out = to_uint8(x)
    assert out.shape == (1, 2, 2, 3) and out.dtype == np.uint8
    assert out[0, :, :, 1].tolist() == [[51, 0], [255, 255]]


def test_reconstructions_stream_back_beside_their_originals(tmp_path):
    manifest = _split(tmp_path)
    originals = np.concatenate([x for x, _ in reconstruction_pairs_of_self(tmp_path, manifest)])
    recon = torch.rand(10, 3, 16, 16)
    writer = ReconstructionWriter(tmp_path / "rec.npy", 10)
    writer.write(0, recon[:6])
    writer.write(6, recon[6:])
    writer.close()
    assert not (tmp_path / "rec.npy.partial.npy").exists()
    pairs = list(reconstruction_pairs(manifest, tmp_path / "rec.npy", batch_size=3))
    assert [len(x) for x, _ in pairs] == [3, 3, 3, 1]  # batches across shard borders (4, 4, 2)
    np.testing.assert_array_equal(np.concatenate([x for x, _ in pairs]), originals)
    np.testing.assert_array_equal(np.concatenate([y for _, y in pairs]), to_uint8(recon))
    np.save(tmp_path / "short.npy", to_uint8(recon[:7]))
    with pytest.raises(InputError, match="short.npy"):
        list(reconstruction_pairs(manifest, tmp_path / "short.npy", 3))


def reconstruction_pairs_of_self(tmp_path: Path, manifest: Path):
    """The split's images as their own reconstructions (a perfect autoencoder)."""
    from latentbench.data.shards import ShardedSplit

    images = ShardedSplit(manifest.parent).load_all(("image",))["image"]
    np.save(tmp_path / "self.npy", images)
    return reconstruction_pairs(manifest, tmp_path / "self.npy", 4)


def test_drift_job_is_zero_for_a_perfect_autoencoder_and_positive_otherwise(tmp_path):
    manifest = _split(tmp_path)
    list(reconstruction_pairs_of_self(tmp_path, manifest))  # writes self.npy
    drift_job(_settings(tmp_path), manifest, tmp_path / "self.npy", tmp_path / "same.json")
    same = read_json(tmp_path / "same.json")
    assert same["canny"] == 0.0 and same["n_images"] == 10 and same["projectors"] == {"canny": "canny"}
    assert same["stand_ins"] is False
    images = np.load(tmp_path / "self.npy")
    np.save(tmp_path / "shifted.npy", np.roll(images, 2, axis=2))
    drift_job(_settings(tmp_path), manifest, tmp_path / "shifted.npy", tmp_path / "shifted.json")
    assert read_json(tmp_path / "shifted.json")["canny"] > 0.01


def test_drift_job_says_not_run_without_weights(tmp_path):
    manifest = _split(tmp_path)
    list(reconstruction_pairs_of_self(tmp_path, manifest))
    settings = _settings(tmp_path, ("canny", "depth"))
    settings["seesaw"]["projectors"] = "paper"
    drift_job(settings, manifest, tmp_path / "self.npy", tmp_path / "d.json")
    result = read_json(tmp_path / "d.json")
    assert result["depth"] is None and result["not_run"]["depth"].startswith("not run: needs")
    assert result["canny"] == 0.0


def test_projector_config_paper_and_stand_ins():
    seesaw = {"face_backend": "dlib", "seg_input_order": "rgb"}
    names, options = projector_config(seesaw)
    assert names == {"face": "dlib-face"} and options == {"seg": {"seg_input_order": "rgb"}}
    names, options = projector_config(seesaw, "dense.pt", "cnn.pt")
    assert names["depth"] == "demo-dense-depth" and names["clip"] == "demo-cnn-final"
    assert options["face"] == {"weights": "dense.pt", "feature_weights": "cnn.pt"}


def test_probe_splits_are_disjoint_seeded_and_capped():
    fit, early = probe_splits(100, 0.1, None, seed=3)
    assert len(early) == 10 and len(fit) == 90 and not set(fit) & set(early)
    assert (np.diff(fit) > 0).all()
    again = probe_splits(100, 0.1, None, seed=3)
    np.testing.assert_array_equal(again[0], fit)
    assert len(probe_splits(100, 0.1, 20, seed=3)[0]) == 20
    with pytest.raises(InputError, match="val_fraction"):
        probe_splits(100, 1.5, None, 0)


def test_select_rows_across_shards(tmp_path):
    from latentbench.data.shards import ShardedSplit

    split = ShardedSplit(_split(tmp_path).parent)
    every = split.load_all(("image", "label"))
    got = select_rows(split, np.array([9, 0, 5, 4]), ("image", "label"))
    np.testing.assert_array_equal(got["image"], every["image"][[0, 4, 5, 9]])
    np.testing.assert_array_equal(got["label"], every["label"][[0, 4, 5, 9]])


def test_control_config_from_the_study():
    cfg = check_config(yaml.safe_load((ROOT / "tests/configs/tiny.yaml").read_text()))["seesaw"]["controlnet"]
    conv = control_config(cfg, (32, 32))
    assert conv.cond_encoder == "conv" and conv.cond_size == (32, 32) and conv.conv_widths == (8, 16, 32)
    ae = control_config({**cfg, "cond_encoder": "ae"}, (32, 32))
    assert ae.cond_size is None


def test_seesaw_columns_of_metrics_csv(tmp_path):
    assert seesaw_columns(tmp_path) == {}
    write_json(tmp_path / "drift.json", {"canny": 0.1, "depth": None, "seg": 0.2, "spatial": 0.3, "identity": 0.9,
                                         "face_at_r": 1.0, "clip": 0.8, "dinov2": 0.7})
    write_json(tmp_path / "probe_depth.json", {"test_l1": 0.05})
    cols = seesaw_columns(tmp_path)
    assert cols["drift_canny"] == 0.1 and cols["drift_depth"] is None and cols["drift_dinov2"] == 0.7
    assert cols["probe_depth"] == 0.05 and "probe_canny" not in cols


def test_config_checks_controlnet_pairs_and_stand_ins():
    base = yaml.safe_load((ROOT / "config.yaml").read_text())
    bad = copy.deepcopy(base)
    bad["seesaw"]["controlnet"]["pairs"] = [{"tokenizer": "t-mae", "backbone": "ldit-demo"}]  # t-mae: SiT only
    with pytest.raises(ConfigError, match=r"seesaw.controlnet.pairs\[0\]"):
        check_config(bad)
    bad = copy.deepcopy(base)
    bad["seesaw"]["probe"]["tokenizers"] = ["nope"]
    with pytest.raises(ConfigError, match="seesaw.probe.tokenizers: nope"):
        check_config(bad)
    bad = copy.deepcopy(base)
    bad["seesaw"]["projectors"] = "demo"
    bad["feature_net"] = {"name": "inception-v3-compat"}
    with pytest.raises(ConfigError, match="seesaw.projectors"):
        check_config(bad)


def test_dry_run_counts_the_seesaw_jobs():
    config = check_config(yaml.safe_load((ROOT / "config.yaml").read_text()))
    counts = job_counts(config)
    n_tok = len(config["tokenizers"])
    assert counts["drift"] == n_tok and counts["dense_demo_net"] == 1
    assert counts["probe"] == 2 * len(config["seesaw"]["probe"]["tokenizers"])
    assert counts["controlnet_train"] == counts["controlnet_evaluate"] == 2 * 2  # two pairs x (canny, depth)
    config["seesaw"]["enabled"] = False
    counts = job_counts(config)
    assert all(counts[r] == 0 for r in ("drift", "probe", "dense_demo_net", "controlnet_train", "controlnet_evaluate"))


def test_controlnet_checkpoint_is_keyed_by_what_it_trains_on(tmp_path):
    from latentbench.stages.controlnet import keyed_checkpoint

    ck = tmp_path / "checkpoint.pt"
    a = keyed_checkpoint(ck, {"seesaw": {"controlnet": {"train_images": 400}}}, "canny", "tok.pt")
    assert a.parent == tmp_path and a.suffix == ".pt" and a.name.startswith("checkpoint-")
    assert a == keyed_checkpoint(ck, {"seesaw": {"controlnet": {"train_images": 400}}}, "canny", "tok.pt")
    assert a != keyed_checkpoint(ck, {"seesaw": {"controlnet": {"train_images": 1000}}}, "canny", "tok.pt")
    assert a != keyed_checkpoint(ck, {"seesaw": {"controlnet": {"train_images": 400}}}, "depth", "tok.pt")


def test_select_rows_projects_shard_by_shard_to_lossless_uint8_maps(tmp_path):
    from latentbench.data.shards import ShardedSplit
    from latentbench.drift.projectors.canny import CannyProjector

    split = ShardedSplit(_split(tmp_path).parent)
    project = CannyProjector()
    got = select_rows(split, np.array([1, 8, 5]), ("image", "label"), project=project)
    assert set(got) == {"map", "label"} and got["map"].dtype == np.uint8
    every = split.load_all(("image",))["image"]
    np.testing.assert_array_equal(got["map"].astype(np.float32) / 255, project(every[[1, 5, 8]]))
    depth_like = np.arange(256, dtype=np.float32) / 255  # the paper's normalised depth: k / 255
    np.testing.assert_array_equal(maps_to_uint8(depth_like).astype(np.float32) / 255, depth_like)


def test_branch_inputs_conv_keeps_uint8_and_gives_float_maps():
    from latentbench.diffusion.controlnet import ControlConfig
    from latentbench.stages.controlnet import BranchInputs

    maps = np.random.default_rng(0).integers(0, 256, (5, 32, 32), dtype=np.uint8)
    inputs = BranchInputs(maps, ControlConfig(cond_encoder="conv", cond_size=(32, 32), conv_widths=(8, 16, 32)),
                          None, None, "cpu")
    x = inputs[torch.tensor([0, 3])]
    assert x.shape == (2, 1, 32, 32) and x.dtype == torch.float32 and inputs.maps.dtype == torch.uint8
    torch.testing.assert_close(x[1, 0], torch.from_numpy(maps[3]).float() / 255)
    assert inputs[:].shape == (5, 1, 32, 32) and len(inputs) == 5
