"""Report figures: metric-vs-gFID scatter grids (seaborn), returned as PNG bytes."""

from __future__ import annotations

import base64
import io
import math

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

from latentbench.analysis.metric_info import info  # noqa: E402


def data_uri(png: bytes) -> str:
    """PNG bytes as a data URI, so the report page stays one self-contained file."""
    return "data:image/png;base64," + base64.b64encode(png).decode()


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
        for _, row in frame.iterrows():
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
