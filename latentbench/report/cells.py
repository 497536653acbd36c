"""Table cells shared by every report page: number formatting, r colours, correlation cells.

One place for the helpers the pages used to copy: a page formats numbers with :func:`num`,
colours an r with :func:`r_colour` and builds a correlation cell with :func:`corr_cell` (from
:func:`latentbench.analysis.correlation.correlate`) or :func:`why_cell` when it cannot. The paper
pages take the study's correlation target (config ``analysis.target``) from :func:`study_target`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from latentbench.analysis.correlation import correlate
from latentbench.analysis.metric_info import info
from latentbench.analysis.regression import Better

__all__ = ["MIN_UNITS", "PAPER_TARGET", "CorrelationTable", "Target", "column_format", "corr_cell", "num",
           "r_colour", "scale_text", "study_target", "why_cell"]

MIN_UNITS = 3  # a correlation across tokenizers needs three of them (correlate gives NaN below)
PAPER_TARGET = "gfid"  # every correlation the papers print is with gFID


@dataclass(frozen=True)
class Target:
    """The generation metric a study correlates the proxies with (config ``analysis.target``)."""

    column: str  # the metrics.csv column
    label: str  # its display label (metric_info)
    higher_is_better: bool

    def predicts_sign(self, better: Better) -> int:
        """Sign of r for a metric oriented by ``better`` (:func:`latentbench.analysis.regression.oriented`)
        that predicts this target: +1 for "lower" with a lower-is-better target such as gFID, -1 for
        "larger" with gFID, and the opposite for a higher-is-better target."""
        return 1 if (better == "lower") != self.higher_is_better else -1

    def paper_note(self) -> str | None:
        """The sentence a paper page shows when our correlations are not against the paper's gFID."""
        if self.column == PAPER_TARGET:
            return None
        flip = (f" {self.label} is higher-is-better, so a metric that predicts it has the opposite sign to "
                "the paper's convention." if self.higher_is_better else "")
        return (f"This study's analysis.target is {self.label}: our correlations on this page are against "
                f"{self.label}, while the paper's values are against gFID, so ours and the paper's are not "
                f"comparable (their difference means nothing).{flip}")

    def context(self, better: Better) -> dict[str, Any]:
        """What a paper page's template needs: column, label, the not-comparable note (None for gFID)
        and the sign ("positive" / "negative") of r for a predictive metric oriented by ``better``."""
        return {"column": self.column, "label": self.label, "note": self.paper_note(),
                "predicts": "positive" if self.predicts_sign(better) > 0 else "negative"}


def study_target(config: dict, frame: pd.DataFrame, metrics_csv: str | Path) -> Target:
    """The correlation target of a study: config ``analysis.target`` (a validated config has it;
    schema default gfid), which must be a column of ``frame`` (the study's ``metrics_csv``) with
    metadata in metric_info; else one ValueError naming ``analysis.target``."""
    target = (config.get("analysis") or {}).get("target")
    if not target:
        raise ValueError("analysis.target: not in the config (pass the validated study config)")
    if target not in frame.columns:
        raise ValueError(f"analysis.target: column {target!r} is not in {metrics_csv}")
    try:
        meta = info(target)
    except KeyError:
        raise ValueError(f"analysis.target: {target!r} has no entry in metric_info.METRICS "
                         "(its label and direction are unknown)") from None
    return Target(target, meta.label, meta.higher_is_better)


def num(value: Any, fmt: str = ".2f") -> str:
    """``value`` formatted with ``fmt``, or "n/a" for None / NaN / inf."""
    if value is None:
        return "n/a"
    try:
        value = float(value)
    except (TypeError, ValueError):
        return str(value)
    return "n/a" if not math.isfinite(value) else format(value, fmt)


def column_format(values: Any) -> str:
    """One fixed format for a column of numbers, from its largest magnitude: 4 decimals below 10,
    2 below 1000, else 0 (so a column's decimals line up)."""
    arr = np.abs(np.asarray(values, dtype=float))
    top = float(np.nanmax(arr)) if arr.size and np.isfinite(arr).any() else 0.0
    return ".4f" if top < 10 else ".2f" if top < 1000 else ".0f"


def scale_text(w: float) -> str:
    """A guidance scale as the pages print it (1, 1.5, ...)."""
    return f"{float(w):g}"


def r_colour(r: float, sign: int = 1) -> str:
    """Cell background for a correlation: blue for ``sign * r > 0`` (the page's "predicts" direction),
    red for < 0, alpha growing with |r|; transparent for NaN."""
    if r is None or not math.isfinite(r):
        return "transparent"
    rgb = "9,105,218" if sign * r > 0 else "207,34,46"
    return f"rgba({rgb},{0.08 + 0.6 * abs(r):.2f})"


def why_cell(why: str, n: int = 0) -> dict[str, Any]:
    """A correlation cell that could not be computed, with the reason."""
    return {"ok": False, "why": why, "n": n, "pcc": math.nan, "srcc": math.nan, "pcc_text": "", "srcc_text": "",
            "pcc_ci": "", "srcc_ci": ""}


def corr_cell(x: pd.Series, y: pd.Series, n_boot: int, seed: int, y_name: str = "gFID",
              result: dict[str, Any] | None = None) -> dict[str, Any]:
    """PCC and SRCC of x with y over the units both index (NaN pairs dropped), or the reason why not;
    ``result`` (correlate's dict for these pairs, e.g. :meth:`CorrelationTable.result`) is used
    instead of computing it again."""
    pair = pd.concat([x.rename("x"), y.rename("y")], axis=1, join="inner").astype(float).dropna()
    n = len(pair)
    if n < MIN_UNITS:
        return why_cell(f"needs ≥ {MIN_UNITS} tokenizers (has {n})", n)
    if np.ptp(pair["x"].to_numpy()) == 0:
        return why_cell("metric constant across tokenizers", n)
    if np.ptp(pair["y"].to_numpy()) == 0:
        return why_cell(f"{y_name} constant across tokenizers", n)
    res = result if result is not None else correlate(pair["x"].to_numpy(), pair["y"].to_numpy(), n_boot=n_boot,
                                                      seed=seed)

    def ci(lo_hi: tuple[float, float]) -> str:
        return f"[{num(lo_hi[0])}, {num(lo_hi[1])}]" if n_boot else ""

    return {"ok": True, "why": None, "n": n, "pcc": res["pcc"], "srcc": res["srcc"],
            "pcc_text": num(res["pcc"]), "srcc_text": num(res["srcc"]),
            "pcc_ci": ci(res["pcc_ci"]), "srcc_ci": ci(res["srcc_ci"])}


class CorrelationTable:
    """The rows of ``correlations.csv`` (:func:`latentbench.stages.report.correlations`) for one
    target, so a paper-page cell that is exactly one of them is read, not bootstrapped again.

    A row is one metric (raw, not oriented) against the target over the tokenizers of one
    (family, backbone, cfg_scale); the table must come from the same config (``analysis.n_boot``,
    ``seed``) as the page. ``None`` (no table) makes every lookup miss.
    """

    def __init__(self, table: pd.DataFrame | None, target: str) -> None:
        self._rows: dict[tuple[str, str, str, float], Any] = {}
        if table is not None and "target" in table.columns:
            for r in table[table["target"] == target].itertuples():
                self._rows[(r.metric, r.family, r.backbone, round(float(r.cfg_scale), 9))] = r

    def result(self, metric: str, family: str, backbone: str, scale: float, n: int,
               flip: bool) -> dict[str, Any] | None:
        """correlate()'s dict for that row when it exists and covers ``n`` tokenizers (the page's
        pairs), negated when ``flip`` (the page orients the metric by negating it); else None."""
        row = self._rows.get((metric, family, backbone, round(float(scale), 9)))
        if row is None or int(row.n) != n:
            return None
        s = -1.0 if flip else 1.0

        def ci(lo: float, hi: float) -> tuple[float, float]:
            return (s * hi, s * lo) if flip else (lo, hi)

        return {"n": n, "pcc": s * row.pcc, "pcc_p": row.pcc_p, "pcc_ci": ci(row.pcc_lo, row.pcc_hi),
                "srcc": s * row.srcc, "srcc_p": row.srcc_p, "srcc_ci": ci(row.srcc_lo, row.srcc_hi)}
