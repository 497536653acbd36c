"""The papers' reported numbers, as transcribed in spec metrics-ifid-seesaw.md Appendix A.

Each table lives in the package, ``latentbench/report/paper/<name>.csv`` (read through
:mod:`importlib.resources`, so an installed wheel has them), byte-for-byte the CSV block of its
Appendix A section (``seesaw_table1`` is transcribed from the Seesaw paper text, Table 1); :data:`PAPER_TABLES` says where each comes from and what shape it has, and
:func:`load_paper_table` reads one as a DataFrame (empty cells -> NaN; "-" in the papers was
transcribed as an empty cell). The report puts these values beside the study's own.
"""

from __future__ import annotations

import functools
import importlib.resources
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

__all__ = ["PAPER_DIR", "PAPER_TABLES", "PaperTable", "load_paper_table", "paper_value"]

PAPER_DIR = Path(str(importlib.resources.files("latentbench.report") / "paper"))


@dataclass(frozen=True)
class PaperTable:
    """One transcribed table: file stem, source, spec section and expected shape."""

    name: str
    source: str
    spec_section: str
    rows: int
    columns: tuple[str, ...]


PAPER_TABLES: dict[str, PaperTable] = {
    t.name: t
    for t in [
        PaperTable("ifid_table1", "iFID paper, Table 1 (PCC with gFID(t), SiT-XL, 13 VAEs)", "A.1", 2,
                   ("metric", "t=0(rFID)", "t=0.1", "t=0.2", "t=0.4", "t=0.6", "t=0.8", "t=1.0(gFID)")),
        PaperTable("ifid_table2", "iFID paper, Table 2 (the 13 VAEs)", "A.2", 13,
                   ("vae", "latent_dim_paper", "arch", "training", "repo_config", "latent_shape_code")),
        PaperTable("ifid_table3", "iFID paper, Table 3 (correlation with gFID, PCC / SRCC)", "A.3", 10,
                   ("metric", "SiTB_nocfg_PCC", "SiTB_nocfg_SRCC", "SiTB_cfg_PCC", "SiTB_cfg_SRCC",
                    "SiTXL_nocfg_PCC", "SiTXL_nocfg_SRCC", "SiTXL_cfg_PCC", "SiTXL_cfg_SRCC")),
        PaperTable("ifid_table4", "iFID paper, Table 4 (iFID sensitivity, gFID SiT-XL)", "A.4", 6,
                   ("interpolation", "n_ref_images", "K", "nocfg_PCC", "nocfg_SRCC", "cfg_PCC", "cfg_SRCC")),
        PaperTable("ifid_table5", "iFID paper, Table 5 (interpolation strength alpha)", "A.5", 6,
                   ("alpha", "rFID_PCC", "rFID_SRCC", "nocfg_PCC", "nocfg_SRCC", "cfg_PCC", "cfg_SRCC")),
        PaperTable("ifid_readme_values", "iFID repository README at commit bac6ede (per-VAE values)", "A.6",
                   14, ("vae", "gFID_SiTXL_nocfg", "gFID_SiTB_nocfg", "iFID", "vae_config", "sit_config")),
        PaperTable("diffusability_headline", "diffusability paper, the r and R² its text states (Figs. 4, 8, 9)",
                   "metrics-diffusability §13", 4, ("figure", "quantity", "metrics", "value", "setting", "note")),
        PaperTable("seesaw_table1", "Seesaw paper, Table 1 (survey of 8 AE papers: reported metrics, "
                   "ablation pick)", "seed 003 §4", 8,
                   ("model", "date", "reports_rFID", "reports_PSNR", "reports_LPIPS", "reports_SSIM",
                    "pick_best_gFID", "pick_best_rFID")),
        PaperTable("seesaw_table2", "Seesaw paper, Table 2 (headline AEs)", "A.7", 6,
                   ("model", "gFID", "IS", "Prec", "Rec", "rFID", "PSNR", "SSIM", "LPIPS", "Spatial", "Identity",
                    "Face_at_R", "CLIP", "DINO", "Latent_Canny", "Latent_Depth")),
        PaperTable("seesaw_table3", "Seesaw paper, Table 3 (ControlNet)", "A.8", 2,
                   ("ae", "gFID", "rFID", "PSNR", "canny_FID", "canny_L1", "depth_FID", "depth_L1")),
        PaperTable("seesaw_table4", "Seesaw paper, Table 4 (ControlNet hyper-parameters)", "A.9", 7,
                   ("hyperparameter", "value")),
        PaperTable("seesaw_table5", "Seesaw paper, Table 5 (all 33 AE variants)", "A.10", 33,
                   ("group", "weight_name", "gFID", "rFID", "PSNR", "SSIM", "LPIPS", "Canny", "Depth", "Seg",
                    "Spatial", "Identity", "Face_at_R", "CLIP", "DINOv2")),
    ]
}


@functools.cache
def _read(path: Path) -> pd.DataFrame:
    # Only empty cells are missing values: the tables hold no "NA"/"None" strings, and reading
    # those as NaN would silently change a transcribed label.
    return pd.read_csv(path, keep_default_na=False, na_values=[""])


def load_paper_table(name: str, directory: str | Path | None = None) -> pd.DataFrame:
    """The transcribed table ``name`` (a key of :data:`PAPER_TABLES`) as a DataFrame (a fresh copy).

    Raises ValueError naming the file when its header or row count differs from the spec's
    (a damaged transcription must not reach the report).
    """
    if name not in PAPER_TABLES:
        raise ValueError(f"name: unknown paper table {name!r}; known: {sorted(PAPER_TABLES)}")
    table = PAPER_TABLES[name]
    path = Path(directory or PAPER_DIR) / f"{name}.csv"
    if not path.exists():
        raise ValueError(f"{path}: paper table {name!r} (spec Appendix {table.spec_section}) not found")
    frame = _read(path.resolve())
    if tuple(frame.columns) != table.columns:
        raise ValueError(f"{path}: header {list(frame.columns)} differs from spec {table.spec_section}'s "
                         f"{list(table.columns)}")
    if len(frame) != table.rows:
        raise ValueError(f"{path}: {len(frame)} rows, spec {table.spec_section} has {table.rows}")
    return frame.copy()


def paper_value(name: str, column: str, **where: object) -> float:
    """One numeric cell of table ``name``: ``column`` of the single row matching every ``where`` item.

    Example: ``paper_value("ifid_table4", "nocfg_PCC", interpolation="Spherical", n_ref_images="200k", K=1)``.
    Empty cells give NaN; no match or several matches raise ValueError.
    """
    frame = load_paper_table(name)
    unknown = [c for c in [column, *where] if c not in frame.columns]
    if unknown:
        raise ValueError(f"column: {unknown} not among the columns of {name} ({list(frame.columns)})")
    match = frame
    for col, value in where.items():
        match = match[match[col] == value]
    if len(match) != 1:
        raise ValueError(f"where: {where} matches {len(match)} rows of {name}, expected one")
    return float(match[column].iloc[0])


def paper_text(name: str, column: str, fmt: str = ".2f", **where: object) -> str:
    """:func:`paper_value` formatted for prose (typographic minus), so a page's sentences quote
    the transcribed CSV instead of repeating its numbers. Used as the Jinja global ``paper_says``."""
    return format(paper_value(name, column, **where), fmt).replace("-", "−")
