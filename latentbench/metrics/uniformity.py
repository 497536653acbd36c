"""Latent uniformity: density statistics of a t-SNE embedding of tokens (spec diffusability §7).

Protocol of VA-VAE (``hustvl/LightningDiT`` ``tools/latent_vis.py``: ``sample_latents``,
``calculate_uniformity_metrics``): one random token per image, standardised per channel;
2-D t-SNE with scikit-learn (pinned parameters below); Gaussian KDE evaluated at the
embedded points; density CV, Gini and normalised entropy; repeated with seeds and averaged.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from latentbench.metrics.normalization import Stats, prepare, resolve_stats

N_POINTS = 10_000
REPEATS = 10
# VA-VAE random_state; run r uses 42 + r. With init='pca' scikit-learn's embedding does not
# depend on it (bench/bench_latent_metrics.py), so repeats differ through the token sample.
TSNE_SEED = 42
# scikit-learn >= 1.5 names; the values are VA-VAE's call on sklearn >= 1.2 defaults
# (init='pca', learning_rate='auto'); pinned explicitly so a default change cannot move them.
TSNE_PARAMS = {
    "n_components": 2,
    "perplexity": 30.0,
    "max_iter": 1000,
    "early_exaggeration": 12.0,
    "learning_rate": "auto",
    "init": "pca",
    "method": "barnes_hut",
    "angle": 0.5,
    "metric": "euclidean",
}
ENTROPY_EPS = 1e-10  # latent_vis.py: -sum p log2(p + 1e-10)


def density_statistics(density: np.ndarray | torch.Tensor) -> dict[str, float]:
    """Density CV, Gini and normalised entropy of positive densities ``rho`` [n] (spec §7 step 4).

    CV = std(rho)/mean(rho) (population std); Gini = sum (2i - n - 1) rho_(i) / (n sum rho)
    over ascending rho; NE = -sum p log2(p + 1e-10) / log2(n) with p = rho / sum rho.
    """
    rho = np.asarray(density.cpu() if isinstance(density, torch.Tensor) else density, dtype=np.float64).reshape(-1)
    n = rho.size
    if n < 2:
        raise ValueError(f"density needs at least 2 values, got {n}")
    if not np.all(np.isfinite(rho)) or np.any(rho < 0) or rho.sum() <= 0:
        raise ValueError("density must be finite, non-negative and not all zero")
    cv = float(np.std(rho) / np.mean(rho))
    ranks = np.arange(1, n + 1)
    gini = float(np.sum((2 * ranks - n - 1) * np.sort(rho)) / (n * rho.sum()))
    p = rho / rho.sum()
    ne = float(-np.sum(p * np.log2(p + ENTROPY_EPS)) / math.log2(n))
    return {"density_cv": cv, "gini": gini, "normalized_entropy": ne}


def kde_density(points: np.ndarray) -> np.ndarray:
    """Gaussian KDE (Scott bandwidth) fitted on ``points`` [n, 2] and evaluated at them (spec §7 step 3)."""
    points = np.asarray(points, dtype=np.float64)
    if points.ndim != 2:
        raise ValueError(f"points must be [n, dims], got shape {points.shape}")
    # (scipy.stats and sklearn imported where used: ~0.9 s to every job that needs neither)
    from scipy.stats import gaussian_kde

    return gaussian_kde(points.T)(points.T)


def tsne_embed(features: np.ndarray | torch.Tensor, seed: int = TSNE_SEED, n_jobs: int | None = None) -> np.ndarray:
    """2-D t-SNE of ``features`` [n, C] with the pinned VA-VAE parameters (spec §7 step 2)."""
    x = np.asarray(features.cpu() if isinstance(features, torch.Tensor) else features, dtype=np.float32)
    if x.ndim != 2 or x.shape[0] <= TSNE_PARAMS["perplexity"]:
        raise ValueError(f"features must be [n, C] with n > perplexity (30), got shape {x.shape}")
    from sklearn.manifold import TSNE

    return TSNE(random_state=seed, n_jobs=n_jobs, **TSNE_PARAMS).fit_transform(x)


def sample_tokens(
    latents: torch.Tensor, n_points: int, seed: int, stats: Stats | None
) -> torch.Tensor:
    """``n_points`` images without replacement, one uniform random token each (spec §7 step 1).

    Returns the standardised C-vectors [n_points, C] (float64); ``stats`` None = as given.
    """
    n, _, h, w = latents.shape
    if not 1 <= n_points <= n:
        raise ValueError(f"n_points must lie in [1, {n}] (one token per distinct image), got {n_points}")
    gen = torch.Generator().manual_seed(seed)
    images = torch.randperm(n, generator=gen)[:n_points]
    pos = torch.randint(0, h * w, (n_points,), generator=gen)
    dev = latents.device
    raw = latents[images.to(dev), :, (pos // w).to(dev), (pos % w).to(dev)]  # [n_points, C], gathered
    return prepare(raw[:, :, None, None], stats)[:, :, 0, 0].cpu()


def uniformity(
    latents: torch.Tensor,
    *,
    n_points: int = N_POINTS,
    repeats: int = REPEATS,
    seed: int = 0,
    tsne_seed: int = TSNE_SEED,
    stats: Stats | None = None,
    standardize: bool = True,
    n_jobs: int | None = None,
) -> dict[str, object]:
    """Uniformity statistics of latents [N, C, H, W], mean and std over ``repeats`` runs (spec §7).

    Run r samples tokens with seed ``seed + r`` and embeds them with t-SNE
    ``random_state = tsne_seed + r``. Returns ``{stat: mean, stat_std: std}`` for density_cv,
    gini, normalized_entropy, the per-run values under ``runs`` and the sklearn version.
    """
    if not isinstance(latents, torch.Tensor) or latents.ndim != 4:
        raise ValueError(f"latents must be a tensor [N, C, H, W], got {getattr(latents, 'shape', None)}")
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    norm = resolve_stats(latents, stats, standardize)
    runs = []
    for r in range(repeats):
        tokens = sample_tokens(latents, n_points, seed + r, norm)
        runs.append(density_statistics(kde_density(tsne_embed(tokens, tsne_seed + r, n_jobs))))
    out: dict[str, object] = {}
    for key in runs[0]:
        values = np.array([run[key] for run in runs])
        out[key] = float(values.mean())
        out[f"{key}_std"] = float(values.std())
    import sklearn

    out.update(runs=runs, n_points=n_points, repeats=repeats, sklearn_version=sklearn.__version__)
    return out
