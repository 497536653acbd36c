"""FDr6: the mean over six representation spaces of FD / valFD (spec metrics-diffusability §10).

``FDr_X = FD_X(generated, ref_X) / valFD_X`` and ``FDr6 = mean_X FDr_X`` (arithmetic mean), with
valFD_X the FD of the 50k ImageNet val images against the same reference statistics
(Yang et al. 2026, "Representation Fréchet Loss"; FD-Loss ``eval_all_fds.py`` ``_compute_fdr6``).
The published divisors below belong to the published reference statistics (all ImageNet
train, ADM centre crop 256, unbiased covariance): a study that computes its own reference
statistics must divide by its own valFD (spec §10 pitfall), which is the default here.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

__all__ = ["FDR6_SPACES", "PUBLISHED_VALIDATION_FD", "fdr6"]

# spec §10 table: valFD_X (FD-Loss FDR_VALIDATION_FD); "inception" is FID(ADM)
PUBLISHED_VALIDATION_FD: dict[str, float] = {
    "inception": 1.68,
    "convnext": 56.87,
    "dinov2_cls": 14.19,
    "mae_cls": 0.04,
    "siglip_cls": 0.60,
    "clip_cls": 5.60,
}
FDR6_SPACES = tuple(PUBLISHED_VALIDATION_FD)


def fdr6(fd: Mapping[str, float], validation_fd: Mapping[str, float]) -> dict:
    """{"fdr6": mean ratio, "fdr": {space: FD / valFD}} over the six spaces of ``FDR6_SPACES``.

    Both mappings must hold every space with finite values; valFD must be positive.
    The per-space ratios are returned too: the MAE term (valFD 0.04) amplifies small FDs
    about 25x and can dominate the mean (spec §10), so a report should show them.
    """
    missing = [s for s in FDR6_SPACES if s not in fd or s not in validation_fd]
    if missing:
        raise ValueError(f"fd / validation_fd: no value for space(s) {', '.join(missing)}")
    for s in FDR6_SPACES:
        if not math.isfinite(fd[s]) or not math.isfinite(validation_fd[s]) or validation_fd[s] <= 0:
            raise ValueError(f"{s}: FD {fd[s]!r} and valFD {validation_fd[s]!r} must be finite, valFD > 0")
    ratios = {s: float(fd[s]) / float(validation_fd[s]) for s in FDR6_SPACES}
    return {"fdr6": sum(ratios.values()) / len(ratios), "fdr": ratios}
