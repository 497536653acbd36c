"""The overview and correlation pages: formatted from correlations.csv and stability.csv.

Nothing is correlated here: the ``correlate`` job computed every r (rules/report.smk); this module
orients, ranks, colours and draws. One sign convention on both pages (spec metrics-ifid-seesaw
§6): every metric oriented "lower = better" (higher-is-better metrics negated), so r > 0 means
"the tokenizer the metric calls better has the lower gFID".
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from latentbench.analysis.metric_info import info
from latentbench.analysis.regression import flipped
from latentbench.report.cells import num, r_colour, scale_text
from latentbench.report.figures import image_src
from latentbench.report.ifid_tables import TABLE3_ROWS, map_backbones
from latentbench.report.paper_values import load_paper_table

__all__ = ["MIN_TRUSTED_UNITS", "Setting", "correlation_page", "orient_table", "overview_page", "ranked_proxies"]

# Below this many tokenizers the overview says the study is too small to rank proxies (with
# n = 8 a 95 % interval of r = 0.7 still reaches about 0; the paper's families have 43 and more).
MIN_TRUSTED_UNITS = 8
SIGN_CONVENTION = ("every metric is oriented so that lower is better (higher-is-better metrics such as PSNR "
                   "and SSIM are negated), so r > 0 means the tokenizer the metric calls better has the lower "
                   "gFID; r < 0 means the metric points the wrong way.")
OVERVIEW_FIGURE = "overview-ranked-proxies"  # img/<this>.png, a declared output of the report rule
_A3 = {"SiT-B": "SiTB", "SiT-XL": "SiTXL"}  # iFID Table 3 column prefixes (spec A.3)


@dataclass(frozen=True)
class Setting:
    """The primary (family, backbone, guidance scale) the overview ranks proxies on."""

    family: str
    backbone: str
    scale: float

    @property
    def text(self) -> str:
        return f"{self.family}, {self.backbone}, w = {scale_text(self.scale)}"


def orient_table(corr: pd.DataFrame) -> pd.DataFrame:
    """correlations.csv with oriented PCC / SRCC and their intervals (columns ``r``, ``r_lo``, ``r_hi``,
    ``rho``, ``rho_lo``, ``rho_hi``); rows of metrics without metadata are dropped.

    One sign convention with the paper pages (:func:`latentbench.analysis.regression.flipped`, the
    iFID paper's ``better="lower"``): a metric is negated when higher is better, and the whole row
    once more when the row's target is (so r > 0 always means: the metric's better tokenizer has
    the better target value)."""
    known = corr[corr["metric"].map(lambda m: _known(m))].copy()
    flip = known["metric"].map(lambda m: flipped(m, "lower")) != known["target"].map(lambda t: flipped(t, "lower"))
    sign = np.where(flip, -1.0, 1.0)
    for stat, out in (("pcc", "r"), ("srcc", "rho")):
        value, lo, hi = known[stat].to_numpy(float), known[f"{stat}_lo"].to_numpy(float), known[f"{stat}_hi"].to_numpy(float)
        known[out] = sign * value
        known[f"{out}_lo"] = np.where(sign > 0, lo, -hi)
        known[f"{out}_hi"] = np.where(sign > 0, hi, -lo)
    return known


def _known(metric: str) -> bool:
    try:
        info(metric)
    except KeyError:
        return False
    return True


def _paper_r(metric: str, paper_column: str | None) -> float:
    """iFID Table 3's PCC (w/o cfg) for ``metric`` in the paper column ``paper_column``, else the
    diffusability paper's Fig. 4 r (re-oriented to lower = better), else NaN."""
    label = dict(TABLE3_ROWS).get(metric)
    if label is not None and paper_column is not None:
        t3 = load_paper_table("ifid_table3").set_index("metric")
        value = t3.loc[label, f"{_A3[paper_column]}_nocfg_PCC"]
        if math.isfinite(value):
            return float(value)
    head = load_paper_table("diffusability_headline")
    row = head[(head["quantity"] == "pearson_r") & (head["metrics"] == metric) & (head["figure"] == "Fig. 4")]
    if len(row):
        # Fig. 4's x is oriented larger = better latent: r(−VIV, gFID); ours is r(VIV, gFID).
        value = float(row["value"].iloc[0])
        return value if info(metric).higher_is_better else -value
    return math.nan


def ranked_proxies(oriented: pd.DataFrame, stability: pd.DataFrame | None, setting: Setting,
                   paper_column: str | None) -> list[dict[str, Any]]:
    """One row per measured metric at ``setting``, ranked by |r| (undefined r last)."""
    sel = oriented[(oriented["family"] == setting.family) & (oriented["backbone"] == setting.backbone)
                   & np.isclose(oriented["cfg_scale"].astype(float), setting.scale)]
    loo = {}
    if stability is not None and len(stability):
        s = stability[(stability["family"] == setting.family) & (stability["backbone"] == setting.backbone)
                      & np.isclose(stability["cfg_scale"].astype(float), setting.scale)]
        loo = {row["metric"]: row for _, row in s.iterrows()}
    rows = []
    for _, c in sel.iterrows():
        if c["n"] == 0:
            continue
        metric = c["metric"]
        st = loo.get(metric)
        paper = _paper_r(metric, paper_column)
        rows.append({
            "metric": metric, "label": info(metric).label, "n": int(c["n"]),
            "r": c["r"], "lo": c["r_lo"], "hi": c["r_hi"], "rho": c["rho"],
            "r_text": num(c["r"], "+.2f"), "ci_text": f"[{num(c['r_lo'], '+.2f')}, {num(c['r_hi'], '+.2f')}]",
            "rho_text": num(c["rho"], "+.2f"), "colour": r_colour(c["r"]),
            "excludes_zero": bool(np.isfinite(c["r_lo"]) and (c["r_lo"] > 0 or c["r_hi"] < 0)),
            "paper": paper, "paper_text": num(paper, "+.2f") if math.isfinite(paper) else "—",
            "diff_text": num(c["r"] - paper, "+.2f") if math.isfinite(paper) and math.isfinite(c["r"]) else "—",
            "loo_shift_text": num(st["max_shift"], ".2f") if st is not None else "n/a",
            "loo_range_text": (f"[{num(_orient_value(metric, st['r_min'], st['r_max'])[0], '+.2f')}, "
                               f"{num(_orient_value(metric, st['r_min'], st['r_max'])[1], '+.2f')}]")
            if st is not None else "n/a",
            "influential": (str(st["influential"]) if st is not None and isinstance(st["influential"], str) else "—"),
        })
    return sorted(rows, key=lambda r: (not math.isfinite(r["r"]), -abs(r["r"]) if math.isfinite(r["r"]) else 0))


def _orient_value(metric: str, lo: float, hi: float) -> tuple[float, float]:
    """A raw [lo, hi] range of r oriented lower = better."""
    return (-hi, -lo) if info(metric).higher_is_better else (lo, hi)


def ranked_chart(rows: list[dict[str, Any]], setting: Setting, paper_label: str) -> str:
    """Ranked dot-and-interval chart of the oriented r per proxy, the paper's value beside (◆)."""
    rows = [r for r in rows if math.isfinite(r["r"])]
    if not rows:  # still a figure: the workflow declares this file (rules/report.smk)
        fig, ax = plt.subplots(figsize=(7.2, 1.2))
        ax.axis("off")
        ax.text(0.5, 0.5, f"No proxy has a defined r at {setting.text}.", ha="center", va="center", fontsize=9)
        return image_src(fig, OVERVIEW_FIGURE, fixed=True)
    fig, ax = plt.subplots(figsize=(7.2, 0.32 * len(rows) + 1.3))
    ys = np.arange(len(rows))[::-1]
    r = np.array([row["r"] for row in rows])
    lo = np.array([row["lo"] if math.isfinite(row["lo"]) else row["r"] for row in rows])
    hi = np.array([row["hi"] if math.isfinite(row["hi"]) else row["r"] for row in rows])
    colours = ["#0969da" if v > 0 else "#cf222e" for v in r]
    ax.hlines(ys, lo, hi, color=colours, lw=2.2, alpha=0.55)
    ax.scatter(r, ys, c=colours, s=34, zorder=3, label="ours: r with 95 % bootstrap interval")
    paper = np.array([row["paper"] for row in rows])
    has = np.isfinite(paper)
    if has.any():
        ax.scatter(paper[has], ys[has], marker="D", facecolor="white", edgecolor="black", s=30, zorder=4,
                   label=f"paper ({paper_label})")
    ax.axvline(0, color="0.3", lw=0.8)
    ax.set_xlim(-1.05, 1.05)
    ax.set_yticks(ys, [f"{row['label']} (n = {row['n']})" for row in rows], fontsize=8)
    ax.set_xlabel("oriented Pearson r with gFID (r > 0: the metric predicts gFID)", fontsize=8)
    ax.set_title(f"Proxies ranked by |r|: {setting.text}", fontsize=9)
    ax.tick_params(axis="x", labelsize=7)
    ax.grid(axis="x", alpha=0.3)
    ax.legend(fontsize=7, loc="lower center", bbox_to_anchor=(0.5, 1.06), ncol=2, frameon=False)
    fig.tight_layout()
    return image_src(fig, OVERVIEW_FIGURE, fixed=True)


def small_study(rows: list[dict[str, Any]], n: int) -> str | None:
    """The banner text when the study cannot rank its proxies, else None."""
    if n < MIN_TRUSTED_UNITS:
        spans = [r for r in rows if math.isfinite(r["lo"]) and r["hi"] - r["lo"] > 1.0]
        return (f"This study has n = {n} tokenizers in its primary setting (fewer than {MIN_TRUSTED_UNITS}): "
                f"{len(spans)} of {len(rows)} proxies have a 95 % interval wider than 1, and no ranking below "
                "is evidence for or against any paper. Treat every number as a pipeline check.")
    if rows and not any(r["excludes_zero"] for r in rows):
        return (f"No proxy's 95 % interval excludes r = 0 at n = {n} tokenizers: this study cannot tell "
                "the proxies apart.")
    return None


def overview_page(oriented: pd.DataFrame, stability: pd.DataFrame | None, setting: Setting, config: dict) -> dict:
    """Context of the overview page's proxy ranking: rows, chart, banner, paper column used."""
    mapping, _ = map_backbones([setting.backbone], config)
    paper_column = mapping[setting.backbone] or "SiT-XL"
    rows = ranked_proxies(oriented, stability, setting, paper_column)
    n = max((r["n"] for r in rows), default=0)
    paper_label = f"iFID Table 3, {paper_column} w/o cfg; diffusability Fig. 4"
    return {"setting": setting.text, "n": n, "rows": rows, "banner": small_study(rows, n),
            "figure": ranked_chart(rows, setting, paper_label), "paper_label": paper_label,
            "convention": SIGN_CONVENTION}


def _setting_columns(oriented: pd.DataFrame) -> list[tuple[str, str, float]]:
    keys = oriented[["family", "backbone", "cfg_scale"]].drop_duplicates()
    return [(str(f), str(b), float(w)) for f, b, w in keys.itertuples(index=False)]


def correlation_page(oriented: pd.DataFrame, stability: pd.DataFrame | None, families: list[str],
                     backbones: list[str], primary: Setting) -> dict[str, Any]:
    """Context of the correlation page: a heatmap table per statistic (metrics x family / backbone /
    guidance, coloured by oriented r, the interval on hover) and the leave-one-out table."""
    fam_rank = {f: i for i, f in enumerate(families)}
    bb_rank = {b: i for i, b in enumerate(backbones)}
    columns = sorted(_setting_columns(oriented),
                     key=lambda c: (fam_rank.get(c[0], len(fam_rank)), bb_rank.get(c[1], len(bb_rank)), c[2]))
    measured = oriented.groupby("metric")["n"].max()
    metrics = [m for m in dict.fromkeys(oriented["metric"]) if measured.get(m, 0) > 0]
    index = {(r.metric, r.family, r.backbone, round(float(r.cfg_scale), 9)): r for r in oriented.itertuples()}
    heatmaps = []
    for stat, label in (("r", "Pearson r"), ("rho", "Spearman ρ")):
        rows = []
        for metric in metrics:
            cells = []
            for fam, bb, w in columns:
                c = index.get((metric, fam, bb, round(w, 9)))
                if c is None or c.n == 0:
                    cells.append({"text": "", "colour": "transparent", "title": "not measured"})
                    continue
                value, lo, hi = getattr(c, stat), getattr(c, f"{stat}_lo"), getattr(c, f"{stat}_hi")
                cells.append({"text": num(value, "+.2f"), "colour": r_colour(value),
                              "title": f"{info(metric).label}, {fam}, {bb}, w = {scale_text(w)}: {label} "
                                       f"{num(value, '+.2f')} [{num(lo, '+.2f')}, {num(hi, '+.2f')}], n = {c.n}"})
            rows.append({"metric": info(metric).label, "cells": cells})
        heatmaps.append({"stat": stat, "label": label, "rows": rows})
    # header rows: family spans, backbone spans, scales
    head_family = _spans([c[0] for c in columns])
    head_backbone = _spans([(c[0], c[1]) for c in columns], label=lambda k: k[1])
    loo = ranked_proxies(oriented, stability, primary, None)
    return {"columns": [scale_text(c[2]) for c in columns], "head_family": head_family,
            "head_backbone": head_backbone, "heatmaps": heatmaps, "loo": loo, "primary": primary.text,
            "convention": SIGN_CONVENTION, "n_settings": len(columns)}


def _spans(keys: list, label=lambda k: k) -> list[dict[str, Any]]:
    """Runs of equal consecutive keys as (label, colspan) for a grouped table header."""
    out: list[dict[str, Any]] = []
    for k in keys:
        if out and out[-1]["key"] == k:
            out[-1]["span"] += 1
        else:
            out.append({"key": k, "label": label(k), "span": 1})
    return out
