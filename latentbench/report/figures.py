"""Report figures: PNG bytes of matplotlib figures, and where a page finds them.

A page refers to a figure by :func:`image_src`: inside :func:`images_to` (the report renderer)
the PNG is written once to ``<report>/img/<name>-<hash>.png`` and the page gets that relative
path, so the report directory opens offline and weighs what its images weigh; outside it (a
section rendered on its own, as the unit tests do) the page gets a self-contained data URI.
"""

from __future__ import annotations

import base64
import contextlib
import contextvars
import hashlib
import io
import math
import re
from collections.abc import Iterator
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.ticker import MaxNLocator

from latentbench.analysis.metric_info import info

MAX_POINT_LABELS = 30  # above this many points a scatter panel names none of them

# The report directory figures are written to (None: inline data URIs).
_IMAGE_DIR: contextvars.ContextVar[Path | None] = contextvars.ContextVar("image_dir", default=None)
IMAGE_SUBDIR = "img"


def data_uri(png: bytes) -> str:
    """PNG bytes as a data URI (a page rendered on its own stays one self-contained file)."""
    return "data:image/png;base64," + base64.b64encode(png).decode()


@contextlib.contextmanager
def images_to(report_dir: str | Path) -> Iterator[Path]:
    """Within the block, :func:`image_src` writes PNGs under ``report_dir/img`` and returns relative paths."""
    root = Path(report_dir)
    (root / IMAGE_SUBDIR).mkdir(parents=True, exist_ok=True)
    token = _IMAGE_DIR.set(root)
    try:
        yield root
    finally:
        _IMAGE_DIR.reset(token)


def image_src(image, name: str = "figure", fixed: bool = False) -> str:
    """The ``src`` of an image (a matplotlib figure, closed here, or PNG bytes) for a page at the
    report root: ``img/<name>-<hash8>.png`` inside :func:`images_to` (``img/<name>.png`` when
    ``fixed``: a file the workflow declares as an output), else a data URI."""
    png = image if isinstance(image, bytes) else png_bytes(image)
    root = _IMAGE_DIR.get()
    if root is None:
        return data_uri(png)
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-") or "figure"
    rel = f"{IMAGE_SUBDIR}/{stem}.png" if fixed else f"{IMAGE_SUBDIR}/{stem}-{hashlib.sha256(png).hexdigest()[:8]}.png"
    path = root / rel
    if fixed or not path.exists():
        path.write_bytes(png)
    return rel


def png_bytes(fig) -> bytes:
    """Render a matplotlib figure to PNG bytes and close it."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return buffer.getvalue()


def scatter_grid(frame: pd.DataFrame, corr: pd.DataFrame, metrics: list[str], target: str, title: str) -> bytes:
    """One panel per metric: metric (x) vs target (y), one point per tokenizer (named up to
    MAX_POINT_LABELS points), OLS line, r and ρ (from ``corr``, the correlations.csv rows of this
    setting) in the title. Plain matplotlib: a paper-scale study draws 25 panels of 43 points."""
    cols = min(4, len(metrics))
    rows = math.ceil(len(metrics) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.4 * cols, 2.7 * rows), squeeze=False)
    names = sorted(frame["tokenizer"].unique())
    colours = dict(zip(names, sns.color_palette("tab10" if len(names) <= 10 else "husl", len(names))))
    label = len(frame) <= MAX_POINT_LABELS
    for ax, metric in zip(axes.flat, metrics):
        x, y = frame[metric].to_numpy(float), frame[target].to_numpy(float)
        ok = np.isfinite(x) & np.isfinite(y)
        ax.scatter(x[ok], y[ok], c=[colours[t] for t in frame["tokenizer"][ok]], s=22, edgecolor="white", linewidth=0.4)
        if ok.sum() >= 2 and np.ptp(x[ok]) > 0:
            slope, intercept = np.polyfit(x[ok], y[ok], 1)
            xs = np.array([x[ok].min(), x[ok].max()])
            ax.plot(xs, intercept + slope * xs, color="0.55", lw=1)
        if label:
            for name, xi, yi in zip(frame["tokenizer"][ok], x[ok], y[ok]):
                ax.annotate(name, (xi, yi), fontsize=6, xytext=(2, 2), textcoords="offset points")
        c = corr[corr["metric"] == metric]
        r = c["pcc"].iloc[0] if len(c) else float("nan")
        rho = c["srcc"].iloc[0] if len(c) else float("nan")
        ax.set_title(f"{info(metric).label}: r = {r:+.2f}, ρ = {rho:+.2f}", fontsize=8)
        ax.set_xlabel(info(metric).label, fontsize=7)
        ax.set_ylabel(info(target).label, fontsize=7)
        ax.tick_params(labelsize=6)
        ax.xaxis.set_major_locator(MaxNLocator(4))
        ax.yaxis.set_major_locator(MaxNLocator(4))
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(metrics) :]:
        ax.axis("off")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return png_bytes(fig)
