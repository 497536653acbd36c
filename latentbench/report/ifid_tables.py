"""The iFID paper's Tables 1, 3, 4, 5 and Figure 1, computed from a study's own results.

:func:`ifid_section` turns ``results/<study>/metrics.csv`` (one row per tokenizer x backbone x
guidance scale) and the per-job JSON beside it into the context of
``report/templates/ifid.html.j2``; every number of ours is shown beside the paper's
(``report/paper/ifid_table*.csv``, spec metrics-ifid-seesaw.md Appendix A).

Conventions (spec §6): PCC = Pearson r, SRCC = Spearman rho, across tokenizers (unit = one
tokenizer), between a metric and the study's target (config ``analysis.target``, gFID by default;
"gFID" below means that target, except in Table 1); every metric oriented "lower = better"
(:func:`latentbench.analysis.regression.oriented` with ``better="lower"``: −PSNR, −SSIM; LPIPS,
rFID and the losses as they are), so with gFID a positive value means "the metric predicts gFID".
The paper's values are all correlations with gFID; with another target the page says so.
"Without guidance" is w = 1; "with guidance" is the largest w != 1 the study sampled (the
paper does not state its scale, spec §2.3). Inputs per table:

- Table 1: PCC of rFID and iFID with gFID(t), whatever the target (gFID(t) is intrinsically
  gFID's); t = 0 is rFID and t = 1.0 is the w = 1 gFID of metrics.csv (spec §2.4 step 5), the t
  in between come from
  ``metrics/<tok>/<backbone>/gfid_t.json`` ({"t", "gfid_t", "time", "num_images"}).
- Table 3: the metrics.csv columns of spec §5 plus rFID, −PSNR, −SSIM, LPIPS and iFID.
- Tables 4, 5: ``metrics/<tok>/ifid_variants.json`` ({"variants": [{"interpolation",
  "num_references", "reference_fraction", "k", "alpha", "ifid", "rfid"}], "feature_net"});
  row mapping of spec §3.4.
- Figure 1: rFID and iFID against the w = 1 gFID, one point per tokenizer.

A cell the study cannot compute carries a short reason (``why``) instead of a number.
"""

from __future__ import annotations

import copy
import functools
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.ticker import MaxNLocator

from latentbench.analysis.metric_info import METRICS
from latentbench.analysis.regression import flipped, oriented
from latentbench.config import backbone_order, ordered_names
from latentbench.io import read_json
from latentbench.report.cells import (
    PAPER_TARGET,
    CorrelationTable,
    Target,
    corr_cell,
    num,
    scale_text,
    study_target,
    why_cell,
)
from latentbench.report.figures import image_src, png_bytes
from latentbench.report.paper_values import load_paper_table

__all__ = ["TABLE3_ROWS", "ifid_section", "map_backbones"]

REQUIRED_COLUMNS = ("tokenizer", "backbone", "cfg_scale")
PAPER_BACKBONES = ("SiT-B", "SiT-XL")  # the two columns groups of iFID Table 3
_A3_PREFIX = {"SiT-B": "SiTB", "SiT-XL": "SiTXL"}  # spec A.3 column names
# Config backbone sizes (schema enum), smallest to largest; unknown sizes rank below "demo".
_SIZE_RANK = {"demo": 0, "S": 1, "B": 2, "L": 3, "XL": 4}

# iFID Table 3 rows in the paper's order: (metrics.csv column, A.3 row label). Orientation
# (spec §6, oriented(..., better="lower")): higher-is-better metrics (metric_info) are negated.
TABLE3_ROWS: tuple[tuple[str, str], ...] = (
    ("psnr", "-PSNR"),
    ("ssim", "-SSIM"),
    ("lpips", "LPIPS"),
    ("rfid", "rFID"),
    ("diffusion_loss", "Diffusion Loss"),
    ("eq_loss", "EQ Loss"),
    ("se_loss", "SE Loss"),
    ("vf_loss", "VF Loss"),
    ("gmm_loss", "GMM Loss"),
    ("ifid", "iFID"),
)

# iFID Table 1 (spec A.1): the t grid and its CSV column names.
TABLE1_COLUMNS = {0.0: "t=0(rFID)", 0.1: "t=0.1", 0.2: "t=0.2", 0.4: "t=0.4", 0.6: "t=0.6", 0.8: "t=0.8",
                  1.0: "t=1.0(gFID)"}
# iFID Table 4 (spec §3.4, A.4): ImageNet train has 1,281,167 images, the paper's "1000k".
IMAGENET_TRAIN = 1_281_167
A4_REFERENCE_FRACTIONS = {"50k": 50_000 / IMAGENET_TRAIN, "200k": 200_000 / IMAGENET_TRAIN, "1000k": 1.0}
INTERPOLATION_NAMES = {"linear": "Linear", "mask": "Mask", "slerp": "Spherical"}  # ours -> A.4 spelling
TABLE4_ALPHA = 0.5  # spec §3.4: every Table 4 row is at alpha = 0.5
README_EXTRA_VAES = ("VA-VAE (c64)",)  # spec A.6: in the README, not among the paper's 13 VAEs
MAX_POINT_LABELS = 30


# --------------------------------------------------------------------------- cells




def _paper_cell(value: float | None, why: str = "not in the paper") -> dict[str, Any]:
    """A paper value as printed (two decimals), or a dash with the reason as tooltip."""
    if value is None or not math.isfinite(value):
        return {"ok": False, "value": math.nan, "text": "—", "why": why}
    return {"ok": True, "value": float(value), "text": f"{value:.2f}", "why": None}


# --------------------------------------------------------------------------- study layout


@dataclass
class _Study:
    results: Path
    frame: pd.DataFrame
    config: dict
    target: Target  # config analysis.target: the y of Tables 3-5 and Figure 1
    tokenizers: list[str]
    backbones: list[str]
    n_boot: int
    seed: int
    table: CorrelationTable  # correlations.csv: cells that are one of its rows are read from it
    _rows: dict[tuple[str, float], pd.DataFrame] = field(default_factory=dict)

    def scales(self, backbone: str, column: str | None = None) -> list[float]:
        """The guidance scales at which ``backbone`` has values of ``column`` (default: the target)."""
        f, column = self.frame, column or self.target.column
        if column not in f.columns:
            return []
        return sorted(f.loc[(f["backbone"] == backbone) & f[column].notna(), "cfg_scale"].unique().tolist())

    def w_nocfg(self, backbone: str, column: str | None = None) -> float | None:
        """w = 1 when the backbone has ``column`` (the target) values there (spec §2.3: w/o cfg means w = 1)."""
        return 1.0 if any(np.isclose(self.scales(backbone, column), 1.0)) else None

    def w_cfg(self, backbone: str) -> float | None:
        """The largest sampled w != 1 (the paper's w/ cfg scale is unstated, spec §2.3)."""
        others = [w for w in self.scales(backbone) if not np.isclose(w, 1.0)]
        return max(others) if others else None

    def rows(self, backbone: str, scale: float) -> pd.DataFrame:
        """The metrics.csv rows of ``backbone`` at guidance ``scale``, indexed by tokenizer in study order (cached)."""
        key = (backbone, round(float(scale), 9))
        if key not in self._rows:
            self._rows[key] = self._select(backbone, scale)
        return self._rows[key]

    def _select(self, backbone: str, scale: float) -> pd.DataFrame:
        f = self.frame
        sel = f[(f["backbone"] == backbone) & np.isclose(f["cfg_scale"], scale)]
        dup = sel["tokenizer"][sel["tokenizer"].duplicated()]
        if len(dup):
            raise ValueError(f"frame: tokenizer {dup.iloc[0]!r} has several rows for backbone {backbone!r}, "
                             f"w = {scale_text(scale)}")
        sel = sel.set_index("tokenizer")
        return sel.loc[[t for t in self.tokenizers if t in sel.index]]

    def values(self, backbone: str, scale: float, column: str | None = None) -> pd.Series:
        """Per tokenizer, ``column`` (default: the target) of ``backbone`` at ``scale`` (NaN where missing)."""
        return self.rows(backbone, scale)[column or self.target.column].astype(float)

    def cell(self, x: pd.Series, y: pd.Series, row: tuple[str, str, float] | None = None) -> dict[str, Any]:
        """:func:`corr_cell` of x with ``y`` (a Series of the target) with the study's bootstrap settings.
        ``row`` = (metric, backbone, scale) when x is that metric oriented lower = better and y the
        target at that setting: in a one-family study that is a correlations.csv row, read from it."""
        result = None
        families = self.frame["family"].dropna().unique() if "family" in self.frame else []
        if row is not None and len(families) == 1:
            n = int(pd.concat([x, y], axis=1, join="inner").notna().all(axis=1).sum())
            metric, backbone, scale = row
            result = self.table.result(metric, str(families[0]), backbone, scale, n, flipped(metric, "lower"))
        return corr_cell(x, y, self.n_boot, self.seed, self.target.label, result)

    def per_tokenizer(self, metric: str) -> pd.Series:
        """A per-tokenizer column (rFID, iFID, ...) with one value per tokenizer, NaN where absent."""
        if metric not in self.frame.columns:
            return pd.Series(math.nan, index=self.tokenizers, dtype=float)
        first = self.frame.drop_duplicates("tokenizer").set_index("tokenizer")[metric].astype(float)
        return first.reindex(self.tokenizers)

    def measured(self, metric: str) -> bool:
        return metric in self.frame.columns and bool(self.frame[metric].notna().any())

    def not_run(self, metric: str) -> str:
        """Why a metric has no values: the reason a reconstruction job recorded (its ``not_run``,
        e.g. missing weights), else "not measured in this study" (not requested)."""
        for tok in self.tokenizers:
            path = self.results / "metrics" / tok / "reconstruction.json"
            why = (read_json(path).get("not_run") or {}).get(metric) if path.exists() else None
            if why:
                return str(why) if str(why).startswith("not run") else f"not run: {why}"
        return "not measured in this study"


def _size(name: str, config: dict) -> str | None:
    """A backbone's size: the config's ``size``, else an XL/B/S/L token in its name (e.g. "SiT-XL/2")."""
    size = (config.get("backbones") or {}).get(name, {}).get("size")
    if size:
        return str(size)
    match = re.search(r"(?i)(?<![a-z])(xl|l|b|s)(?![a-z])", name)
    return match.group(1).upper() if match else None


def map_backbones(backbones: Sequence[str], config: dict) -> tuple[dict[str, str | None], list[str]]:
    """Which of the paper's columns (SiT-B, SiT-XL) each of our backbones sits beside.

    A backbone of size B or XL takes the column of that name (the first in ``backbones`` order
    when several share a size). The other backbones, largest size first (ties in order), take
    the columns left over, SiT-XL first: SiT-XL is the paper's headline model and the only one
    of Tables 1, 4 and 5, so a study with one small backbone is compared with it. Backbones left
    without a column map to None. Returns the mapping and one sentence per backbone saying how.
    """
    mapping: dict[str, str | None] = {bb: None for bb in backbones}
    how: dict[str, str] = {}
    sizes = {bb: _size(bb, config) for bb in backbones}
    free = list(reversed(PAPER_BACKBONES))  # SiT-XL first
    for bb in backbones:
        column = {"B": "SiT-B", "XL": "SiT-XL"}.get(sizes[bb] or "")
        if column in free:
            mapping[bb] = column
            free.remove(column)
            how[bb] = f"{bb} (size {sizes[bb]}) → {column}: same size."
    rest = sorted((bb for bb in backbones if mapping[bb] is None),
                  key=lambda bb: -_SIZE_RANK.get(sizes[bb] or "", -1))
    for bb in rest:
        size = sizes[bb] or "unknown"
        if free:
            mapping[bb] = free.pop(0)
            how[bb] = (f"{bb} (size {size}) → {mapping[bb]}: by size order (the largest backbone without a "
                       "same-size paper column takes SiT-XL, the next SiT-B).")
        else:
            how[bb] = f"{bb} (size {size}): no paper column left; shown without paper values."
    return mapping, [how[bb] for bb in backbones]


def _study(results: Path, frame: pd.DataFrame, config: dict, n_boot: int, seed: int,
           correlations: pd.DataFrame | None) -> _Study:
    missing = [c for c in REQUIRED_COLUMNS if c not in frame.columns]
    if missing:
        raise ValueError(f"frame: missing column(s) {missing} (expected metrics.csv of a study)")
    frame = frame.assign(cfg_scale=frame["cfg_scale"].astype(float), tokenizer=frame["tokenizer"].astype(str),
                         backbone=frame["backbone"].astype(str))
    target = study_target(config, frame, results / "metrics.csv")
    tokenizers = ordered_names(list(config.get("tokenizers") or {}), frame["tokenizer"].tolist())
    return _Study(results, frame, config, target, tokenizers, backbone_order(config, frame), n_boot, seed,
                  CorrelationTable(correlations, target.column))


def _settings(study: _Study, backbone: str) -> list[dict[str, Any]]:
    """The two guidance settings of the paper's tables for one backbone, each with its scale or why not."""
    w0, wg = study.w_nocfg(backbone), study.w_cfg(backbone)
    return [
        {"key": "nocfg", "label": "w/o guidance", "w": w0, "w_text": "1" if w0 is not None else "n/a",
         "why": None if w0 is not None else "no w = 1 samples in this study"},
        {"key": "cfg", "label": "w/ guidance", "w": wg, "w_text": scale_text(wg) if wg is not None else "n/a",
         "why": None if wg is not None else "no guidance scale w ≠ 1 sampled"},
    ]


# --------------------------------------------------------------------------- Table 1


def _load_gfid_t(study: _Study, backbone: str) -> tuple[pd.DataFrame, list[str], set[str], list[int]]:
    """gFID(t) per tokenizer (rows) and t (columns, 0 < t < 1) from gfid_t.json, and what is missing."""
    series, missing, times, counts = {}, [], set(), []
    for tok in study.tokenizers:
        path = study.results / "metrics" / tok / backbone / "gfid_t.json"
        if not path.exists():
            missing.append(tok)
            continue
        data = read_json(path)
        t = [float(v) for v in data.get("t", [])]
        values = [math.nan if v is None else float(v) for v in data.get("gfid_t", [])]
        if len(t) != len(values):
            raise ValueError(f"{path}: 't' has {len(t)} entries, 'gfid_t' {len(values)}")
        # t = 0 and t = 1 come from metrics.csv (rFID and the w = 1 gFID, spec §2.4 step 5).
        series[tok] = pd.Series({round(ti, 6): v for ti, v in zip(t, values) if 0.0 < ti < 1.0}, dtype=float)
        times.add(str(data.get("time", "unstated")))
        if "num_images" in data:
            counts.append(int(data["num_images"]))
    frame = pd.DataFrame(series).T if series else pd.DataFrame()
    return frame, missing, times, counts


def _table1(study: _Study, mapping: dict[str, str | None]) -> dict[str, Any]:
    """iFID Table 1: PCC of rFID and iFID with gFID(t) per backbone, the paper's SiT-XL rows beside."""
    paper = load_paper_table("ifid_table1").set_index("metric")
    per_bb = {bb: _load_gfid_t(study, bb) for bb in study.backbones}
    grid = set(TABLE1_COLUMNS)
    for gt, _, _, _ in per_bb.values():
        grid.update(float(t) for t in gt.columns)
    grid = sorted(grid)
    columns = [{"t": t, "text": {0.0: "t = 0 (rFID)", 1.0: "t = 1.0 (gFID)"}.get(t, f"t = {scale_text(t)}"),
                "in_paper": t in TABLE1_COLUMNS} for t in grid]
    x = {"rfid": study.per_tokenizer("rfid"), "ifid": study.per_tokenizer("ifid")}
    notes, values = [], []
    ours: dict[str, list[dict[str, Any]]] = {"rFID": [], "iFID": []}
    for bb in study.backbones:
        gt, missing, times, counts = per_bb[bb]
        w0 = study.w_nocfg(bb, PAPER_TARGET)  # t = 1.0 is the study's gFID, whatever analysis.target is
        if missing and len(missing) < len(study.tokenizers):
            notes.append(f"{bb}: no gfid_t.json for {', '.join(missing)}; those tokenizers are left out of "
                         "the 0 < t < 1 columns.")
        if times:
            images = ""
            if counts:
                span = f"{min(counts)}" if min(counts) == max(counts) else f"{min(counts)}–{max(counts)}"
                images = f", {span} images per FID"
            notes.append(f"{bb}: gFID(t) in {', '.join(sorted(times))} sampler time (spec §2.4){images}.")
        targets: dict[float, pd.Series | str] = {}
        for t in grid:
            if t == 0.0:
                targets[t] = x["rfid"]
            elif t == 1.0:
                targets[t] = study.values(bb, w0, PAPER_TARGET) if w0 is not None else "no w = 1 gFID in this study"
            elif gt.empty:
                targets[t] = f"gFID(t) not computed in this study (no metrics/<tok>/{bb}/gfid_t.json)"
            elif t not in gt.columns:
                targets[t] = "t not in this study's gFID(t) grid"
            else:
                targets[t] = gt[t]
        for metric, label in (("rfid", "rFID"), ("ifid", "iFID")):
            cells = []
            for t in grid:
                y = targets[t]
                if not study.measured(metric):
                    cells.append(why_cell(f"{label} not measured in this study"))
                elif isinstance(y, str):
                    cells.append(why_cell(y))
                else:
                    cells.append(corr_cell(x[metric], y, study.n_boot, study.seed, "gFID(t)"))
            ours[label].append({"metric": label, "who": "ours", "backbone": bb, "cells": cells})
        value_rows = []
        for tok in study.tokenizers:
            cells = []
            for t in grid:
                y = targets[t]
                v = float(y.get(tok, math.nan)) if isinstance(y, pd.Series) else math.nan
                cells.append(num(v, ".4g"))
            value_rows.append({"tokenizer": tok, "cells": cells})
        values.append({"backbone": bb, "rows": value_rows})
    xl = [bb for bb, col in mapping.items() if col == "SiT-XL"]
    rows = []
    for label in ("rFID", "iFID"):
        # Per metric: our rows (one per backbone), then the paper's SiT-XL row.
        cells = [_paper_cell(float(paper.loc[label, TABLE1_COLUMNS[t]]) if t in TABLE1_COLUMNS else None,
                             "t not in the paper's grid") for t in grid]
        rows += [*ours[label], {"metric": label, "who": "paper", "backbone": "SiT-XL", "cells": cells}]
    available = any(c["ok"] for r in rows if r["who"] == "ours" for c in r["cells"])
    return {"available": available, "why": None if available else "no correlation could be computed "
            "(needs rFID/iFID and gFID for ≥ 3 tokenizers).", "columns": columns, "rows": rows,
            "per_tokenizer": values, "paper_backbone_ours": ", ".join(xl) or "none", "notes": notes}


# --------------------------------------------------------------------------- Table 3


def _table3(study: _Study, groups: list[dict[str, Any]]) -> dict[str, Any]:
    """iFID Table 3: every metric x backbone x {w/o, w/ guidance} x {PCC, SRCC} with the target, the paper's
    (with gFID) beside."""
    paper = load_paper_table("ifid_table3").set_index("metric")
    rows, notes = [], []
    for metric, label in TABLE3_ROWS:
        measured = study.measured(metric)
        row_why = ("the correlation target itself (analysis.target)" if metric == study.target.column
                   else None if measured else study.not_run(metric))
        cells = []
        for g in groups:
            if row_why or g["why"]:
                ours = why_cell(row_why or g["why"])
            else:
                units = study.rows(g["backbone"], g["w"])
                ours = study.cell(oriented(units, metric, "lower"), study.values(g["backbone"], g["w"]),
                                  (metric, g["backbone"], g["w"]))
            pcc = srcc = None
            if g["paper"]:
                prefix = f"{_A3_PREFIX[g['paper']]}_{g['key']}"
                pcc, srcc = paper.loc[label, f"{prefix}_PCC"], paper.loc[label, f"{prefix}_SRCC"]
            why = "no paper column for this backbone"
            cells.append({"ours": ours, "paper_pcc": _paper_cell(pcc, why), "paper_srcc": _paper_cell(srcc, why)})
        rows.append({"metric": metric, "label": label.replace("-", "−"), "why": row_why, "cells": cells})
    for metric in ("eq_loss", "se_loss"):
        if study.measured(metric):
            n_missing = int(study.per_tokenizer(metric).isna().sum())
            if n_missing:
                notes.append(f"{METRICS[metric].label}: not evaluated for {n_missing} tokenizer(s) "
                             "(2-D latents only, as in the paper).")
    available = any(c["ours"]["ok"] for r in rows for c in r["cells"])
    return {"available": available, "why": None if available else
            f"no correlation could be computed (needs {study.target.label} and the metrics for ≥ 3 tokenizers).",
            "rows": rows, "notes": notes}


# --------------------------------------------------------------------------- Tables 4, 5


def _load_variants(study: _Study) -> tuple[pd.DataFrame, list[str], list[str]]:
    """Every tokenizer's iFID variants as rows (tokenizer, interpolation, ..., ifid, rfid), missing files, nets."""
    rows, missing, nets = [], [], set()
    for tok in study.tokenizers:
        path = study.results / "metrics" / tok / "ifid_variants.json"
        if not path.exists():
            missing.append(tok)
            continue
        data = read_json(path)
        if not isinstance(data.get("variants"), list):
            raise ValueError(f"{path}: expected a list under 'variants'")
        nets.add(str(data.get("feature_net", "unstated")))
        for i, v in enumerate(data["variants"]):
            try:
                rows.append({"tokenizer": tok, "interpolation": str(v["interpolation"]),
                             "num_references": int(v["num_references"]),
                             "reference_fraction": round(float(v["reference_fraction"]), 6), "k": int(v["k"]),
                             "alpha": round(float(v["alpha"]), 6),
                             "ifid": math.nan if v["ifid"] is None else float(v["ifid"]),
                             "rfid": math.nan if v.get("rfid") is None else float(v["rfid"])})
            except (KeyError, TypeError, ValueError) as exc:
                raise ValueError(f"{path}: variants[{i}] is malformed ({exc!r})") from None
            if not 0.0 < rows[-1]["reference_fraction"] <= 1.0:
                raise ValueError(f"{path}: variants[{i}].reference_fraction must lie in (0, 1], "
                                 f"got {rows[-1]['reference_fraction']}")
    frame = pd.DataFrame(rows, columns=["tokenizer", "interpolation", "num_references", "reference_fraction", "k",
                                        "alpha", "ifid", "rfid"])
    return frame.drop_duplicates(["tokenizer", "interpolation", "reference_fraction", "k", "alpha"]), missing, \
        sorted(nets)


def _variant_why(missing: list[str], study: _Study) -> str | None:
    if len(missing) == len(study.tokenizers):
        return "not computed in this study (no metrics/<tok>/ifid_variants.json)."
    return None


def _target_cells(study: _Study, x: pd.Series, groups: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Correlation of per-tokenizer values ``x`` with the target in each (backbone, guidance) group."""
    return [why_cell(g["why"]) if g["why"] else study.cell(x, study.values(g["backbone"], g["w"])) for g in groups]


def _reference_class(fraction: float) -> str:
    """Which of Table 4's reference-set sizes (50k / 200k / 1000k of ImageNet train) a fraction stands for."""
    if fraction >= 1.0 - 1e-6:
        return "1000k"
    return min(("50k", "200k"), key=lambda c: abs(math.log(fraction / A4_REFERENCE_FRACTIONS[c])))


def _study_k(study: _Study) -> int:
    """The study's iFID K (config ifid.k; schema default 10 = the paper's, spec §3.1)."""
    return int((study.config.get("ifid") or {}).get("k", 10))


def _table4(study: _Study, variants: pd.DataFrame, missing: list[str], groups: list[dict[str, Any]]) -> dict:
    """iFID Table 4: (interpolation, reference set, K) at alpha 0.5 -> PCC/SRCC with the target, paper's beside."""
    paper = load_paper_table("ifid_table4")
    why = _variant_why(missing, study)
    if why:
        return {"available": False, "why": why, "rows": [], "notes": []}
    sel = variants[np.isclose(variants["alpha"], TABLE4_ALPHA)]
    keys = sel[["interpolation", "reference_fraction", "k"]].drop_duplicates().itertuples(index=False)
    ours = []
    for interp, fraction, k in keys:
        v = sel[(sel["interpolation"] == interp) & (sel["reference_fraction"] == fraction) & (sel["k"] == k)]
        refs = sorted(v["num_references"].unique().tolist())
        # Spec §3.4: K = 1 rows are the paper's K = 1; a K > 1 row stands beside its K = 10 row.
        match = paper[(paper["interpolation"] == INTERPOLATION_NAMES.get(interp, interp))
                      & (paper["n_ref_images"] == _reference_class(fraction)) & (paper["K"] == (1 if k == 1 else 10))]
        ours.append({"interp": interp, "fraction": fraction, "k": int(k), "refs": refs,
                     "paper_index": int(match.index[0]) if len(match) else None,
                     "x": v.set_index("tokenizer")["ifid"].reindex(study.tokenizers)})
    order = {name: i for i, name in enumerate(INTERPOLATION_NAMES)}
    ours.sort(key=lambda r: (r["paper_index"] if r["paper_index"] is not None else len(paper),
                             order.get(r["interp"], len(order)), r["fraction"], r["k"]))
    rows = []
    for r in ours:
        p = paper.loc[r["paper_index"]] if r["paper_index"] is not None else None
        rows.append({
            "interpolation": INTERPOLATION_NAMES.get(r["interp"], r["interp"]),
            "references": f"{'/'.join(str(n) for n in r['refs'])} ({100 * r['fraction']:.3g}% of train)",
            "k": str(r["k"]),
            "cells": _target_cells(study, r["x"], groups),
            "n_tokenizers": int(r["x"].notna().sum()),
            **_paper_t45(p, "n_ref_images", "K"),
        })
    matched = {r["paper_index"] for r in ours}
    for idx, p in paper.iterrows():
        if idx not in matched:
            rows.append({"interpolation": p["interpolation"], "references": "—", "k": "—",
                         "cells": [why_cell("not computed in this study") for _ in groups], "n_tokenizers": 0,
                         **_paper_t45(p, "n_ref_images", "K")})
    notes = []
    if missing:
        notes.append(f"no ifid_variants.json for {', '.join(missing)}; those tokenizers are left out.")
    return {"available": bool(ours), "why": None if ours else f"no alpha = {TABLE4_ALPHA} variants in "
            "ifid_variants.json.", "rows": rows, "notes": notes}


def _paper_t45(p: pd.Series | None, *label_columns: str) -> dict[str, Any]:
    """Paper cells of a Table 4 / 5 row (labels and the four gFID correlations), dashes when unmatched."""
    why = "no matching row in the paper"
    out = {f"paper_{c}": (str(p[c]) if p is not None else "—") for c in label_columns}
    for col in ("nocfg_PCC", "nocfg_SRCC", "cfg_PCC", "cfg_SRCC", "rFID_PCC", "rFID_SRCC"):
        out[f"paper_{col}"] = _paper_cell(float(p[col]) if p is not None and col in p.index else None, why)
    return out


def _table5(study: _Study, variants: pd.DataFrame, missing: list[str], groups: list[dict[str, Any]]) -> dict:
    """iFID Table 5: iFID(alpha) (slerp, full references, the study's K) vs rFID and vs the target, paper's beside."""
    paper = load_paper_table("ifid_table5")
    why = _variant_why(missing, study)
    k = _study_k(study)
    if why:
        return {"available": False, "why": why, "rows": [], "notes": [], "k": k}
    sel = variants[(variants["interpolation"] == "slerp") & (variants["reference_fraction"] >= 1.0 - 1e-6)
                   & (variants["k"] == k)]
    rfid_csv = study.per_tokenizer("rfid")
    rows, matched, notes = [], set(), []
    fallback = False
    for alpha in sorted(sel["alpha"].unique().tolist()):
        v = sel[sel["alpha"] == alpha].set_index("tokenizer").reindex(study.tokenizers)
        # rFID of the same pass (same latent sample, so iFID(0) = rFID exactly, spec §3.7);
        # metrics.csv's rFID where the variant file has none.
        rfid = v["rfid"].where(v["rfid"].notna(), rfid_csv)
        fallback |= bool((v["rfid"].isna() & v["ifid"].notna()).any())
        hit = paper[np.isclose(paper["alpha"], alpha)]
        p = hit.iloc[0] if len(hit) else None
        if p is not None:
            matched.add(int(hit.index[0]))
        rows.append({"alpha": scale_text(alpha), "rfid_cell": corr_cell(v["ifid"], rfid, study.n_boot, study.seed, "rFID"),
                     "cells": _target_cells(study, v["ifid"], groups), "n_tokenizers": int(v["ifid"].notna().sum()),
                     "sort": alpha, **_paper_t45(p)})
    for idx, p in paper.iterrows():
        if idx not in matched:
            rows.append({"alpha": scale_text(float(p["alpha"])), "rfid_cell": why_cell("not computed in this study"),
                         "cells": [why_cell("not computed in this study") for _ in groups], "n_tokenizers": 0,
                         "sort": float(p["alpha"]), **_paper_t45(p)})
    rows.sort(key=lambda r: r["sort"])
    if missing:
        notes.append(f"no ifid_variants.json for {', '.join(missing)}; those tokenizers are left out.")
    if fallback:
        notes.append("some variants carry no rFID; metrics.csv's rFID is used for them.")
    computed = bool(len(sel))
    return {"available": computed, "why": None if computed else
            f"no slerp / full-reference / K = {k} variants in ifid_variants.json.", "rows": rows, "notes": notes,
            "k": k}


# --------------------------------------------------------------------------- Figure 1


def _panel(ax, x: pd.Series, y: pd.Series, title: str, xlabel: str, ylabel: str) -> None:
    """One point per unit (labelled), OLS line, title as given."""
    pair = pd.concat([x.rename("x"), y.rename("y")], axis=1, join="inner").astype(float).dropna()
    ax.scatter(pair["x"], pair["y"], s=30, color="#0969da", edgecolor="white", linewidth=0.5, zorder=3)
    if len(pair) >= 2 and np.ptp(pair["x"].to_numpy()) > 0:
        slope, intercept = np.polyfit(pair["x"], pair["y"], 1)
        xs = np.array([pair["x"].min(), pair["x"].max()])
        ax.plot(xs, intercept + slope * xs, color="0.5", lw=1, zorder=2)
    if len(pair) <= MAX_POINT_LABELS:
        for name, row in pair.iterrows():
            ax.annotate(str(name), (row["x"], row["y"]), fontsize=6, xytext=(2, 2), textcoords="offset points",
                        color="0.3")
    ax.set_title(title, fontsize=8)
    ax.set_xlabel(xlabel, fontsize=8)
    ax.set_ylabel(ylabel, fontsize=8)
    ax.tick_params(labelsize=6)
    ax.xaxis.set_major_locator(MaxNLocator(4))
    ax.ticklabel_format(axis="both", style="sci", scilimits=(-3, 4))
    ax.xaxis.get_offset_text().set_fontsize(6)
    ax.yaxis.get_offset_text().set_fontsize(6)
    ax.grid(alpha=0.3)


def _r_text(cell: dict[str, Any]) -> str:
    return f"r = {cell['pcc_text']}, ρ = {cell['srcc_text']}" if cell["ok"] else cell["why"]


def _figure1(study: _Study) -> dict[str, Any]:
    """Figure 1: rFID and iFID vs the target (gFID) at w = 1, one row of panels per backbone."""
    panels, notes = [], []
    label = study.target.label
    for bb in study.backbones:
        w0 = study.w_nocfg(bb)
        if w0 is None:
            notes.append(f"{bb}: no w = 1 {label} in this study.")
            continue
        y = study.values(bb, w0)
        row = []
        for metric, name in (("rfid", "rFID"), ("ifid", "iFID")):
            if not study.measured(metric) or metric == study.target.column:
                notes.append(f"{name} is the correlation target (analysis.target)." if study.measured(metric)
                             else f"{name} not measured in this study.")
                continue
            x = study.per_tokenizer(metric)
            row.append({"metric": metric, "label": name, "x": x, "y": y, "cell": study.cell(x, y, (metric, bb, w0))})
        if row:
            panels.append((bb, row))
    if not panels:
        return {"available": False, "why": f"needs rFID or iFID and a w = 1 {label}.", "notes": notes, "cells": []}
    cols = max(len(r) for _, r in panels)
    fig, axes = plt.subplots(len(panels), cols, figsize=(3.3 * cols, 2.8 * len(panels)), squeeze=False)
    cells = []
    for (bb, row), ax_row in zip(panels, axes):
        for p, ax in zip(row, ax_row):
            _panel(ax, p["x"], p["y"], f"ours, {bb}, w = 1: {p['label']} vs {label}\n{_r_text(p['cell'])}",
                   p["label"], f"{label} (w = 1)")
            cells.append({"backbone": bb, "label": p["label"], **p["cell"]})
        for ax in ax_row[len(row):]:
            ax.axis("off")
    fig.tight_layout()
    return {"available": True, "why": None, "figure": image_src(fig, "ifid-figure1"), "cells": cells,
            "notes": notes, "readme": _readme_figure()}


def _readme_figure() -> dict[str, Any]:
    """The paper's side of Figure 1 (README values, spec A.6): its page ``src`` and r cells."""
    png, cells = _readme_png()
    return {"figure": image_src(png, "ifid-figure1-readme"), "cells": copy.deepcopy(cells)}


@functools.cache
def _readme_png() -> tuple[bytes, list[dict[str, Any]]]:
    """The paper's side of Figure 1 from the iFID README values (spec A.6): iFID vs gFID w/o cfg.

    The same for every study, so drawn once per process (callers get a copy).
    """
    table = load_paper_table("ifid_readme_values")
    table = table[~table["vae"].isin(README_EXTRA_VAES)].set_index("vae")
    fig, axes = plt.subplots(1, 2, figsize=(6.6, 2.8), squeeze=False)
    cells = []
    for ax, (col, name) in zip(axes[0], (("gFID_SiTXL_nocfg", "SiT-XL"), ("gFID_SiTB_nocfg", "SiT-B"))):
        cell = corr_cell(table["iFID"], table[col], 0, 0)
        _panel(ax, table["iFID"], table[col], f"iFID README, {name}, w/o cfg: iFID vs gFID\n{_r_text(cell)}",
               "iFID (README)", f"gFID {name} (README)")
        cells.append({"backbone": name, **cell})
    fig.tight_layout()
    return png_bytes(fig), cells


# --------------------------------------------------------------------------- entry point


def ifid_section(
    results_dir: str | Path, frame: pd.DataFrame, config: dict, n_boot: int = 1000, seed: int = 0,
    correlations: pd.DataFrame | None = None,
) -> dict[str, Any]:
    """Context of ``ifid.html.j2`` (pass it as ``ifid``): the iFID paper's tables on one study.

    ``results_dir`` is ``results/<study>`` (its ``metrics/`` holds ifid_variants.json and
    gfid_t.json), ``frame`` that study's metrics.csv, ``config`` its config (orders tokenizers
    and backbones; backbone sizes map them to the paper's SiT-B / SiT-XL columns, ``ifid.k`` is
    Table 5's K, ``analysis.target`` the y of Tables 3-5 and Figure 1). Bootstrap CIs use
    ``n_boot`` resamples with ``seed``; ``correlations`` (the study's correlations.csv, from the same
    config) supplies the Table 3 and Figure 1 cells of a one-family study (then exactly its rows)
    instead of a second bootstrap. Keys: ``available`` /
    ``why`` for the whole section, ``mapping`` (our backbone -> paper column, with the reason),
    ``table1``, ``table3``, ``table4``, ``table5``, ``figure1``, each with its own ``available``
    / ``why`` / ``notes``.
    """
    if not isinstance(frame, pd.DataFrame):
        raise ValueError(f"frame: expected a pandas DataFrame, got {type(frame).__name__}")
    if int(n_boot) != n_boot or n_boot < 0:
        raise ValueError(f"n_boot: expected a non-negative integer, got {n_boot}")
    if frame.empty:
        return {"available": False, "why": "metrics.csv has no rows."}
    study = _study(Path(results_dir), frame, config, int(n_boot), int(seed), correlations)
    mapping, how = map_backbones(study.backbones, config)
    groups = [{"backbone": bb, "paper": mapping[bb], **s} for bb in study.backbones for s in _settings(study, bb)]
    variants, missing, nets = _load_variants(study)
    feature_nets = sorted(set(frame["feature_net"].dropna().astype(str)) if "feature_net" in frame else set())
    recipes = sorted(set(frame["recipe"].dropna().astype(str))) if "recipe" in frame else []
    return {
        "available": True,
        "why": None,
        "study": config.get("study", ""),
        "n_tokenizers": len(study.tokenizers),
        "target_label": study.target.label,
        "target": study.target.context("lower"),
        "n_boot": int(n_boot),
        "feature_net": ", ".join(feature_nets) or "unstated",
        "variants_feature_net": ", ".join(nets),
        "demo_features": "demo-cnn" in feature_nets or "demo-cnn" in nets,
        "recipes": ", ".join(recipes),
        "mapping": [{"backbone": bb, "paper": mapping[bb] or "none", "how": h} for bb, h in zip(study.backbones, how)],
        "xl_backbones": ", ".join(bb for bb in study.backbones if mapping[bb] == "SiT-XL") or "none",
        "groups": [{k: g[k] for k in ("backbone", "paper", "key", "label", "w_text", "why")} for g in groups],
        "table1": {"notes": [], **_table1(study, mapping)},
        "table3": _table3(study, groups),
        "table4": _table4(study, variants, missing, groups),
        "table5": _table5(study, variants, missing, groups),
        "figure1": _figure1(study),
    }
