"""Table cells shared by every report page: number formatting, r colours, correlation cells.

One place for the helpers the pages used to copy: a page formats numbers with :func:`num`,
colours an r with :func:`r_colour` and builds a correlation cell with :func:`corr_cell` (from
:func:`latentbench.analysis.correlation.correlate`) or :func:`why_cell` when it cannot.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from latentbench.analysis.correlation import correlate

__all__ = ["MIN_UNITS", "column_format", "corr_cell", "num", "r_colour", "scale_text", "why_cell"]

MIN_UNITS = 3  # a correlation across tokenizers needs three of them (correlate gives NaN below)


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


def corr_cell(x: pd.Series, y: pd.Series, n_boot: int, seed: int, y_name: str = "gFID") -> dict[str, Any]:
    """PCC and SRCC of x with y over the units both index (NaN pairs dropped), or the reason why not."""
    pair = pd.concat([x.rename("x"), y.rename("y")], axis=1, join="inner").astype(float).dropna()
    n = len(pair)
    if n < MIN_UNITS:
        return why_cell(f"needs ≥ {MIN_UNITS} tokenizers (has {n})", n)
    if np.ptp(pair["x"].to_numpy()) == 0:
        return why_cell("metric constant across tokenizers", n)
    if np.ptp(pair["y"].to_numpy()) == 0:
        return why_cell(f"{y_name} constant across tokenizers", n)
    res = correlate(pair["x"].to_numpy(), pair["y"].to_numpy(), n_boot=n_boot, seed=seed)

    def ci(lo_hi: tuple[float, float]) -> str:
        return f"[{num(lo_hi[0])}, {num(lo_hi[1])}]" if n_boot else ""

    return {"ok": True, "why": None, "n": n, "pcc": res["pcc"], "srcc": res["srcc"],
            "pcc_text": num(res["pcc"]), "srcc_text": num(res["srcc"]),
            "pcc_ci": ci(res["pcc_ci"]), "srcc_ci": ci(res["srcc_ci"])}
