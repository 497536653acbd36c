"""Data-parallel training on CPU: two gloo processes with global batch B end with the same
parameters as one process with batch B (float tolerance)."""

from __future__ import annotations

import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from latentbench.diffusion import build_backbone
from latentbench.diffusion.recipes import get_recipe
from latentbench.diffusion.training import TrainSettings, train_diffusion

SHAPE = (4, 8, 8)
SETTINGS = dict(steps=6, batch_size=16, lr=1e-3, betas=(0.9, 0.999), weight_decay=0.0, adam_eps=1e-8, ema=0.9,
                grad_clip=1.0, checkpoint_every=1000, seed=3)


def _data():
    g = torch.Generator().manual_seed(0)
    return torch.randn(64, *SHAPE, generator=g), torch.arange(64) % 10


def _train(checkpoint: str, accumulation: int = 1, recipe: str = "study_sit") -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    model = build_backbone("demo", recipe, SHAPE, 1, num_classes=10)
    x, y = _data()
    x = 2.0 * x + 0.5  # off-centre, not unit-scale: the iFID recipe's in-model BN has work to do
    settings = TrainSettings(**SETTINGS, grad_accumulation=accumulation)
    train_diffusion(model, get_recipe(recipe).transport(SHAPE), lambda idx, g: (x[idx], y[idx]), 64, settings, checkpoint)
    return {k: v.clone() for k, v in model.state_dict().items()}


def _worker(rank: int, size: int, init_file: str, out: str, recipe: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=size)
    try:
        state = _train(os.path.join(out, "ckpt.pt"), recipe=recipe)
        if rank == 0:
            torch.save(state, os.path.join(out, "ddp.pt"))
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("recipe", ["study_sit", "ifid_sit"])
def test_two_processes_match_one(tmp_path, recipe):
    """ifid_sit: the in-model BN sees the global batch on every rank (SyncBN), as on one process."""
    single = _train(str(tmp_path / "single.pt"), recipe=recipe)
    mp.spawn(_worker, args=(2, str(tmp_path / "init"), str(tmp_path), recipe), nprocs=2, join=True)
    ddp = torch.load(tmp_path / "ddp.pt")
    for key, value in single.items():
        torch.testing.assert_close(ddp[key], value, rtol=1e-5, atol=1e-6, msg=key)
    if recipe == "ifid_sit":  # the BN running stats moved towards the data's (0.5, 4)
        assert float(single["bn.running_mean"].mean()) > 0.2 and float(single["bn.running_var"].mean()) > 1.5
    # the parameters really moved, so the comparison is not vacuous
    fresh = build_backbone("demo", recipe, SHAPE, 1, num_classes=10).state_dict()
    assert any(not torch.allclose(fresh[k], single[k]) for k in single if single[k].dtype.is_floating_point)


def test_gradient_accumulation_matches_one_big_batch(tmp_path):
    one = _train(str(tmp_path / "a.pt"))
    accumulated = _train(str(tmp_path / "b.pt"), accumulation=2)
    for key, value in one.items():
        torch.testing.assert_close(accumulated[key], value, rtol=1e-5, atol=1e-6, msg=key)
