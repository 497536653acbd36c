"""Latent condition probe (spec §8): shapes, heads, losses, token latents and the learnability oracle."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from latentbench.drift.probe import (
    LatentProbe,
    canny_loss,
    depth_loss,
    latent_grid,
    train_probe,
)


def test_paper_probe_maps_16x16_latents_to_256x256():
    with torch.device("meta"):
        probe = LatentProbe(32, 16, 256, "canny")
        out = probe(torch.empty(2, 32, 16, 16))
    assert out.shape == (2, 1, 256, 256)
    convs = [m for m in probe.stages if isinstance(m, torch.nn.Conv2d)]
    assert [c.out_channels for c in convs] == [512, 512, 256, 256, 128, 128, 64, 64]
    assert convs[0].in_channels == 32 and isinstance(probe.norm, torch.nn.BatchNorm2d)
    assert probe.head.kernel_size == (1, 1) and probe.head.out_channels == 1


def test_fewer_stages_drop_the_widest_first_and_depth_head_is_in_unit_interval():
    probe = LatentProbe(4, 8, 32, "depth", widths=(32, 16, 8)).eval()
    convs = [m for m in probe.stages if isinstance(m, torch.nn.Conv2d)]
    assert [c.out_channels for c in convs] == [16, 16, 8, 8]
    out = probe(torch.randn(3, 4, 8, 8) * 50)
    assert out.shape == (3, 1, 32, 32) and out.min() >= 0 and out.max() <= 1


def test_token_latents_use_a_square_grid_or_are_not_applicable():
    z = torch.randn(2, 64, 5)
    grid = latent_grid(z)
    assert grid.shape == (2, 5, 8, 8)
    torch.testing.assert_close(grid[1, :, 2, 3], z[1, 2 * 8 + 3])  # row-major token order
    with pytest.raises(ValueError, match="not applicable"):
        latent_grid(torch.randn(2, 32, 5))
    with pytest.raises(ValueError, match="power-of-two"):
        LatentProbe(4, 12, 256)


def test_losses_against_hand_values():
    logits = torch.tensor([[[[0.0, 0.0]]]])
    target = torch.tensor([[[[1.0, 0.0]]]])
    dice = 1 - (2 * 0.5 + 1) / (1.0 + 1.0 + 1)  # p = 0.5, 0.5
    assert canny_loss(logits, target).item() == pytest.approx(0.5 * np.log(2) + 0.5 * dice)
    pred = torch.tensor([[[[0.0, 1.0], [0.0, 0.0]]]])
    tgt = torch.zeros(1, 1, 2, 2)
    # L1 0.25; dx diffs (1, 0) -> 0.5; dy diffs (0, -1) -> 0.5; loss 0.25 + 0.5 * 1.0
    assert depth_loss(pred, tgt).item() == pytest.approx(0.75)


def _smooth_fields(n: int, size: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    fields = []
    for _ in range(n):
        cx, cy, s = rng.uniform(0.2, 0.8), rng.uniform(0.2, 0.8), rng.uniform(0.15, 0.35)
        fields.append(np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * s * s)))
    return np.stack(fields).astype(np.float32)


def test_average_pooled_target_oracle_is_learned_to_low_l1():
    targets = {k: _smooth_fields(n, 32, seed) for k, n, seed in (("train", 96, 0), ("val", 16, 1), ("test", 16, 2))}
    latents = {k: F.avg_pool2d(torch.from_numpy(t)[:, None], 16).numpy() for k, t in targets.items()}  # C = 1, 2x2
    split = lambda k: (latents[k], targets[k])
    constant_l1 = float(np.abs(targets["test"] - targets["train"].mean()).mean())
    _, res = train_probe(split("train"), split("val"), split("test"), task="depth", widths=(16, 16, 8, 8),
                             lr=3e-3, batch_size=16, max_epochs=25, patience=5, log=lambda _: None)
    assert res["test_l1"] < 0.35 * constant_l1, (res["test_l1"], constant_l1)
    assert res["best_epoch"] >= 1 and len(res["history"]) == res["epochs_run"]
    assert res["best_val_loss"] == min(h["val_loss"] for h in res["history"])


def test_canny_probe_on_token_latents_reports_the_thresholded_l1_and_stops_early():
    rng = np.random.default_rng(0)
    targets = (rng.random((24, 16, 16)) < 0.1).astype(np.uint8) * 255  # uint8 0/255 as the projector writes
    latents = rng.normal(size=(24, 16, 4)).astype(np.float32)  # 1-D tokens (L=16 -> 4x4), unrelated to the maps
    _, res = train_probe((latents[:16], targets[:16]), (latents[16:20], targets[16:20]), (latents[20:], targets[20:]),
                         task="canny", widths=(8, 8), lr=1e-2, batch_size=8, max_epochs=40, patience=2, log=lambda _: None)
    assert 0 <= res["test_l1"] <= 1 and 0 <= res["test_l1_thresholded"] <= 1
    assert res["epochs_run"] < 40  # validation stopped improving: early stop with patience 2
    assert res["config"]["latent_size"] == 4 and res["config"]["channels"] == 4
