"""The study's FID network is a config choice: inception-v3-compat from a weights file in the DAG.

No real Inception weights exist on this machine, so the weights file holds seeded random
weights of the real architecture: the test checks the selection, the lookup in weights_dir,
the (split, net, count) keying of the reference statistics and the 2048-d feature space.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import torch
import yaml

from latentbench.features.inception import WEIGHTS_FILE, build_inception_network
from latentbench.metrics.fid import FeatureStats

ROOT = Path(__file__).resolve().parents[2]
TINY = ROOT / "tests" / "configs" / "tiny.yaml"


# Every download through a closed local port: the fetch fails the same way on any machine (no
# 95 MB download where a network exists). urllib and huggingface_hub both honour these variables.
OFFLINE = {"http_proxy": "http://127.0.0.1:9", "https_proxy": "http://127.0.0.1:9", "HTTP_PROXY": "http://127.0.0.1:9",
           "HTTPS_PROXY": "http://127.0.0.1:9", "no_proxy": "", "NO_PROXY": ""}


def _snakemake(tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    config = yaml.safe_load(TINY.read_text())
    config.update(
        results_dir=str(tmp_path / "results"),
        weights_dir=str(tmp_path / "weights"),
        feature_net={"name": "inception-v3-compat", "options": {"input_mode": "uint8"}},
        data={"kind": "synthetic", "resolution": 32, "train": 30, "val": 20, "shard_size": 10},
    )
    (tmp_path / "study.yaml").write_text(yaml.safe_dump(config))
    cmd = [sys.executable, "-m", "snakemake", *args, "--nolock", "--cores", "2", "--configfile", str(tmp_path / "study.yaml")]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600,
                          env=None if env is None else {**os.environ, **env})


def test_missing_inception_weights_are_fetched_or_named(tmp_path):
    """Absent weights: the DAG plans the fetch job; without network it fails naming file and source,
    leaving nothing half-written."""
    target = str(tmp_path / "results/tiny/features/inception-v3-compat/stats-val-n20.npz")
    plan = _snakemake(tmp_path, "-n", target)
    assert plan.returncode == 0, plan.stdout[-3000:] + plan.stderr[-3000:]
    assert "fetch_weights" in plan.stdout + plan.stderr
    run = _snakemake(tmp_path, str(tmp_path / "weights" / WEIGHTS_FILE), "--config",
                     "weights_dir=" + str(tmp_path / "weights"), env=OFFLINE)
    assert run.returncode != 0
    text = (tmp_path / "results/tiny/logs" / f"fetch_weights-{WEIGHTS_FILE}.log").read_text()
    assert WEIGHTS_FILE in text and "could not fetch" in text
    assert not (tmp_path / "weights" / WEIGHTS_FILE).exists()  # nothing half-written left behind


def test_reference_stats_in_inception_space(tmp_path):
    (tmp_path / "weights").mkdir()
    torch.save(build_inception_network(random_init=True, seed=1).state_dict(), tmp_path / "weights" / WEIGHTS_FILE)
    target = tmp_path / "results/tiny/features/inception-v3-compat/stats-val-n20.npz"
    proc = _snakemake(tmp_path, str(target))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    stats = FeatureStats.load(target)
    assert (stats.count, stats.dim) == (20, 2048)
    assert not (tmp_path / "results/tiny/features/demo-cnn.pt").exists()  # the demo net is not needed for it
