"""Per-image reconstruction metrics: PSNR and SSIM (spec ifid-seesaw 4.1, 4.2).

Both take an original ``x`` and a reconstruction ``y``: float tensors NCHW in [0, 1] on
any device, and return one float64 value per image (the reported number is the mean over
images, never the metric of a pooled MSE). LPIPS lives with the feature networks.

Two protocols:
- ``"standard"`` (default, spec 4.1): both images clamped to [0, 1] (a decoder may
  overshoot), PSNR on the [0, 255] scale, SSIM with the pytorch_msssim algorithm.
- ``"ifid-reference-code"`` (spec 4.2, [QUIRK]): what the iFID repository computes
  (``ifid/fid/psnr.py::get_psnr`` and ``get_ssim`` called with ``zero_mean=True`` on images
  already in [0, 1]): v -> (v + 1) * 127.5, no clamp, data range 255. PSNR comes out
  20 log10(2) = 6.0206 dB higher than the standard value; SSIM is biased upwards.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

__all__ = ["IFID_PSNR_OFFSET_DB", "PROTOCOLS", "PSNR_CAP_DB", "psnr", "ssim"]

PROTOCOLS = ("standard", "ifid-reference-code")

# PSNR of identical images is +inf; we cap every value at 100 dB instead of skipping the
# image (spec 4.1 asks to say which), so means over a set stay finite and all images count.
PSNR_CAP_DB = 100.0

# "ifid-reference-code" PSNR minus "standard" PSNR for in-range images (spec 4.2): the
# quirk halves every pixel difference, so the MSE is 1/4 and PSNR gains 20 log10(2) dB.
IFID_PSNR_OFFSET_DB = 20.0 * math.log10(2.0)

# SSIM constants (Wang et al. 2004, Eq. 13 and Sec. III-C; pytorch_msssim defaults).
SSIM_WINDOW = 11
SSIM_SIGMA = 1.5
SSIM_K1 = 0.01
SSIM_K2 = 0.03


def check_pair(x: torch.Tensor, y: torch.Tensor, min_size: int = 1, channels: int | None = None) -> None:
    """Validate an (original, reconstruction) pair of NCHW float image batches (the one check of
    PSNR, SSIM and LPIPS); ``channels``: the channel count a metric needs, if any."""
    for name, t in (("x", x), ("y", y)):
        if not isinstance(t, torch.Tensor):
            raise ValueError(f"{name}: expected a torch tensor, got {type(t).__name__}")
        if t.ndim != 4 or (channels is not None and t.shape[1] != channels):
            need = f" with {channels} channels" if channels is not None else ""
            raise ValueError(f"{name}: expected NCHW images{need}, got shape {tuple(t.shape)}")
        if not t.is_floating_point():
            raise ValueError(f"{name}: expected float images in [0, 1], got dtype {t.dtype}")
    if x.shape != y.shape:
        raise ValueError(f"y: shape {tuple(y.shape)} differs from x's {tuple(x.shape)}")
    if min(x.shape[-2:]) < min_size:
        raise ValueError(
            f"x: images of {x.shape[-2]}x{x.shape[-1]} px are smaller than the "
            f"{min_size}x{min_size} SSIM window"
        )
    for name, t in (("x", x), ("y", y)):
        if not bool(torch.isfinite(t).all()):
            raise ValueError(f"{name}: contains NaN or inf")


def _to_protocol_scale(
    x: torch.Tensor, y: torch.Tensor, protocol: str
) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Images in float64 on the scale each protocol measures them, and that scale's range L."""
    x = x.to(torch.float64)
    y = y.to(torch.float64)
    if protocol == "standard":
        # spec 4.1: clamp the reconstruction (and the original, a no-op when in range).
        return x.clamp(0.0, 1.0), y.clamp(0.0, 1.0), 1.0
    if protocol == "ifid-reference-code":
        # spec 4.2: the [-1, 1] -> [0, 255] map applied to [0, 1] images, unclamped.
        return (x + 1.0) * 127.5, (y + 1.0) * 127.5, 255.0
    raise ValueError(f"protocol: expected one of {PROTOCOLS}, got {protocol!r}")


def psnr(x: torch.Tensor, y: torch.Tensor, protocol: str = "standard") -> torch.Tensor:
    """Per-image PSNR in dB, float64 [N]: 20 log10(255 / sqrt(MSE)) with MSE over C, H, W
    on the [0, 255] scale (spec 4.1); capped at ``PSNR_CAP_DB`` (identical images)."""
    check_pair(x, y)
    a, b, data_range = _to_protocol_scale(x, y, protocol)
    # Both protocols take the peak as 255 on a [0, 255] scale (iFID ``PSNR.__call__``).
    scale = 255.0 / data_range
    mse = ((a - b) * scale).square().flatten(1).mean(1)
    floor = 255.0**2 * 10.0 ** (-PSNR_CAP_DB / 10.0)  # the MSE at which PSNR = cap
    return 10.0 * torch.log10(255.0**2 / mse.clamp_min(floor))


def _gaussian_window(device: torch.device) -> torch.Tensor:
    """Normalised 1-D Gaussian, size 11, sigma 1.5 (the 11x11 window is its outer product)."""
    r = torch.arange(SSIM_WINDOW, dtype=torch.float64, device=device) - (SSIM_WINDOW - 1) / 2
    g = torch.exp(-(r**2) / (2 * SSIM_SIGMA**2))
    return g / g.sum()


def _filter_valid(img: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """Separable Gaussian filtering of every channel, no padding ("valid" output)."""
    c = img.shape[1]
    img = F.conv2d(img, g.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    return F.conv2d(img, g.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)


def ssim(x: torch.Tensor, y: torch.Tensor, protocol: str = "standard") -> torch.Tensor:
    """Per-image SSIM, float64 [N] (spec 4.1; Wang et al. 2004, Eq. 13).

    Gaussian window 11, sigma 1.5, K1 0.01, K2 0.03, population (biased) local variances,
    valid filtering (no padding); the SSIM map of each channel is averaged over space, then
    over channels. Equals ``skimage.metrics.structural_similarity(gaussian_weights=True,
    sigma=1.5, use_sample_covariance=False, data_range=1, channel_axis=...)`` per image and
    ``pytorch_msssim.ssim(255 x, 255 y, data_range=255, size_average=False)``.
    Images must be at least 11x11 px.
    """
    check_pair(x, y, min_size=SSIM_WINDOW)
    a, b, data_range = _to_protocol_scale(x, y, protocol)
    c1 = (SSIM_K1 * data_range) ** 2
    c2 = (SSIM_K2 * data_range) ** 2
    g = _gaussian_window(a.device)
    mu_a, mu_b = _filter_valid(a, g), _filter_valid(b, g)
    var_a = _filter_valid(a * a, g) - mu_a**2
    var_b = _filter_valid(b * b, g) - mu_b**2
    cov_ab = _filter_valid(a * b, g) - mu_a * mu_b
    ssim_map = ((2 * mu_a * mu_b + c1) * (2 * cov_ab + c2)) / (
        (mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2)
    )
    return ssim_map.flatten(2).mean(2).mean(1)
