"""The Tilted Seesaw page: the paper's Tables 1-5 in its own layout with our columns beside, and
Fig. 2 (Spearman matrix of generation / reconstruction metrics x condition-drift measures).

Formatting only: Fig. 2's rho come from the ``correlate`` job (``analysis/seesaw_fig2.csv`` on
the study, ``analysis/seesaw_fig2_paper.csv`` on the paper's Table 5, both from
:mod:`latentbench.analysis.seesaw`); the drift values from metrics.csv's ``drift_*`` / ``probe_*``
columns; ControlNet results (Table 3, Table 4, Fig. 4) from the ``controlnet_evaluate`` jobs'
``metrics/<tok>/<backbone>/controlnet_<condition>.json`` (``fid``, ``l1``, ``cond_encoder``,
``hyperparameters``: rows ``{hyperparameter, paper, ours}``) and ``controlnet_<condition>.png``
(originals, condition maps, controlled samples). A value the study did not measure is shown as
"not run". Sign convention of this page: rho as measured (no orientation), as in the paper's Fig. 2.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from latentbench.analysis.seesaw import DRIFT_MEASURES, PAPER_COLUMNS, X_METRICS
from latentbench.io import read_json
from latentbench.report.cells import num, r_colour
from latentbench.report.figures import image_src
from latentbench.report.paper_values import load_paper_table
from latentbench.report.tokenizers import card_file

__all__ = ["seesaw_page"]

NOT_RUN = "not run"
SEESAW_PAPER_FIGURE = "seesaw-fig2-paper"  # img/<this>.png, a declared output of the report rule
# Table 2 / Table 5 columns: (paper column, our metrics.csv column or None, format).
TABLE2_COLUMNS = (
    ("gFID", "gfid", ".2f"), ("IS", "is", ".1f"), ("Prec", None, ".2f"), ("Rec", None, ".2f"),
    ("rFID", "rfid", ".2f"), ("PSNR", "psnr", ".2f"), ("SSIM", "ssim", ".2f"), ("LPIPS", "lpips", ".2f"),
    ("Spatial", "drift_spatial", ".4f"), ("Identity", "drift_identity", ".4f"), ("Face_at_R", "drift_face_at_r", ".4f"),
    ("CLIP", "drift_clip", ".4f"), ("DINO", "drift_dinov2", ".4f"), ("Latent_Canny", "probe_canny", ".4f"),
    ("Latent_Depth", "probe_depth", ".4f"),
)
TABLE5_COLUMNS = (
    ("gFID", "gfid", ".2f"), ("rFID", "rfid", ".4f"), ("PSNR", "psnr", ".4f"), ("SSIM", "ssim", ".4f"),
    ("LPIPS", "lpips", ".4f"), ("Canny", "drift_canny", ".4f"), ("Depth", "drift_depth", ".4f"),
    ("Seg", "drift_seg", ".4f"), ("Spatial", "drift_spatial", ".4f"), ("Identity", "drift_identity", ".4f"),
    ("Face_at_R", "drift_face_at_r", ".4f"), ("CLIP", "drift_clip", ".4f"), ("DINOv2", "drift_dinov2", ".4f"),
)
TABLE3_COLUMNS = (("gFID", "gfid"), ("rFID", "rfid"), ("PSNR", "psnr"), ("canny_FID", ("canny", "fid")),
                  ("canny_L1", ("canny", "l1")), ("depth_FID", ("depth", "fid")), ("depth_L1", ("depth", "l1")))
HEADERS = {"Face_at_R": "Face@R", "Latent_Canny": "Latent Canny", "Latent_Depth": "Latent Depth",
           "canny_FID": "Canny FID", "canny_L1": "Canny L1", "depth_FID": "Depth FID", "depth_L1": "Depth L1"}


def _value_cell(value: Any, fmt: str) -> dict[str, Any]:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return {"text": NOT_RUN, "ok": False}
    return {"text": num(value, fmt), "ok": True}


def _column(units: pd.DataFrame, column: str | None) -> pd.Series | None:
    if column is None or column not in units.columns or not units[column].notna().any():
        return None
    return units[column]


def _ours_rows(units: pd.DataFrame, columns: tuple) -> tuple[list[dict[str, Any]], list[str]]:
    """Our rows in a paper table's layout and the columns we did not run."""
    present = {paper: _column(units, ours) for paper, ours, _ in columns}
    rows = []
    for i, (_, u) in enumerate(units.iterrows()):
        cells = [_value_cell(present[p].iloc[i] if present[p] is not None else None, fmt) for p, _, fmt in columns]
        rows.append({"name": str(u["tokenizer"]), "href": card_file(str(u["tokenizer"])), "cells": cells})
    return rows, [HEADERS.get(p, p) for p, _, _ in columns if present[p] is None]


def _paper_rows(table: pd.DataFrame, name_col: str, columns: tuple) -> list[dict[str, Any]]:
    return [{"name": str(row[name_col]), "group": str(row.get("group", "")),
             "gfid_printed": "gFID" in row and isinstance(row["gFID"], float) and math.isfinite(row["gFID"]),
             "cells": [_value_cell(row[p], fmt) if not (isinstance(row[p], float) and math.isnan(row[p]))
                       else {"text": "—", "ok": False} for p, _, fmt in columns]}
            for _, row in table.iterrows()]


def _table1() -> dict[str, Any]:
    t = load_paper_table("seesaw_table1")
    mark = {"yes": "✓", "no": "✗"}
    rows = [{"model": r["model"], "date": r["date"],
             "cells": [mark.get(r[c], "") if isinstance(r[c], str) else "" for c in t.columns[2:]]}
            for _, r in t.iterrows()]
    return {"rows": rows}


def _controlnet(results: Path, tokenizers: list[str]) -> tuple[list[dict[str, Any]], dict[str, Any], list[dict]]:
    """Our Table 3 rows, Table 4 hyper-parameters and Fig. 4 grids from the ControlNet jobs' files
    ``metrics/<tok>/<backbone>/controlnet_<condition>.json`` / ``.png``."""
    rows, hyper, grids = [], {}, []
    for tok in tokenizers:
        for path in sorted((results / "metrics" / tok).glob("*/controlnet_*.json")):
            condition = path.stem.removeprefix("controlnet_")
            if condition.endswith("_curves"):
                continue
            data = read_json(path)
            backbone = path.parent.name
            name = f"{tok} / {backbone}"
            row = next((r for r in rows if r["name"] == name), None)
            if row is None:
                row = {"name": name, "tokenizer": tok, "cond_encoder": str(data.get("cond_encoder", "unstated")), "tasks": {}}
                rows.append(row)
            row["tasks"][condition] = {"fid": data.get("fid"), "l1": data.get("l1")}
            hyper = hyper or {r["hyperparameter"]: r["ours"] for r in data.get("hyperparameters") or ()}
            grid = path.with_suffix(".png")
            if grid.exists():
                grids.append({"name": name, "condition": condition,
                              "src": image_src(grid.read_bytes(), f"controlnet-{tok}-{backbone}-{condition}")})
    return rows, hyper, grids


def _scatter_figure(frame: pd.DataFrame, x: str, title: str, name: str) -> str | None:
    """Figs. 3 and 5-9 (seesaw-notes §2.8): metric ``x`` against every drift measure with values,
    one panel per measure, one point per autoencoder (``frame``: metrics.csv column names)."""
    if x not in frame.columns:
        return None
    ys = [y for y in DRIFT_MEASURES if y in frame.columns and (frame[[x, y]].notna().all(axis=1)).sum() >= 2]
    if not ys:
        return None
    cols = min(4, len(ys))
    rows = math.ceil(len(ys) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(2.6 * cols, 2.3 * rows), squeeze=False)
    for ax, y in zip(axes.flat, ys):
        sel = frame[[x, y]].dropna()
        ax.scatter(sel[x], sel[y], s=12, color="#3b6ea5")
        ax.set_xlabel(X_METRICS[x], fontsize=7)
        ax.set_ylabel(DRIFT_MEASURES[y], fontsize=7)
        ax.tick_params(labelsize=6)
    for ax in list(axes.flat)[len(ys):]:
        ax.axis("off")
    fig.suptitle(title, fontsize=8)
    fig.tight_layout()
    return image_src(fig, name)


def _scatter_figures(units: pd.DataFrame) -> list[dict[str, Any]]:
    """One figure per x-metric (gFID, rFID, PSNR, SSIM, LPIPS; the paper's Figs. 3, 5-9 [guess of
    seesaw-notes §2.8]) for the paper's Table 5 and for this study; absent ones are skipped."""
    paper = load_paper_table("seesaw_table5").rename(columns=PAPER_COLUMNS)
    out = []
    for x in X_METRICS:
        for source, frame in (("paper Table 5", paper), ("ours", units)):
            src = _scatter_figure(frame, x, f"{X_METRICS[x]} vs condition drift: {source}",
                                  f"seesaw-scatter-{x}-{'paper' if source.startswith('paper') else 'ours'}")
            if src:
                out.append({"x": X_METRICS[x], "source": source, "src": src})
    return out


def _fig2_figure(matrix: pd.DataFrame, title: str, name: str, fixed: bool = False) -> str | None:
    """One heatmap panel per row set (all, dedupe) of a long Spearman matrix."""
    xs = [x for x in X_METRICS if (matrix["x"] == x).any() and (matrix.loc[matrix["x"] == x, "n"] > 0).any()]
    ys = [y for y in DRIFT_MEASURES if (matrix.loc[matrix["y"] == y, "n"] > 0).any()]
    if not xs or not ys:
        return None
    fig, axes = plt.subplots(1, 2, figsize=(2.0 + 1.25 * len(ys), 0.42 * len(xs) + 1.7), squeeze=False)
    for ax, which in zip(axes[0], ("all", "dedupe")):
        sel = matrix[matrix["rows"] == which].set_index(["x", "y"])
        grid = np.array([[sel.loc[(x, y), "rho"] if (x, y) in sel.index else np.nan for y in ys] for x in xs])
        n = int(sel["n"].max()) if len(sel) else 0
        ax.imshow(grid, cmap="RdBu", vmin=-1, vmax=1, aspect="auto")  # blue = r > 0, as the tables (cells.r_colour)
        for i in range(len(xs)):
            for j in range(len(ys)):
                if np.isfinite(grid[i, j]):
                    ax.text(j, i, f"{grid[i, j]:+.2f}", ha="center", va="center", fontsize=6.5,
                            color="white" if abs(grid[i, j]) > 0.6 else "black")
        ax.set_xticks(range(len(ys)), [DRIFT_MEASURES[y] for y in ys], rotation=45, ha="right", fontsize=7)
        ax.set_yticks(range(len(xs)), [X_METRICS[x] for x in xs], fontsize=7)
        ax.set_title(f"{title}: {'all rows' if which == 'all' else 'de-duplicated rows'} (n ≤ {n})", fontsize=8)
    fig.tight_layout()
    return image_src(fig, name, fixed=fixed)


def _fig2_rows(ours: pd.DataFrame, paper: pd.DataFrame) -> list[dict[str, Any]]:
    """x x y rows: ours (all, dedupe) and the paper's (all, dedupe), with ours − paper on all rows."""
    def index(m: pd.DataFrame) -> dict:
        return {(r.rows, r.x, r.y): r for r in m.itertuples()}

    oi, pi = index(ours), index(paper)
    rows = []
    for x in X_METRICS:
        for y in DRIFT_MEASURES:
            cells = []
            for src, which in ((oi, "all"), (oi, "dedupe"), (pi, "all"), (pi, "dedupe")):
                r = src.get((which, x, y))
                if r is None or r.n == 0:
                    cells.append({"text": NOT_RUN if src is oi else "—", "ci": "", "n": 0, "colour": "transparent"})
                else:
                    cells.append({"text": num(r.rho, "+.2f"), "ci": f"[{num(r.lo, '+.2f')}, {num(r.hi, '+.2f')}]",
                                  "n": int(r.n), "colour": r_colour(r.rho), "rho": r.rho})
            o, p = oi.get(("all", x, y)), pi.get(("all", x, y))
            diff = (o.rho - p.rho) if o is not None and p is not None and o.n and p.n else math.nan
            if all(c["n"] == 0 for c in cells[2:]) and all(c["n"] == 0 for c in cells[:2]):
                continue
            rows.append({"x": X_METRICS[x], "y": DRIFT_MEASURES[y], "cells": cells,
                         "diff": num(diff, "+.2f") if math.isfinite(diff) else "—"})
    return rows


def _headline(paper: pd.DataFrame, ours: pd.DataFrame) -> dict[str, Any]:
    """The paper's claim in numbers (rho of gFID and of PSNR with spatial drift) and ours."""
    def rho(m: pd.DataFrame, x: str) -> dict[str, Any] | None:
        r = m[(m["rows"] == "all") & (m["x"] == x) & (m["y"] == "drift_spatial")]
        if not len(r) or r["n"].iloc[0] == 0:
            return None
        r = r.iloc[0]
        return {"text": num(r["rho"], "+.2f").replace("-", "−"), "ci": f"[{num(r['lo'], '+.2f')}, {num(r['hi'], '+.2f')}]",
                "n": int(r["n"])}

    return {"paper_gfid": rho(paper, "gfid"), "paper_psnr": rho(paper, "psnr"),
            "ours_gfid": rho(ours, "gfid"), "ours_psnr": rho(ours, "psnr")}


def seesaw_page(results: Path, units: pd.DataFrame, fig2: pd.DataFrame | None, fig2_paper: pd.DataFrame | None,
                setting_text: str) -> dict[str, Any]:
    """Context of ``seesaw.html.j2``. ``units`` is one row per tokenizer (metrics.csv columns, gFID
    and IS at the primary setting ``setting_text``), ``fig2`` / ``fig2_paper`` the correlate job's
    Spearman tables (None when the study predates them)."""
    t2_ours, t2_not_run = _ours_rows(units, TABLE2_COLUMNS)
    t5_ours, t5_not_run = _ours_rows(units, TABLE5_COLUMNS)
    cn_rows, hyper, cn_grids = _controlnet(results, units["tokenizer"].astype(str).tolist())
    t3 = []
    for r in cn_rows:
        u = units[units["tokenizer"].astype(str) == r["tokenizer"]].iloc[0]
        cells = []
        for _, key in TABLE3_COLUMNS:
            value = u.get(key) if isinstance(key, str) else (r["tasks"].get(key[0]) or {}).get(key[1])
            cells.append(_value_cell(None if value is None else float(value), ".2f" if "l1" not in str(key) else ".4f"))
        t3.append({"name": r["name"], "cond_encoder": r["cond_encoder"], "cells": cells})
    paper_t4 = load_paper_table("seesaw_table4")
    t4 = [{"name": p, "paper": v, "ours": str(hyper[p]) if p in hyper else NOT_RUN}
          for p, v in zip(paper_t4["hyperparameter"], paper_t4["value"])]
    fig2_ctx: dict[str, Any] = {"available": fig2 is not None and fig2_paper is not None}
    if fig2_ctx["available"]:
        measured = bool((fig2["n"] > 0).any())
        fig2_ctx.update({
            "measured": measured,
            "ours_figure": _fig2_figure(fig2, "ours", "seesaw-fig2-ours") if measured else None,
            "paper_figure": _fig2_figure(fig2_paper, "paper Table 5", SEESAW_PAPER_FIGURE, fixed=True),
            "rows": _fig2_rows(fig2, fig2_paper),
            "headline": _headline(fig2_paper, fig2),
            "n_paper": int(fig2_paper["n"].max()),
        })
    drift_cols = [c for c in DRIFT_MEASURES if c in units.columns and units[c].notna().any()]
    return {
        "setting": setting_text,
        "drift_measured": [DRIFT_MEASURES[c] for c in drift_cols],
        "drift_not_run": [DRIFT_MEASURES[c] for c in DRIFT_MEASURES if c not in drift_cols],
        "table1": _table1(),
        "table2": {"headers": [HEADERS.get(p, p) for p, _, _ in TABLE2_COLUMNS],
                   "paper": _paper_rows(load_paper_table("seesaw_table2"), "model", TABLE2_COLUMNS),
                   "ours": t2_ours, "not_run": t2_not_run},
        "table3": {"headers": [HEADERS.get(p, p) for p, _ in TABLE3_COLUMNS],
                   "paper": _paper_rows(load_paper_table("seesaw_table3"), "ae",
                                        tuple((p, None, ".4f" if "L1" in p else ".2f") for p, _ in TABLE3_COLUMNS)),
                   "ours": t3},
        "table4": t4,
        "fig4": cn_grids,
        "scatter": _scatter_figures(units),
        "table5": {"headers": [HEADERS.get(p, p) for p, _, _ in TABLE5_COLUMNS],
                   "paper": _paper_rows(load_paper_table("seesaw_table5"), "weight_name", TABLE5_COLUMNS),
                   "ours": t5_ours, "not_run": t5_not_run},
        "fig2": fig2_ctx,
    }
