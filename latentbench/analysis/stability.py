"""Leave-one-tokenizer-out stability of a correlation: how far Pearson r moves when any one unit
is dropped (a jackknife; beyond the papers, DESIGN.md). A proxy whose r flips sign or halves when
one tokenizer leaves the study rests on that tokenizer.

For n units the n drop-one correlations come from the sums of x, y, x², y², xy minus each unit's
own terms, so a whole column costs O(n) instead of n calls of ``scipy.stats.pearsonr`` (the unit
test checks the two agree).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

__all__ = ["MIN_UNITS", "leave_one_out", "stability_table"]

MIN_UNITS = 4  # every drop-one sample must still have three units (a defined r)


def _drop_one_pearson(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Pearson r of (x, y) without unit i, for every i (NaN where a drop-one sample is constant)."""
    n = x.size - 1
    sx, sy = x.sum() - x, y.sum() - y
    sxx, syy, sxy = (x * x).sum() - x * x, (y * y).sum() - y * y, (x * y).sum() - x * y
    cov = sxy - sx * sy / n
    vx, vy = sxx - sx * sx / n, syy - sy * sy / n
    with np.errstate(invalid="ignore", divide="ignore"):
        # a drop-one sample that is constant has zero variance up to rounding: no r
        scale_x, scale_y = np.abs(sxx) + 1e-300, np.abs(syy) + 1e-300
        ok = (vx > 1e-12 * scale_x) & (vy > 1e-12 * scale_y)
        r = np.where(ok, cov / np.sqrt(np.where(ok, vx * vy, 1.0)), np.nan)
    return np.clip(r, -1.0, 1.0)


def leave_one_out(x: Any, y: Any, names: Any = None) -> dict[str, Any]:
    """Pearson r of x with y on all units (pairs with a NaN dropped) and on every drop-one sample.

    Returns ``n``, ``r`` (all units), ``r_min`` / ``r_max`` over the drop-one samples,
    ``max_shift`` (the largest |r_without_i − r|), ``influential`` (the name or index of that unit)
    and ``sign_flips`` (how many drop-one samples change the sign of r). Fewer than
    :data:`MIN_UNITS` units give NaN and ``influential`` None.
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError(f"x, y: expected two 1-D sequences of one length, got shapes {x.shape}, {y.shape}")
    names = list(range(x.size)) if names is None else list(names)
    if len(names) != x.size:
        raise ValueError(f"names: {len(names)} names for {x.size} units")
    ok = np.isfinite(x) & np.isfinite(y)
    x, y = x[ok], y[ok]
    kept = [nm for nm, k in zip(names, ok) if k]
    empty = {"n": int(x.size), "r": math.nan, "r_min": math.nan, "r_max": math.nan, "max_shift": math.nan,
             "influential": None, "sign_flips": 0}
    if x.size < MIN_UNITS or np.ptp(x) == 0 or np.ptp(y) == 0:
        return empty
    r = float(np.corrcoef(x, y)[0, 1])
    drops = _drop_one_pearson(x, y)
    if not np.isfinite(drops).any():
        return {**empty, "r": r}
    shift = np.abs(drops - r)
    worst = int(np.nanargmax(shift))
    return {"n": int(x.size), "r": r, "r_min": float(np.nanmin(drops)), "r_max": float(np.nanmax(drops)),
            "max_shift": float(shift[worst]), "influential": kept[worst],
            "sign_flips": int(np.sum(np.isfinite(drops) & (np.sign(drops) != np.sign(r))))}


def stability_table(frame: pd.DataFrame, metrics: list[str], target: str) -> pd.DataFrame:
    """:func:`leave_one_out` of every metric with ``target`` per (family, backbone, cfg_scale) of a
    metrics.csv frame, one row per setting x metric (raw r, no orientation)."""
    rows = []
    for (family, backbone, scale), group in frame.groupby(["family", "backbone", "cfg_scale"], sort=True):
        for metric in metrics:
            res = leave_one_out(group[metric].to_numpy(float), group[target].to_numpy(float),
                                group["tokenizer"].astype(str).tolist())
            rows.append({"family": family, "backbone": backbone, "cfg_scale": scale, "metric": metric,
                         "target": target, **res})
    return pd.DataFrame(rows, columns=["family", "backbone", "cfg_scale", "metric", "target", "n", "r", "r_min",
                                       "r_max", "max_shift", "influential", "sign_flips"])
