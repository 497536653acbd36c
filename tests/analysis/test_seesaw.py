"""The Seesaw Fig. 2 Spearman matrix (latentbench.analysis.seesaw) on the paper's Table 5."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.stats

from latentbench.analysis.seesaw import DRIFT_MEASURES, X_METRICS, dedupe, paper_units, spearman_matrix, study_units
from latentbench.report.paper_values import load_paper_table


@pytest.fixture(scope="module")
def paper():
    units = paper_units(load_paper_table("seesaw_table5"))
    return units, spearman_matrix(units, list(X_METRICS), list(DRIFT_MEASURES), n_boot=200, seed=0)


def test_psnr_vs_spatial_drift_is_the_spec_oracle(paper) -> None:
    _, matrix = paper
    row = matrix[(matrix["rows"] == "all") & (matrix["x"] == "psnr") & (matrix["y"] == "drift_spatial")].iloc[0]
    # spec metrics-ifid-seesaw §6: Spearman(PSNR, Spatial) over Table 5's 33 rows = -0.989
    assert row["n"] == 33 and row["rho"] == pytest.approx(-0.989, abs=5e-4)
    assert row["lo"] <= row["rho"] <= row["hi"]


def test_dedupe_drops_the_identical_uae_row_only(paper) -> None:
    units, matrix = paper
    kept = dedupe(units, [c for c in units.columns if c in set(X_METRICS) | set(DRIFT_MEASURES)])
    assert len(kept) == 32 and "uae-stage4" not in set(kept["tokenizer"]) and "uae" in set(kept["tokenizer"])
    row = matrix[(matrix["rows"] == "dedupe") & (matrix["x"] == "rfid") & (matrix["y"] == "drift_canny")].iloc[0]
    assert row["n"] == 32
    ref = scipy.stats.spearmanr(kept["rfid"], kept["drift_canny"]).statistic
    assert row["rho"] == pytest.approx(ref)


def test_gfid_rows_use_the_six_printed_values_and_probes_are_absent(paper) -> None:
    _, matrix = paper
    gfid = matrix[(matrix["rows"] == "all") & (matrix["x"] == "gfid") & (matrix["y"] == "drift_canny")].iloc[0]
    assert gfid["n"] == 6
    probes = matrix[matrix["y"].isin(["probe_canny", "probe_depth"])]
    assert (probes["n"] == 0).all() and probes["rho"].isna().all()


def test_study_units_take_gfid_of_the_given_backbone_and_scale() -> None:
    frame = pd.DataFrame({"tokenizer": ["a", "a", "b", "b", "a"], "backbone": ["x", "x", "x", "x", "y"],
                          "cfg_scale": [1.0, 1.5, 1.0, 1.5, 1.0], "gfid": [1.0, 2.0, 3.0, 4.0, 9.0],
                          "psnr": [20.0, 20.0, 21.0, 21.0, 20.0]})
    units = study_units(frame, "x", 1.5).set_index("tokenizer")
    assert units.loc["a", "gfid"] == 2.0 and units.loc["b", "gfid"] == 4.0 and units.loc["b", "psnr"] == 21.0
    assert np.isnan(study_units(frame, "y", 1.0).set_index("tokenizer").loc["b", "gfid"])
