"""Spatial structure of latent token grids: LDS, CDS, SRSS and RMSC (spec diffusability §4).

Definitions follow iREPA (``End2End-Diffusion/iREPA`` ``metrics/spatial_metrics.py``:
``metric_lds``, ``metric_cds``, ``metric_srss``, ``metric_rmsc``) with the call settings of
its ``spatial_metrics_comparison.py``: LDS far_dist 6, SRSS d_pos 1 / d_neg 6, CDS dmax 8.
Per image the tokens ``u [T, C]`` (row-major over (h, w)) of the standardised latent are
L2-normalised and compared by cosine; grid distance is Manhattan.

Grid sizes. Distances are kept in tokens on every grid (spec §4: "keep thresholds in
tokens"); they need ``(H-1) + (W-1) >= far_dist`` (e.g. 4x4 and up), which the demo's 8x8
grid meets. The image filter is a token *fraction*: ``min_fg_fraction = min_bg_fraction =
0.25`` is exactly iREPA's 64/64 tokens on 16x16 and becomes 16/16 on 8x8.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from latentbench.metrics.normalization import Stats, prepare, resolve_stats

LDS_FAR_DIST = 6
CDS_DMAX = 8
SRSS_D_POS = 1
SRSS_D_NEG = 6
MIN_REGION_FRACTION = 0.25  # iREPA: >= 64 FG and >= 64 BG tokens on a 16x16 grid
TOKEN_EPS = 1e-8  # iREPA _normalize eps


def token_mask(pixel_mask: torch.Tensor, patch: int = 16) -> torch.Tensor:
    """Token-level FG mask [N, H/patch, W/patch] (bool): a token is FG if any pixel is (spec §1.3).

    ``pixel_mask`` is [N, H, W] or [N, 1, H, W]; FG = value > 0. Max-pool, kernel = stride = patch.
    """
    if pixel_mask.ndim == 4 and pixel_mask.shape[1] == 1:
        pixel_mask = pixel_mask[:, 0]
    if pixel_mask.ndim != 3:
        raise ValueError(f"pixel_mask must be [N, H, W] or [N, 1, H, W], got {tuple(pixel_mask.shape)}")
    h, w = pixel_mask.shape[-2:]
    if patch < 1 or h % patch or w % patch:
        raise ValueError(f"patch must divide the mask size {h}x{w}, got {patch}")
    fg = (pixel_mask > 0).to(torch.float32)[:, None]
    return F.max_pool2d(fg, kernel_size=patch, stride=patch)[:, 0] > 0


def grid_distances(h: int, w: int, device: torch.device | str | None = None) -> torch.Tensor:
    """Manhattan distances [T, T] between the tokens of an h x w grid, row-major."""
    yy, xx = torch.meshgrid(torch.arange(h, device=device), torch.arange(w, device=device), indexing="ij")
    coords = torch.stack([yy.reshape(-1), xx.reshape(-1)], dim=1)
    return (coords[:, None, :] - coords[None, :, :]).abs().sum(-1)


def _pair_masks(dist: torch.Tensor, far_dist: int, dmax: int) -> tuple[torch.Tensor, list[int]]:
    """Normalised pair-averaging weights [T*T, 2 + K]: local (d = 1), far (d >= far_dist), d = 1..dmax.

    Distances with no pair on the grid are left out of the CDS fit, as in iREPA.
    """
    masks = [dist == 1, dist >= far_dist]
    ds = [d for d in range(1, dmax + 1) if bool((dist == d).any())]
    masks += [dist == d for d in ds]
    weights = torch.stack([m.reshape(-1).to(torch.float64) for m in masks], dim=1)
    return weights / weights.sum(dim=0, keepdim=True), ds


def spatial_per_image(
    latents: torch.Tensor,
    fg: torch.Tensor | None = None,
    *,
    far_dist: int = LDS_FAR_DIST,
    dmax: int = CDS_DMAX,
    d_pos: int = SRSS_D_POS,
    d_neg: int = SRSS_D_NEG,
) -> dict[str, torch.Tensor]:
    """LDS, CDS, RMSC (and SRSS when ``fg`` [B, H, W] is given) per image of ``latents`` [B, C, H, W].

    Latents are used as given (standardise them first, spec §1.5). Returns [B] float64
    tensors; SRSS is NaN for an image with < 2 FG or < 1 BG token or no valid anchor.
    """
    if latents.ndim != 4:
        raise ValueError(f"latents must be [B, C, H, W], got {tuple(latents.shape)}")
    b, c, h, w = latents.shape
    if h * w < 2:
        raise ValueError(f"latents: a {h}x{w} grid has no token pairs")
    if (h - 1) + (w - 1) < max(far_dist, d_neg):
        raise ValueError(
            f"far_dist/d_neg ({far_dist}/{d_neg}) exceed the largest distance {(h - 1) + (w - 1)} of a {h}x{w} grid"
        )
    if dmax < 2 or d_pos < 1:
        raise ValueError(f"dmax must be >= 2 and d_pos >= 1, got {dmax} and {d_pos}")
    # float64 throughout: the pair means sum T^2 terms (iREPA uses float32, ~1e-6 off)
    tokens = F.normalize(latents.to(torch.float64).flatten(2).transpose(1, 2), dim=-1, eps=TOKEN_EPS)  # [B, T, C]
    gram = tokens @ tokens.transpose(1, 2)  # cosines [B, T, T]
    dist = grid_distances(h, w, latents.device)
    weights, ds = _pair_masks(dist, far_dist, dmax)
    pair_means = gram.reshape(b, -1) @ weights  # [B, 2 + K]
    # LDS = mean cos over 4-neighbours - mean cos over pairs at distance >= far_dist
    lds = pair_means[:, 0] - pair_means[:, 1]
    # CDS = -OLS slope of s_d (mean cos at distance d) on d, d = 1..dmax
    s_d = pair_means[:, 2:]
    x = torch.tensor(ds, dtype=torch.float64, device=latents.device)
    x0 = x - x.mean()
    cds = -((s_d - s_d.mean(dim=1, keepdim=True)) @ x0) / (x0 @ x0)
    # RMSC = sqrt(mean_p ||u_p - mean_q u_q||^2) (computed, excluded from the analyses)
    rmsc = (tokens - tokens.mean(dim=1, keepdim=True)).square().sum(-1).mean(1).sqrt()
    out = {"lds": lds, "cds": cds, "rmsc": rmsc}
    if fg is not None:
        if fg.shape != (b, h, w):
            raise ValueError(f"fg must have shape {(b, h, w)}, got {tuple(fg.shape)}")
        out["srss"] = _srss(gram, dist, fg.reshape(b, -1).to(latents.device, torch.bool), d_pos, d_neg)
    return out


def _srss(gram: torch.Tensor, dist: torch.Tensor, fg: torch.Tensor, d_pos: int, d_neg: int) -> torch.Tensor:
    """SRSS per image: mean over valid FG anchors of mean cos to FG tokens at 1 <= d <= d_pos
    minus mean cos to BG tokens at d >= d_neg (iREPA ``metric_srss``)."""
    fgf = fg.to(gram.dtype)
    bgf = 1 - fgf
    near = ((dist >= 1) & (dist <= d_pos)).to(gram.dtype)
    far = (dist >= d_neg).to(gram.dtype)
    pos_cnt = fgf @ near  # [B, T]: FG tokens near each anchor (near is symmetric)
    neg_cnt = bgf @ far
    pos_sum = ((gram * near) @ fgf[:, :, None])[..., 0]
    neg_sum = ((gram * far) @ bgf[:, :, None])[..., 0]
    valid = fg & (pos_cnt > 0) & (neg_cnt > 0)
    delta = pos_sum / pos_cnt.clamp_min(1) - neg_sum / neg_cnt.clamp_min(1)
    n_valid = valid.sum(dim=1)
    srss = (delta * valid).sum(dim=1) / n_valid.clamp_min(1)
    ok = (fg.sum(dim=1) >= 2) & (~fg).any(dim=1) & (n_valid > 0)
    return torch.where(ok, srss, torch.full_like(srss, math.nan))


def spatial_metrics(
    latents: torch.Tensor,
    fg: torch.Tensor | None = None,
    *,
    stats: Stats | None = None,
    standardize: bool = True,
    filter_images: bool = True,
    min_fg_fraction: float = MIN_REGION_FRACTION,
    min_bg_fraction: float = MIN_REGION_FRACTION,
    far_dist: int = LDS_FAR_DIST,
    dmax: int = CDS_DMAX,
    d_pos: int = SRSS_D_POS,
    d_neg: int = SRSS_D_NEG,
    chunk: int = 128,
) -> dict[str, float]:
    """Dataset LDS, CDS, SRSS, RMSC: means over images (nanmean for SRSS) (spec §4).

    ``latents`` [N, C, H, W] are standardised per channel (§1.5) with ``stats``, or the
    set's own when None. ``fg`` [N, H, W] is the token-level FG mask (see ``token_mask``);
    without it SRSS is NaN and no filter applies. With it and ``filter_images``, only images
    with >= ceil(min_fg_fraction*T) FG and >= ceil(min_bg_fraction*T) BG tokens are kept
    (iREPA's 64/64 on 16x16). Returns the four means and the image counts.
    """
    if not isinstance(latents, torch.Tensor) or latents.ndim != 4:
        raise ValueError(f"latents must be a tensor [N, C, H, W], got {getattr(latents, 'shape', None)}")
    n, _, h, w = latents.shape
    if fg is not None and tuple(fg.shape) != (n, h, w):
        raise ValueError(f"fg must have shape {(n, h, w)}, got {tuple(fg.shape)}")
    keep = torch.ones(n, dtype=torch.bool)
    if fg is not None and filter_images:
        t = h * w
        # counted in blocks: a bool sum over the whole [N, T] mask would upcast it to int64 (8 bytes/token)
        n_fg = torch.cat([f.reshape(len(f), -1).bool().sum(dim=1).cpu() for f in fg.split(chunk * 32)])
        keep = (n_fg >= math.ceil(min_fg_fraction * t - 1e-9)) & (t - n_fg >= math.ceil(min_bg_fraction * t - 1e-9))
    idx = keep.nonzero()[:, 0]
    if idx.numel() == 0:
        raise ValueError("fg: no image passes the FG/BG token filter; lower min_fg_fraction/min_bg_fraction")
    norm = resolve_stats(latents, stats, standardize)
    sums = {"lds": 0.0, "cds": 0.0, "rmsc": 0.0, "srss": 0.0}
    n_srss = 0
    for start in range(0, idx.numel(), chunk):
        sel = idx[start : start + chunk]
        z = prepare(latents[sel.to(latents.device)], norm)
        per = spatial_per_image(
            z, None if fg is None else fg[sel.to(fg.device)], far_dist=far_dist, dmax=dmax, d_pos=d_pos, d_neg=d_neg
        )
        for key in ("lds", "cds", "rmsc"):
            sums[key] += float(per[key].sum())
        if "srss" in per:
            finite = ~torch.isnan(per["srss"])
            sums["srss"] += float(per["srss"][finite].sum())
            n_srss += int(finite.sum())
    kept = idx.numel()
    return {
        "lds": sums["lds"] / kept,
        "cds": sums["cds"] / kept,
        "rmsc": sums["rmsc"] / kept,
        "srss": sums["srss"] / n_srss if n_srss else math.nan,
        "n_images": n,
        "n_kept": kept,
        "n_srss_valid": n_srss,
    }
