"""Every inference stage runs on compute_device(): the GPU when there is one (issue 13.5).

CUDA is mocked (torch.cuda.is_available -> True); each stage's model loader records the
device the stage hands it and stops the job there.
"""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from latentbench.config import check_config
from latentbench.data.shards import write_split
from latentbench.io import save_npy, write_json
from latentbench.stages import baselines, diffusion, latent_metrics

ROOT = Path(__file__).resolve().parents[1]


class Reached(Exception):
    """The stage handed a model to its device."""

    def __init__(self, device) -> None:
        super().__init__(str(device))
        self.device = torch.device(device)


class _Model:
    def eval(self):
        return self

    def to(self, device):
        raise Reached(device)


def _load_diffusion(path, device="cpu"):
    raise Reached(device)


@pytest.fixture
def cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.delenv("LATENTBENCH_DEVICE", raising=False)
    for module in (baselines, latent_metrics):
        monkeypatch.setattr(module, "load_tokenizer", lambda *a, **k: _Model())
    for module in (diffusion, latent_metrics):
        monkeypatch.setattr(module, "load_diffusion", _load_diffusion)


@pytest.fixture
def settings() -> dict:
    return check_config(copy.deepcopy(yaml.safe_load((ROOT / "config.yaml").read_text())))


@pytest.fixture
def cache(tmp_path) -> Path:
    def make(start, count):
        return {"image": np.zeros((count, 16, 16, 3), np.uint8), "label": np.arange(start, start + count) % 2,
                "mask": np.ones((count, 16, 16), np.uint8)}

    for split in ("train", "val"):
        write_split(tmp_path / "data" / split, 6, 6, make, {"num_classes": 2})
        mean = np.random.default_rng(0).normal(size=(6, 2, 4, 4)).astype(np.float32)
        save_npy(tmp_path / "latents" / split / "mean.npy", mean)
        save_npy(tmp_path / "latents" / split / "std.npy", np.full_like(mean, 0.1))
        write_json(tmp_path / "latents" / split / "stats.json", {"channel_mean": [0, 0], "channel_std": [1, 1]})
    return tmp_path


def _device_of(call) -> torch.device:
    with pytest.raises(Reached) as info:
        call()
    return info.value.device


def test_inference_stages_use_the_gpu(cuda, settings, cache, tmp_path):
    out = tmp_path / "out.json"
    assert _device_of(lambda: diffusion.diffusion_loss(settings, "m.pt", cache / "latents" / "val", "v", out)).type == "cuda"
    assert _device_of(lambda: latent_metrics.trajectory(settings, "m.pt", out)).type == "cuda"
    assert _device_of(lambda: baselines.baseline_metrics(settings, "t.pt", "l", "tr", "va", "f.pt", out)).type == "cuda"
    only_eq = {**settings, "metrics": ["scale_eq"]}
    call = lambda: latent_metrics.latent_metrics(  # noqa: E731
        only_eq, "t.pt", cache / "latents", cache / "data" / "train" / "manifest.json",
        cache / "data" / "val" / "manifest.json", out,
    )
    assert _device_of(call).type == "cuda"
