"""Two-metric OLS regression (Fig. 8) and the §1.6 orientation (spec metrics-diffusability.md)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from latentbench.analysis.metric_info import METRICS
from latentbench.analysis.regression import (
    all_pairs,
    oriented,
    oriented_label,
    two_metric_regression,
)


def plane_frame(n: int = 12, noise: float = 0.0, seed: int = 0) -> pd.DataFrame:
    """y = 3 + 2 a - 0.5 b (+ noise) over random a, b."""
    rng = np.random.default_rng(seed)
    a, b = rng.normal(5.0, 2.0, n), rng.normal(-1.0, 0.3, n)
    y = 3.0 + 2.0 * a - 0.5 * b + noise * rng.standard_normal(n)
    return pd.DataFrame({"a": a, "b": b, "y": y})


def lstsq_r2(x: np.ndarray, y: np.ndarray) -> float:
    design = np.column_stack([np.ones(len(y)), x])
    coef, *_ = np.linalg.lstsq(design, y, rcond=None)
    resid = y - design @ coef
    return 1 - resid @ resid / np.sum((y - y.mean()) ** 2)


def test_noise_free_plane_is_recovered_exactly() -> None:
    df = plane_frame()
    fit = two_metric_regression(df, "a", "b", "y")
    assert fit["n"] == 12 and fit["reason"] is None
    assert fit["r2"] == pytest.approx(1.0, abs=1e-12)
    assert fit["adj_r2"] == pytest.approx(1.0, abs=1e-12)
    assert fit["loo_r2"] == pytest.approx(1.0, abs=1e-12)
    # z-scored coefficients: beta_A = 2 * std(a), beta_B = -0.5 * std(b) (ddof 0), beta0 = mean y.
    beta0, beta_a, beta_b = fit["coef"]
    assert beta0 == pytest.approx(df["y"].mean(), rel=1e-12)
    assert beta_a == pytest.approx(2.0 * df["a"].std(ddof=0), rel=1e-10)
    assert beta_b == pytest.approx(-0.5 * df["b"].std(ddof=0), rel=1e-10)
    assert fit["r_ab"] == pytest.approx(np.corrcoef(df["a"], df["b"])[0, 1], abs=1e-12)


def test_perfect_single_metric_line_gives_r2_one() -> None:
    rng = np.random.default_rng(1)
    df = pd.DataFrame({"a": rng.standard_normal(8), "b": rng.standard_normal(8)})
    df["y"] = -4.0 * df["a"] + 1.0
    assert two_metric_regression(df, "a", "b", "y")["r2"] == pytest.approx(1.0, abs=1e-12)


def test_noisy_fit_matches_lstsq_and_hand_formulas() -> None:
    df = plane_frame(n=9, noise=3.0, seed=3)
    x, y = df[["a", "b"]].to_numpy(), df["y"].to_numpy()
    fit = two_metric_regression(df, "a", "b", "y")
    r2 = lstsq_r2(x, y)
    n = len(y)
    assert 0.0 < fit["r2"] < 1.0
    assert fit["r2"] == pytest.approx(r2, abs=1e-12)
    assert fit["adj_r2"] == pytest.approx(1 - (1 - r2) * (n - 1) / (n - 3), abs=1e-12)
    # Leave-one-out by brute force: refit without row i, predict row i.
    press = 0.0
    for i in range(n):
        keep = np.arange(n) != i
        design = np.column_stack([np.ones(n - 1), x[keep]])
        coef, *_ = np.linalg.lstsq(design, y[keep], rcond=None)
        press += (y[i] - np.r_[1.0, x[i]] @ coef) ** 2
    assert fit["loo_r2"] == pytest.approx(1 - press / np.sum((y - y.mean()) ** 2), abs=1e-10)
    assert fit["loo_r2"] < fit["adj_r2"] < fit["r2"]


def test_nan_rows_are_dropped() -> None:
    df = plane_frame(n=10, noise=1.0, seed=2)
    with_nan = df.copy()
    with_nan.loc[3, "a"] = np.nan
    with_nan.loc[7, "y"] = np.nan
    fit = two_metric_regression(with_nan, "a", "b", "y")
    ref = two_metric_regression(df.drop(index=[3, 7]), "a", "b", "y")
    assert fit["n"] == 8
    assert fit["r2"] == pytest.approx(ref["r2"], abs=1e-14)


def test_collinear_pair_is_nan_with_reason() -> None:
    df = plane_frame(n=8, noise=1.0)
    df["b"] = -3.0 * df["a"] + 2.0
    fit = two_metric_regression(df, "a", "b", "y")
    assert math.isnan(fit["r2"]) and math.isnan(fit["adj_r2"]) and math.isnan(fit["loo_r2"])
    assert fit["r_ab"] == pytest.approx(-1.0, abs=1e-12)
    assert "collinear" in fit["reason"]


@pytest.mark.parametrize(
    "edit, words",
    [
        (lambda d: d.assign(b=1.5), "constant"),
        (lambda d: d.iloc[:3], "at least 4"),
        (lambda d: d.assign(y=2.0), "R² is undefined"),
    ],
)
def test_undefined_fits_say_why(edit, words) -> None:
    fit = two_metric_regression(edit(plane_frame(n=8, noise=1.0)), "a", "b", "y")
    assert math.isnan(fit["r2"])
    assert words in fit["reason"]


def test_bad_input_raises() -> None:
    df = plane_frame()
    with pytest.raises(ValueError, match="'c'"):
        two_metric_regression(df, "a", "c", "y")
    with pytest.raises(ValueError, match="b: must differ"):
        two_metric_regression(df, "a", "a", "y")
    with pytest.raises(ValueError, match="not numeric"):
        two_metric_regression(df.assign(a="x"), "a", "b", "y")


def test_all_pairs_sorted_by_r2_and_covers_every_pair() -> None:
    rng = np.random.default_rng(4)
    n = 10
    df = pd.DataFrame({m: rng.standard_normal(n) for m in ["p", "q", "r", "s"]})
    df["y"] = df["p"] + df["q"] + 0.1 * rng.standard_normal(n)
    df["s"] = 2 * df["r"]  # collinear pair (r, s) sorts last
    table = all_pairs(df, ["p", "q", "r", "s"], "y")
    assert len(table) == 6
    assert {frozenset(ab) for ab in zip(table["a"], table["b"])} == {
        frozenset(p) for p in [("p", "q"), ("p", "r"), ("p", "s"), ("q", "r"), ("q", "s"), ("r", "s")]
    }
    assert (table.loc[0, "a"], table.loc[0, "b"]) == ("p", "q")
    assert table.loc[0, "r2"] == pytest.approx(lstsq_r2(df[["p", "q"]].to_numpy(), df["y"].to_numpy()), abs=1e-12)
    assert (table.loc[5, "a"], table.loc[5, "b"]) == ("r", "s") and math.isnan(table.loc[5, "r2"])
    defined = table["r2"].dropna().to_numpy()
    assert np.all(np.diff(defined) <= 0)
    with pytest.raises(ValueError, match="at least two"):
        all_pairs(df, ["p"], "y")


def test_orientation_follows_section_1_6() -> None:
    df = pd.DataFrame({m: [1.0, -2.0, 3.5] for m in METRICS})
    negated = {"viv", "sec", "ifid", "density_cv", "gini"}
    kept = {"lnc", "lds", "cds", "srss", "normalized_entropy", "scale_eq", "rotate_eq", "straightness", "efficiency"}
    for m in negated:
        assert oriented(df, m).tolist() == [-1.0, 2.0, -3.5], m
        assert oriented_label(m) == "−" + METRICS[m].label
    for m in kept:
        assert oriented(df, m).tolist() == [1.0, -2.0, 3.5], m
        assert oriented_label(m) == METRICS[m].label
    assert oriented(df, "viv").name == "viv"
    with pytest.raises(ValueError, match="no entry"):
        oriented(df.assign(foo=1.0), "foo")
    with pytest.raises(ValueError, match="not in the frame"):
        oriented(df, "bar")
