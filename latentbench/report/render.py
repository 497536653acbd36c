"""Render the study report: a directory of linked pages with their images as files beside them.

``render_report`` reads ``results/<study>/metrics.csv``, ``correlations.csv`` and the analysis
tables of the ``correlate`` job (``analysis/*.csv``), plus the per-job artefacts the paper
sections need, and writes into the directory of ``out`` (``report/index.html``):

  index.html            overview: per paper the headline claim and what this study found, the ranked
                        proxy chart, a banner when the study is too small to say anything
  correlations.html     heatmaps (metrics x family / backbone / guidance), leave-one-out stability,
                        two-metric regressions, scatter grid of the primary setting
  ifid.html, diffusability.html, seesaw.html   one page per paper, its tables in its layout
  tokenizers.html, tok-<name>.html             the tokenizer index and one card per tokenizer
  methods.html          study settings, metric definitions, metrics not run, job run times
  style.css, img/, data/                       stylesheet, figures and copied images, the CSVs

Templates and the stylesheet are package data (``latentbench/report/templates``), loaded with
:class:`jinja2.PackageLoader`, so a wheel install renders the same report. The directory opens
from disk offline: no external URLs, no inlined images.
"""

from __future__ import annotations

import datetime as dt
import importlib.resources
import math
import shutil
from pathlib import Path
from typing import Any

import jinja2
import pandas as pd

from latentbench import __version__
from latentbench.analysis.metric_info import METRICS, info
from latentbench.analysis.seesaw import study_units
from latentbench.config import backbone_order, ordered_names
from latentbench.io import atomic_path, read_json
from latentbench.report.diffusability import diffusability_section
from latentbench.report.figures import IMAGE_SUBDIR, image_src, images_to, scatter_grid
from latentbench.report.ifid_tables import ifid_section
from latentbench.report.overview import (
    Setting,
    correlation_page,
    orient_table,
    overview_page,
)
from latentbench.report.paper_values import paper_text
from latentbench.report.seesaw import seesaw_page
from latentbench.report.tokenizers import tokenizer_cards, tokenizer_index
from latentbench.stages.report import ANALYSIS_TABLES, metric_columns, primary_setting

__all__ = ["PAGES", "TEMPLATES", "render_report", "report_env"]

TEMPLATES = Path(str(importlib.resources.files("latentbench.report") / "templates"))
# (file, navigation label): every page carries this bar.
PAGES: tuple[tuple[str, str], ...] = (
    ("index.html", "Overview"),
    ("correlations.html", "Correlations"),
    ("ifid.html", "iFID paper"),
    ("diffusability.html", "Diffusability paper"),
    ("seesaw.html", "Seesaw paper"),
    ("tokenizers.html", "Tokenizers"),
    ("methods.html", "Methods"),
)
DATA_SUBDIR = "data"  # the CSVs the pages are formatted from, copied for download


def report_env() -> jinja2.Environment:
    """The report's Jinja environment: package templates, autoescape, strict undefined, and the
    global ``paper_says(name, column, **where)`` that quotes a transcribed paper value in prose."""
    env = jinja2.Environment(loader=jinja2.PackageLoader("latentbench.report", "templates"), autoescape=True,
                             undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    env.globals["paper_says"] = paper_text
    return env


def _rule_times(results: Path) -> list[dict[str, Any]]:
    """Wall time per rule from Snakemake's benchmark files (jobs, total, slowest job, max RSS),
    longest total first: one row per rule, not per job (a paper-scale study has thousands)."""
    per_rule: dict[str, dict[str, Any]] = {}
    for tsv in sorted((results / "benchmarks").glob("*.tsv")):
        try:
            bench = pd.read_csv(tsv, sep="\t")
        except (pd.errors.EmptyDataError, pd.errors.ParserError):
            continue
        rule = tsv.stem.split("-", 1)[0]
        seconds, rss = float(bench["s"].iloc[0]), float(bench["max_rss"].iloc[0])
        r = per_rule.setdefault(rule, {"rule": rule, "jobs": 0, "total": 0.0, "slowest": 0.0, "slowest_job": "",
                                       "max_rss_mb": 0.0})
        r["jobs"] += 1
        r["total"] += seconds
        if seconds >= r["slowest"]:
            r["slowest"], r["slowest_job"] = seconds, tsv.stem
        r["max_rss_mb"] = max(r["max_rss_mb"], rss if math.isfinite(rss) else 0.0)
    return sorted(per_rule.values(), key=lambda r: -r["total"])


def _not_run(results: Path, tokenizers: list[str]) -> list[dict[str, Any]]:
    """Metrics a job reported as not run, per metric with the tokenizers it concerns (only the
    study's tokenizers, never stale directories)."""
    seen: dict[tuple[str, str], list[str]] = {}
    for tok in tokenizers:
        paths = [results / "metrics" / tok / "reconstruction.json", results / "metrics" / tok / "latent.json",
                 *sorted((results / "metrics" / tok).glob("*/generation.json"))]
        for path in paths:
            if path.exists():
                for name, why in (read_json(path).get("not_run") or {}).items():
                    toks = seen.setdefault((name, str(why)), [])
                    if tok not in toks:
                        toks.append(tok)
    return [{"name": name, "why": why, "tokenizers": toks, "all": len(toks) == len(tokenizers)}
            for (name, why), toks in sorted(seen.items())]


def _feature_net_summary(results: Path, settings: dict) -> dict:
    """What the report says about the FID / IS feature space: the demo net's summary, or the external net."""
    if settings["name"] == "demo-cnn":
        return {**read_json(results / "features" / "demo-cnn.json"), "name": "demo-cnn"}
    return {"name": settings["name"], "options": settings.get("options", {})}


def _primary_family(frame: pd.DataFrame, tokenizers: list[str]) -> list[str]:
    """Families, the one with the most tokenizers first (ties: earliest tokenizer), as diffusability.py."""
    counts = frame.groupby("family")["tokenizer"].nunique()
    first = {fam: min(tokenizers.index(t) for t in g["tokenizer"]) for fam, g in frame.groupby("family")}
    return sorted(counts.index, key=lambda fam: (-counts[fam], first[fam]))


def _read_table(path: Path) -> pd.DataFrame | None:
    return pd.read_csv(path) if path.exists() else None


def _headlines(overview: dict, ifid: dict, diff: dict, seesaw: dict) -> list[dict[str, Any]]:
    """Per paper: its claim (numbers quoted from the transcribed CSVs), what this study found, link."""
    by_metric = {r["metric"]: r for r in overview["rows"]}

    def ours(metric: str) -> str:
        r = by_metric.get(metric)
        return f"r = {r['r_text']} {r['ci_text']} (n = {r['n']})" if r and r["r_text"] != "n/a" else "not measured"

    ifid_found = f"iFID {ours('ifid')}; rFID {ours('rfid')}, at {overview['setting']}."
    top = next((r for r in overview["rows"] if r["r_text"] != "n/a"), None)
    diff_found = (f"the strongest proxy here is {top['label']} ({top['r_text']} {top['ci_text']}, n = {top['n']}); "
                  f"VIV {ours('viv')}." if top else "no proxy could be correlated.")
    reg = diff.get("regression", {}) if diff.get("available") else {}
    if reg.get("available"):
        diff_found += f" Best two-metric fit: {reg['best']['a']} + {reg['best']['b']}, R² = {reg['best']['r2_text']}."
    fig2 = seesaw["fig2"]
    head = fig2.get("headline") if fig2.get("available") else None
    if head and head["ours_psnr"]:
        seesaw_found = (f"ρ(PSNR, spatial drift) = {head['ours_psnr']['text']} {head['ours_psnr']['ci']} "
                        f"(n = {head['ours_psnr']['n']})"
                        + (f"; ρ(gFID, spatial drift) = {head['ours_gfid']['text']} {head['ours_gfid']['ci']}"
                           if head["ours_gfid"] else "") + ".")
    else:
        seesaw_found = "not run: this study has no condition-drift measures (drift_* columns) yet."
    return [
        {"paper": "iFID", "href": "ifid.html",
         "claim": f"rFID does not predict gFID (PCC {paper_text('ifid_table3', 'SiTXL_nocfg_PCC', metric='rFID')}), "
                  f"iFID does (PCC {paper_text('ifid_table3', 'SiTXL_nocfg_PCC', metric='iFID')}; "
                  "SiT-XL w/o guidance, 13 VAEs).",
         "found": ifid_found},
        {"paper": "Diffusability", "href": "diffusability.html",
         "claim": f"velocity ambiguity leads the proxies (r(−VIV, gFID) = "
                  f"{paper_text('diffusability_headline', 'value', metrics='viv')}); SRSS + LNC together explain "
                  f"R² = {paper_text('diffusability_headline', 'value', metrics='srss+lnc')} of gFID.",
         "found": diff_found},
        {"paper": "Tilted Seesaw", "href": "seesaw.html",
         "claim": (f"reconstruction, not gFID, tracks condition drift (paper Table 5: ρ(PSNR, spatial drift) = "
                   f"{head['paper_psnr']['text']} over {head['paper_psnr']['n']} AEs"
                   + (f"; ρ(gFID, spatial drift) = {head['paper_gfid']['text']} over the {head['paper_gfid']['n']} "
                      "with a gFID" if head["paper_gfid"] else "") + ").") if head else
         "reconstruction, not gFID, tracks condition drift.",
         "found": seesaw_found},
    ]


def _copy_data(results: Path, root: Path) -> list[dict[str, str]]:
    """Copy the CSVs behind the pages into ``root/data`` (linked from the pages)."""
    out = []
    sources = [results / "metrics.csv", results / "correlations.csv",
               *[results / "analysis" / name for name in ANALYSIS_TABLES]]
    (root / DATA_SUBDIR).mkdir(parents=True, exist_ok=True)
    for src in sources:
        if src.exists():
            shutil.copyfile(src, root / DATA_SUBDIR / src.name)
            out.append({"name": src.name, "href": f"{DATA_SUBDIR}/{src.name}"})
    return out


def render_report(results: str | Path, config: dict, out: str | Path) -> None:
    """Build the report directory (the directory of ``out``, normally ``results/<study>/report``)
    from ``results/<study>`` and the study's config. ``out`` (index.html) is written last."""
    results, out = Path(results), Path(out)
    root = out.parent
    root.mkdir(parents=True, exist_ok=True)
    for sub in (IMAGE_SUBDIR, DATA_SUBDIR):
        shutil.rmtree(root / sub, ignore_errors=True)  # no stale figures from an earlier render
    frame = pd.read_csv(results / "metrics.csv")
    if frame.empty:
        raise ValueError(f"{results / 'metrics.csv'}: no rows; nothing to report")
    corr = pd.read_csv(results / "correlations.csv")
    stability = _read_table(results / "analysis" / "stability.csv")
    fig2 = _read_table(results / "analysis" / "seesaw_fig2.csv")
    fig2_paper = _read_table(results / "analysis" / "seesaw_fig2_paper.csv")
    target = config["analysis"]["target"]
    n_boot, seed = config["analysis"]["n_boot"], config["seed"]
    tokenizers = ordered_names(list(config.get("tokenizers") or {}), frame["tokenizer"].astype(str).tolist())
    backbones = backbone_order(config, frame)
    families = _primary_family(frame, tokenizers)
    backbone, w0 = primary_setting(frame, config)
    primary = Setting(families[0], backbone, w0)
    feature = _feature_net_summary(results, config["feature_net"])
    metrics = [m for m in metric_columns(frame, target) if frame[m].notna().any()]
    oriented = orient_table(corr)
    env = report_env()
    generated = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")

    with images_to(root):
        diff = diffusability_section(results, frame, config, n_boot=n_boot, seed=seed, correlations=corr)
        ifid = ifid_section(results, frame, config, n_boot=n_boot, seed=seed, correlations=corr)
        overview = overview_page(oriented, stability, primary, config)
        corr_page = correlation_page(oriented, stability, families, backbones, primary)
        units = frame[(frame["family"] == primary.family) & (frame["backbone"] == backbone)
                      & (frame["cfg_scale"].astype(float).sub(w0).abs() < 1e-9)]
        scatter = None
        if len(units) >= 2 and metrics:
            c = corr[(corr["family"] == primary.family) & (corr["backbone"] == backbone)
                     & (corr["cfg_scale"].astype(float).sub(w0).abs() < 1e-9)]
            scatter = image_src(scatter_grid(units, c, metrics, target, f"{primary.text}: metric vs {info(target).label}"),
                                "correlations-scatter")
        seesaw = seesaw_page(results, study_units(frame, backbone, w0).set_index("tokenizer").reindex(
            [t for t in tokenizers if t in set(frame["tokenizer"])]).reset_index(), fig2, fig2_paper, primary.text)
        cards = tokenizer_cards(results, root, frame, config, tokenizers, backbones)
        index = tokenizer_index(frame, tokenizers, backbones, w0)
    data = _copy_data(results, root)
    common = {"config": config, "version": __version__, "generated": generated, "pages": PAGES,
              "feature": feature, "study": config.get("study", ""), "data": data}
    summary = {"n_tokenizers": len(tokenizers), "families": families, "backbones": backbones,
               "scales": sorted(float(w) for w in frame["cfg_scale"].unique()), "primary": primary.text}
    pages = {
        "correlations.html": ("correlations.html.j2", {"corr": corr_page, "scatter": scatter, "diffusability": diff,
                                                       "n_boot": n_boot}),
        "ifid.html": ("page_ifid.html.j2", {"ifid": ifid}),
        "diffusability.html": ("page_diffusability.html.j2", {"diffusability": diff}),
        "seesaw.html": ("seesaw.html.j2", {"seesaw": seesaw}),
        "tokenizers.html": ("tokenizers.html.j2", {"index": index}),
        "methods.html": ("methods.html.j2", {"metric_info": [METRICS[m] for m in [target, *metrics]],
                                             "not_run": _not_run(results, tokenizers),
                                             "rule_times": _rule_times(results), "summary": summary}),
    }
    for name, (template, ctx) in pages.items():
        _write(root / name, env.get_template(template).render(page=name, **common, **ctx))
    for card in cards:
        _write(root / card["file"], env.get_template("card.html.j2").render(page="tokenizers.html", card=card,
                                                                            **common))
    (root / "style.css").write_text((TEMPLATES / "style.css").read_text())
    headlines = _headlines(overview, ifid, diff, seesaw)
    _write(out, env.get_template("index.html.j2").render(page="index.html", overview=overview, headlines=headlines,
                                                          summary=summary, **common))


def _write(path: Path, html: str) -> None:
    with atomic_path(path, suffix=".html") as tmp:
        tmp.write_text(html)
    path.chmod(0o644)  # a page anyone may read, like the images beside it (atomic_path creates 0600)
