"""Trajectory oracles of spec diffusability §9."""

import math

import pytest
import torch

from latentbench.metrics.trajectory import efficiency, segment_length_ratio, straightness, trajectory_metrics


def test_straight_uniform_path():
    start = torch.randn(3, 4, 2, 2, generator=torch.Generator().manual_seed(0))
    end = torch.randn(3, 4, 2, 2, generator=torch.Generator().manual_seed(1))
    t = torch.linspace(0, 1, 50)[:, None, None, None, None]  # official grid: 50 points, M = 49
    traj = (1 - t) * start + t * end
    out = trajectory_metrics(traj)
    assert out["straightness"] == pytest.approx(1.0, abs=1e-6)
    assert out["efficiency"] == pytest.approx(1.0, abs=1e-6)
    assert out["segments"] == 49 and out["samples"] == 3
    torch.testing.assert_close(torch.tensor(out["length_ratio"], dtype=torch.float64), torch.ones(49, dtype=torch.float64), rtol=0, atol=1e-5)


def test_zigzag_of_orthogonal_unit_steps():
    steps = torch.zeros(10, 1, 2, dtype=torch.float64)
    steps[0::2, 0, 0] = 1.0
    steps[1::2, 0, 1] = 1.0
    traj = torch.cat([torch.zeros(1, 1, 2, dtype=torch.float64), steps.cumsum(dim=0)])  # M = 10
    assert float(straightness(traj)[0]) == pytest.approx(0.0, abs=1e-12)
    assert float(efficiency(traj)[0]) == pytest.approx(1 / math.sqrt(2), abs=1e-12)
    torch.testing.assert_close(segment_length_ratio(traj), torch.full((10,), 10 / math.sqrt(50), dtype=torch.float64))


def test_exact_reversal_has_cosine_minus_one():
    traj = torch.tensor([[[0.0, 0.0]], [[1.0, 2.0]], [[0.0, 0.0]]])
    assert float(straightness(traj)[0]) == pytest.approx(-1.0, abs=1e-12)
    assert float(efficiency(traj)[0]) == 0.0


def test_bad_input_raises():
    with pytest.raises(ValueError, match="at least 3"):
        straightness(torch.zeros(2, 1, 4))
    with pytest.raises(ValueError, match="trajectory"):
        efficiency(torch.zeros(5, 4))
    with pytest.raises(ValueError, match="ends where it starts"):
        segment_length_ratio(torch.tensor([[[0.0]], [[1.0]], [[0.0]]]))
