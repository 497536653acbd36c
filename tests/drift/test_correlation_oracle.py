"""The §6 Spearman values of seesaw-notes §1, recomputed from the transcribed Table 5 with our correlation code."""


import pandas as pd
import pytest

from latentbench.analysis.correlation import correlate
from latentbench.report.paper_values import PAPER_DIR

TABLE5 = PAPER_DIR / "seesaw_table5.csv"


@pytest.fixture(scope="module")
def table5() -> pd.DataFrame:
    df = pd.read_csv(TABLE5)
    assert len(df) == 33
    return df


@pytest.mark.parametrize(
    "x, y, rho",
    [
        ("PSNR", "Spatial", -0.989),
        ("PSNR", "Identity", 0.998),
        ("rFID", "Spatial", 0.923),
        ("rFID", "DINOv2", -0.958),
        ("LPIPS", "Depth", 0.984),
        ("PSNR", "Canny", -0.991),
        ("PSNR", "Depth", -0.964),
        ("PSNR", "Seg", -0.965),
        ("PSNR", "Face_at_R", 0.895),
        ("PSNR", "CLIP", 0.985),
        ("PSNR", "DINOv2", 0.964),
        ("rFID", "Canny", 0.902),
        ("rFID", "Depth", 0.956),
        ("rFID", "Seg", 0.938),
        ("rFID", "Identity", -0.907),
        ("rFID", "Face_at_R", -0.893),
        ("rFID", "CLIP", -0.921),
    ],
)
def test_33_row_spearman(table5, x, y, rho):
    res = correlate(table5[x], table5[y], n_boot=0)
    assert res["n"] == 33
    assert res["srcc"] == pytest.approx(rho, abs=5e-4)


@pytest.mark.parametrize("x, y, rho", [("gFID", "Spatial", 0.086), ("gFID", "rFID", 0.600)])
def test_six_gfid_rows(table5, x, y, rho):
    res = correlate(table5[x], table5[y], n_boot=0)  # NaN gFIDs are dropped: the 6 rows with one
    assert res["n"] == 6
    assert res["srcc"] == pytest.approx(rho, abs=5e-4)


def test_gfid_is_nearly_uncorrelated_with_every_drift_column(table5):
    rhos = {c: correlate(table5["gFID"], table5[c], n_boot=0)["srcc"] for c in
            ("Canny", "Depth", "Seg", "Spatial", "Identity", "Face_at_R", "CLIP", "DINOv2")}
    assert max(abs(r) for r in rhos.values()) == pytest.approx(0.257, abs=5e-4)
    assert rhos["DINOv2"] == pytest.approx(-0.257, abs=5e-4)


def test_spatial_is_the_mean_of_the_three_maps_on_every_row(table5):
    mean = (table5["Canny"] + table5["Depth"] + table5["Seg"]) / 3
    assert (mean - table5["Spatial"]).abs().max() < 6.7e-5 + 1e-9
