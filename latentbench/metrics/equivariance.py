"""Affine equivariance of an encoder: RotateEQ and ScaleEQ (spec diffusability §8).

The paper compares ``Enc(T x)`` with ``T(Enc x)`` for rotations and scalings and plots
``RotateEQ`` / ``ScaleEQ`` with negative values; its exact definition is unknown. The
spec's default, used here: ``e(x, T) = mean_{c,h,w} (E(T x) - T(E x))^2`` on latents
standardised with the same per-channel stats, and ``*EQ = -mean_{x,T} e``. Transforms
mirror EQ-VAE (``zelaki/eqvae`` ``train_eqvae/ldm/models/autoencoder.py``): ``rot90`` and
bilinear rescaling without antialiasing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping

import torch
import torch.nn.functional as F

from latentbench.metrics.normalization import ChannelStats, Stats, standardize

Encoder = Callable[[torch.Tensor], torch.Tensor]
Transform = Callable[[torch.Tensor], torch.Tensor]

ROTATIONS = (1, 2, 3)  # k quarter turns (90, 180, 270 degrees)
SCALES = (0.5,)  # the f16-consistent factor of spec §8 (also valid: 0.25, 0.75)


def rotate(x: torch.Tensor, k: int) -> torch.Tensor:
    """``torch.rot90(x, k, dims=[-1, -2])`` as EQ-VAE applies it to images and latents."""
    return torch.rot90(x, k, dims=[-1, -2])


def rescale(x: torch.Tensor, s: float) -> torch.Tensor:
    """Bilinear rescale by ``s`` (align_corners=False, no antialias) of [N, C, H, W]."""
    return F.interpolate(x, scale_factor=s, mode="bilinear", align_corners=False, antialias=False)


def affine_transforms(rotations: tuple[int, ...] = ROTATIONS, scales: tuple[float, ...] = SCALES) -> dict[str, Transform]:
    """Named transforms ``rotate_k`` and ``scale_s`` applied identically to images and latents."""
    out: dict[str, Transform] = {f"rotate_{k}": (lambda x, k=k: rotate(x, k)) for k in rotations}
    out.update({f"scale_{s:g}": (lambda x, s=s: rescale(x, s)) for s in scales})
    return out


def _encode(encoder: Encoder, x: torch.Tensor) -> torch.Tensor:
    z = encoder(x)
    if not isinstance(z, torch.Tensor) or z.ndim != 4:
        raise ValueError(f"encoder must return latents [N, C, H, W], got {getattr(z, 'shape', type(z).__name__)}")
    return z


def _batches(
    encoder: Encoder, images: torch.Tensor, stats: Stats | None, batch_size: int
) -> tuple[Stats, Iterator[tuple[torch.Tensor, torch.Tensor]]]:
    """Stats and an iterator of (image batch, E(image batch)).

    Without ``stats`` the latents of all images are encoded once, kept on the CPU and their
    own per-channel stats used (spec §1.5); with ``stats`` everything streams.
    """
    if stats is not None:
        return stats, ((images[i : i + batch_size], _encode(encoder, images[i : i + batch_size]))
                       for i in range(0, images.shape[0], batch_size))
    acc = ChannelStats()
    kept = []
    for i in range(0, images.shape[0], batch_size):
        z = _encode(encoder, images[i : i + batch_size])
        acc.update(z)
        kept.append(z.cpu())
    return (acc.mean, acc.std), ((images[i : i + batch_size], kept[j].to(images.device))
                                 for j, i in enumerate(range(0, images.shape[0], batch_size)))


@torch.no_grad()
def equivariance_errors(
    encoder: Encoder,
    images: torch.Tensor,
    transforms: Mapping[str, Transform],
    *,
    stats: Stats | None = None,
    batch_size: int = 64,
) -> dict[str, dict[str, float]]:
    """Per transform: mean over images of the MSE, relative error and cosine of E(T x) vs T(E x).

    ``encoder`` maps images [B, 3, H, W] in [0, 1] to latents [B, C, h, w] (posterior mean);
    both latents are standardised with ``stats`` (the evaluation set's, spec §1.5) or, when
    None, the stats of E(images). ``mse`` is ``mean_{c,h,w} (E(T x) - T(E x))^2``;
    ``relative`` is ``||delta||^2 / ||T(E x)||^2``; ``cosine`` of the flattened latents.
    """
    if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[0] == 0:
        raise ValueError(f"images must be a non-empty tensor [N, 3, H, W], got {getattr(images, 'shape', None)}")
    if not transforms:
        raise ValueError("transforms is empty")
    norm, batches = _batches(encoder, images, stats, batch_size)
    sums = {name: {"mse": 0.0, "relative": 0.0, "cosine": 0.0} for name in transforms}
    for x, z in batches:
        z_std = standardize(z, *norm)
        for name, transform in transforms.items():
            target = transform(z_std)  # T(E x)
            pred = standardize(_encode(encoder, transform(x)), *norm)  # E(T x)
            if pred.shape != target.shape:
                raise ValueError(
                    f"transforms[{name!r}]: E(T x) has shape {tuple(pred.shape)} but T(E x) {tuple(target.shape)}; "
                    "the factor is not consistent with the encoder's downsampling"
                )
            delta = (pred - target).flatten(1)
            tgt = target.flatten(1)
            sums[name]["mse"] += float(delta.square().mean(dim=1).sum())
            sums[name]["relative"] += float((delta.square().sum(1) / tgt.square().sum(1).clamp_min(1e-12)).sum())
            sums[name]["cosine"] += float(F.cosine_similarity(pred.flatten(1), tgt, dim=1).sum())
    n = images.shape[0]
    return {name: {key: value / n for key, value in vals.items()} for name, vals in sums.items()}


def affine_equivariance(
    encoder: Encoder,
    images: torch.Tensor,
    *,
    rotations: tuple[int, ...] = ROTATIONS,
    scales: tuple[float, ...] = SCALES,
    stats: Stats | None = None,
    batch_size: int = 64,
) -> dict[str, object]:
    """``RotateEQ = -mean_{x,k} e`` and ``ScaleEQ = -mean_{x,s} e`` (spec §8), plus per-transform errors."""
    errors = equivariance_errors(
        encoder, images, affine_transforms(rotations, scales), stats=stats, batch_size=batch_size
    )
    out: dict[str, object] = {"per_transform": errors}
    if rotations:
        out["rotate_eq"] = -sum(errors[f"rotate_{k}"]["mse"] for k in rotations) / len(rotations)
    if scales:
        out["scale_eq"] = -sum(errors[f"scale_{s:g}"]["mse"] for s in scales) / len(scales)
    return out
