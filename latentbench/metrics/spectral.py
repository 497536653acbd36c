"""SEC, Spectral Energy Concentration of latents (spec diffusability §5, paper Eq. 7-9).

The share of the mean DCT power of the standardised latent maps that lies above a
frequency-radius threshold: low SEC means smooth, low-frequency latents. The reference
(``diffusing-right-space metrics/sec.py`` per the derivative scripts) uses
``torch_dct.dct_2d(z, norm='ortho')``, i.e. ``scipy.fft.dctn(type=2, norm='ortho')`` over
(H, W); here the same transform is a pair of matrix products.
"""

from __future__ import annotations

import math

import torch

from latentbench.metrics.normalization import DEFAULT_CHUNK, Stats, prepare, resolve_stats

SEC_RHOS = (0.25, 0.5)  # reference default list; headline rho = 0.5 (spec §5 step 6)


def dct_matrix(n: int, dtype: torch.dtype = torch.float64, device: torch.device | str | None = None) -> torch.Tensor:
    """Orthonormal DCT-II matrix D [n, n]: ``X = D x`` equals ``scipy.fft.dct(x, type=2, norm='ortho')``."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    k = torch.arange(n, dtype=torch.float64, device=device)[:, None]
    i = torch.arange(n, dtype=torch.float64, device=device)[None, :]
    # D[k, i] = sqrt(2/n) c_k cos(pi (2i + 1) k / (2n)), c_0 = 1/sqrt(2)
    mat = math.sqrt(2.0 / n) * torch.cos(math.pi * (2 * i + 1) * k / (2 * n))
    mat[0] /= math.sqrt(2.0)
    return mat.to(dtype)


def dct2(x: torch.Tensor) -> torch.Tensor:
    """Orthonormal 2-D DCT-II over the last two axes (paper Eq. 7)."""
    if x.ndim < 2:
        raise ValueError(f"x must have at least 2 dims, got shape {tuple(x.shape)}")
    d_h = dct_matrix(x.shape[-2], x.dtype, x.device)
    d_w = dct_matrix(x.shape[-1], x.dtype, x.device)
    return d_h @ x @ d_w.T


def spectral_energy(
    latents: torch.Tensor,
    *,
    stats: Stats | None = None,
    standardize: bool = True,
    chunk: int = DEFAULT_CHUNK,
) -> torch.Tensor:
    """Mean DCT power ``E[u, v] = (1/(N C)) sum_{n,c} DCT2(z_{n,c})[u, v]^2`` [H, W] (paper Eq. 8).

    Streams ``chunk`` samples at a time in float64. Latents are standardised per channel
    (§1.5) with ``stats``, or with the set's own stats when None; ``standardize=False`` for
    latents that already are.
    """
    if not isinstance(latents, torch.Tensor) or latents.ndim != 4:
        raise ValueError(f"latents must be a tensor [N, C, H, W], got {getattr(latents, 'shape', None)}")
    if latents.shape[0] == 0:
        raise ValueError("latents is empty")
    norm = resolve_stats(latents, stats, standardize)
    n, c, h, w = latents.shape
    d_h = dct_matrix(h, torch.float64, latents.device)
    d_w = dct_matrix(w, torch.float64, latents.device)
    energy = torch.zeros(h, w, dtype=torch.float64, device=latents.device)
    for start in range(0, n, chunk):
        z = prepare(latents[start : start + chunk], norm)
        energy += ((d_h @ z @ d_w.T) ** 2).sum(dim=(0, 1))
    return energy / (n * c)


def sec_from_energy(energy: torch.Tensor, rho: float = 0.5) -> float:
    """``SEC_rho = sum_{u+v > rho((H-1)+(W-1))} E / sum E`` with a strict '>' (paper Eq. 9)."""
    if not 0.0 <= rho <= 1.0:
        raise ValueError(f"rho must lie in [0, 1], got {rho}")
    if energy.ndim != 2:
        raise ValueError(f"energy must be [H, W], got shape {tuple(energy.shape)}")
    h, w = energy.shape
    total = float(energy.sum())
    if not total > 0:
        raise ValueError("energy: the latents have zero spectral energy, SEC is undefined")
    u = torch.arange(h, device=energy.device)[:, None]
    v = torch.arange(w, device=energy.device)[None, :]
    # Manhattan frequency radius d(u, v) = u + v, threshold tau = rho ((H-1) + (W-1))  (spec §5 step 4)
    high = (u + v) > rho * ((h - 1) + (w - 1))
    return float(energy[high].sum()) / total


def sec(
    latents: torch.Tensor,
    rho: float = 0.5,
    *,
    stats: Stats | None = None,
    standardize: bool = True,
    chunk: int = DEFAULT_CHUNK,
) -> float:
    """Spectral energy concentration of latents [N, C, H, W] (spec §5; headline rho = 0.5).

    For several rho values compute ``spectral_energy`` once and call ``sec_from_energy``.
    """
    return sec_from_energy(spectral_energy(latents, stats=stats, standardize=standardize, chunk=chunk), rho)
