"""Two-metric OLS regression of a generation metric, and the paper pages' metric orientation.

Fig. 8 of "Diffusing in the Right Space" (spec metrics-diffusability.md §13) regresses gFID on
every pair (A, B) of the six main proxies, ``gFID ≈ β0 + β1·A + β2·B`` with A and B z-scored,
and reports the in-sample R² (paper: SRSS + LNC gives 0.91), the Pearson r between A and B
(collinearity) and, as extras, the adjusted and leave-one-out R².

Orientation: :func:`oriented` is the one sign helper of the paper pages. Its ``better`` parameter is
the convention: "larger" (the diffusability study, spec metrics-diffusability.md §1.6: −VIV, LNC,
..., −SEC, −iFID, −Density CV, −Gini) or "lower" (the iFID paper, spec metrics-ifid-seesaw.md
§6: −PSNR, −SSIM, LPIPS, rFID, ...); both come from the ``higher_is_better`` flag in
:mod:`latentbench.analysis.metric_info`.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import pandas as pd

from latentbench.analysis.metric_info import info

__all__ = ["CONVENTIONS", "all_pairs", "flipped", "oriented", "oriented_label", "two_metric_regression"]

# Parameters of the two-metric model (β0, β1, β2). Adjusted R² needs n - p - 1 > 0 with p = 2
# regressors, so a fit needs at least four units; three points always fit a plane exactly.
_N_PARAMS = 3
MIN_UNITS = _N_PARAMS + 1


Better = Literal["larger", "lower"]
CONVENTIONS: tuple[Better, ...] = ("larger", "lower")


def flipped(metric: str, better: Better) -> bool:
    """Whether ``metric`` is negated under the convention ``better`` (unknown names raise)."""
    if better not in CONVENTIONS:
        raise ValueError(f"better: expected one of {CONVENTIONS}, got {better!r}")
    try:
        meta = info(metric)
    except KeyError:
        raise ValueError(f"metric: {metric!r} has no entry in metric_info.METRICS, its direction is unknown") from None
    return meta.higher_is_better != (better == "larger")


def oriented(frame: pd.DataFrame, metric: str, better: Better = "larger") -> pd.Series:
    """The ``metric`` column of ``frame`` oriented so that ``better`` values mean a better tokenizer.

    Sign convention: ``better="larger"`` (diffusability spec §1.6, the default) negates the
    metrics whose ``higher_is_better`` is False (VIV, SEC, iFID, Density CV, Gini, ...);
    ``better="lower"`` (iFID spec §6) negates the metrics whose ``higher_is_better`` is True
    (PSNR, SSIM, LNC, ...). The others are returned unchanged. The result is float64 and keeps
    the metric's column name and the frame's index.
    """
    if not isinstance(frame, pd.DataFrame):
        raise ValueError(f"frame: expected a pandas DataFrame, got {type(frame).__name__}")
    if metric not in frame.columns:
        raise ValueError(f"metric: column {metric!r} is not in the frame (has {list(frame.columns)})")
    flip = flipped(metric, better)
    values = pd.to_numeric(frame[metric], errors="raise").astype(np.float64)
    return -values if flip else values


def oriented_label(metric: str, better: Better = "larger") -> str:
    """Display label of the oriented metric under the convention ``better`` (see :func:`oriented`):
    "−VIV" / "LNC" for "larger", "−PSNR" / "LPIPS" for "lower"."""
    label = info(metric).label
    return f"−{label}" if flipped(metric, better) else label


def _numeric(frame: pd.DataFrame, name: str, role: str) -> np.ndarray:
    if name not in frame.columns:
        raise ValueError(f"{role}: column {name!r} is not in the frame (has {list(frame.columns)})")
    try:
        return frame[name].to_numpy(dtype=np.float64, na_value=np.nan)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{role}: column {name!r} is not numeric ({exc})") from None


def _undefined(n: int, r_ab: float, reason: str) -> dict[str, Any]:
    nan = math.nan
    return {
        "r2": nan,
        "adj_r2": nan,
        "loo_r2": nan,
        "coef": (nan, nan, nan),
        "r_ab": r_ab,
        "n": n,
        "reason": reason,
    }


def two_metric_regression(frame: pd.DataFrame, a: str, b: str, target: str) -> dict[str, Any]:
    """OLS ``target ≈ β0 + β1·z(A) + β2·z(B)`` over the rows of ``frame`` (spec §13, Fig. 8).

    A and B are the columns ``a`` and ``b`` as given (orient them first with :func:`oriented`
    when the signs of the coefficients matter); z-scoring uses the population std (ddof 0).
    Rows where A, B or the target is NaN are dropped.

    Returns a dict:
      - ``r2``: in-sample R² = 1 − SS_res / SS_tot;
      - ``adj_r2``: 1 − (1 − R²)(n − 1)/(n − p − 1) with p = 2;
      - ``loo_r2``: leave-one-out (predictive) R² = 1 − PRESS / SS_tot, PRESS = Σ (y_i − ŷ_(−i))²,
        computed exactly with the hat-matrix identity y_i − ŷ_(−i) = e_i / (1 − h_ii) (NaN when a
        point has leverage 1, i.e. its left-out fit is undetermined);
      - ``coef``: (β0, β1, β2) on the z-scored regressors (β0 = mean target);
      - ``r_ab``: Pearson r between A and B; ``n``: rows used;
      - ``reason``: None, or why the statistics are NaN: fewer than 4 rows, A or B constant,
        A and B collinear (|r_AB| = 1), or a constant target (R² undefined).
    Missing or non-numeric columns raise ValueError.
    """
    if not isinstance(frame, pd.DataFrame):
        raise ValueError(f"frame: expected a pandas DataFrame, got {type(frame).__name__}")
    if a == b:
        raise ValueError(f"b: must differ from a (both {a!r})")
    xa, xb, y = _numeric(frame, a, "a"), _numeric(frame, b, "b"), _numeric(frame, target, "target")
    keep = ~(np.isnan(xa) | np.isnan(xb) | np.isnan(y))
    if np.isinf(np.stack([xa[keep], xb[keep], y[keep]])).any():
        raise ValueError(f"frame: columns {a!r}, {b!r}, {target!r} contain inf")
    xa, xb, y = xa[keep], xb[keep], y[keep]
    n = int(y.shape[0])
    if n < MIN_UNITS:
        return _undefined(n, math.nan, f"n = {n} rows; a two-metric fit needs at least {MIN_UNITS}")
    sa, sb = xa.std(), xb.std()
    if sa == 0 or sb == 0:
        constant = a if sa == 0 else b
        return _undefined(n, math.nan, f"{constant!r} is constant over the {n} rows")
    za, zb = (xa - xa.mean()) / sa, (xb - xb.mean()) / sb
    r_ab = float(np.clip(np.mean(za * zb), -1.0, 1.0))
    design = np.column_stack([np.ones(n), za, zb])
    if np.linalg.matrix_rank(design) < _N_PARAMS:
        return _undefined(n, r_ab, f"{a!r} and {b!r} are collinear (r = {r_ab:+.3f}); the plane is not determined")
    coef, *_ = np.linalg.lstsq(design, y, rcond=None)
    ss_tot = float(np.sum((y - y.mean()) ** 2))
    if ss_tot == 0:
        return {**_undefined(n, r_ab, f"{target!r} is constant over the {n} rows; R² is undefined"),
                "coef": tuple(float(c) for c in coef)}
    resid = y - design @ coef
    r2 = 1.0 - float(resid @ resid) / ss_tot
    adj_r2 = 1.0 - (1.0 - r2) * (n - 1) / (n - _N_PARAMS)
    # Leverages h_ii = diag(X (X'X)^-1 X'), from the thin QR of the design (X = QR, H = QQ').
    q, _ = np.linalg.qr(design)
    leverage = np.sum(q * q, axis=1)
    if np.any(np.isclose(leverage, 1.0, rtol=0.0, atol=1e-10)):
        loo_r2 = math.nan
    else:
        press = float(np.sum((resid / (1.0 - leverage)) ** 2))
        loo_r2 = 1.0 - press / ss_tot
    return {
        "r2": r2,
        "adj_r2": adj_r2,
        "loo_r2": loo_r2,
        "coef": tuple(float(c) for c in coef),
        "r_ab": r_ab,
        "n": n,
        "reason": None,
    }


def all_pairs(frame: pd.DataFrame, metrics: Sequence[str], target: str) -> pd.DataFrame:
    """:func:`two_metric_regression` for every unordered pair of ``metrics`` (Fig. 8).

    One row per pair with columns a, b, n, r2, adj_r2, loo_r2, beta0, beta_a, beta_b, r_ab,
    reason; sorted by R² descending (undefined fits last, pair order kept among ties).
    """
    metrics = list(metrics)
    if len(set(metrics)) != len(metrics):
        raise ValueError(f"metrics: duplicate names in {metrics}")
    if len(metrics) < 2:
        raise ValueError(f"metrics: need at least two metrics to pair, got {metrics}")
    rows = []
    for a, b in itertools.combinations(metrics, 2):
        fit = two_metric_regression(frame, a, b, target)
        beta0, beta_a, beta_b = fit["coef"]
        rows.append(
            {
                "a": a,
                "b": b,
                "n": fit["n"],
                "r2": fit["r2"],
                "adj_r2": fit["adj_r2"],
                "loo_r2": fit["loo_r2"],
                "beta0": beta0,
                "beta_a": beta_a,
                "beta_b": beta_b,
                "r_ab": fit["r_ab"],
                "reason": fit["reason"],
            }
        )
    table = pd.DataFrame(rows)
    order = np.argsort(-table["r2"].fillna(-np.inf).to_numpy(), kind="stable")
    return table.iloc[order].reset_index(drop=True)
