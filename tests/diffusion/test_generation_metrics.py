"""The generation-metrics job merges sampling shards exactly: gFID, IS and FDr6 equal the values
computed on all samples at once, whatever the sharding."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from latentbench.io import read_json
from latentbench.metrics.fdr6 import FDR6_SPACES, fdr6
from latentbench.metrics.fid import FeatureStats, frechet_distance_from_features, save_stats_group
from latentbench.metrics.inception_score import InceptionScore, inception_score
from latentbench.stages.diffusion import generation_metrics

SETTINGS = {"feature_net": {"name": "demo-cnn"}, "fdr6_divisors": "recomputed", "seed": 0}


def _features(rng, n, d, shift=0.0):
    return rng.normal(size=(n, d)) + shift


def test_shards_merge_to_the_whole_set(tmp_path):
    rng = np.random.default_rng(0)
    ref_feats = _features(rng, 300, 4)
    FeatureStats().update(ref_feats).save(tmp_path / "ref.npz")
    ref_groups = {split: {s: _features(rng, 200, 3, i * 0.1) for i, s in enumerate(FDR6_SPACES)} for split in ("train", "val")}
    refs = []
    for split, group in ref_groups.items():
        refs.append(str(tmp_path / f"stats-{split}-n200.npz"))
        save_stats_group(refs[-1], {k: FeatureStats().update(v) for k, v in group.items()})
    shards, scores, fdr6_shards, expected = [], [], [], {}
    for scale, shift in (("1", 0.3), ("1.5", 0.1)):
        feats = _features(rng, 100, 4, shift)
        logits = torch.from_numpy(_features(rng, 100, 10) * 2)
        spaces = {s: _features(rng, 100, 3, shift) for s in FDR6_SPACES}
        folder = tmp_path / f"cfg{scale}"
        folder.mkdir()
        for lo, hi in ((0, 37), (37, 100)):  # two uneven shards
            shards.append(str(folder / f"shard-{lo}.npz"))
            FeatureStats().update(feats[lo:hi]).save(shards[-1])
            scores.append(str(folder / f"shard-{lo}.is.npz"))
            InceptionScore(10, split_size=40).update(logits[lo:hi], lo).save(scores[-1])
            fdr6_shards.append(str(folder / f"shard-{lo}.fdr6.npz"))
            save_stats_group(fdr6_shards[-1], {s: FeatureStats().update(v[lo:hi]) for s, v in spaces.items()})
        train = {s: FeatureStats().update(v) for s, v in ref_groups["train"].items()}
        valfd = {s: FeatureStats().update(ref_groups["val"][s]).fd(train[s]) for s in FDR6_SPACES}
        expected[scale] = {
            "gfid": frechet_distance_from_features(feats, ref_feats),
            "is": inception_score(logits, split_size=40)["is"],
            "fdr6": fdr6({s: frechet_distance_from_features(spaces[s], ref_groups["train"][s]) for s in FDR6_SPACES}, valfd)["fdr6"],
        }
    plan = {"spaces": {s: "unused" for s in FDR6_SPACES}}
    generation_metrics(SETTINGS, shards, scores, tmp_path / "ref.npz", tmp_path / "gen.json", plan, fdr6_shards, refs)
    result = read_json(tmp_path / "gen.json")
    for scale, values in expected.items():
        row = result["per_scale"][scale]
        assert row["num_samples"] == 100
        assert row["gfid"] == pytest.approx(values["gfid"], rel=1e-9)
        assert row["is"] == pytest.approx(values["is"], rel=1e-12)
        assert row["fdr6"]["fdr6"] == pytest.approx(values["fdr6"], rel=1e-9)
    assert result["not_run"] == {}


def test_fdr6_not_run_is_reported(tmp_path):
    (tmp_path / "cfg1").mkdir()
    rng = np.random.default_rng(1)
    FeatureStats().update(rng.normal(size=(50, 3))).save(tmp_path / "ref.npz")
    FeatureStats().update(rng.normal(size=(20, 3))).save(tmp_path / "cfg1" / "s.npz")
    InceptionScore(5).update(torch.randn(20, 5), 0).save(tmp_path / "cfg1" / "s.is.npz")
    save_stats_group(tmp_path / "cfg1" / "s.fdr6.npz", {})
    plan = {"not_run": "not run: FDr6 needs all six weights; missing: x.safetensors"}
    generation_metrics(SETTINGS, [str(tmp_path / "cfg1" / "s.npz")], [str(tmp_path / "cfg1" / "s.is.npz")], tmp_path / "ref.npz",
                       tmp_path / "gen.json", plan, [str(tmp_path / "cfg1" / "s.fdr6.npz")], [])
    result = read_json(tmp_path / "gen.json")
    assert result["not_run"] == {"fdr6": plan["not_run"]} and "fdr6" not in result["per_scale"]["1"]
