"""A training checkpoint resumes only the run that wrote it: after a settings change the job
starts over (and equals a fresh run); an interrupted identical run continues exactly."""

from __future__ import annotations

import dataclasses

import torch

from latentbench.diffusion import build_backbone
from latentbench.diffusion.recipes import get_recipe
from latentbench.diffusion.training import TrainSettings, train_diffusion

SHAPE = (4, 8, 8)
BASE = TrainSettings(steps=4, batch_size=8, lr=1e-3, betas=(0.9, 0.999), weight_decay=0.0, adam_eps=1e-8, ema=0.9,
                     grad_clip=1.0, checkpoint_every=2, seed=1)


def _train(settings: TrainSettings, checkpoint, stop_after=None) -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    model = build_backbone("demo", "study_sit", SHAPE, 1, num_classes=10)
    x = torch.randn(32, *SHAPE, generator=torch.Generator().manual_seed(0))
    y = torch.arange(32) % 10
    train_diffusion(model, get_recipe("study_sit").transport(SHAPE), lambda idx, g: (x[idx], y[idx]), 32, settings,
                    checkpoint, stop_after=stop_after)
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_changed_settings_start_over(tmp_path, caplog):
    _train(BASE, tmp_path / "ckpt.pt", stop_after=2)  # an interrupted run of the old settings
    changed = dataclasses.replace(BASE, lr=3e-3)
    with caplog.at_level("WARNING"):
        resumed = _train(changed, tmp_path / "ckpt.pt")
    assert "different run" in caplog.text
    fresh = _train(changed, tmp_path / "fresh.pt")
    for key, value in fresh.items():
        assert torch.equal(resumed[key], value), key


def test_same_settings_resume_exactly(tmp_path, caplog):
    _train(BASE, tmp_path / "ckpt.pt", stop_after=2)
    with caplog.at_level("INFO"):
        resumed = _train(dataclasses.replace(BASE, checkpoint_every=1), tmp_path / "ckpt.pt")  # not part of the identity
    assert "at step 2" in caplog.text
    whole = _train(BASE, tmp_path / "whole.pt")
    for key, value in whole.items():
        assert torch.equal(resumed[key], value), key
