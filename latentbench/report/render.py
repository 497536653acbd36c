"""Render the study report: one self-contained HTML page (inline CSS, images as data URIs)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import jinja2
import pandas as pd

from latentbench import __version__
from latentbench.analysis.metric_info import METRICS, info
from latentbench.io import atomic_path, read_json
from latentbench.report.diffusability import diffusability_section
from latentbench.report.figures import data_uri, scatter_grid
from latentbench.report.ifid_tables import ifid_section
from latentbench.stages.report import metric_columns

TEMPLATES = Path(__file__).resolve().parents[2] / "report" / "templates"


def _fmt(value, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and value != value):
        return "n/a"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _rule_times(results: Path) -> list[dict]:
    """Wall time of every job from Snakemake's benchmark files, longest first."""
    rows = []
    for tsv in sorted((results / "benchmarks").glob("*.tsv")):
        try:
            bench = pd.read_csv(tsv, sep="\t")
        except (pd.errors.EmptyDataError, pd.errors.ParserError):
            continue
        rows.append({"job": tsv.stem, "seconds": float(bench["s"].iloc[0]), "max_rss_mb": float(bench["max_rss"].iloc[0])})
    return sorted(rows, key=lambda r: -r["seconds"])


def _feature_net_summary(results: Path, settings: dict) -> dict:
    """What the report says about the FID / IS feature space: the demo net's summary, or the external net."""
    if settings["name"] == "demo-cnn":
        return {**read_json(results / "features" / "demo-cnn.json"), "name": "demo-cnn"}
    return {"name": settings["name"], "options": settings.get("options", {})}


def render_report(results: str | Path, config: dict, out: str | Path) -> None:
    """Build the page from results/<study>/{metrics,correlations}.csv and the per-job artefacts."""
    results = Path(results)
    frame = pd.read_csv(results / "metrics.csv")
    corr = pd.read_csv(results / "correlations.csv")
    target = config["analysis"]["target"]
    feature = _feature_net_summary(results, config["feature_net"])
    metrics = [m for m in metric_columns(frame, target) if frame[m].notna().any()]
    not_run: dict[str, str] = {}
    for done in sorted(results.glob("metrics/*/reconstruction.json")) + sorted(results.glob("metrics/*/latent.json")) + sorted(
        results.glob("metrics/*/*/generation.json")
    ):
        not_run.update(read_json(done).get("not_run", {}))

    figures = []
    setting = ["family", "backbone", "cfg_scale"]
    for (family, backbone, scale), group in frame.groupby(setting, sort=True):
        c = corr[(corr["family"] == family) & (corr["backbone"] == backbone) & (corr["cfg_scale"] == scale)]
        title = f"{family}, {backbone}, guidance w = {scale:g}: metric vs {info(target).label} (one point per tokenizer)"
        figures.append({"title": title, "src": data_uri(scatter_grid(group, c, metrics, target, title))})

    scales = sorted(frame["cfg_scale"].unique())
    backbones = sorted(frame["backbone"].unique())
    per_tok = []
    for tok, group in frame.groupby("tokenizer", sort=True):
        first = group.iloc[0]
        row = {"tokenizer": tok, "regularizer": first["regularizer"], "variant": first["variant"], "kl_weight": first["kl_weight"]}
        row.update({m: _fmt(first[m]) for m in ("rfid", "ifid", "psnr", "ssim")})
        row["family"] = first["family"]
        for bb in backbones:
            g = group[group["backbone"] == bb]
            trained = len(g) > 0  # else not in this tokenizer's `backbones` list: cells "—"
            row[f"diffusion_loss/{bb}"] = _fmt(g["diffusion_loss"].iloc[0], 4) if trained else "—"
            for scale in scales:
                sel = g[g["cfg_scale"] == scale]
                for m in ("gfid", "is"):
                    row[f"{m}/{bb}/{scale:g}"] = _fmt(sel[m].iloc[0] if len(sel) else None) if trained else "—"
        per_tok.append(row)

    corr_rows = []
    for metric in metrics:
        cells = []
        for _, c in corr[corr["metric"] == metric].groupby(setting, sort=True):
            r = c.iloc[0]
            cells.append(
                {
                    "pcc": _fmt(r["pcc"], 2),
                    "pcc_ci": f"[{_fmt(r['pcc_lo'], 2)}, {_fmt(r['pcc_hi'], 2)}]",
                    "srcc": _fmt(r["srcc"], 2),
                    "srcc_ci": f"[{_fmt(r['srcc_lo'], 2)}, {_fmt(r['srcc_hi'], 2)}]",
                    "n": int(r["n"]),
                }
            )
        corr_rows.append({"metric": info(metric).label, "higher_is_better": info(metric).higher_is_better, "cells": cells})
    corr_columns = [f"{fam}, {bb}, w = {scale:g}" for (fam, bb, scale), _ in corr.groupby(setting, sort=True)]

    thumbnails = []
    for tok in sorted(frame["tokenizer"].unique()):
        strip = results / "metrics" / tok / "interpolation.png"
        samples = sorted((results / "samples" / tok).glob("*/cfg*/shard-000.png"))
        thumbnails.append(
            {
                "tokenizer": tok,
                "strip": data_uri(strip.read_bytes()) if strip.exists() else None,
                "samples": [{"title": f"{p.parent.parent.name}, {p.parent.name.replace('cfg', 'w = ')}", "src": data_uri(p.read_bytes())} for p in samples],
            }
        )

    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=True, undefined=jinja2.StrictUndefined)
    html = env.get_template("index.html.j2").render(
        config=config,
        version=__version__,
        generated=dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        feature=feature,
        target_label=info(target).label,
        per_tok=per_tok,
        backbones=backbones,
        scales=[f"{s:g}" for s in scales],
        corr_rows=corr_rows,
        corr_columns=corr_columns,
        figures=figures,
        thumbnails=thumbnails,
        rule_times=_rule_times(results),
        not_run=not_run,
        metric_info=[METRICS[m] for m in [target, *metrics]],
        css=(TEMPLATES.parent / "style.css").read_text(),
        diffusability=diffusability_section(results, frame, config, n_boot=config["analysis"]["n_boot"], seed=config["seed"]),
        ifid=ifid_section(results, frame, config, n_boot=config["analysis"]["n_boot"], seed=config["seed"]),
    )
    with atomic_path(out, suffix=".html") as tmp:
        tmp.write_text(html)
