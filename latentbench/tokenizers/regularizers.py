"""The diffusability study's tokenizer regularisers (spec metrics-diffusability.md §11.2).

Each regulariser hooks into one autoencoder training step at fixed points, so the training
loop stays one routine for all of them::

    plan = reg.plan(generator, batch, latent_hw)          # this step's random choices
    x_in, target = reg.encoder_input(x, plan)              # mae masks pixels; eq may downscale
    posterior = reg.encode(vae, x_in, plan); z = posterior.sample()   # mae masks ViT tokens
    aux = reg.aux_terms(x_in, posterior, z)                # VF / REPA / LCR losses
    z, target = reg.decoder_input(z, target, plan)         # eq transforms z and x; lmr masks z
    x_hat = vae.decode(z)                                   # Eq. 12 against ``target``

Images are in [-1, 1] inside these hooks (the autoencoder's space); target feature
callables take [0, 1] images. Clusters:

- ``mcos``, ``mdms``, ``mcos+mdms``: the VA-VAE VF loss (LightningDiT ``contperceptual.py``)
  on the sampled latent projected by a trainable 1x1 conv C -> D without bias
  (``reverse_proj``), against a frozen feature grid (``target_features``: the 16x16 patch
  tokens of the foundation encoder named by the variant, latentbench.features.foundation_net;
  the demo CNN's third stage, 128 ch at 8x8, for variant ``demo-cnn``).
- ``repa``: 3-layer MLP projector on the latent tokens, loss ``-mean cos`` [ASSUMPTION of
  the spec: the paper gives no details].
- ``eq``: EQ-VAE (``zelaki/eqvae`` ``AutoencoderKL.training_step``), transforms ``scale`` or
  ``flip``.
- ``lcr``: SSVAE local correlation regularisation (``regularizers/calc_local_corr.py``).
- ``lmr``: SSVAE latent masked reconstruction (``AutoencodingEngineSSVAE.apply_lmr``).
- ``mae``: masked encoder input at ratio ``r' ~ TruncNormal(loc=r_max, scale=0.25,
  [r_min, r_max])`` (MAETok), per-sample random positions; the decoder reconstructs the
  full image. On the Trans. family (the paper's use) the ViT encoder's input patch tokens
  are replaced by its learned mask token (MAETok-style). On the conv family this is an
  **adaptation**: image patches of side = the downsampling factor (one patch = one latent
  position) are replaced by a learned mask patch.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn

from latentbench.tokenizers.losses import AuxTerm
from latentbench.tokenizers.variants import (  # noqa: F401  (re-exported: the regulariser names live there)
    DEFAULT_OPTIONS,
    EQ_TRANSFORMS,
    FOUNDATION_ENCODERS,
    LMR_RATIOS,
    REGULARIZERS,
    VF_CLUSTERS,
    parse_variant,
)

if TYPE_CHECKING:
    from latentbench.tokenizers.posterior import DiagonalGaussian

TargetFeatures = Callable[[torch.Tensor], torch.Tensor]  # [0,1] images -> [N, D, h, w], frozen

# --------------------------------------------------------------------------------------
# Loss functions (pure, tested against the spec's oracles)
# --------------------------------------------------------------------------------------


def vf_loss(
    z_proj: torch.Tensor,
    features: torch.Tensor,
    cos_margin: float = 0.5,
    distmat_margin: float = 0.25,
    cos_weight: float = 1.0,
    distmat_weight: float = 1.0,
) -> torch.Tensor:
    """VA-VAE VF loss ``w_dm * L_mdms + w_cos * L_mcos`` (spec §11.2, ifid-seesaw §5.4).

    ``L_mcos = mean_{b,i} relu(1 - m1 - cos(z'_i, f_i))``;
    ``L_mdms = mean_{b,i,j} relu(|cos_z'(i,j) - cos_f(i,j)| - m2)`` over positions i, j.
    Both inputs [N, D, h, w] on the same grid.
    """
    if z_proj.shape != features.shape:
        raise ValueError(f"projected latent {tuple(z_proj.shape)} and features {tuple(features.shape)} differ")
    loss = z_proj.new_zeros(())
    if distmat_weight:
        zn = F.normalize(z_proj.flatten(2), dim=1)
        fn = F.normalize(features.flatten(2), dim=1)
        diff = (zn.transpose(1, 2) @ zn - fn.transpose(1, 2) @ fn).abs()
        loss = loss + distmat_weight * F.relu(diff - distmat_margin).mean()
    if cos_weight:
        cos = F.cosine_similarity(features, z_proj, dim=1)
        loss = loss + cos_weight * F.relu(1.0 - cos_margin - cos).mean()
    return loss


def local_correlation(z: torch.Tensor, window: int = 2, normalize: bool = True) -> torch.Tensor:
    """SSVAE rho_local: mean Pearson correlation between the token vectors of each window.

    ``z`` [B, C, H, W] is first standardised per channel with detached batch statistics
    over (B, H, W) (unbiased std, eps 1e-6) when ``normalize``; then in each non-overlapping
    ``window`` x ``window`` block the ``window**2`` C-vectors are centred over channels and
    L2-normalised (eps 1e-8), and their pairwise dot products (upper triangle, 6 pairs for
    2x2) are averaged over pairs, windows and the batch (``calc_local_corr.py``).
    """
    if z.ndim != 4:
        raise ValueError(f"z must be [B, C, H, W], got {tuple(z.shape)}")
    b, c, h, w = z.shape
    if window < 2:
        raise ValueError(f"LCR window must be >= 2 (it correlates tokens within a window), got {window}")
    if h % window or w % window:
        raise ValueError(f"latent grid {h}x{w} is not divisible by the LCR window {window}")
    if normalize:
        mean = z.mean(dim=(0, 2, 3), keepdim=True).detach()
        std = z.std(dim=(0, 2, 3), keepdim=True).detach()
        z = (z - mean) / (std + 1e-6)
    t = z.reshape(b, c, h // window, window, w // window, window).permute(0, 2, 4, 3, 5, 1)
    t = t.reshape(-1, window * window, c)  # (windows, tokens, channels)
    t = t - t.mean(dim=-1, keepdim=True)
    t = t / (t.norm(dim=-1, keepdim=True) + 1e-8)
    sim = t @ t.transpose(1, 2)
    iu = torch.triu_indices(window * window, window * window, offset=1, device=z.device)
    return sim[:, iu[0], iu[1]].mean()


def lcr_loss(z_mode: torch.Tensor, threshold: float, window: int = 2) -> torch.Tensor:
    """``relu(th - rho_local)`` (SSVAE ``loss_factory.py``)."""
    return F.relu(threshold - local_correlation(z_mode, window))


def sample_lmr_mask(generator: torch.Generator, probs: tuple[float, ...], h: int, w: int) -> tuple[float, torch.Tensor]:
    """Draw an LMR mask ratio from ``LMR_RATIOS`` with ``probs`` and the masked positions.

    Returns (ratio, flat position indices, shared across the batch); ``max(1, floor(r*h*w))``
    positions for r > 0, none for r = 0 (SSVAE ``apply_lmr`` with 1x1 blocks).
    """
    if len(probs) != len(LMR_RATIOS) or min(probs) < 0 or abs(sum(probs) - 1) > 1e-6:
        raise ValueError(f"probs must be {len(LMR_RATIOS)} non-negative values summing to 1, got {probs}")
    u = torch.rand((), generator=generator).item()
    cum = 0.0
    ratio = LMR_RATIOS[-1]
    for r, p in zip(LMR_RATIOS, probs):
        cum += p
        if u < cum:
            ratio = r
            break
    if ratio == 0.0:
        return 0.0, torch.empty(0, dtype=torch.long)
    count = max(1, math.floor(h * w * ratio))
    return ratio, torch.randperm(h * w, generator=generator)[:count]


def sample_mask_ratio(generator: torch.Generator, r_max: float, r_min: float = 0.0, scale: float = 0.25) -> float:
    """MAETok mask ratio: truncated normal with loc ``r_max``, ``scale``, support [r_min, r_max].

    Inverse-CDF sampling of ``scipy.stats.truncnorm((r_min - r_max)/scale, 0, loc=r_max, scale=scale)``.
    """
    if not 0 <= r_min <= r_max <= 1:
        raise ValueError(f"need 0 <= r_min <= r_max <= 1, got r_min={r_min}, r_max={r_max}")
    if r_max == r_min:
        return float(r_max)
    normal = torch.distributions.Normal(0.0, 1.0)
    lo = normal.cdf(torch.tensor((r_min - r_max) / scale, dtype=torch.float64))
    hi = 0.5  # cdf(0): the upper bound is the mode
    u = lo + (hi - lo) * torch.rand((), generator=generator, dtype=torch.float64)
    r = r_max + scale * float(torch.special.ndtri(u))
    return min(max(r, r_min), r_max)


def eq_scale_sizes(latent_side: int) -> list[int]:
    """Latent sides k for EQ scale factors s = k/h, ceil(h/2) <= k <= h-1.

    EQ-VAE draws s from {8/32, ..., 31/32} for its 32x32 latents; we restrict to s >= 1/2
    (spec §11.2: {8/16 .. 15/16} at f16) and express s as k/h so the scaled latent (k x k)
    and the scaled image (k*f x k*f) stay integer-sized and consistent.
    """
    sizes = list(range(math.ceil(latent_side / 2), latent_side))
    if not sizes:
        raise ValueError(f"latent side {latent_side} is too small for EQ scaling")
    return sizes


@dataclass(frozen=True)
class EqTransform:
    """One EQ-VAE transform T applied alike to a latent and to an image.

    ``kind`` "identity", "scale" (to ``size`` latent positions per side, bilinear,
    align_corners False, no antialias as in EQ-VAE) or "flip" (``dims``: (-1,), (-2,) or
    (-2, -1), EQ-VAE ``flip_or_rotate_image`` h / v / vh).
    """

    kind: str = "identity"
    size: int = 0
    dims: tuple[int, ...] = ()

    def apply(self, t: torch.Tensor, factor: int = 1) -> torch.Tensor:
        """T(t); ``factor`` = pixels per latent position (1 for latents, f for images)."""
        if self.kind == "identity":
            return t
        if self.kind == "flip":
            return torch.flip(t, list(self.dims))
        if self.kind == "scale":
            side = self.size * factor
            return F.interpolate(t, size=(side, side), mode="bilinear", align_corners=False)
        raise ValueError(f"unknown EQ transform kind {self.kind!r}")


FLIPS = ((-1,), (-2,), (-2, -1))  # h, v, hv


# --------------------------------------------------------------------------------------
# Regularisers as training-step hooks
# --------------------------------------------------------------------------------------


class Regularizer(nn.Module):
    """Baseline: Eq. 12 only. Subclasses override the hooks they need."""

    name = "baseline"

    def plan(self, generator: torch.Generator, batch_size: int, latent_hw: tuple[int, int]) -> dict[str, Any]:
        """This step's random decisions (drawn from ``generator``)."""
        return {}

    def encoder_input(self, x: torch.Tensor, plan: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        """(encoder input, reconstruction target) from images ``x`` in [-1, 1]."""
        return x, x

    def encode(self, vae: nn.Module, x_in: torch.Tensor, plan: dict[str, Any]) -> DiagonalGaussian:
        """The posterior of the encoder input."""
        return vae.encode(x_in)

    def decoder_input(
        self, z: torch.Tensor, target: torch.Tensor, plan: dict[str, Any]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(decoder input, reconstruction target) from the sampled latent."""
        return z, target

    def aux_terms(self, x_in: torch.Tensor, posterior: DiagonalGaussian, z: torch.Tensor) -> list[AuxTerm]:
        """Auxiliary losses weighted adaptively on the encoder's last layer."""
        return []


def _target_grid(target_features: TargetFeatures, x_in: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
    """Frozen target features of [-1,1] images on the latent grid (area-resized if different)."""
    with torch.no_grad():
        f = target_features((x_in + 1.0) * 0.5).float()
    if tuple(f.shape[-2:]) != tuple(hw):
        f = F.interpolate(f, size=hw, mode="area")
    return f


class VFRegularizer(Regularizer):
    """VA-VAE VF loss (mcos / mdms / mcos+mdms) with a trainable 1x1 projection C -> D."""

    def __init__(
        self,
        name: str,
        latent_channels: int,
        feature_dim: int,
        target_features: TargetFeatures,
        vf_weight: float = 0.1,
        cos_margin: float = 0.5,
        distmat_margin: float = 0.25,
    ) -> None:
        super().__init__()
        self.name = name
        self.cos_weight, self.distmat_weight = VF_CLUSTERS[name]
        self.proj = nn.Conv2d(latent_channels, feature_dim, 1, bias=False)  # reverse_proj: true
        self.target_features = target_features
        self.vf_weight, self.cos_margin, self.distmat_margin = vf_weight, cos_margin, distmat_margin

    def aux_terms(self, x_in: torch.Tensor, posterior: DiagonalGaussian, z: torch.Tensor) -> list[AuxTerm]:
        f = _target_grid(self.target_features, x_in, tuple(z.shape[-2:]))
        loss = vf_loss(self.proj(z), f, self.cos_margin, self.distmat_margin, self.cos_weight, self.distmat_weight)
        return [AuxTerm("vf", loss, self.vf_weight)]


class RepaRegularizer(Regularizer):
    """REPA-style alignment: MLP(C -> hidden -> hidden -> D, SiLU) on latent tokens, ``-mean cos``."""

    name = "repa"

    def __init__(
        self,
        latent_channels: int,
        feature_dim: int,
        target_features: TargetFeatures,
        hidden: int = 2048,
        weight: float = 0.1,
    ) -> None:
        super().__init__()
        self.mlp = nn.Sequential(
            nn.Linear(latent_channels, hidden),
            nn.SiLU(),
            nn.Linear(hidden, hidden),
            nn.SiLU(),
            nn.Linear(hidden, feature_dim),
        )
        self.target_features = target_features
        self.weight = weight

    def aux_terms(self, x_in: torch.Tensor, posterior: DiagonalGaussian, z: torch.Tensor) -> list[AuxTerm]:
        f = _target_grid(self.target_features, x_in, tuple(z.shape[-2:]))
        h = self.mlp(z.flatten(2).transpose(1, 2))  # B, hw, D
        loss = -F.cosine_similarity(h, f.flatten(2).transpose(1, 2), dim=-1).mean()
        return [AuxTerm("repa", loss, self.weight)]


class EqRegularizer(Regularizer):
    """EQ-VAE: with p_latent decode T(z) against T(x); else optionally downscale the input."""

    name = "eq"

    def __init__(self, transform: str, factor: int, p_latent: float = 0.5, p_image_scale: float = 0.25) -> None:
        super().__init__()
        if transform not in EQ_TRANSFORMS:
            raise ValueError(f"unknown EQ transform {transform!r}")
        self.transform, self.factor = transform, factor  # factor: pixels per latent position
        self.p_latent, self.p_image_scale = p_latent, p_image_scale

    def plan(self, generator: torch.Generator, batch_size: int, latent_hw: tuple[int, int]) -> dict[str, Any]:
        sizes = eq_scale_sizes(latent_hw[0])
        u, v = torch.rand(2, generator=generator).tolist()
        if u < self.p_latent:
            if self.transform == "scale":
                k = sizes[int(torch.randint(len(sizes), (), generator=generator))]
                return {"mode": "latent", "T": EqTransform("scale", size=k)}
            dims = FLIPS[int(torch.randint(len(FLIPS), (), generator=generator))]
            return {"mode": "latent", "T": EqTransform("flip", dims=dims)}
        if v < self.p_image_scale:  # "prior preservation" on low-resolution images
            k = sizes[int(torch.randint(len(sizes), (), generator=generator))]
            return {"mode": "image", "T": EqTransform("scale", size=k)}
        return {"mode": "image", "T": EqTransform()}

    def encoder_input(self, x: torch.Tensor, plan: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        if plan.get("mode") == "image":
            x = plan["T"].apply(x, self.factor)
        return x, x

    def decoder_input(
        self, z: torch.Tensor, target: torch.Tensor, plan: dict[str, Any]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if plan.get("mode") != "latent":
            return z, target
        return plan["T"].apply(z, 1), plan["T"].apply(target, self.factor)


class LcrRegularizer(Regularizer):
    """SSVAE LCR on the posterior mode, weight ``0.1 * w`` times the adaptive ratio."""

    name = "lcr"

    def __init__(self, weight: float, threshold: float, window: int = 2) -> None:
        super().__init__()
        self.weight, self.threshold, self.window = weight, threshold, window

    def aux_terms(self, x_in: torch.Tensor, posterior: DiagonalGaussian, z: torch.Tensor) -> list[AuxTerm]:
        return [AuxTerm("lcr", lcr_loss(posterior.mode(), self.threshold, self.window), 0.1 * self.weight)]


class LmrRegularizer(Regularizer):
    """SSVAE LMR: replace a shared random set of latent positions by a learned mask token."""

    name = "lmr"

    def __init__(self, probs: tuple[float, ...], latent_channels: int) -> None:
        super().__init__()
        self.probs = tuple(probs)
        self.mask_token = nn.Parameter(torch.randn(1, latent_channels, 1, 1))

    def plan(self, generator: torch.Generator, batch_size: int, latent_hw: tuple[int, int]) -> dict[str, Any]:
        ratio, positions = sample_lmr_mask(generator, self.probs, *latent_hw)
        return {"ratio": ratio, "positions": positions}

    def decoder_input(
        self, z: torch.Tensor, target: torch.Tensor, plan: dict[str, Any]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        positions = plan["positions"]
        if positions.numel() == 0:
            return z, target
        h, w = z.shape[-2:]
        mask = torch.zeros(h * w, dtype=torch.bool, device=z.device)
        mask[positions.to(z.device)] = True
        z = torch.where(mask.view(1, 1, h, w), self.mask_token.to(z.dtype), z)
        return z, target


class MaeRegularizer(Regularizer):
    """MAE-style encoder masking: ViT input tokens (``tokens=True``) or, on conv encoders, the
    image patch behind each latent position (see the module docstring)."""

    name = "mae"

    def __init__(self, r_max: float, patch: int, r_min: float = 0.0, scale: float = 0.25, tokens: bool = False) -> None:
        super().__init__()
        self.r_max, self.r_min, self.scale, self.patch, self.tokens = r_max, r_min, scale, patch, tokens
        if not tokens:
            self.mask_patch = nn.Parameter(torch.zeros(1, 3, patch, patch))  # learned, init mid-grey

    def plan(self, generator: torch.Generator, batch_size: int, latent_hw: tuple[int, int]) -> dict[str, Any]:
        ratio = sample_mask_ratio(generator, self.r_max, self.r_min, self.scale)
        n_tokens = latent_hw[0] * latent_hw[1]
        count = math.floor(ratio * n_tokens)
        order = torch.rand(batch_size, n_tokens, generator=generator).argsort(dim=1)
        mask = torch.zeros(batch_size, n_tokens, dtype=torch.bool)
        mask.scatter_(1, order[:, :count], True)  # per-sample positions, as MAETok's random_masking
        return {"ratio": ratio, "mask": mask.view(batch_size, *latent_hw)}

    def encoder_input(self, x: torch.Tensor, plan: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        mask = plan["mask"].to(x.device)
        if self.tokens or not bool(mask.any()):
            return x, x
        p = self.patch
        pixel_mask = mask.repeat_interleave(p, 1).repeat_interleave(p, 2).unsqueeze(1)
        tiles = self.mask_patch.to(x.dtype).repeat(1, 1, x.shape[-2] // p, x.shape[-1] // p)
        return torch.where(pixel_mask, tiles, x), x

    def encode(self, vae: nn.Module, x_in: torch.Tensor, plan: dict[str, Any]) -> DiagonalGaussian:
        if not self.tokens:
            return super().encode(vae, x_in, plan)
        return vae.encode(x_in, token_mask=plan["mask"])


def build_regularizer(
    cfg: dict[str, Any],
    latent_channels: int,
    downsample_factor: int,
    target_features: TargetFeatures | None = None,
    feature_dim: int | None = None,
    masks_tokens: bool = False,
) -> Regularizer:
    """The regulariser named by ``cfg["regularizer"]``/``cfg["variant"]``, options from ``cfg["reg_options"]``.

    ``masks_tokens``: the encoder takes a ``token_mask`` (ViT), so ``mae`` masks its input tokens.
    """
    name = cfg.get("regularizer", "baseline")
    params = parse_variant(name, cfg.get("variant"))
    options = dict(cfg.get("reg_options") or {})
    unknown = sorted(set(options) - set(DEFAULT_OPTIONS))
    if unknown:
        raise ValueError(f"unknown reg_options keys {unknown}; known: {sorted(DEFAULT_OPTIONS)}")
    opt = {**DEFAULT_OPTIONS, **options}
    if name in VF_CLUSTERS or name == "repa":
        if target_features is None or feature_dim is None:
            raise ValueError(
                f"regularizer {name!r} needs target_features and feature_dim (the frozen alignment target)"
            )
        if name == "repa":
            return RepaRegularizer(
                latent_channels, feature_dim, target_features, int(opt["repa_hidden"]), float(opt["vf_weight"])
            )
        return VFRegularizer(
            name, latent_channels, feature_dim, target_features,
            float(opt["vf_weight"]), float(opt["cos_margin"]), float(opt["distmat_margin"]),
        )  # fmt: skip
    if name == "eq":
        return EqRegularizer(
            params["transform"], downsample_factor, float(opt["eq_p_latent"]), float(opt["eq_p_image_scale"])
        )
    if name == "lcr":
        return LcrRegularizer(params["weight"], params["threshold"], int(opt["lcr_window"]))
    if name == "lmr":
        return LmrRegularizer(params["probs"], latent_channels)
    if name == "mae":
        return MaeRegularizer(
            params["r_max"], downsample_factor, float(opt["mae_r_min"]), float(opt["mae_scale"]), masks_tokens
        )
    return Regularizer()
