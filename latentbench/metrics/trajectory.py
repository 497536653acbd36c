"""Geometry of sampling trajectories: straightness, efficiency, segment length ratio.

Paper Eq. 10-11 and Fig. 10 (spec diffusability §9). A trajectory ``x [M+1, N, ...]`` holds
the states ``x_{t_0}`` (noise) .. ``x_{t_M}`` (generated latent) of N samples, flattened
per sample; ``delta_i = x_{t_{i+1}} - x_{t_i}``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

COSINE_EPS = 1e-12  # a zero-length step has cosine 0 with its neighbours


def _steps(trajectory: torch.Tensor, min_points: int) -> torch.Tensor:
    """delta_i [M, N, D] in float64 from a trajectory [M+1, N, ...]."""
    if not isinstance(trajectory, torch.Tensor) or trajectory.ndim < 3:
        raise ValueError(
            f"trajectory must be a tensor [M+1, N, ...], got {getattr(trajectory, 'shape', type(trajectory).__name__)}"
        )
    if trajectory.shape[0] < min_points:
        raise ValueError(f"trajectory needs at least {min_points} time points, got {trajectory.shape[0]}")
    x = trajectory.to(torch.float64).flatten(2)
    return x[1:] - x[:-1]


def straightness(trajectory: torch.Tensor) -> torch.Tensor:
    """Eq. 10: mean cosine of consecutive steps, ``(1/(M-1)) sum_i cos(delta_i, delta_{i+1})``, per sample [N]."""
    d = _steps(trajectory, 3)
    return F.cosine_similarity(d[:-1], d[1:], dim=-1, eps=COSINE_EPS).mean(dim=0)


def efficiency(trajectory: torch.Tensor) -> torch.Tensor:
    """Eq. 11: ``||x_{t_M} - x_{t_0}|| / sum_i ||delta_i||`` per sample [N] (0 for a path that never moves)."""
    d = _steps(trajectory, 2)
    path = d.norm(dim=-1).sum(dim=0)
    chord = d.sum(dim=0).norm(dim=-1)
    return torch.where(path > 0, chord / path.clamp_min(torch.finfo(torch.float64).tiny), torch.zeros_like(path))


def segment_length_ratio(trajectory: torch.Tensor) -> torch.Tensor:
    """Fig. 10: ``r_i = M ||delta_i|| / ||x_{t_M} - x_{t_0}||`` averaged over samples [M] (1 for a uniform straight path)."""
    d = _steps(trajectory, 2)
    m = d.shape[0]
    chord = d.sum(dim=0).norm(dim=-1)
    if not bool((chord > 0).all()):
        raise ValueError("trajectory: a sample ends where it starts, its length ratio is undefined")
    return (m * d.norm(dim=-1) / chord).mean(dim=1)


def trajectory_metrics(trajectory: torch.Tensor) -> dict[str, object]:
    """Sample means of straightness (Eq. 10) and efficiency (Eq. 11), and the length ratio per segment."""
    return {
        "straightness": float(straightness(trajectory).mean()),
        "efficiency": float(efficiency(trajectory).mean()),
        "length_ratio": segment_length_ratio(trajectory).tolist(),
        "segments": trajectory.shape[0] - 1,
        "samples": trajectory.shape[1],
    }
