"""PCC / SRCC with bootstrap CIs (spec ifid-seesaw 6)."""

from __future__ import annotations

import io
import math

import numpy as np
import pandas as pd
import pytest
import scipy.stats

from latentbench.analysis.correlation import correlate, correlation_table

# iFID repo README (commit bac6ede), spec Appendix A.6: gFID w/o cfg (SiT-XL, SiT-B) and
# iFID per VAE. "VA-VAE (c64)" is not one of the paper's 13 VAEs; RAE has no SiT-B run.
README_A6 = """vae,gFID_SiTXL_nocfg,gFID_SiTB_nocfg,iFID
SD-VAE,25.91,46.74,59.91
FLUX-VAE,34.06,63.32,67.41
QW-VAE,23.62,48.34,30.58
SD3-VAE,26.38,51.39,37.13
EQ-VAE,20.81,37.81,47.51
IN-VAE,25.65,49.17,41.06
VA-VAE,8.57,17.63,19.57
VA-VAE (c64),15.4,32.51,37.14
SOFT-VQ,15.88,29.11,26.91
MAE-TOK,6.27,13.73,14.06
DE-TOK,11.97,20.27,17.51
DM-VAE,4.65,8.69,8.14
REPAE-VAE,12.95,26.06,36.70
RAE,4.25,,7.68
"""


@pytest.fixture(scope="module")
def readme() -> pd.DataFrame:
    return pd.read_csv(io.StringIO(README_A6)).set_index("vae")


def noisy_pair(n: int = 40, noise: float = 0.5, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(n)
    return x, x + noise * rng.standard_normal(n)


def test_equals_scipy_on_random_data() -> None:
    x, y = noisy_pair(noise=2.0)
    res = correlate(x, y, n_boot=0)
    pr, sr = scipy.stats.pearsonr(x, y), scipy.stats.spearmanr(x, y)
    assert res["n"] == 40
    assert res["pcc"] == pytest.approx(pr.statistic, abs=1e-14)
    assert res["pcc_p"] == pytest.approx(pr.pvalue, rel=1e-12)
    assert res["srcc"] == pytest.approx(sr.statistic, abs=1e-14)
    assert res["srcc_p"] == pytest.approx(sr.pvalue, rel=1e-12)
    assert all(math.isnan(v) for v in (*res["pcc_ci"], *res["srcc_ci"]))  # no bootstrap asked


def test_ties_use_average_ranks() -> None:
    x = np.array([1.0, 2.0, 2.0, 3.0, 4.0, 4.0, 4.0, 5.0])
    y = np.array([2.0, 1.0, 3.0, 3.0, 5.0, 4.0, 6.0, 6.0])
    assert correlate(x, y, n_boot=0)["srcc"] == pytest.approx(
        scipy.stats.spearmanr(x, y).statistic, abs=1e-14
    )


def test_invariances() -> None:
    x, y = noisy_pair()
    base = correlate(x, y, n_boot=0)
    affine = correlate(3.0 * x - 7.0, 0.5 * y + 2.0, n_boot=0)
    assert affine["pcc"] == pytest.approx(base["pcc"], abs=1e-12)
    monotone = correlate(np.exp(x), y**3, n_boot=0)  # strictly increasing maps
    assert monotone["srcc"] == pytest.approx(base["srcc"], abs=1e-14)
    assert monotone["pcc"] != pytest.approx(base["pcc"], abs=1e-3)
    flipped = correlate(-x, y, n_boot=0)
    assert flipped["pcc"] == pytest.approx(-base["pcc"], abs=1e-14)
    assert flipped["srcc"] == pytest.approx(-base["srcc"], abs=1e-14)


def test_perfect_monotone_nonlinear() -> None:
    x = np.linspace(0.0, 4.0, 25)
    res = correlate(x, np.exp(2 * x), n_boot=200)
    assert res["srcc"] == pytest.approx(1.0, abs=1e-14)
    assert res["pcc"] < 0.95
    assert res["srcc_ci"] == pytest.approx((1.0, 1.0), abs=1e-14)


def test_bootstrap_ci_contains_estimate_and_is_seeded() -> None:
    x, y = noisy_pair(n=30, noise=0.4)
    res = correlate(x, y, n_boot=1000, seed=3)
    for key in ("pcc", "srcc"):
        lo, hi = res[f"{key}_ci"]
        assert lo < res[key] < hi
        assert 0.5 < lo and hi <= 1.0
    assert res["n_boot_used"] == 1000
    assert correlate(x, y, n_boot=1000, seed=3) == res
    assert correlate(x, y, n_boot=1000, seed=4)["pcc_ci"] != res["pcc_ci"]


def test_bootstrap_matches_a_plain_loop() -> None:
    """The vectorised bootstrap equals scipy applied to each resample in turn."""
    x, y = noisy_pair(n=12, noise=1.0, seed=5)
    res = correlate(x, y, n_boot=50, seed=9)
    idx = np.random.default_rng(9).integers(0, 12, size=(50, 12))
    pcc = [scipy.stats.pearsonr(x[i], y[i]).statistic for i in idx]
    srcc = [scipy.stats.spearmanr(x[i], y[i]).statistic for i in idx]
    np.testing.assert_allclose(res["pcc_ci"], np.percentile(pcc, [2.5, 97.5]), atol=1e-12)
    np.testing.assert_allclose(res["srcc_ci"], np.percentile(srcc, [2.5, 97.5]), atol=1e-12)


def test_constant_resamples_are_skipped() -> None:
    # n = 3 with two equal x values: some resamples are constant in x
    res = correlate([1.0, 1.0, 2.0], [0.0, 1.0, 3.0], n_boot=200, seed=0)
    assert 0 < res["n_boot_used"] < 200
    assert np.isfinite(res["pcc_ci"]).all() and np.isfinite(res["srcc_ci"]).all()


def test_nan_pairs_dropped_and_small_samples() -> None:
    x = [1.0, 2.0, np.nan, 4.0, 5.0, 6.0]
    y = [2.0, 1.0, 3.0, np.nan, 7.0, 6.0]
    res = correlate(x, y, n_boot=0)
    ref = scipy.stats.pearsonr([1.0, 2.0, 5.0, 6.0], [2.0, 1.0, 7.0, 6.0]).statistic
    assert res["n"] == 4 and res["pcc"] == pytest.approx(ref, abs=1e-14)
    small = correlate([1.0, 2.0, np.nan], [3.0, 1.0, 2.0])
    assert small["n"] == 2
    assert math.isnan(small["pcc"]) and math.isnan(small["srcc"]) and math.isnan(small["pcc_ci"][0])
    constant = correlate([1.0, 1.0, 1.0, 1.0], [1.0, 2.0, 3.0, 4.0])
    assert constant["n"] == 4 and math.isnan(constant["pcc"]) and math.isnan(constant["srcc_p"])


def test_bad_input_raises() -> None:
    with pytest.raises(ValueError, match="y"):
        correlate([1.0, 2.0, 3.0], [1.0, 2.0])
    with pytest.raises(ValueError, match="x"):
        correlate([1.0, np.inf, 3.0], [1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="x"):
        correlate(np.zeros((2, 3)), np.zeros((2, 3)))
    with pytest.raises(ValueError, match="n_boot"):
        correlate([1.0, 2.0, 3.0], [1.0, 2.0, 3.0], n_boot=-1)


def test_readme_regression_sit_xl(readme: pd.DataFrame) -> None:
    paper13 = readme.drop(index="VA-VAE (c64)")
    assert len(paper13) == 13
    res = correlate(paper13["iFID"], paper13["gFID_SiTXL_nocfg"], n_boot=0)
    assert res["n"] == 13
    assert round(res["pcc"], 3) == 0.903
    assert round(res["srcc"], 3) == 0.918
    all14 = correlate(readme["iFID"], readme["gFID_SiTXL_nocfg"], n_boot=0)
    assert (round(all14["pcc"], 3), round(all14["srcc"], 3)) == (0.896, 0.881)


def test_readme_regression_sit_b(readme: pd.DataFrame) -> None:
    paper13 = readme.drop(index="VA-VAE (c64)")
    res = correlate(paper13["iFID"], paper13["gFID_SiTB_nocfg"], n_boot=0)  # RAE is NaN
    assert res["n"] == 12
    assert round(res["pcc"], 3) == 0.859
    assert round(res["srcc"], 3) == 0.846


def test_correlation_table(readme: pd.DataFrame) -> None:
    df = readme.drop(index="VA-VAE (c64)").assign(neg_ifid=lambda d: -d["iFID"])
    table = correlation_table(
        df, ["iFID", "neg_ifid"], "gFID_SiTXL_nocfg", negate=["neg_ifid"], n_boot=200, seed=1
    )
    assert list(table.index) == ["iFID", "neg_ifid"]
    assert table.loc["neg_ifid", "negated"] and not table.loc["iFID", "negated"]
    # negating -iFID restores iFID, and both rows share the same resamples (same seed)
    pd.testing.assert_series_equal(
        table.loc["iFID"].drop("negated"), table.loc["neg_ifid"].drop("negated"), check_names=False
    )
    direct = correlate(df["iFID"], df["gFID_SiTXL_nocfg"], n_boot=200, seed=1)
    assert table.loc["iFID", "pcc"] == direct["pcc"]
    assert (table.loc["iFID", "srcc_lo"], table.loc["iFID", "srcc_hi"]) == direct["srcc_ci"]
    with pytest.raises(ValueError, match="missing column"):
        correlation_table(df, ["rFID"], "gFID_SiTXL_nocfg")
    with pytest.raises(ValueError, match="negate"):
        correlation_table(df, ["iFID"], "gFID_SiTXL_nocfg", negate=["gFID_SiTB_nocfg"])
