"""Correlation of a metric with a target across units (e.g. VAEs), with bootstrap CIs.

PCC is Pearson's r (``scipy.stats.pearsonr``), SRCC Spearman's rho with average ranks for
ties (``scipy.stats.spearmanr``), as in the iFID paper Sec. 4.1 (spec ifid-seesaw 6).
Beyond the papers (DESIGN.md): 95% percentile-bootstrap confidence intervals over units,
resampling (metric, target) pairs with replacement.

Sign convention (spec 6) is the caller's: orient every metric "lower = better" before
correlating (``correlation_table(..., negate=["psnr", "ssim"])``).
"""

from __future__ import annotations

import math
from typing import Any, Iterable, Sequence

import numpy as np
import pandas as pd
import scipy.stats

__all__ = ["correlate", "correlation_table"]

CI_LEVEL = 0.95
# Resamples are processed in blocks of at most this many values (n_boot x n), so the
# memory stays bounded for large n; the block size depends only on n, so a seed gives the
# same resamples on every machine.
_BLOCK_VALUES = 2**20


def _as_vector(values: Any, name: str) -> np.ndarray:
    """A 1-D float64 copy of ``values`` (list, numpy, pandas, torch)."""
    if hasattr(values, "detach"):  # torch tensor
        values = values.detach().cpu().numpy()
    try:
        arr = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name}: not convertible to a float vector ({exc})") from None
    if arr.ndim != 1:
        raise ValueError(f"{name}: expected a 1-D sequence, got shape {arr.shape}")
    if np.isinf(arr).any():
        raise ValueError(f"{name}: contains inf (NaN marks a missing value; inf is not allowed)")
    return arr


def _rowwise_pearson(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pearson r of each row pair of a, b [B, n] (rows must not be constant)."""
    a = a - a.mean(axis=1, keepdims=True)
    b = b - b.mean(axis=1, keepdims=True)
    r = (a * b).sum(axis=1) / np.sqrt((a * a).sum(axis=1) * (b * b).sum(axis=1))
    return np.clip(r, -1.0, 1.0)


def _bootstrap(
    x: np.ndarray, y: np.ndarray, n_boot: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """PCC and SRCC of ``n_boot`` paired resamples (with replacement) of the units.

    Resamples in which x or y is constant have no correlation and are skipped, so the
    returned arrays may be shorter than ``n_boot``. Vectorised over resamples.
    """
    n = x.shape[0]
    rng = np.random.default_rng(seed)
    block = max(1, _BLOCK_VALUES // n)
    pcc, srcc = [], []
    for start in range(0, n_boot, block):
        idx = rng.integers(0, n, size=(min(block, n_boot - start), n))
        xb, yb = x[idx], y[idx]
        ok = (np.ptp(xb, axis=1) > 0) & (np.ptp(yb, axis=1) > 0)
        xb, yb = xb[ok], yb[ok]
        pcc.append(_rowwise_pearson(xb, yb))
        # Spearman = Pearson of average ranks (scipy.stats.spearmanr semantics).
        srcc.append(
            _rowwise_pearson(
                scipy.stats.rankdata(xb, method="average", axis=1),
                scipy.stats.rankdata(yb, method="average", axis=1),
            )
        )
    return np.concatenate(pcc), np.concatenate(srcc)


def _percentile_ci(samples: np.ndarray) -> tuple[float, float]:
    """Two-sided percentile interval at ``CI_LEVEL`` (NaN if there are no samples)."""
    if samples.size == 0:
        return (math.nan, math.nan)
    tail = 100 * (1 - CI_LEVEL) / 2
    lo, hi = np.percentile(samples, [tail, 100 - tail])
    return (float(lo), float(hi))


def correlate(x: Any, y: Any, n_boot: int = 1000, seed: int = 0) -> dict[str, Any]:
    """Pearson and Spearman correlation of x with y, with 95% bootstrap CIs.

    Pairs where x or y is NaN are dropped. Returns a dict with ``n`` (pairs used),
    ``pcc``, ``pcc_p``, ``pcc_ci`` (lo, hi), ``srcc``, ``srcc_p``, ``srcc_ci`` and
    ``n_boot_used`` (resamples that were not constant). Fewer than 3 pairs, or a constant
    variable, give NaN values rather than an error.
    """
    xv, yv = _as_vector(x, "x"), _as_vector(y, "y")
    if xv.shape != yv.shape:
        raise ValueError(f"y: length {yv.shape[0]} differs from x's {xv.shape[0]}")
    if int(n_boot) != n_boot or n_boot < 0:
        raise ValueError(f"n_boot: expected a non-negative integer, got {n_boot}")
    keep = ~(np.isnan(xv) | np.isnan(yv))
    xv, yv = xv[keep], yv[keep]
    n = int(xv.shape[0])
    result: dict[str, Any] = {
        "n": n,
        "pcc": math.nan,
        "pcc_p": math.nan,
        "pcc_ci": (math.nan, math.nan),
        "srcc": math.nan,
        "srcc_p": math.nan,
        "srcc_ci": (math.nan, math.nan),
        "n_boot_used": 0,
    }
    if n < 3 or np.ptp(xv) == 0 or np.ptp(yv) == 0:
        return result
    pearson = scipy.stats.pearsonr(xv, yv)
    spearman = scipy.stats.spearmanr(xv, yv)
    result.update(
        pcc=float(pearson.statistic),
        pcc_p=float(pearson.pvalue),
        srcc=float(spearman.statistic),
        srcc_p=float(spearman.pvalue),
    )
    if n_boot > 0:
        boot_pcc, boot_srcc = _bootstrap(xv, yv, int(n_boot), seed)
        result.update(
            pcc_ci=_percentile_ci(boot_pcc),
            srcc_ci=_percentile_ci(boot_srcc),
            n_boot_used=int(boot_pcc.size),
        )
    return result


def _column(df: pd.DataFrame, name: str) -> np.ndarray:
    """A numeric column as float64, pandas missing values (None, pd.NA) as NaN."""
    try:
        return df[name].to_numpy(dtype=np.float64, na_value=np.nan)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"df: column {name!r} is not numeric ({exc})") from None


def correlation_table(
    df: pd.DataFrame,
    metrics: Sequence[str],
    target: str,
    negate: Iterable[str] = (),
    n_boot: int = 1000,
    seed: int = 0,
) -> pd.DataFrame:
    """``correlate`` of each metric column of ``df`` with the ``target`` column.

    One row per metric (index = metric column name), columns: negated, n, pcc, pcc_lo,
    pcc_hi, pcc_p, srcc, srcc_lo, srcc_hi, srcc_p. Metrics named in ``negate`` are
    multiplied by -1 first (higher-is-better metrics such as PSNR, spec 6). Every metric
    uses the same seed, so all rows are bootstrapped over the same resamples of units.
    """
    if not isinstance(df, pd.DataFrame):
        raise ValueError(f"df: expected a pandas DataFrame, got {type(df).__name__}")
    negate = set(negate)
    missing = [c for c in [*metrics, target, *negate] if c not in df.columns]
    if missing:
        raise ValueError(f"df: missing column(s) {missing}; has {list(df.columns)}")
    if not negate <= set(metrics):
        raise ValueError(f"negate: {sorted(negate - set(metrics))} not among metrics")
    rows = []
    for metric in metrics:
        sign = -1.0 if metric in negate else 1.0
        res = correlate(sign * _column(df, metric), _column(df, target), n_boot, seed)
        rows.append(
            {
                "metric": metric,
                "negated": metric in negate,
                "n": res["n"],
                "pcc": res["pcc"],
                "pcc_lo": res["pcc_ci"][0],
                "pcc_hi": res["pcc_ci"][1],
                "pcc_p": res["pcc_p"],
                "srcc": res["srcc"],
                "srcc_lo": res["srcc_ci"][0],
                "srcc_hi": res["srcc_ci"][1],
                "srcc_p": res["srcc_p"],
            }
        )
    return pd.DataFrame(rows).set_index("metric")
