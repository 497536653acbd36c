"""Collect per-job JSON into metrics.csv, correlate with gFID, render the report (rules/report.smk)."""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd

from latentbench.analysis.correlation import correlate
from latentbench.analysis.metric_info import METRICS
from latentbench.analysis.seesaw import (
    DRIFT_MEASURES,
    X_METRICS,
    paper_units,
    spearman_matrix,
    study_units,
)
from latentbench.analysis.stability import stability_table
from latentbench.config import backbone_order, study_family, tokenizer_backbones
from latentbench.io import atomic_path, read_json

log = logging.getLogger(__name__)

ID_COLUMNS = ["tokenizer", "label", "family", "regularizer", "variant", "kl_weight", "backbone", "recipe", "cfg_scale"]


def collect(metrics_dir: str | Path, latents_dir: str | Path, tokenizers: dict, backbones: dict, out: str | Path) -> pd.DataFrame:
    """One row per trained (tokenizer, backbone) x guidance scale with every metric the study computed,
    plus each tokenizer's latent shape and mean posterior std (from its val latent cache). ``family``
    is the tokenizer's study family (:func:`latentbench.config.study_family`)."""
    metrics_dir = Path(metrics_dir)
    rows = []
    for tok, spec in sorted(tokenizers.items()):
        cache = read_json(Path(latents_dir) / tok / "val" / "stats.json")
        recon = read_json(metrics_dir / tok / "reconstruction.json")
        per_tok = {**read_json(metrics_dir / tok / "latent.json"), **read_json(metrics_dir / tok / "baselines.json")}
        latent_values = {k: per_tok[k] for k in METRICS if k in per_tok}
        for bb in tokenizer_backbones(spec, backbones):
            bspec = backbones[bb]
            generation = read_json(metrics_dir / tok / bb / "generation.json")
            loss = read_json(metrics_dir / tok / bb / "diffusion_loss.json")
            traj = read_json(metrics_dir / tok / bb / "trajectory.json")
            for scale, gen in sorted(generation["per_scale"].items(), key=lambda kv: float(kv[0])):
                rows.append(
                    {
                        "tokenizer": tok,
                        "label": spec.get("label", tok),
                        "family": study_family(spec),
                        "regularizer": spec.get("regularizer", "baseline"),
                        "variant": spec.get("variant", "-"),
                        "kl_weight": spec.get("kl_weight"),
                        "backbone": bb,
                        "recipe": bspec["recipe"],
                        "cfg_scale": float(scale),
                        "gfid": gen["gfid"],
                        "num_samples": gen["num_samples"],
                        "is": gen["is"],
                        "is_std": gen["is_std"],
                        "fdr6": gen.get("fdr6", {}).get("fdr6"),
                        "rfid": recon["rfid"],
                        "ifid": recon["ifid"],
                        "psnr": recon["psnr"],
                        "ssim": recon["ssim"],
                        "lpips": recon.get("lpips"),
                        "diffusion_loss": loss["diffusion_loss"],
                        **latent_values,
                        "straightness": traj["straightness"],
                        "efficiency": traj["efficiency"],
                        "feature_net": generation["feature_net"],
                        "latent_shape": "x".join(map(str, cache["latent_shape"])),
                        "posterior_std": cache["mean_posterior_std"],
                        **seesaw_columns(metrics_dir / tok),
                    }
                )
    frame = pd.DataFrame(rows)
    with atomic_path(out, suffix=".csv") as tmp:
        frame.to_csv(tmp, index=False)
    log.info("collected %d rows", len(frame))
    return frame


# Seesaw columns of metrics.csv from a tokenizer's drift.json / probe_<condition>.json (rules/seesaw.smk)
SEESAW_DRIFT_COLUMNS = ("canny", "depth", "seg", "spatial", "identity", "face_at_r", "clip", "dinov2")
SEESAW_PROBE_COLUMNS = ("canny", "depth")


def seesaw_columns(tok_dir: Path) -> dict[str, float | None]:
    """``drift_<measure>`` and ``probe_<condition>`` of one tokenizer (None: not run); no columns
    when the study ran no Seesaw jobs for it."""
    out: dict[str, float | None] = {}
    if (tok_dir / "drift.json").exists():
        drift = read_json(tok_dir / "drift.json")
        out.update({f"drift_{m}": drift.get(m) for m in SEESAW_DRIFT_COLUMNS})
    for c in SEESAW_PROBE_COLUMNS:
        if (tok_dir / f"probe_{c}.json").exists():
            out[f"probe_{c}"] = read_json(tok_dir / f"probe_{c}.json").get("test_l1")
    return out


def metric_columns(frame: pd.DataFrame, target: str) -> list[str]:
    """Metric columns present in ``frame`` (in METRICS order), excluding the target."""
    return [m for m in METRICS if m in frame.columns and m != target]


def correlations(frame: pd.DataFrame, target: str, n_boot: int, seed: int) -> pd.DataFrame:
    """PCC and SRCC (with 95% bootstrap intervals) of every metric with the target, per tokenizer
    family x backbone x scale (the study correlates within one family, spec metrics-diffusability §13)."""
    rows = []
    for (family, backbone, scale), group in frame.groupby(["family", "backbone", "cfg_scale"], sort=True):
        for metric in metric_columns(frame, target):
            result = correlate(group[metric].to_numpy(float), group[target].to_numpy(float), n_boot=n_boot, seed=seed)
            rows.append(
                {
                    "family": family,
                    "backbone": backbone,
                    "cfg_scale": scale,
                    "metric": metric,
                    "target": target,
                    "n": result["n"],
                    "pcc": result["pcc"],
                    "pcc_lo": result["pcc_ci"][0],
                    "pcc_hi": result["pcc_ci"][1],
                    "srcc": result["srcc"],
                    "srcc_lo": result["srcc_ci"][0],
                    "srcc_hi": result["srcc_ci"][1],
                    "pcc_p": result["pcc_p"],
                    "srcc_p": result["srcc_p"],
                }
            )
    return pd.DataFrame(rows)


# The analysis tables the correlate job writes beside correlations.csv (rules/report.smk); the
# report only formats them.
ANALYSIS_TABLES = ("stability.csv", "seesaw_fig2.csv", "seesaw_fig2_paper.csv")


def primary_setting(frame: pd.DataFrame, settings: dict) -> tuple[str, float]:
    """The primary backbone (:func:`latentbench.config.backbone_order`) and the no-CFG guidance
    scale (w = 1 when sampled, else the smallest) of a metrics.csv frame."""
    backbone = backbone_order(settings, frame)[0]
    scales = sorted(frame.loc[frame["backbone"].astype(str) == backbone, "cfg_scale"].astype(float).unique())
    return backbone, (1.0 if any(abs(w - 1.0) < 1e-9 for w in scales) else scales[0])


def _write_csv(table: pd.DataFrame, out: Path) -> None:
    with atomic_path(out, suffix=".csv") as tmp:
        table.to_csv(tmp, index=False)


def correlate_study(metrics_csv: str, settings: dict, out: str, tables_dir: str = "") -> None:
    """Write correlations.csv for a study's metrics.csv and, when ``tables_dir`` is given, the
    analysis tables of :data:`ANALYSIS_TABLES` there: leave-one-tokenizer-out stability of every
    correlation, and the Seesaw Fig. 2 Spearman matrix on the study (primary backbone, no CFG) and
    on the paper's Table 5. ``settings`` holds ``seed``, ``analysis`` and (optionally) ``backbones``."""
    frame = pd.read_csv(metrics_csv)
    analysis = settings["analysis"]
    target = analysis["target"]
    if target not in frame.columns:
        raise ValueError(f"analysis.target: column {target!r} is not in {metrics_csv}")
    n_boot, seed = analysis["n_boot"], settings["seed"]
    _write_csv(correlations(frame, target, n_boot, seed), Path(out))
    if not tables_dir:
        return
    from latentbench.report.paper_values import (
        load_paper_table,  # the paper's values ship with the report
    )

    tables = Path(tables_dir)
    tables.mkdir(parents=True, exist_ok=True)
    _write_csv(stability_table(frame, metric_columns(frame, target), target), tables / "stability.csv")
    backbone, w0 = primary_setting(frame, settings)
    units = study_units(frame, backbone, w0)
    matrix = spearman_matrix(units, list(X_METRICS), list(DRIFT_MEASURES), n_boot, seed)
    _write_csv(matrix.assign(backbone=backbone, cfg_scale=w0), tables / "seesaw_fig2.csv")
    paper = paper_units(load_paper_table("seesaw_table5"))
    _write_csv(spearman_matrix(paper, list(X_METRICS), list(DRIFT_MEASURES), n_boot, seed),
               tables / "seesaw_fig2_paper.csv")
