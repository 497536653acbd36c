"""kill -9 of a training job, then a rerun, resumes from its last checkpoint and ends with
the same weights, bit for bit, as a run that was never interrupted (CPU)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from latentbench.data.shards import write_split
from latentbench.data.synthetic import NUM_CLASSES, SyntheticSpec, generate
from latentbench.io import save_npy, write_json

BACKBONE = {"size": "demo", "recipe": "study_sit", "patch_size": 1}
SETTINGS = {"seed": 0, "diffusion_training": {"steps": 300, "batch_size": 16, "lr": 1e-3, "ema": 0.9,
                                                "grad_clip": 1.0, "checkpoint_every": 30,
                                                "grad_accumulation": 1, "compile": False}}


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    root = tmp_path_factory.mktemp("cache")
    spec = SyntheticSpec(64, 32, seed=0)
    write_split(root / "data", 64, 64, lambda s, c: generate(spec, s, c), {"num_classes": NUM_CLASSES})
    rng = np.random.default_rng(0)
    mean = rng.normal(size=(64, 4, 8, 8)).astype(np.float32)
    save_npy(root / "latents" / "mean.npy", mean)
    save_npy(root / "latents" / "std.npy", np.full_like(mean, 0.1))
    write_json(root / "latents" / "stats.json", {"channel_mean": mean.mean((0, 2, 3)).tolist(),
                                                  "channel_std": mean.std((0, 2, 3), ddof=1).tolist()})
    return root


def command(cache: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "latentbench.cli", "train-diffusion", "--backbone", json.dumps(BACKBONE),
            "--settings", json.dumps(SETTINGS), "--latents", str(cache / "latents"),
            "--labels", str(cache / "data" / "manifest.json"), "--checkpoint", str(out / "checkpoint.pt"),
            "--out", str(out / "model.pt")]


def test_kill9_then_rerun_resumes_bitwise(cache, tmp_path):
    clean, killed = tmp_path / "clean", tmp_path / "killed"
    subprocess.run(command(cache, clean), check=True, capture_output=True, timeout=300)

    proc = subprocess.Popen(command(cache, killed), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 120
    while not (killed / "checkpoint.pt").exists():
        assert proc.poll() is None, "the job ended before its first checkpoint"
        assert time.monotonic() < deadline
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert not (killed / "model.pt").exists(), "a killed job must not leave a complete-looking output"

    rerun = subprocess.run(command(cache, killed), capture_output=True, text=True, timeout=300, check=True)
    assert "resumed from" in rerun.stdout
    step = int(rerun.stdout.split("at step ")[1].split()[0])
    assert 0 < step < SETTINGS["diffusion_training"]["steps"]

    a = torch.load(clean / "model.pt", weights_only=False)["state_dict"]
    b = torch.load(killed / "model.pt", weights_only=False)["state_dict"]
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_non_finite_loss_stops_and_keeps_checkpoint(cache, tmp_path):
    bad = tmp_path / "bad_cache"
    bad.mkdir()
    mean = np.load(cache / "latents" / "mean.npy")
    mean[5] = np.nan
    save_npy(bad / "mean.npy", mean)
    save_npy(bad / "std.npy", np.full_like(mean, 0.1))
    (bad / "stats.json").write_text((cache / "latents" / "stats.json").read_text())
    cmd = command(cache, tmp_path / "run")
    cmd[cmd.index("--latents") + 1] = str(bad)
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1
    assert "non-finite diffusion loss" in proc.stderr and "step" in proc.stderr
    assert not (tmp_path / "run" / "model.pt").exists()


def test_torchrun_launcher_matches_one_process(cache, tmp_path):
    """The training rule's multi-GPU launcher (rules/common.smk `launcher`), here 2 CPU processes
    with gloo, ends with the same weights as one process with the same global batch."""
    import shutil

    if shutil.which("torchrun") is None or shutil.which("latentbench") is None:
        pytest.skip("torchrun / latentbench not on PATH (run through `uv run`)")
    settings = {**SETTINGS, "diffusion_training": {**SETTINGS["diffusion_training"], "steps": 12, "checkpoint_every": 100}}

    def train(prefix: list[str], out: Path) -> dict:
        cmd = [*prefix, *command(cache, out)[3:]]
        cmd[cmd.index("--settings") + 1] = json.dumps(settings)
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        proc = subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=300, env=env)
        processes = int(proc.stdout.split("training on ")[1].split()[0])
        return processes, torch.load(out / "model.pt", weights_only=False)["state_dict"]

    n_one, one = train(["latentbench"], tmp_path / "one")
    n_two, two = train(["torchrun", "--standalone", "--nproc_per_node=2", "--no-python", "latentbench"], tmp_path / "two")
    assert (n_one, n_two) == (1, 2)
    for key, value in one.items():
        torch.testing.assert_close(two[key], value, rtol=1e-5, atol=1e-6, msg=key)
