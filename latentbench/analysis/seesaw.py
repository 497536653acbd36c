"""The Tilted Seesaw paper's Fig. 2: Spearman rho between generation / reconstruction metrics and
condition-drift measures across autoencoders (spec metrics-ifid-seesaw.md §6, seesaw-notes §2.7-8).

Rho is as measured (no orientation), as in the paper's figure: drift distances (Canny, depth,
segmentation, spatial) are lower-is-better, similarities (identity, Face@R, CLIP, DINOv2) and
probe errors keep their own direction. Every rho carries a 95 % percentile-bootstrap interval over
autoencoders (:func:`latentbench.analysis.correlation.correlate`). Table 5 of the paper is filtered
and partly duplicated (``uae`` and ``uae-stage4`` are identical on all 12 metrics, seesaw-notes
§2.7), so the matrix is given on all rows and on de-duplicated rows.

:func:`spearman_matrix` works on any per-autoencoder table; :func:`study_units` makes that table
from a study's metrics.csv, :func:`paper_units` from the paper's Table 5.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from latentbench.analysis.correlation import correlate

__all__ = ["DRIFT_MEASURES", "PAPER_COLUMNS", "X_METRICS", "dedupe", "paper_units", "spearman_matrix",
           "study_units"]

# Our metrics.csv drift columns (built by the drift stage), with the paper's Table 5 name.
DRIFT_MEASURES: dict[str, str] = {
    "drift_canny": "Canny",
    "drift_depth": "Depth",
    "drift_seg": "Seg",
    "drift_spatial": "Spatial",
    "drift_identity": "Identity",
    "drift_face_at_r": "Face@R",
    "drift_clip": "CLIP",
    "drift_dinov2": "DINOv2",
    "probe_canny": "Latent Canny",
    "probe_depth": "Latent Depth",
}
# Fig. 2 rows: the generation and reconstruction metrics (metrics.csv column -> label).
X_METRICS: dict[str, str] = {"gfid": "gFID", "rfid": "rFID", "psnr": "PSNR", "ssim": "SSIM", "lpips": "LPIPS"}
# Paper Table 5 column -> our column (spec A.10); the latent probes are Table 2's only.
PAPER_COLUMNS: dict[str, str] = {
    "gFID": "gfid", "rFID": "rfid", "PSNR": "psnr", "SSIM": "ssim", "LPIPS": "lpips", "Canny": "drift_canny",
    "Depth": "drift_depth", "Seg": "drift_seg", "Spatial": "drift_spatial", "Identity": "drift_identity",
    "Face_at_R": "drift_face_at_r", "CLIP": "drift_clip", "DINOv2": "drift_dinov2",
}
DEDUPE_DECIMALS = 4  # Table 5 prints four decimals: rows equal at that precision are one autoencoder


def dedupe(units: pd.DataFrame, columns: Sequence[str]) -> pd.DataFrame:
    """``units`` without rows that repeat another row on every one of ``columns`` except gFID
    (rounded to :data:`DEDUPE_DECIMALS`; NaN equals NaN): of each group of repeats the row with the
    most values is kept (Table 5's ``uae`` with its gFID, not ``uae-stage4``), order preserved.
    Near-duplicates (the ``-hf`` rows) are kept."""
    cols = [c for c in columns if c != "gfid"]
    if not cols:
        return units
    key = units[cols].astype(float).round(DEDUPE_DECIMALS)
    filled = units[list(columns)].notna().sum(axis=1).to_numpy()
    order = np.argsort(-filled, kind="stable")  # the fullest row of a group comes first
    drop = np.zeros(len(units), dtype=bool)
    drop[order] = key.iloc[order].duplicated(keep="first").to_numpy()
    return units[~drop]


def spearman_matrix(units: pd.DataFrame, x_cols: Sequence[str], y_cols: Sequence[str], n_boot: int,
                    seed: int) -> pd.DataFrame:
    """Spearman rho (bootstrap CI) of every x column with every y column, on all rows and on the
    :func:`dedupe`'d rows: one row per (rows, x, y) with n, rho, lo, hi, p. Absent columns give n = 0."""
    present = [c for c in [*x_cols, *y_cols] if c in units.columns]
    samples = {"all": units, "dedupe": dedupe(units, present) if present else units}
    out = []
    for which, sample in samples.items():
        for x in x_cols:
            for y in y_cols:
                if x in sample.columns and y in sample.columns:
                    res = correlate(sample[x].to_numpy(float), sample[y].to_numpy(float), n_boot=n_boot, seed=seed)
                    n, rho, (lo, hi), p = res["n"], res["srcc"], res["srcc_ci"], res["srcc_p"]
                else:
                    n, rho, lo, hi, p = 0, np.nan, np.nan, np.nan, np.nan
                out.append({"rows": which, "x": x, "y": y, "n": int(n), "rho": rho, "lo": lo, "hi": hi, "p": p})
    return pd.DataFrame(out, columns=["rows", "x", "y", "n", "rho", "lo", "hi", "p"])


def study_units(frame: pd.DataFrame, backbone: str, scale: float) -> pd.DataFrame:
    """One row per tokenizer of a metrics.csv frame: its per-tokenizer columns and the gFID / IS of
    ``backbone`` at guidance ``scale`` (NaN where that backbone is not trained on it)."""
    per_tok = frame.drop_duplicates("tokenizer").set_index("tokenizer").drop(columns=["gfid", "is"], errors="ignore")
    sel = frame[(frame["backbone"] == backbone) & np.isclose(frame["cfg_scale"].astype(float), scale)]
    gen = sel.set_index("tokenizer")[[c for c in ("gfid", "is") if c in sel.columns]]
    return per_tok.join(gen, how="left").reset_index()


def paper_units(table5: pd.DataFrame) -> pd.DataFrame:
    """The paper's Table 5 (spec A.10) with our column names, one row per AE variant."""
    missing = [c for c in PAPER_COLUMNS if c not in table5.columns]
    if missing:
        raise ValueError(f"seesaw_table5: missing column(s) {missing}")
    return table5.rename(columns=PAPER_COLUMNS).rename(columns={"weight_name": "tokenizer"})
