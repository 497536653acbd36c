"""Leave-one-tokenizer-out stability (latentbench.analysis.stability) against a loop of scipy."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import scipy.stats

from latentbench.analysis.stability import leave_one_out, stability_table


def test_drop_one_r_equals_scipy_on_each_subsample() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=12)
    y = 0.6 * x + rng.normal(size=12)
    res = leave_one_out(x, y, [f"t{i}" for i in range(12)])
    drops = np.array([scipy.stats.pearsonr(np.delete(x, i), np.delete(y, i)).statistic for i in range(12)])
    r = scipy.stats.pearsonr(x, y).statistic
    assert res["r"] == pytest.approx(r) and res["n"] == 12
    assert res["r_min"] == pytest.approx(drops.min()) and res["r_max"] == pytest.approx(drops.max())
    worst = int(np.argmax(np.abs(drops - r)))
    assert res["max_shift"] == pytest.approx(abs(drops[worst] - r)) and res["influential"] == f"t{worst}"
    assert res["sign_flips"] == int(np.sum(np.sign(drops) != np.sign(r)))


def test_one_outlier_carries_the_correlation() -> None:
    # nine unrelated points and one far outlier: r is large, dropping the outlier collapses it
    rng = np.random.default_rng(1)
    x = np.append(rng.normal(size=9), 20.0)
    y = np.append(rng.normal(size=9), 20.0)
    res = leave_one_out(x, y, list("abcdefghij"))
    assert res["r"] > 0.9 and res["influential"] == "j" and res["max_shift"] > 0.5


def test_nan_pairs_dropped_and_too_few_units() -> None:
    res = leave_one_out([1.0, 2.0, np.nan, 4.0, 5.0], [2.0, 1.0, 3.0, 5.0, 4.0])
    assert res["n"] == 4 and math.isfinite(res["r"])
    small = leave_one_out([1.0, 2.0, 3.0], [1.0, 3.0, 2.0])
    assert small["n"] == 3 and math.isnan(small["r"]) and small["influential"] is None
    with pytest.raises(ValueError, match="names"):
        leave_one_out([1.0, 2.0], [1.0, 2.0], ["a"])


def test_constant_drop_one_sample_has_no_r() -> None:
    # without unit 0 the x values are all equal: that drop-one r is undefined, the others are not
    x, y = np.array([5.0, 1.0, 1.0, 1.0, 1.0]), np.array([3.0, 1.0, 2.0, 0.5, 4.0])
    res = leave_one_out(x, y)
    drops = [scipy.stats.pearsonr(np.delete(x, i), np.delete(y, i)).statistic for i in range(1, 5)]
    assert res["r_min"] == pytest.approx(min(drops)) and res["r_max"] == pytest.approx(max(drops))
    assert res["influential"] != 0  # the undefined drop is never "the most influential"


def test_table_has_a_row_per_setting_and_metric() -> None:
    frame = pd.DataFrame({"family": "f", "backbone": ["a"] * 5 + ["b"] * 5, "cfg_scale": 1.0,
                          "tokenizer": [f"t{i}" for i in range(5)] * 2, "gfid": np.arange(10.0),
                          "m1": np.arange(10.0) ** 2, "m2": np.r_[np.arange(5.0)[::-1], np.arange(5.0)]})
    table = stability_table(frame, ["m1", "m2"], "gfid")
    assert len(table) == 4 and set(table["backbone"]) == {"a", "b"}
    row = table[(table["backbone"] == "a") & (table["metric"] == "m2")].iloc[0]
    assert row["r"] == pytest.approx(-1.0) and row["max_shift"] == pytest.approx(0.0, abs=1e-9)
