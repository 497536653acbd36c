"""FDr6 = mean of FD / valFD over the six spaces (spec diffusability §10)."""

import math

import pytest

from latentbench.metrics.fdr6 import FDR6_SPACES, PUBLISHED_VALIDATION_FD, fdr6


def test_published_divisors_are_the_spec_table():
    assert PUBLISHED_VALIDATION_FD == {
        "inception": 1.68, "convnext": 56.87, "dinov2_cls": 14.19, "mae_cls": 0.04, "siglip_cls": 0.60, "clip_cls": 5.60,
    }


def test_validation_set_scores_one_and_ratios_average():
    assert fdr6(PUBLISHED_VALIDATION_FD, PUBLISHED_VALIDATION_FD)["fdr6"] == pytest.approx(1.0)
    fd = {s: 2.0 * PUBLISHED_VALIDATION_FD[s] for s in FDR6_SPACES}
    fd["mae_cls"] = 0.4  # 10x its divisor: the MAE term dominates, as the spec warns
    result = fdr6(fd, PUBLISHED_VALIDATION_FD)
    assert result["fdr"]["mae_cls"] == pytest.approx(10.0)
    assert result["fdr6"] == pytest.approx((5 * 2.0 + 10.0) / 6)


def test_missing_or_bad_values_are_named():
    partial = dict(PUBLISHED_VALIDATION_FD)
    del partial["clip_cls"]
    with pytest.raises(ValueError, match="clip_cls"):
        fdr6(partial, PUBLISHED_VALIDATION_FD)
    with pytest.raises(ValueError, match="siglip_cls"):
        fdr6({**PUBLISHED_VALIDATION_FD, "siglip_cls": math.nan}, PUBLISHED_VALIDATION_FD)
    with pytest.raises(ValueError, match="convnext"):
        fdr6(PUBLISHED_VALIDATION_FD, {**PUBLISHED_VALIDATION_FD, "convnext": 0.0})
