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
import pandas as pd
import seaborn as sns

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


def image_src(image, name: str = "figure") -> str:
    """The ``src`` of an image (a matplotlib figure, closed here, or PNG bytes) for a page at the
    report root: ``img/<name>-<hash8>.png`` inside :func:`images_to`, else a data URI."""
    png = image if isinstance(image, bytes) else png_bytes(image)
    root = _IMAGE_DIR.get()
    if root is None:
        return data_uri(png)
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-") or "figure"
    rel = f"{IMAGE_SUBDIR}/{stem}-{hashlib.sha256(png).hexdigest()[:8]}.png"
    path = root / rel
    if not path.exists():
        path.write_bytes(png)
    return rel


def png_bytes(fig) -> bytes:
    """Render a matplotlib figure to PNG bytes and close it."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return buffer.getvalue()


def scatter_grid(frame: pd.DataFrame, corr: pd.DataFrame, metrics: list[str], target: str, title: str) -> bytes:
    """One panel per metric: metric (x) vs target (y), one point per tokenizer, r and ρ in the title."""
    cols = min(3, len(metrics))
    rows = math.ceil(len(metrics) / cols)
    sns.set_theme(style="whitegrid", context="notebook", font_scale=0.85)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.4 * rows), squeeze=False)
    palette = dict(zip(sorted(frame["tokenizer"]), sns.color_palette("tab10", frame["tokenizer"].nunique())))
    for ax, metric in zip(axes.flat, metrics):
        sns.regplot(data=frame, x=metric, y=target, ax=ax, scatter=False, ci=None, color="0.6", line_kws={"lw": 1})
        sns.scatterplot(data=frame, x=metric, y=target, hue="tokenizer", palette=palette, ax=ax, s=60, legend=False)
        for _, row in (frame.iterrows() if len(frame) <= MAX_POINT_LABELS else ()):
            ax.annotate(row["tokenizer"], (row[metric], row[target]), fontsize=7, xytext=(3, 3), textcoords="offset points")
        c = corr[corr["metric"] == metric]
        r = c["pcc"].iloc[0] if len(c) else float("nan")
        rho = c["srcc"].iloc[0] if len(c) else float("nan")
        ax.set_title(f"{info(metric).label}: r = {r:+.2f}, ρ = {rho:+.2f}")
        ax.set_xlabel(info(metric).label)
        ax.set_ylabel(info(target).label)
    for ax in list(axes.flat)[len(metrics) :]:
        ax.axis("off")
    fig.tight_layout()
    fig.suptitle(title, y=1.01)
    return png_bytes(fig)
