"""Non-reconstruction baselines of iFID Table 3: EQ, SE, VF and GMM losses (spec ifid-seesaw §5.2-5.5).

The diffusion loss of §5.1 lives with the diffusion model
(``latentbench.diffusion.transport.validation_loss``). None of these four metrics exists in
the iFID code; each turns a tokenizer-training regulariser into an evaluation number with
the spec's **[DEFAULT]** choices:

- ``eq_loss``  (§5.2, EQ-VAE): ``mean_i MSE(D(tau_i z_i), tau_i x_i)``, one seeded
  (scale, rotation) per image.
- ``se_loss``  (§5.3, Skorokhodov et al.): ``mean_{i,f} MSE(D(down_f z_i), down_f x_i)``.
- ``vf_loss`` / ``fit_vf_projection`` / ``vf_metric`` (§5.4, VA-VAE): ``L_mcos + L_mdms`` of a
  fitted 1x1 projection of the latent against frozen foundation features.
- ``gmm_loss`` (§5.5, MAETok): per-dimension NLL of a token-level GMM.

Conventions: ``encode(x01) -> z`` and ``decode(z) -> x01`` are the caller's callables on
[0, 1] images (the caller chooses posterior mean or sample; decoder output unclamped);
pixel MSEs are measured in [-1, 1] units (``2x - 1``), as the spec states. Images come as a
tensor [N, 3, H, W] or an iterable of such batches (stream large sets). Latents are NCHW
(2-D tokenizers) or N x L x C (1-D tokenizers); EQ and SE are defined for 2-D latents only.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from latentbench.metrics.equivariance import rotate
from latentbench.seeding import derive_seed
from latentbench.tokenizers.regularizers import vf_loss as _vf_loss_tensor

__all__ = [
    "EQ_ROTATIONS",
    "SE_FACTORS",
    "SE_MODES",
    "eq_loss",
    "eq_scales",
    "fit_vf_projection",
    "gmm_loss",
    "se_loss",
    "vf_loss",
    "vf_metric",
]

Encode = Callable[[torch.Tensor], torch.Tensor]
Decode = Callable[[torch.Tensor], torch.Tensor]
Images = torch.Tensor | Iterable[torch.Tensor]

EQ_ROTATIONS = (1, 2, 3)  # EQ-VAE: k ~ U{1, 2, 3} quarter turns (spec §5.2)
SE_FACTORS = (2, 4)  # spec §5.3
SE_MODES = ("area", "bilinear")
GMM_REG_COVAR = 1e-6  # spec §5.5
_SIZE_TOL = 1e-6  # how far h * s may sit from an integer and still count as one


# --------------------------------------------------------------------------------------
# Shared helpers
# --------------------------------------------------------------------------------------


def _image_batches(images: Images, batch_size: int) -> Iterator[torch.Tensor]:
    """Batches of [B, 3, H, W] float images from a tensor or an iterable of tensors."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if isinstance(images, torch.Tensor):
        chunks: Iterable[torch.Tensor] = (images[i : i + batch_size] for i in range(0, images.shape[0], batch_size))
        if images.ndim != 4:
            raise ValueError(f"images must be [N, 3, H, W], got shape {tuple(images.shape)}")
    else:
        chunks = images
    for x in chunks:
        if not isinstance(x, torch.Tensor) or x.ndim != 4 or x.shape[1] != 3 or not x.is_floating_point():
            raise ValueError(
                f"images must be float [N, 3, H, W] in [0, 1] (or batches of them), got {getattr(x, 'shape', type(x).__name__)}"
            )
        if x.shape[0]:
            yield x


def _encode_grid(encode: Encode, x: torch.Tensor, metric: str) -> torch.Tensor:
    """``encode(x)``, checked to be a 2-D latent grid [B, C, h, w]."""
    z = encode(x)
    if not isinstance(z, torch.Tensor):
        raise ValueError(f"encode must return a torch.Tensor, got {type(z).__name__}")
    if z.ndim == 3:
        raise ValueError(
            f"{metric} is not defined for 1-D tokenizers (encode returned N x L x C = {tuple(z.shape)}); "
            "it needs a 2-D latent grid [N, C, H, W] (spec ifid-seesaw §5.2-5.3)"
        )
    if z.ndim != 4 or z.shape[0] != x.shape[0]:
        raise ValueError(f"encode must return latents [N, C, H, W] for {x.shape[0]} images, got {tuple(z.shape)}")
    return z


def _per_image_mse(decoded01: torch.Tensor, target_pm1: torch.Tensor) -> torch.Tensor:
    """Per-image MSE over C, H, W in [-1, 1] units, float64 [B] (decoder output mapped 2y - 1)."""
    if decoded01.shape != target_pm1.shape:
        raise ValueError(
            f"decode returned {tuple(decoded01.shape)}, expected {tuple(target_pm1.shape)} (the transformed image)"
        )
    diff = (2.0 * decoded01.double() - 1.0) - target_pm1.to(decoded01.device, torch.float64)
    return diff.square().flatten(1).mean(dim=1)


# --------------------------------------------------------------------------------------
# EQ loss (spec §5.2)
# --------------------------------------------------------------------------------------


def eq_scales(latent_side: int) -> tuple[float, ...]:
    """EQ scale set {k'/h : ceil(h/4) <= k' <= h-1} for latent height h (spec §5.2).

    h = 32 gives exactly EQ-VAE's {8/32, ..., 31/32}; other heights keep latent and image
    sizes integer-consistent.
    """
    if latent_side < 2:
        raise ValueError(f"latent_hw: latent height {latent_side} is too small for EQ scaling (needs >= 2)")
    return tuple(k / latent_side for k in range(math.ceil(latent_side / 4), latent_side))


def _scaled_side(side: int, s: float, what: str) -> int:
    """``side * s`` as an integer, or a ValueError when the scale does not fit the grid."""
    exact = side * s
    out = round(exact)
    if out < 1 or abs(exact - out) > _SIZE_TOL:
        raise ValueError(f"scales: s={s:g} maps the {what} side {side} to {exact:g}, not a positive integer")
    return out


def _eq_transform(t: torch.Tensor, s: float, k: int) -> torch.Tensor:
    """tau = rotate_k(resize_s(t)) as EQ-VAE applies it to latents and images (spec §5.2).

    ``F.interpolate(bilinear, align_corners=False)`` then ``torch.rot90(., k, dims=[-1, -2])``
    (zelaki/eqvae ``AutoencoderKL.forward``). The output size is passed explicitly (h * s,
    checked integral) instead of ``scale_factor`` so float rounding cannot drop a row; the
    sampling grid is the same because size / input = s exactly.
    """
    if s != 1.0:
        size = (_scaled_side(t.shape[-2], s, "height"), _scaled_side(t.shape[-1], s, "width"))
        t = F.interpolate(t, size=size, mode="bilinear", align_corners=False, antialias=False)
    return rotate(t, k) if k % 4 else t


@torch.no_grad()
def eq_loss(
    encode: Encode,
    decode: Decode,
    images: Images,
    latent_hw: tuple[int, int],
    seed: int,
    scales: Sequence[float] | None = None,
    rotations: Sequence[int] = EQ_ROTATIONS,
    batch_size: int = 64,
) -> float:
    """EQ loss ``mean_i MSE(D(tau_i E(x_i)), tau_i x_i)`` in [-1, 1] units (spec §5.2 [DEFAULT]).

    Per image (in input order, from one generator seeded with ``seed``, so the value does not
    depend on batching) s ~ U(``scales``) and k ~ U(``rotations``); ``scales=None`` is
    ``eq_scales(h)``. The same tau (bilinear resize by s, then k quarter turns) is applied to
    the latent and to the image. ``scales=(1.0,), rotations=(0,)`` is plain reconstruction
    MSE. ``latent_hw`` is the encoder's latent grid; every scale must keep both the latent
    and the image sides integral.
    """
    h, w = (int(v) for v in latent_hw)
    scale_set = tuple(float(s) for s in (eq_scales(h) if scales is None else scales))
    rot_set = tuple(int(k) for k in rotations)
    if not scale_set or not rot_set:
        raise ValueError(f"scales and rotations must be non-empty, got scales={scale_set}, rotations={rot_set}")
    for s in scale_set:
        if s <= 0:
            raise ValueError(f"scales: every scale must be > 0, got {s:g}")
        _scaled_side(h, s, "latent height")
        _scaled_side(w, s, "latent width")
    gen = torch.Generator().manual_seed(int(seed))
    total, count = 0.0, 0
    for x in _image_batches(images, batch_size):
        z = _encode_grid(encode, x, "EQ loss")
        if tuple(z.shape[-2:]) != (h, w):
            raise ValueError(f"latent_hw: expected {(h, w)}, but encode returned a {tuple(z.shape[-2:])} grid")
        # One (s, k) per image, drawn in image order; group images that share a transform.
        groups: dict[tuple[float, int], list[int]] = {}
        for i in range(x.shape[0]):
            s = scale_set[int(torch.randint(len(scale_set), (), generator=gen))]
            k = rot_set[int(torch.randint(len(rot_set), (), generator=gen))]
            groups.setdefault((s, k), []).append(i)
        x_pm1 = 2.0 * x - 1.0
        for (s, k), idx in groups.items():
            sel = torch.tensor(idx, device=x.device)
            target = _eq_transform(x_pm1.index_select(0, sel), s, k)  # tau(x)
            decoded = decode(_eq_transform(z.index_select(0, sel.to(z.device)), s, k))  # D(tau(z))
            total += float(_per_image_mse(decoded, target).sum())
            count += len(idx)
    if count == 0:
        raise ValueError("images is empty")
    return total / count


# --------------------------------------------------------------------------------------
# SE loss (spec §5.3)
# --------------------------------------------------------------------------------------


def _downsample(t: torch.Tensor, f: int, mode: str) -> torch.Tensor:
    """``down_f``: f x f box average ("area") or bilinear without antialias (spec §5.3)."""
    hh, ww = t.shape[-2:]
    if hh % f or ww % f:
        raise ValueError(f"factors: {f} does not divide the {hh}x{ww} grid")
    if mode == "area":
        return F.avg_pool2d(t, kernel_size=f)
    return F.interpolate(t, size=(hh // f, ww // f), mode="bilinear", align_corners=False, antialias=False)


@torch.no_grad()
def se_loss(
    encode: Encode,
    decode: Decode,
    images: Images,
    factors: Sequence[int] = SE_FACTORS,
    mode: str = "area",
    batch_size: int = 64,
) -> float:
    """SE loss ``mean_{i, f} MSE(D(down_f E(x_i)), down_f x_i)`` in [-1, 1] units (spec §5.3 [DEFAULT]).

    ``mode`` "area" (box averaging; the default) or "bilinear" (align_corners=False, no
    antialias; identical to "area" for f = 2). Each factor must divide both the latent and
    the image grid.
    """
    if mode not in SE_MODES:
        raise ValueError(f"mode must be one of {SE_MODES}, got {mode!r}")
    fs = tuple(int(f) for f in factors)
    if not fs or min(fs) < 1:
        raise ValueError(f"factors must be non-empty positive integers, got {tuple(factors)}")
    total, count = 0.0, 0
    for x in _image_batches(images, batch_size):
        z = _encode_grid(encode, x, "SE loss")
        x_pm1 = 2.0 * x - 1.0
        for f in fs:
            total += float(_per_image_mse(decode(_downsample(z, f, mode)), _downsample(x_pm1, f, mode)).sum())
            count += x.shape[0]
    if count == 0:
        raise ValueError("images is empty")
    return total / count


# --------------------------------------------------------------------------------------
# VF loss (spec §5.4)
# --------------------------------------------------------------------------------------


@torch.no_grad()
def vf_loss(z_projected: torch.Tensor, features: torch.Tensor, m1: float = 0.5, m2: float = 0.25) -> float:
    """VF = L_mcos + L_mdms of a projected latent against features, both [N, D, h, w] (spec §5.4).

    L_mcos = mean_{b,h,w} ReLU(1 - m1 - cos(z'_{b,:,h,w}, f_{b,:,h,w}));
    L_mdms = mean_{b,i,j} ReLU(|A_ij - B_ij| - m2) with A, B the per-image position-by-position
    cosine matrices (LightningDiT ``contperceptual.py``, distmat_weight = cos_weight = 1).
    Computed by the training regulariser's pure function, one implementation for both uses.
    """
    for name, t in (("z_projected", z_projected), ("features", features)):
        if not isinstance(t, torch.Tensor) or t.ndim < 3 or not t.is_floating_point():
            raise ValueError(f"{name} must be a float tensor [N, D, h, w], got {getattr(t, 'shape', type(t).__name__)}")
    return float(_vf_loss_tensor(z_projected.float(), features.float().to(z_projected.device), m1, m2, 1.0, 1.0))


def _vf_grid(latents: torch.Tensor, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Latents [B, C, *g] and features [B, D, *g] on one grid (float32, latents' device).

    2-D latents are area-resized to the feature grid (spec §5.4). 1-D latents N x L x C
    become [B, C, L, 1] and the raster-ordered feature tokens are 1-D adaptive-average-pooled
    to L tokens, [B, D, L, 1] (the spec's flagged, arbitrary choice).
    """
    if features.ndim != 4:
        raise ValueError(f"features must be [N, D, h, w], got shape {tuple(features.shape)}")
    if latents.shape[0] != features.shape[0]:
        raise ValueError(f"latents ({latents.shape[0]}) and features ({features.shape[0]}) differ in count")
    f = features.to(latents.device, torch.float32)
    z = latents.float()
    if z.ndim == 4:
        if tuple(z.shape[-2:]) != tuple(f.shape[-2:]):
            z = F.interpolate(z, size=tuple(f.shape[-2:]), mode="area")
        return z, f
    if z.ndim == 3:
        n_tokens = z.shape[1]
        return z.transpose(1, 2).unsqueeze(-1), F.adaptive_avg_pool1d(f.flatten(2), n_tokens).unsqueeze(-1)
    raise ValueError(f"latents must be [N, C, H, W] or [N, L, C], got shape {tuple(latents.shape)}")


def _latent_channels(latents: torch.Tensor) -> int:
    return int(latents.shape[1] if latents.ndim == 4 else latents.shape[-1])


def fit_vf_projection(
    latents: torch.Tensor,
    features: torch.Tensor,
    steps: int = 5000,
    lr: float = 1e-3,
    batch: int = 64,
    seed: int = 0,
    m1: float = 0.5,
    m2: float = 0.25,
    device: str | torch.device | None = None,
) -> tuple[nn.Conv2d, float]:
    """Fit P (1x1 conv C -> D, no bias) minimising VF on (latent, feature) pairs (spec §5.4 [DEFAULT]).

    AdamW (torch defaults besides ``lr``), ``steps`` steps of ``batch`` pairs from seeded
    per-epoch permutations (rows are gathered per batch, so memory-mapped inputs stream).
    P starts from PyTorch's Conv2d init drawn from the seeded generator. Returns P (on
    ``device``, default the latents' device) and the final loss: the mean batch loss over
    the last max(1, steps // 10) steps.
    """
    if not isinstance(latents, torch.Tensor) or not isinstance(features, torch.Tensor):
        raise ValueError("latents and features must be torch tensors")
    if latents.ndim not in (3, 4):
        raise ValueError(f"latents must be [N, C, H, W] or [N, L, C], got shape {tuple(latents.shape)}")
    if features.ndim != 4:
        raise ValueError(f"features must be [N, D, h, w], got shape {tuple(features.shape)}")
    n = latents.shape[0]
    if n == 0 or features.shape[0] != n:
        raise ValueError(f"latents ({n}) and features ({features.shape[0]}) must be the same non-zero count")
    if steps < 1 or batch < 1 or lr <= 0:
        raise ValueError(f"steps, batch and lr must be positive, got steps={steps}, batch={batch}, lr={lr}")
    dev = torch.device(device) if device is not None else latents.device
    gen = torch.Generator().manual_seed(derive_seed(seed, "vf_projection"))
    c, d = _latent_channels(latents), features.shape[1]
    proj = nn.Conv2d(c, d, kernel_size=1, bias=False)
    with torch.no_grad():  # PyTorch's default (kaiming_uniform a=sqrt(5)) bound 1/sqrt(fan_in), seeded
        bound = 1.0 / math.sqrt(c)
        proj.weight.copy_(torch.rand(proj.weight.shape, generator=gen) * (2 * bound) - bound)
    proj = proj.to(dev)
    opt = torch.optim.AdamW(proj.parameters(), lr=lr)
    b = min(batch, n)
    tail = max(1, steps // 10)
    recent: list[float] = []
    order = torch.randperm(n, generator=gen)
    pos = 0
    for step in range(steps):
        if pos + b > n:
            order, pos = torch.randperm(n, generator=gen), 0
        idx = order[pos : pos + b].sort().values  # sorted: friendlier to memory-mapped rows
        pos += b
        z, f = _vf_grid(latents[idx].to(dev), features[idx])
        loss = _vf_loss_tensor(proj(z), f, m1, m2, 1.0, 1.0)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step >= steps - tail:
            recent.append(float(loss.detach()))
    if not all(math.isfinite(v) for v in recent):
        raise ValueError("VF projection fit diverged (non-finite loss); check latents and features for NaN/inf")
    return proj.eval(), sum(recent) / len(recent)


def vf_metric(
    train_latents: torch.Tensor,
    train_features: torch.Tensor,
    val_latents: torch.Tensor,
    val_features: torch.Tensor,
    projection: nn.Module | None = None,
    steps: int = 5000,
    lr: float = 1e-3,
    batch: int = 64,
    seed: int = 0,
    m1: float = 0.5,
    m2: float = 0.25,
    device: str | torch.device | None = None,
) -> dict[str, object]:
    """VF loss of a tokenizer: fit P on train pairs, report VF on val pairs (spec §5.4 [DEFAULT]).

    ``projection``: the tokenizer's own trained P (VA-VAE ships one); then nothing is fitted
    (the train arguments may be None). Features are frozen foundation features [N, D, h, w]
    of the same images (DINOv2-L 16x16 at paper scale). Returns ``vf_loss`` (mean over val
    images), ``fit_loss`` (None when ``projection`` is given), ``token_pooled_1d`` (True for
    1-D tokenizers, whose features were adaptively pooled to L tokens: a flagged choice) and
    ``n_val``.
    """
    if not isinstance(val_latents, torch.Tensor) or val_latents.ndim not in (3, 4):
        raise ValueError(f"val_latents must be [N, C, H, W] or [N, L, C], got {getattr(val_latents, 'shape', None)}")
    if not isinstance(val_features, torch.Tensor) or val_features.shape[0] != val_latents.shape[0]:
        raise ValueError("val_features must be a tensor [N, D, h, w] with one row per val latent")
    dev = torch.device(device) if device is not None else val_latents.device
    fit_loss: float | None = None
    if projection is None:
        if train_latents is None or train_features is None:
            raise ValueError("train_latents and train_features are needed to fit the projection")
        if train_latents.ndim != val_latents.ndim or _latent_channels(train_latents) != _latent_channels(val_latents):
            raise ValueError(
                f"train_latents {tuple(train_latents.shape)} and val_latents {tuple(val_latents.shape)} differ in layout"
            )
        projection, fit_loss = fit_vf_projection(train_latents, train_features, steps, lr, batch, seed, m1, m2, dev)
    projection = projection.to(dev).eval()
    n = val_latents.shape[0]
    if n == 0:
        raise ValueError("val_latents is empty")
    total = 0.0
    with torch.no_grad():
        for i in range(0, n, batch):
            z, f = _vf_grid(val_latents[i : i + batch].to(dev), val_features[i : i + batch])
            # The loss is a mean over images of equal-sized grids: weight each batch by its size.
            total += float(_vf_loss_tensor(projection(z), f, m1, m2, 1.0, 1.0)) * z.shape[0]
    return {"vf_loss": total / n, "fit_loss": fit_loss, "token_pooled_1d": val_latents.ndim == 3, "n_val": n}


# --------------------------------------------------------------------------------------
# GMM loss (spec §5.5)
# --------------------------------------------------------------------------------------


def _sample_tokens(latents: torch.Tensor, n: int, rng: np.random.Generator, name: str) -> np.ndarray:
    """Up to ``n`` token vectors [M, C] (float64), drawn without replacement from ``rng``.

    Tokens are each spatial position's C-vector of NCHW latents or each token of N x L x C
    latents (spec §5.5); only the drawn rows are read (memory-mapped inputs stay on disk).
    """
    if not isinstance(latents, torch.Tensor) or latents.ndim not in (3, 4) or not latents.is_floating_point():
        raise ValueError(f"{name} must be a float tensor [N, C, H, W] or [N, L, C], got {getattr(latents, 'shape', None)}")
    if n < 1:
        raise ValueError(f"sample count for {name} must be >= 1, got {n}")
    per_item = latents.shape[2] * latents.shape[3] if latents.ndim == 4 else latents.shape[1]
    total = latents.shape[0] * per_item
    if total == 0:
        raise ValueError(f"{name} holds no tokens")
    flat = np.arange(total) if n >= total else np.sort(rng.choice(total, size=n, replace=False))
    item = torch.from_numpy(flat // per_item)
    where = torch.from_numpy(flat % per_item)
    if latents.ndim == 4:
        rows = latents.flatten(2)[item.to(latents.device), :, where.to(latents.device)]  # [M, C]
    else:
        rows = latents[item.to(latents.device), where.to(latents.device), :]
    out = rows.detach().cpu().double().numpy()
    if not np.isfinite(out).all():
        raise ValueError(f"{name} contains NaN or inf")
    return out


def gmm_loss(
    train_latents: torch.Tensor,
    val_latents: torch.Tensor,
    n_components: int = 64,
    covariance_type: str = "diag",
    max_iter: int = 200,
    n_fit: int = 200_000,
    n_eval: int = 200_000,
    seed: int = 0,
) -> dict[str, object]:
    """Token-level GMM negative log-likelihood per latent dimension (spec §5.5 [DEFAULT]).

    ``n_fit`` train and ``n_eval`` val tokens are drawn (seeded; capped at what exists),
    standardised per channel with the fitting tokens' mean and unbiased std (mirrors SiT's
    BN), a ``sklearn`` GaussianMixture (n_init 1, random_state ``seed``, reg_covar 1e-6)
    is fitted on the train tokens, and ``gmm_loss = -mean_v log p(v) / C`` on the val
    tokens, in nats. Also returns ``nll_per_token`` (= C * gmm_loss), ``k``, the token
    counts used and whether EM converged.
    """
    if n_components < 1 or max_iter < 1:
        raise ValueError(f"n_components and max_iter must be >= 1, got {n_components}, {max_iter}")
    train = _sample_tokens(train_latents, n_fit, np.random.default_rng(derive_seed(seed, "gmm", "fit")), "train_latents")
    val = _sample_tokens(val_latents, n_eval, np.random.default_rng(derive_seed(seed, "gmm", "eval")), "val_latents")
    c = train.shape[1]
    if val.shape[1] != c:
        raise ValueError(f"val_latents have {val.shape[1]} channels, train_latents {c}")
    if train.shape[0] < max(2, n_components):
        raise ValueError(f"train_latents: {train.shape[0]} fitting tokens cannot fit {n_components} components")
    mean = train.mean(axis=0)
    std = train.std(axis=0, ddof=1)
    if (std <= 0).any():
        dead = np.flatnonzero(std <= 0).tolist()
        raise ValueError(f"train_latents: channels {dead} are constant over the fitting tokens; cannot standardise")
    train = (train - mean) / std
    val = (val - mean) / std
    # (imported here: sklearn costs ~0.8 s to every job that needs no GMM)
    from sklearn.mixture import GaussianMixture

    gmm = GaussianMixture(
        n_components=n_components,
        covariance_type=covariance_type,
        max_iter=max_iter,
        n_init=1,
        random_state=seed,
        reg_covar=GMM_REG_COVAR,
    ).fit(train)
    nll = -float(gmm.score(val))  # score = mean per-token log-likelihood
    return {
        "gmm_loss": nll / c,
        "nll_per_token": nll,
        "k": n_components,
        "channels": c,
        "n_fit": int(train.shape[0]),
        "n_eval": int(val.shape[0]),
        "converged": bool(gmm.converged_),
    }
