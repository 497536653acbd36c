"""The tokenizer index and one card per tokenizer: its config, images, and every metric with its
rank in the study (1 = best in the metric's own direction, metric_info.higher_is_better).

Images are copied next to the pages (``img/tok/<tok>/...``), never inlined, and loaded lazily.
"""

from __future__ import annotations

import math
import re
import shutil
from pathlib import Path
from typing import Any

import pandas as pd

from latentbench.analysis.metric_info import METRICS, info
from latentbench.report.cells import column_format, num, scale_text
from latentbench.report.figures import IMAGE_SUBDIR

__all__ = ["card_file", "tokenizer_cards", "tokenizer_index"]

SUMMARY_METRICS = ("rfid", "ifid", "psnr", "ssim", "lpips")  # the index's per-tokenizer columns
SETTING_METRICS_FIRST = ("gfid", "is", "fdr6", "diffusion_loss")


def card_file(tok: str) -> str:
    """The card's file name (tokenizer names are config keys; anything unsafe becomes '-')."""
    return "tok-" + re.sub(r"[^A-Za-z0-9_.-]+", "-", tok) + ".html"


def _per_tokenizer_metrics(frame: pd.DataFrame) -> tuple[list[str], list[str]]:
    """Metric columns with one value per tokenizer, and those that vary with backbone / scale."""
    per_tok, per_setting = [], []
    for m in METRICS:
        if m not in frame.columns or not frame[m].notna().any():
            continue
        varies = frame.groupby("tokenizer")[m].nunique(dropna=True).max() > 1
        (per_setting if varies or m in SETTING_METRICS_FIRST else per_tok).append(m)
    order = [m for m in SETTING_METRICS_FIRST if m in per_setting] + [m for m in per_setting if m not in SETTING_METRICS_FIRST]
    return per_tok, order


def _ranks(values: pd.Series, metric: str) -> pd.Series:
    return values.rank(ascending=not info(metric).higher_is_better, method="min")


def tokenizer_index(frame: pd.DataFrame, tokenizers: list[str], backbones: list[str], w0: float) -> dict[str, Any]:
    """Context of tokenizers.html: one row per tokenizer with its summary metrics and gFID per
    backbone at w0, each with its rank."""
    first = frame.drop_duplicates("tokenizer").set_index("tokenizer")
    summary = [m for m in SUMMARY_METRICS if m in first.columns and first[m].notna().any()]
    ranks = {m: _ranks(first[m].astype(float), m) for m in summary}
    fmts = {m: column_format(first[m]) for m in summary}
    gfid_fmt = column_format(frame["gfid"]) if "gfid" in frame.columns else ".2f"
    gfid = {}
    for bb in backbones:
        sel = frame[(frame["backbone"] == bb) & (frame["cfg_scale"].astype(float).sub(w0).abs() < 1e-9)]
        values = sel.set_index("tokenizer")["gfid"].astype(float)
        gfid[bb] = (values, _ranks(values, "gfid"))
    rows = []
    for tok in tokenizers:
        if tok not in first.index:
            continue
        f = first.loc[tok]
        cells = [{"text": num(f[m], fmts[m]), "rank": _rank_text(ranks[m].get(tok))} for m in summary]
        for bb in backbones:
            values, rk = gfid[bb]
            cells.append({"text": num(values[tok], gfid_fmt) if tok in values.index else "—",
                          "rank": _rank_text(rk.get(tok)) if tok in values.index else ""})
        rows.append({"tokenizer": tok, "href": card_file(tok), "family": str(f.get("family", "")),
                     "regularizer": str(f.get("regularizer", "")), "variant": str(f.get("variant", "")),
                     "latent_shape": str(f.get("latent_shape", "")), "cells": cells})
    headers = [info(m).label for m in summary] + [f"gFID {bb}, w = {scale_text(w0)}" for bb in backbones]
    return {"headers": headers, "rows": rows, "n": len(rows)}


def _rank_text(rank: Any) -> str:
    return "" if rank is None or math.isnan(float(rank)) else f"#{int(rank)}"


def _copy(src: Path, root: Path, rel: str) -> str | None:
    if not src.exists():
        return None
    dst = root / rel
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dst)
    return rel


def tokenizer_cards(results: Path, root: Path, frame: pd.DataFrame, config: dict, tokenizers: list[str],
                    backbones: list[str]) -> list[dict[str, Any]]:
    """One card context per tokenizer; copies its interpolation strip and sample grids under ``root``."""
    per_tok, per_setting = _per_tokenizer_metrics(frame)
    first = frame.drop_duplicates("tokenizer").set_index("tokenizer")
    n_tok = len(first)
    tok_ranks = {m: _ranks(first[m].astype(float), m) for m in per_tok}
    frame = frame.assign(cfg_scale=frame["cfg_scale"].astype(float))
    setting_ranks = {m: frame.groupby(["backbone", "cfg_scale"])[m].rank(
        ascending=not info(m).higher_is_better, method="min") for m in per_setting}
    setting_counts = frame.groupby(["backbone", "cfg_scale"])["tokenizer"].transform("nunique")
    fmts = {m: column_format(frame[m]) for m in [*per_tok, *per_setting]}
    cards = []
    for tok in tokenizers:
        if tok not in first.index:
            continue
        base = f"{IMAGE_SUBDIR}/tok/{re.sub(r'[^A-Za-z0-9_.-]+', '-', tok)}"
        strip = _copy(results / "metrics" / tok / "interpolation.png", root, f"{base}/interpolation.png")
        samples = []
        for bb in backbones:
            shots = []
            for path in sorted((results / "samples" / tok / bb).glob("cfg*/shard-000.png")):
                w = path.parent.name.removeprefix("cfg")
                rel = _copy(path, root, f"{base}/{bb}-{path.parent.name}.png")
                shots.append({"src": rel, "title": f"{bb}, w = {w}"})
            if shots:
                samples.append({"backbone": bb, "shots": shots})
        f = first.loc[tok]
        metrics = [{"label": info(m).label, "value": num(f[m], fmts[m]), "rank": _rank_text(tok_ranks[m][tok]),
                    "of": n_tok, "direction": "higher" if info(m).higher_is_better else "lower"}
                   for m in per_tok if f[m] == f[m]]
        rows = frame[frame["tokenizer"] == tok]
        settings = []
        for i, r in rows.iterrows():
            settings.append({"backbone": r["backbone"], "w": scale_text(r["cfg_scale"]), "of": int(setting_counts[i]),
                             "cells": [{"value": num(r[m], fmts[m]), "rank": _rank_text(setting_ranks[m][i])}
                                       for m in per_setting]})
        spec = (config.get("tokenizers") or {}).get(tok, {})
        cards.append({
            "tokenizer": tok, "file": card_file(tok), "spec": {k: str(v) for k, v in sorted(spec.items())},
            "family": str(f.get("family", "")), "latent_shape": str(f.get("latent_shape", "")),
            "posterior_std": num(f.get("posterior_std", float("nan")), ".4f"), "strip": strip, "samples": samples,
            "metrics": metrics, "setting_headers": [info(m).label for m in per_setting], "settings": settings,
        })
    return cards
