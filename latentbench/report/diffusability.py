"""The diffusability study's analyses for the HTML report (spec metrics-diffusability.md §13).

:func:`diffusability_section` turns a study's ``metrics.csv`` frame and its per-tokenizer JSON
(``metrics/<tok>/latent.json`` with the VIV(t) curve, ``metrics/<tok>/<backbone>/trajectory.json``)
into the context of ``report/templates/diffusability.html.j2``: figures as PNG data URIs,
tables as rows of preformatted cells.

Analyses, each on the study's own results (unit = one tokenizer, spec §13 common rules), with
the study's correlation target (config ``analysis.target``, gFID by default; "gFID" below) as y:
  - Fig. 4 perspective overview on the primary setting (the family with the most tokenizers,
    the first backbone, guidance w = 1), x oriented "larger = better latent" (§1.6), y gFID,
    Pearson r with bootstrap CI; the perspectives ranked by their best metric (main proxy);
  - Figs. 5-6 stability table: r of the six main proxies per backbone, per tokenizer family and
    per guidance scale;
  - Figs. 7/25 guidance sweep: gFID(w) per tokenizer, the best w, r with the best-CFG gFID;
  - Fig. 8 two-metric regression of gFID on every pair of main proxies, terrain plot of the best;
  - Figs. 9-10 trajectories: straightness / efficiency vs gFID and the per-segment length ratio
    with the VIV(t) overlay (§2.6, §9).
An analysis the study cannot support (too few tokenizers, one family, one guidance scale) is
replaced by a sentence saying why, never by an error. The paper's values quoted beside ours are
correlations with gFID; with another target the page says they are not comparable.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator

from latentbench.analysis.correlation import correlate
from latentbench.analysis.metric_info import info
from latentbench.analysis.regression import (
    all_pairs,
    flipped,
    oriented,
    oriented_label,
    two_metric_regression,
)
from latentbench.config import backbone_order, most_trained_backbone, ordered_names
from latentbench.io import read_json
from latentbench.report.cells import (
    CorrelationTable,
    Target,
    num,
    r_colour,
    scale_text,
    study_target,
)
from latentbench.report.figures import image_src

__all__ = ["MAIN_PROXIES", "PERSPECTIVES", "backbone_order", "diffusability_section"]

MIN_UNITS_R = 3  # a Pearson r needs three tokenizers (correlate returns NaN below)
MIN_UNITS_FIT = 4  # the two-metric plane has three parameters (regression.MIN_UNITS)
MAX_POINT_LABELS = 30  # above this many tokenizers, points are not labelled

# Spec §13 Fig. 4: the seven perspectives and their metrics, in the paper's panel order.
PERSPECTIVES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("Velocity ambiguity", ("viv",)),
    ("Semantic separability", ("lnc",)),
    ("Spatial structure", ("lds", "cds", "srss")),
    ("Spectral smoothness", ("sec",)),
    ("Manifold continuity", ("ifid",)),
    ("Distribution uniformity", ("normalized_entropy", "density_cv", "gini")),
    ("Affine equivariance", ("scale_eq", "rotate_eq")),
)
# The paper's main proxy per perspective (spec §13 Fig. 4); affine equivariance was dropped.
PAPER_MAIN_PROXY = {
    "Velocity ambiguity": "viv",
    "Semantic separability": "lnc",
    "Spatial structure": "srss",
    "Spectral smoothness": "sec",
    "Manifold continuity": "ifid",
    "Distribution uniformity": "normalized_entropy",
    "Affine equivariance": None,
}
# Spec §13: the six main proxies used by Figs. 5-8.
MAIN_PROXIES: tuple[str, ...] = ("viv", "lnc", "srss", "sec", "ifid", "normalized_entropy")
# Spec §13 common rules: the regulariser clusters that colour the points, in the paper's order.
CLUSTERS: tuple[str, ...] = ("baseline", "mcos+mdms", "mcos", "mdms", "repa", "eq", "lcr", "lmr", "mae")
ID_COLUMNS = ("tokenizer", "family", "regularizer", "backbone", "cfg_scale")
# Figs. 17-24: the primary setting's r against these generation columns too, when measured and not
# the target: (column, figure, sign of r for a predictive proxy oriented larger = better latent).
EXTRA_TARGETS: tuple[tuple[str, str, int], ...] = (("is", "IS (Figs. 17-23; r > 0 is good)", 1),
                                                   ("fdr6", "FDr6 (Fig. 24)", -1))


# --------------------------------------------------------------------------- formatting


def _uri(fig, name: str = "diffusability") -> str:
    """Page ``src`` of a matplotlib figure (closes it): a file in the report, or a data URI."""
    return image_src(fig, name)


def _corr_cell(x: np.ndarray, y: np.ndarray, n_boot: int, seed: int, sign: int,
               result: dict[str, Any] | None = None) -> dict[str, Any]:
    """Pearson r of x with y (correlate, or ``result`` when given), raw numbers plus strings for the
    template; the cell is blue when ``sign * r > 0`` (the direction in which x predicts y, :func:`r_colour`)."""
    res = result if result is not None else correlate(x, y, n_boot=n_boot, seed=seed)
    lo, hi = res["pcc_ci"]
    return {
        "r": res["pcc"],
        "lo": lo,
        "hi": hi,
        "p": res["pcc_p"],
        "n": res["n"],
        "text": num(res["pcc"], "+.2f"),
        "ci_text": f"[{num(lo, '+.2f')}, {num(hi, '+.2f')}]" if n_boot else "",
        "p_text": num(res["pcc_p"], ".2g"),
        "colour": r_colour(res["pcc"], sign=sign),
    }


# --------------------------------------------------------------------------- study layout


@dataclass
class _Study:
    frame: pd.DataFrame
    results: Path
    target: Target  # config analysis.target: the y of every analysis
    tokenizers: list[str]  # study order (config order, then any others in the frame)
    families: list[str]  # primary first
    backbones: list[str]  # primary first (backbone_order)
    scales: list[float]  # ascending
    family: str
    backbone: str
    w0: float  # the guidance scale of the no-CFG analyses (1.0 when measured)
    n_boot: int
    seed: int
    table: CorrelationTable  # correlations.csv: cells that are one of its rows are read from it

    def units(self, family: str | None = None, backbone: str | None = None, scale: float | None = None) -> pd.DataFrame:
        """One row per tokenizer of ``family`` at (backbone, scale) with a target value, in study order."""
        family = self.family if family is None else family
        backbone = self.backbone if backbone is None else backbone
        scale = self.w0 if scale is None else scale
        f = self.frame
        sel = f[(f["family"] == family) & (f["backbone"] == backbone) & np.isclose(f["cfg_scale"], scale)]
        sel = sel[sel[self.y].notna()]
        dup = sel["tokenizer"][sel["tokenizer"].duplicated()]
        if len(dup):
            raise ValueError(
                f"frame: tokenizer {dup.iloc[0]!r} has several rows for backbone {backbone!r}, w = {scale:g}"
            )
        return self._ordered(sel)

    def best_units(self, family: str | None = None, backbone: str | None = None) -> pd.DataFrame:
        """Per tokenizer, the row of its best target value (lowest gFID) over the guidance scales, with ``best_w``."""
        family = self.family if family is None else family
        backbone = self.backbone if backbone is None else backbone
        f = self.frame
        sel = f[(f["family"] == family) & (f["backbone"] == backbone) & f[self.y].notna()]
        if sel.empty:
            return sel.assign(best_w=pd.Series(dtype=float))
        by_tok = sel.groupby("tokenizer")[self.y]
        best = sel.loc[by_tok.idxmax() if self.target.higher_is_better else by_tok.idxmin()]
        return self._ordered(best.assign(best_w=best["cfg_scale"].astype(float)))

    @property
    def y(self) -> str:
        """The target's metrics.csv column."""
        return self.target.column

    def cell(self, x: np.ndarray, y: np.ndarray, sign: int | None = None,
             row: tuple[str, str, str, float] | None = None) -> dict[str, Any]:
        """:func:`_corr_cell` with the study's bootstrap settings; ``sign`` defaults to the target's
        predictive direction for x oriented larger = better latent. ``row`` = (metric, family,
        backbone, scale) when x is that oriented metric and y the target over that setting's
        tokenizers: the cell is then correlations.csv's row if it has the same tokenizers."""
        result = None
        if row is not None:
            n = int((~(np.isnan(x) | np.isnan(y))).sum())
            result = self.table.result(*row, n=n, flip=flipped(row[0], "larger"))
        sign = self.target.predicts_sign("larger") if sign is None else sign
        return _corr_cell(x, y, self.n_boot, self.seed, sign, result)

    def family_backbone(self, family: str) -> str:
        """The backbone of a family's Fig. 6 column: the primary one if trained on that family, else
        the family's backbone with the most tokenizers (ties in study order)."""
        f = self.frame[self.frame["family"] == family]
        return self.backbone if self.backbone in set(f["backbone"]) else most_trained_backbone(f, self.backbones)

    def _ordered(self, sel: pd.DataFrame) -> pd.DataFrame:
        rank = {t: i for i, t in enumerate(self.tokenizers)}
        return sel.iloc[np.argsort([rank[t] for t in sel["tokenizer"]], kind="stable")].reset_index(drop=True)

    def measured(self, metric: str, units: pd.DataFrame | None = None) -> bool:
        """The metric is a column with at least one value (in ``units`` if given)."""
        frame = self.frame if units is None else units
        return metric in frame.columns and bool(frame[metric].notna().any())

    def setting_text(self, family: str | None = None, backbone: str | None = None, scale: float | None = None) -> str:
        family = self.family if family is None else family
        backbone = self.backbone if backbone is None else backbone
        scale = self.w0 if scale is None else scale
        return f"{family}, {backbone}, w = {scale_text(scale)}"


def _study(results: Path, frame: pd.DataFrame, config: dict, n_boot: int, seed: int,
           correlations: pd.DataFrame | None) -> _Study:
    missing = [c for c in ID_COLUMNS if c not in frame.columns]
    if missing:
        raise ValueError(f"frame: missing column(s) {missing} (expected metrics.csv of a study)")
    target = study_target(config, frame, results / "metrics.csv")
    frame = frame.assign(cfg_scale=frame["cfg_scale"].astype(float))
    tokenizers = ordered_names(list(config.get("tokenizers", {})), frame["tokenizer"].tolist())
    backbones = backbone_order(config, frame)
    counts = frame.groupby("family", sort=False)["tokenizer"].nunique()
    # Primary family: the one with the most tokenizers (the paper's conv-f16d32 has 43 of 86);
    # on ties, the family of the earliest tokenizer in the study order.
    first_seen = {fam: min(tokenizers.index(t) for t in g["tokenizer"]) for fam, g in frame.groupby("family")}
    families = sorted(counts.index, key=lambda fam: (-counts[fam], first_seen[fam]))
    scales = sorted(frame["cfg_scale"].unique().tolist())
    w0 = 1.0 if any(np.isclose(scales, 1.0)) else scales[0]
    return _Study(frame, results, target, tokenizers, families, backbones, scales, families[0], backbones[0], w0,
                  n_boot, seed, CorrelationTable(correlations, target.column))


def _palette(names: Sequence[str]) -> dict[str, tuple]:
    colours = sns.color_palette("tab10", 10) if len(names) <= 10 else sns.color_palette("husl", len(names))
    return dict(zip(names, colours))


def _regulariser_palette(frame: pd.DataFrame) -> dict[str, tuple]:
    """Fixed colour per regulariser cluster (paper order first), so every figure agrees."""
    present = set(frame["regularizer"].astype(str))
    return _palette([c for c in CLUSTERS] + sorted(present - set(CLUSTERS)))


def _theme():
    return sns.axes_style("whitegrid")


# --------------------------------------------------------------------------- plotting helpers


def _scatter_panel(
    ax, units: pd.DataFrame, x: np.ndarray, target: Target, palette: dict, title: str, xlabel: str,
    highlight: bool = False,
) -> None:
    """x vs the target (gFID), points coloured by regulariser and labelled by tokenizer, OLS line (spec §13)."""
    y = units[target.column].to_numpy(float)
    regs = units["regularizer"].astype(str).tolist()
    ok = np.isfinite(x) & np.isfinite(y)
    colours = [palette[r] for r, k in zip(regs, ok) if k]
    ax.scatter(x[ok], y[ok], c=colours, s=28, edgecolor="white", linewidth=0.5, zorder=3)
    if ok.sum() >= 2 and np.ptp(x[ok]) > 0:
        slope, intercept = np.polyfit(x[ok], y[ok], 1)
        xs = np.array([x[ok].min(), x[ok].max()])
        ax.plot(xs, intercept + slope * xs, color="0.45", lw=1, zorder=2)
    if ok.sum() <= MAX_POINT_LABELS:
        for name, xi, yi in zip(units["tokenizer"][ok], x[ok], y[ok]):
            ax.annotate(name, (xi, yi), fontsize=6, xytext=(2, 2), textcoords="offset points", color="0.25")
    ax.set_title(title, fontsize=8)
    ax.set_xlabel(xlabel, fontsize=8)
    ax.set_ylabel(target.label, fontsize=8)
    ax.tick_params(labelsize=6)
    ax.xaxis.set_major_locator(MaxNLocator(4))
    ax.ticklabel_format(axis="both", style="sci", scilimits=(-3, 4))
    ax.xaxis.get_offset_text().set_fontsize(6)
    ax.yaxis.get_offset_text().set_fontsize(6)
    if highlight:
        for spine in ax.spines.values():
            spine.set_edgecolor("#cf222e")
            spine.set_linewidth(1.6)


def _regulariser_legend(fig, units: pd.DataFrame, palette: dict) -> None:
    present = [r for r in palette if r in set(units["regularizer"].astype(str))]
    handles = [Line2D([], [], marker="o", ls="", color=palette[r], label=r) for r in present]
    fig.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=min(len(handles), 9),
               fontsize=7, frameon=False, title="regulariser", title_fontsize=7)


# --------------------------------------------------------------------------- Fig. 4


def _overview(study: _Study) -> dict[str, Any]:
    """Fig. 4: one panel per metric grouped by perspective, and the perspective ranking."""
    units = study.units()
    out: dict[str, Any] = {"setting": study.setting_text(), "n": len(units), "notes": []}
    if len(units) < MIN_UNITS_R:
        return {**out, "available": False,
                "why": f"needs at least {MIN_UNITS_R} tokenizers with a {study.target.label} at {study.setting_text()}; "
                       f"this study has {len(units)}."}
    y = units[study.y].to_numpy(float)
    panels, ranking, unmeasured = [], [], []
    for perspective, metrics in PERSPECTIVES:
        cells = []
        for metric in metrics:
            if not study.measured(metric, units):
                unmeasured.append(info(metric).label)
                continue
            x = oriented(units, metric).to_numpy()
            cells.append({"metric": metric, "label": oriented_label(metric), "x": x,
                          **study.cell(x, y, row=(metric, study.family, study.backbone, study.w0))})
        defined = [c for c in cells if math.isfinite(c["r"])]
        best = max(defined, key=lambda c: abs(c["r"])) if defined else None
        for c in cells:
            panels.append({"perspective": perspective, "main": c is best, **c})
        paper = PAPER_MAIN_PROXY[perspective]
        ranking.append({
            "perspective": perspective,
            "main_proxy": best["label"] if best else "n/a",
            "metric": best["metric"] if best else None,
            "r": best["r"] if best else math.nan,
            "abs_r": abs(best["r"]) if best else math.nan,
            "cell": best,
            "others": ", ".join(f"{c['label']} {c['text']}" for c in cells if c is not best) or "—",
            "paper_main": oriented_label(paper) if paper else "dropped (lowest |r|)",
            "agrees": best is not None and best["metric"] == paper,
            "measured": bool(cells),
        })
    ranking.sort(key=lambda row: -row["abs_r"] if math.isfinite(row["abs_r"]) else math.inf)
    for rank, row in enumerate(ranking, 1):
        row["rank"] = rank
    if unmeasured:
        out["notes"].append(f"not measured in this study: {', '.join(unmeasured)}.")
    if not panels:
        return {**out, "available": False, "why": "none of the Fig. 4 metrics was measured in this study."}

    palette = _regulariser_palette(study.frame)
    cols = min(4, len(panels))
    rows = math.ceil(len(panels) / cols)
    with _theme():
        fig, axes = plt.subplots(rows, cols, figsize=(2.45 * cols, 2.15 * rows), squeeze=False)
        for ax, p in zip(axes.flat, panels):
            _scatter_panel(ax, units, p["x"], study.target, palette,
                           f"{p['perspective']}\n{p['label']}: r = {p['text']}", p["label"], highlight=p["main"])
        for ax in list(axes.flat)[len(panels):]:
            ax.axis("off")
        fig.tight_layout()
        _regulariser_legend(fig, units, palette)
        figure = _uri(fig, "diffusability-fig4")
    top = ranking[0] if math.isfinite(ranking[0]["abs_r"]) else None
    for p in panels:
        del p["x"]
    return {**out, "available": True, "why": None, "figure": figure, "ranking": ranking, "panels": panels,
            "top": top}


# --------------------------------------------------------------------------- Figs. 5-6


def _stability(study: _Study) -> dict[str, Any]:
    """Figs. 5-6 and the §13 stability summary: r of the main proxies per setting."""
    proxies = [m for m in MAIN_PROXIES if study.measured(m)]
    notes = []
    if len(study.backbones) < 2:
        notes.append(f"Fig. 5 (other backbones): this study has one backbone ({study.backbone}); "
                     "add a second backbone to test generalisation across diffusion models.")
    if len(study.families) < 2:
        notes.append(f"Fig. 6 (other tokenizer families): this study has one tokenizer family ({study.family}); "
                     "add tokenizers of a second family (e.g. conv-f16d64 or trans-f16d32) to test it.")
    if len(study.scales) < 2:
        notes.append("guidance columns: this study samples one guidance scale only.")
    unmeasured = [oriented_label(m) for m in MAIN_PROXIES if m not in proxies]
    if unmeasured:
        notes.append(f"main proxies not measured in this study: {', '.join(unmeasured)}.")
    settings: list[tuple[str, str, dict]] = []
    for bb in study.backbones:
        kind = "primary (Fig. 4)" if bb == study.backbone else "backbone (Fig. 5)"
        settings.append((study.setting_text(backbone=bb), kind, {"backbone": bb}))
    for fam in study.families[1:]:
        bb = study.family_backbone(fam)
        settings.append((study.setting_text(family=fam, backbone=bb), "family (Fig. 6)", {"family": fam, "backbone": bb}))
    for w in study.scales:
        if not np.isclose(w, study.w0):
            settings.append((study.setting_text(scale=w), "guidance", {"scale": w}))
    # Figs. 17-24: the primary setting against IS (higher is better: good proxies give r > 0) and FDr6
    for column, figure, sign in EXTRA_TARGETS:
        if column == study.y:
            continue
        if column in study.frame.columns and study.frame[column].notna().any():
            settings.append((f"{study.setting_text()} vs {figure.split(' ')[0]}", figure,
                             {"target": (column, sign)}))
        elif column == "fdr6":
            notes.append("FDr6 column: not run in this study (see 'Metrics not run' for the missing weights).")
    columns, unit_sets, targets, panels = [], [], [], []
    for label, kind, where in settings:
        targets.append(where.pop("target", (study.y, None)))
        panels.append(targets[-1][0] == study.y and "scale" not in where)  # a row of the Figs. 5-6 grid
        units = study.units(**where)
        columns.append({"label": label, "kind": kind, "n": len(units), "family": where.get("family", study.family),
                        "backbone": where.get("backbone", study.backbone),
                        "w": scale_text(where.get("scale", study.w0)), "scale": where.get("scale", study.w0)})
        unit_sets.append(units)
    if not proxies or max(len(u) for u in unit_sets) < MIN_UNITS_R:
        return {"available": False, "notes": notes,
                "why": f"needs at least {MIN_UNITS_R} tokenizers with {study.target.label} in one setting and a "
                       "measured main proxy."}
    rows = []
    for metric in proxies:
        cells = []
        for units, (column, sign), setting in zip(unit_sets, targets, columns):
            x = oriented(units, metric).to_numpy() if len(units) else np.array([])
            row = (metric, setting["family"], setting["backbone"], setting["scale"]) if column == study.y else None
            cells.append(study.cell(x, units[column].to_numpy(float), sign, row))
        rows.append({"metric": metric, "label": oriented_label(metric), "cells": cells})
    # The paper's Figs. 5-6 panels: one row per backbone / family setting, one column per main proxy
    grid = [(c, u, [row["cells"][i] for row in rows]) for i, (c, u) in enumerate(zip(columns, unit_sets))
            if panels[i] and len(u)]
    figure = None
    if len(grid) > 1:
        palette = _regulariser_palette(study.frame)
        with _theme():
            fig, axes = plt.subplots(len(grid), len(proxies), figsize=(2.3 * len(proxies), 2.1 * len(grid)),
                                     squeeze=False)
            for ax_row, (column, units, cells) in zip(axes, grid):
                where = f"{column['family']}, {column['backbone']}" if len(study.families) > 1 else column["backbone"]
                for ax, metric, cell in zip(ax_row, proxies, cells):
                    _scatter_panel(ax, units, oriented(units, metric).to_numpy(), study.target, palette,
                                   f"{where}\n{oriented_label(metric)}: r = {cell['text']}", oriented_label(metric))
            fig.tight_layout()
            _regulariser_legend(fig, study.frame, palette)
            figure = _uri(fig, "diffusability-fig5-6")
    return {"available": True, "why": None, "notes": notes, "columns": columns, "rows": rows,
            "multi_family": len(study.families) > 1, "figure": figure}


# --------------------------------------------------------------------------- Figs. 7 / 25


def _guidance(study: _Study) -> dict[str, Any]:
    """Fig. 25 gFID(w) curves with the best w per tokenizer; Fig. 7 r with the best-CFG gFID (the target's)."""
    if len(study.scales) < 2:
        return {"available": False,
                "why": f"this study samples one guidance scale (w = {scale_text(study.scales[0])}); "
                       "the sweep needs two or more (config sampling.cfg_scales)."}
    palette = _palette(study.tokenizers)
    proxies = [m for m in MAIN_PROXIES if study.measured(m)]
    panels, best_rows, r_rows, trend = [], {}, {m: [] for m in proxies}, []
    for bb in study.backbones:
        f = study.frame
        sel = f[(f["family"] == study.family) & (f["backbone"] == bb) & f[study.y].notna()]
        best = study.best_units(backbone=bb)
        panels.append((bb, sel, best))
        at_w0 = study.units(backbone=bb).set_index("tokenizer")[study.y]
        for _, row in best.iterrows():
            entry = best_rows.setdefault(row["tokenizer"], {"tokenizer": row["tokenizer"], "cells": {}})
            entry["cells"][bb] = {"best_w": scale_text(row["best_w"]), "value": num(row[study.y], ".4g"),
                                  "value_w0": num(float(at_w0.get(row["tokenizer"], math.nan)), ".4g")}
        y = best[study.y].to_numpy(float)
        for m in proxies:
            r_rows[m].append(study.cell(oriented(best, m).to_numpy(), y))
        # Paper (Fig. 25): better tokenizers have smaller optimal CFG -> r(w*, gFID at w0) > 0
        # (r < 0 with a higher-is-better target): w* is read lower = better.
        g0 = np.array([at_w0.get(t, math.nan) for t in best["tokenizer"]], dtype=float)
        cell = study.cell(best["best_w"].to_numpy(float), g0, study.target.predicts_sign("lower"))
        trend.append({"backbone": bb, "cell": cell,
                      "w_range": f"{scale_text(best['best_w'].min())}–{scale_text(best['best_w'].max())}"
                      if len(best) else "n/a"})
    with _theme():
        cols = min(4, len(panels))
        rows = math.ceil(len(panels) / cols)
        fig, axes = plt.subplots(rows, cols, figsize=(3.4 * cols, 2.6 * rows), squeeze=False)
        for ax, (bb, sel, best) in zip(axes.flat, panels):
            for tok, g in sel.groupby("tokenizer", sort=False):
                g = g.sort_values("cfg_scale")
                ax.plot(g["cfg_scale"], g[study.y], marker="o", ms=3, lw=1.2, color=palette[tok], label=tok)
            ax.scatter(best["best_w"], best[study.y], marker="*", s=110, c=[palette[t] for t in best["tokenizer"]],
                       edgecolor="black", linewidth=0.6, zorder=4)
            ax.set_title(f"{study.family}, {bb}: {study.target.label} vs guidance (★ = best w)", fontsize=8)
            ax.set_xlabel("guidance scale w", fontsize=8)
            ax.set_ylabel(study.target.label, fontsize=8)
            ax.tick_params(labelsize=6)
            ax.ticklabel_format(axis="y", style="sci", scilimits=(-3, 4))
            ax.yaxis.get_offset_text().set_fontsize(6)
        for ax in list(axes.flat)[len(panels):]:
            ax.axis("off")
        fig.tight_layout()
        in_family = set(study.frame.loc[study.frame["family"] == study.family, "tokenizer"])
        handles = [Line2D([], [], color=palette[t], marker="o", ms=3, label=t)
                   for t in study.tokenizers if t in in_family]
        fig.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=min(len(handles), 8),
                   fontsize=7, frameon=False)
        figure = _uri(fig, "diffusability-fig7")
    return {
        "available": True,
        "why": None,
        "setting": f"{study.family}, guidance grid {{{', '.join(scale_text(w) for w in study.scales)}}}",
        "figure": figure,
        "backbones": study.backbones,
        "best": [best_rows[t] for t in study.tokenizers if t in best_rows],
        "rows": [{"metric": m, "label": oriented_label(m), "cells": r_rows[m]} for m in proxies],
        "trend": trend,
        "notes": ([] if len(study.scales) > 2 else
                  ["two guidance scales only: the best w is one of the two, so the optimum is not resolved."])
        + ([f"curves and r for the primary family ({study.family}) only, as the paper's Figs. 7 and 25."]
           if len(study.families) > 1 else []),
    }


# --------------------------------------------------------------------------- Fig. 8


def _terrain(units: pd.DataFrame, a: str, b: str, fit: dict, target: Target, palette: dict) -> str:
    """x = z(A), y = z(B), bubble area ∝ the target (gFID), background = the fitted plane (spec §13 Fig. 8)."""
    xa, xb = oriented(units, a).to_numpy(), oriented(units, b).to_numpy()
    y = units[target.column].to_numpy(float)
    ok = np.isfinite(xa) & np.isfinite(xb) & np.isfinite(y)
    za = (xa - xa[ok].mean()) / xa[ok].std()
    zb = (xb - xb[ok].mean()) / xb[ok].std()
    beta0, beta_a, beta_b = fit["coef"]
    pad = 0.5
    ga, gb = np.meshgrid(np.linspace(za[ok].min() - pad, za[ok].max() + pad, 60),
                         np.linspace(zb[ok].min() - pad, zb[ok].max() + pad, 60))
    with _theme():
        fig, ax = plt.subplots(figsize=(4.6, 3.7))
        terrain = ax.contourf(ga, gb, beta0 + beta_a * ga + beta_b * gb, levels=14, cmap="RdYlGn_r", alpha=0.55)
        cbar = fig.colorbar(terrain, ax=ax)
        cbar.set_label(f"fitted {target.label}", fontsize=7)
        cbar.ax.tick_params(labelsize=6)
        area = 260 * y[ok] / np.max(np.abs(y[ok]))
        regs = units["regularizer"].astype(str).to_numpy()[ok]
        ax.scatter(za[ok], zb[ok], s=np.clip(area, 8, None), c=[palette[r] for r in regs],
                   edgecolor="black", linewidth=0.6, zorder=3)
        if ok.sum() <= MAX_POINT_LABELS:
            for name, xi, yi in zip(units["tokenizer"][ok], za[ok], zb[ok]):
                ax.annotate(name, (xi, yi), fontsize=6, xytext=(4, 4), textcoords="offset points")
        ax.set_xlabel(f"{oriented_label(a)} (z-scored)", fontsize=8)
        ax.set_ylabel(f"{oriented_label(b)} (z-scored)", fontsize=8)
        ax.set_title(f"{oriented_label(a)} + {oriented_label(b)}: R² = {fit['r2']:.2f} "
                     f"(bubble area ∝ {target.label})", fontsize=8)
        ax.tick_params(labelsize=6)
        ax.grid(False)
        fig.tight_layout()
        _regulariser_legend(fig, units[ok], palette)
        return _uri(fig, "diffusability-fig8")


def _regression(study: _Study) -> dict[str, Any]:
    """Fig. 8: R² of the target (gFID) on every pair of main proxies, the best pair's terrain."""
    units = study.units()
    proxies = [m for m in MAIN_PROXIES if study.measured(m, units)]
    if len(proxies) < 2:
        return {"available": False, "why": "needs at least two measured main proxies."}
    n_complete = int(units[proxies + [study.y]].notna().all(axis=1).sum()) if len(units) else 0
    n_any = max((int(units[[a, b, study.y]].notna().all(axis=1).sum()) for a in proxies for b in proxies if a != b),
                default=0)
    if n_any < MIN_UNITS_FIT:
        return {"available": False,
                "why": f"a two-metric fit has three parameters and needs at least {MIN_UNITS_FIT} tokenizers; "
                       f"{study.setting_text()} has {len(units)}."}
    oriented_units = units.assign(**{m: oriented(units, m) for m in proxies})
    table = all_pairs(oriented_units, proxies, study.y)
    best_idx = table["r2"].first_valid_index()
    rows = []
    for i, row in table.iterrows():
        rows.append({
            "a": oriented_label(row["a"]),
            "b": oriented_label(row["b"]),
            "metrics": (row["a"], row["b"]),
            "r2": row["r2"],
            "r2_text": num(row["r2"], ".3f"),
            "adj_r2_text": num(row["adj_r2"], ".3f"),
            "loo_r2_text": num(row["loo_r2"], ".3f"),
            "r_ab_text": num(row["r_ab"], "+.2f"),
            "beta_a_text": num(row["beta_a"], "+.3g"),
            "beta_b_text": num(row["beta_b"], "+.3g"),
            "n": int(row["n"]),
            "reason": row["reason"] or "",
            "best": i == best_idx,
        })
    # The paper's best pair (Fig. 8: SRSS + LNC, R² = 0.91), for comparison.
    paper_pair = next((r for r in rows if set(r["metrics"]) == {"srss", "lnc"}), None)
    paper_rank = rows.index(paper_pair) + 1 if paper_pair and math.isfinite(paper_pair["r2"]) else None
    notes = []
    unmeasured = [oriented_label(m) for m in MAIN_PROXIES if m not in proxies]
    if unmeasured:
        notes.append(f"not measured, left out of the pairs: {', '.join(unmeasured)}.")
    if n_complete < len(units):
        notes.append(f"{len(units) - n_complete} tokenizer(s) lack a proxy value; "
                     "each pair uses the tokenizers it has.")
    if best_idx is None:
        return {"available": False, "notes": notes, "rows": rows,
                "why": "no pair could be fitted: " + rows[0]["reason"]}
    best = table.loc[best_idx]
    fit = two_metric_regression(oriented_units, best["a"], best["b"], study.y)
    figure = _terrain(units, best["a"], best["b"], fit, study.target, _regulariser_palette(study.frame))
    return {
        "available": True,
        "why": None,
        "setting": study.setting_text(),
        "rows": rows,
        "best": rows[best_idx],
        "paper_pair": paper_pair,
        "paper_pair_rank": paper_rank,
        "n_pairs": len(rows),
        "figure": figure,
        "notes": notes,
    }


# --------------------------------------------------------------------------- Figs. 9-10


def _floats(values: Sequence[Any] | None) -> np.ndarray:
    """JSON numbers as float64, null (a non-finite value, io.write_json) as NaN."""
    return np.array([math.nan if v is None else float(v) for v in (values or [])], dtype=np.float64)


def _trajectories(study: _Study) -> dict[str, Any]:
    """Fig. 9 straightness / efficiency vs the target (gFID) and Fig. 10 length ratio with the VIV(t) overlay."""
    units = study.units()
    out: dict[str, Any] = {"setting": study.setting_text(), "notes": []}
    palette = _regulariser_palette(study.frame)
    y = units[study.y].to_numpy(float)
    scatter_metrics = [m for m in ("straightness", "efficiency") if study.measured(m, units)]
    cells = {m: study.cell(oriented(units, m).to_numpy(), y, row=(m, study.family, study.backbone, study.w0))
             for m in scatter_metrics}
    out["cells"] = [{"label": info(m).label, **cells[m]} for m in scatter_metrics]
    if scatter_metrics and len(units) >= MIN_UNITS_R:
        with _theme():
            fig, axes = plt.subplots(1, len(scatter_metrics), figsize=(3.0 * len(scatter_metrics), 2.5), squeeze=False)
            for ax, m in zip(axes.flat, scatter_metrics):
                _scatter_panel(ax, units, oriented(units, m).to_numpy(), study.target, palette,
                               f"{info(m).label}: r = {cells[m]['text']}", info(m).label)
            fig.tight_layout()
            _regulariser_legend(fig, units, palette)
            out["scatter"] = _uri(fig, "diffusability-fig9")
    else:
        out["scatter"] = None
        out["notes"].append(
            "Fig. 9 needs straightness/efficiency (metric 'trajectory') for at least "
            f"{MIN_UNITS_R} tokenizers at {study.setting_text()}; this study has "
            f"{len(units) if scatter_metrics else 0}."
        )

    # Fig. 10: r_i per segment of the uniform data-time grid t_i = i/M (spec §9, no shift),
    # plotted at segment midpoints (i + 1/2)/M; VIV(t) of §2.6 on its own grid (t = 1 is data).
    tok_palette = _palette(study.tokenizers)
    curves, missing, table = [], [], []
    for _, row in units.iterrows():
        tok = row["tokenizer"]
        path = study.results / "metrics" / tok / study.backbone / "trajectory.json"
        if not path.exists():
            missing.append(tok)
            continue
        ratio = _floats(read_json(path).get("length_ratio"))
        if ratio.size == 0:
            missing.append(tok)
            continue
        t_mid = (np.arange(ratio.size) + 0.5) / ratio.size
        latent_path = study.results / "metrics" / tok / "latent.json"
        viv_curve = read_json(latent_path).get("viv_curve") if latent_path.exists() else None
        curves.append((tok, t_mid, ratio, viv_curve))
        deviation = float(np.nanmean(np.abs(ratio - 1.0)))
        table.append({"tokenizer": tok, "value": row[study.y], "deviation": deviation,
                      "value_text": num(row[study.y], ".4g"), "deviation_text": num(deviation, ".3f"),
                      "straightness_text": num(float(row.get("straightness", math.nan)), ".4f"),
                      "efficiency_text": num(float(row.get("efficiency", math.nan)), ".4f"),
                      "segments": int(ratio.size)})
    if missing:
        out["notes"].append(f"no trajectory.json (length ratio) for {study.backbone}: {', '.join(missing)}.")
    no_viv = [tok for tok, _, _, viv in curves if not viv]
    if no_viv:
        out["notes"].append(f"no VIV(t) curve in latent.json for: {', '.join(no_viv)}.")
    out["ratio_table"] = table
    if table:
        # mean |r_i - 1| is lower = better (closer to the linear schedule)
        out["deviation_cell"] = study.cell(np.array([r["deviation"] for r in table]),
                                           np.array([r["value"] for r in table], dtype=float),
                                           study.target.predicts_sign("lower"))
    if curves:
        with _theme():
            fig, ax = plt.subplots(figsize=(6.4, 3.0))
            ax2 = ax.twinx() if len(curves) > len(no_viv) else None
            for tok, t_mid, ratio, viv in curves:
                ax.plot(t_mid, ratio, marker="o", ms=2.5, lw=1.3, color=tok_palette[tok], label=tok)
                if viv and ax2 is not None:
                    ax2.plot(_floats(viv.get("t")), _floats(viv.get("viv")), ls=":", lw=1.3, color=tok_palette[tok])
            ax.axhline(1.0, color="0.3", lw=0.8, ls="--")
            ax.set_xlim(0, 1)
            ax.set_xlabel("data time t (0 = noise, 1 = data); segment midpoints", fontsize=8)
            ax.set_ylabel("length ratio r_i (solid; 1 = linear path)", fontsize=8)
            ax.tick_params(labelsize=6)
            if ax2 is not None:
                ax2.set_ylabel("VIV(t) (dotted)", fontsize=8)
                ax2.tick_params(labelsize=6)
                ax2.grid(False)
            ax.set_title(f"{study.family}, {study.backbone}: per-segment length ratio and VIV(t)", fontsize=8)
            ax.legend(fontsize=6, ncol=2, loc="best", frameon=True)
            fig.tight_layout()
            out["ratio_figure"] = _uri(fig, "diffusability-fig10")
    else:
        out["ratio_figure"] = None
    out["available"] = bool(out["scatter"] or out["ratio_figure"])
    out["why"] = None if out["available"] else "no trajectory results (metric 'trajectory') for this study."
    return out


# --------------------------------------------------------------------------- entry point

_ANALYSES = {
    "overview": _overview,
    "stability": _stability,
    "guidance": _guidance,
    "regression": _regression,
    "trajectories": _trajectories,
}



def diffusability_section(
    results_dir: str | Path, frame: pd.DataFrame, config: dict, n_boot: int = 1000, seed: int = 0,
    correlations: pd.DataFrame | None = None,
) -> dict[str, Any]:
    """Context of ``diffusability.html.j2`` (pass it as ``diffusability``) for one study.

    ``results_dir`` is ``results/<study>`` (its ``metrics/`` holds latent.json and
    trajectory.json), ``frame`` that study's metrics.csv, ``config`` its config (the order of
    ``tokenizers`` and ``backbones`` picks the primary backbone and orders the tables).
    ``config["analysis"]["target"]`` is the y of every analysis. Bootstrap CIs use ``n_boot``
    resamples with ``seed``; ``correlations`` (the study's correlations.csv, from the same config)
    supplies the cells that are exactly one of its rows (Fig. 4, the stability table's target
    columns, Fig. 9) instead of a second bootstrap. Keys: ``available``/``why`` for
    the whole section, ``setting`` (primary family, backbone, w, n), and one dict per
    analysis: ``overview`` (Fig. 4), ``stability`` (Figs. 5-6), ``guidance`` (Figs. 7/25),
    ``regression`` (Fig. 8), ``trajectories`` (Figs. 9-10), each with its own
    ``available``/``why``.
    """
    if not isinstance(frame, pd.DataFrame):
        raise ValueError(f"frame: expected a pandas DataFrame, got {type(frame).__name__}")
    if int(n_boot) != n_boot or n_boot < 0:
        raise ValueError(f"n_boot: expected a non-negative integer, got {n_boot}")
    if frame.empty:
        return {"available": False, "why": "metrics.csv has no rows."}
    study = _study(Path(results_dir), frame, config, int(n_boot), int(seed), correlations)
    feature_net = sorted(frame["feature_net"].dropna().astype(str).unique()) if "feature_net" in frame else []
    return {
        "available": True,
        "why": None,
        "study": config.get("study", ""),
        "target_label": study.target.label,
        "target": study.target.context("larger"),
        "n_boot": int(n_boot),
        "feature_net": ", ".join(feature_net),
        "setting": {
            "family": study.family,
            "backbone": study.backbone,
            "w0": scale_text(study.w0),
            "n": len(study.units()),
            "families": study.families,
            "backbones": study.backbones,
            "scales": [scale_text(w) for w in study.scales],
            "w0_note": None if np.isclose(study.w0, 1.0) else
            "no w = 1 (no-CFG) samples in this study; the no-CFG analyses use the smallest scale, "
            f"w = {scale_text(study.w0)}.",
        },
        # Every analysis dict has available / why / notes, so the template can rely on them.
        **{name: {"why": None, "notes": [], **build(study)} for name, build in _ANALYSES.items()},
    }
