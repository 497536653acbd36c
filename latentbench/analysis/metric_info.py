"""What each per-tokenizer metric is: display name, direction, and which paper defines it.

One table drives the metrics.csv columns, the correlation table and the report, so a
metric's orientation is stated once. ``higher_is_better`` is the metric's own direction;
the iFID paper orients every metric "lower = better" (−PSNR, −SSIM; spec
metrics-ifid-seesaw.md §6), the diffusability study "larger = better latent" (−VIV, −SEC,
−iFID; spec metrics-diffusability.md §1.6). The report applies those orientations when it
puts our correlations beside a paper's.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class MetricInfo:
    name: str
    label: str
    higher_is_better: bool
    source: str
    uses_feature_net: bool = False


METRICS: dict[str, MetricInfo] = {
    m.name: m
    for m in [
        MetricInfo("gfid", "gFID", False, "generation FID (iFID paper Eq. 5)", True),
        MetricInfo("rfid", "rFID", False, "reconstruction FID (iFID paper Eq. 4)", True),
        MetricInfo("ifid", "iFID", False, "interpolated FID (iFID paper Eq. 6, official config)", True),
        MetricInfo("psnr", "PSNR", True, "reconstruction PSNR (spec ifid-seesaw §4)"),
        MetricInfo("ssim", "SSIM", True, "reconstruction SSIM (spec ifid-seesaw §4)"),
        MetricInfo("lpips", "LPIPS", False, "LPIPS AlexNet v0.1 (spec ifid-seesaw §4.1)"),
        MetricInfo("diffusion_loss", "Diffusion loss", False, "held-out flow-matching loss (spec ifid-seesaw §5.1)"),
        MetricInfo("eq_loss", "EQ loss", False, "decode(T z) vs T x MSE, EQ-VAE transforms (spec ifid-seesaw §5.2)"),
        MetricInfo("se_loss", "SE loss", False, "decode(down z) vs down x MSE, f = 2, 4 (spec ifid-seesaw §5.3)"),
        MetricInfo("vf_loss", "VF loss", False, "mcos + mdms after a fitted 1x1 projection (spec ifid-seesaw §5.4)", True),
        MetricInfo("gmm_loss", "GMM loss", False, "per-dimension NLL of a token-level diagonal GMM (spec ifid-seesaw §5.5)"),
        MetricInfo("viv", "VIV", False, "velocity irreducible variance, class-averaged flip-flop (diffusability Eq. 5, spec §2)"),
        MetricInfo("sec", "SEC", False, "spectral energy concentration above the rho threshold (diffusability Eq. 9, spec §5)"),
        MetricInfo("lnc", "LNC", True, "latent neighbour consistency @K, foreground-pooled (spec diffusability §3.1)"),
        MetricInfo("linear_probe", "Linear probe", True, "val top-1 of a linear head on pooled latents (spec diffusability §3.2)"),
        MetricInfo("lds", "LDS", True, "local-distant similarity (iREPA; spec diffusability §4)"),
        MetricInfo("cds", "CDS", True, "correlation decay slope (iREPA; spec diffusability §4)"),
        MetricInfo("srss", "SRSS", True, "semantic-region self-similarity (iREPA; spec diffusability §4)"),
        MetricInfo("normalized_entropy", "Normalized entropy", True, "t-SNE density entropy (VA-VAE protocol; spec diffusability §7)"),
        MetricInfo("density_cv", "Density CV", False, "t-SNE density coefficient of variation (spec diffusability §7)"),
        MetricInfo("gini", "Gini", False, "t-SNE density Gini coefficient (spec diffusability §7)"),
        MetricInfo("scale_eq", "ScaleEQ", True, "−MSE between E(scale x) and scale E(x) (spec diffusability §8)"),
        MetricInfo("rotate_eq", "RotateEQ", True, "−MSE between E(rot x) and rot E(x) (spec diffusability §8)"),
        MetricInfo("straightness", "Straightness", True, "mean cosine of consecutive ODE steps (diffusability Eq. 10)"),
        MetricInfo("efficiency", "Efficiency", True, "chord / path length of the ODE trajectory (diffusability Eq. 11)"),
    ]
}


def info(name: str) -> MetricInfo:
    """Metadata of a metric column; unknown names raise naming the column."""
    if name not in METRICS:
        raise KeyError(f"no metadata for metric column {name!r}")
    return METRICS[name]
