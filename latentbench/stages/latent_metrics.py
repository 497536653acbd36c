"""The diffusability study's latent metrics per tokenizer, and trajectory metrics per backbone.

Conventions (spec metrics-diffusability.md §1): the posterior mean (``latent: mean``, a
config key recorded with the result), standardised per channel with the evaluation split's
own statistics (§1.5); token-level foreground masks are the pixel masks max-pooled to the
latent grid (§1.3).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from latentbench.data.shards import ShardedSplit, images_to_tensor
from latentbench.diffusion.samplers import sample as run_sampler
from latentbench.io import write_json
from latentbench.metrics.equivariance import affine_equivariance
from latentbench.metrics.normalization import channel_stats
from latentbench.metrics.semantic import linear_probe, lnc, pooled_features
from latentbench.metrics.spatial import spatial_metrics, token_mask
from latentbench.metrics.spectral import sec
from latentbench.metrics.trajectory import trajectory_metrics
from latentbench.metrics.uniformity import uniformity
from latentbench.metrics.viv import class_spectra, viv_curve
from latentbench.seeding import derive_seed
from latentbench.stages.diffusion import load_diffusion
from latentbench.stages.latents import LatentCache
from latentbench.stages.metrics import cached_latents
from latentbench.tokenizers import load_tokenizer

log = logging.getLogger(__name__)


def _split(manifest: str | Path, fields: tuple[str, ...]) -> dict[str, np.ndarray]:
    return ShardedSplit(Path(manifest).parent).load_all(fields)


@torch.no_grad()  # not inference_mode: the linear probe trains a head on these tensors
def latent_metrics(
    settings: dict, tokenizer: str | Path, latents: str | Path, train: str | Path, val: str | Path, out: str | Path
) -> None:
    """VIV, SEC, LNC (+ linear probe), LDS/CDS/SRSS, uniformity and affine equivariance of one tokenizer."""
    cfg, wanted, seed = settings["latent_metrics"], set(settings["metrics"]), settings["seed"]
    latents = Path(latents)
    z = cached_latents(LatentCache(latents / "val"), cfg["latent"], seed, "val").double()
    stats = channel_stats(z)  # the evaluation split's own statistics (spec §1.5)
    val = _split(val, ("label", "mask", "image"))
    labels = torch.from_numpy(val["label"])
    result: dict[str, object] = {"latent": cfg["latent"], "num_images": len(z), "latent_shape": list(z.shape[1:])}
    mask_metrics = wanted & {"lnc", "lds", "cds", "srss"}
    if "mask" in val:
        fg = token_mask(torch.from_numpy(val["mask"]).bool(), patch=val["mask"].shape[-1] // z.shape[-1])
    elif mask_metrics:  # e.g. ImageNet without ImageNet-S masks: never computed without foreground
        result["not_run"] = {m: f"not run: needs foreground masks, which {val} lacks" for m in sorted(mask_metrics)}
        wanted = wanted - mask_metrics

    if "viv" in wanted:
        spectra = class_spectra(z, labels, stats=stats)
        result["viv"] = spectra.viv
        result["viv_classes"] = len(spectra.viv_per_class())
        result["viv_curve"] = {"t": cfg["viv_curve_times"], "viv": viv_curve(spectra, cfg["viv_curve_times"]).tolist()}
    if "sec" in wanted:
        for rho in cfg["sec_rho"]:
            result[f"sec_{rho:g}"] = sec(z, rho, stats=stats)
        result["sec"] = result[f"sec_{cfg['sec_rho'][-1]:g}"]
    if "lnc" in wanted:
        for k in cfg["lnc_k"]:
            result[f"lnc_{k}"] = lnc(z, labels, fg, k=k, stats=stats)
        result["lnc"] = result[f"lnc_{cfg['lnc_k'][0]}"]
    if "linear_probe" in wanted:
        ztr = cached_latents(LatentCache(latents / "train"), cfg["latent"], seed, "train").double()
        train_labels = torch.from_numpy(_split(train, ("label",))["label"])
        ftr, _ = pooled_features(ztr, None, stats=stats)
        fva, _ = pooled_features(z, None, stats=stats)
        with torch.enable_grad():
            result["linear_probe"] = linear_probe(ftr.float(), train_labels, fva.float(), labels, seed=derive_seed(seed, "probe"))
    if wanted & {"lds", "cds", "srss"}:
        spatial = spatial_metrics(z, fg, stats=stats)
        result.update({k: spatial[k] for k in ("lds", "cds", "srss")})
        result["spatial_images_kept"] = spatial["n_kept"]
    if "uniformity" in wanted:
        uni = uniformity(z, n_points=min(cfg["uniformity_points"], len(z)), repeats=cfg["uniformity_repeats"], seed=derive_seed(seed, "uniformity") % 2**31, stats=stats)
        result.update({k: uni[k] for k in ("normalized_entropy", "density_cv", "gini")})
    if wanted & {"scale_eq", "rotate_eq"}:
        vae = load_tokenizer(tokenizer).eval()
        images = images_to_tensor(val["image"][: cfg["equivariance_images"]])
        eq = affine_equivariance(lambda x: vae.encode_moments(x)[0], images, stats=stats)
        result.update(rotate_eq=eq["rotate_eq"], scale_eq=eq["scale_eq"])
    write_json(out, result)
    log.info("latent metrics: %s", {k: v for k, v in result.items() if isinstance(v, float)})


@torch.inference_mode()
def trajectory(settings: dict, model: str | Path, out: str | Path) -> None:
    """Straightness, efficiency and per-segment length ratio of Euler ODE trajectories (spec §9).

    No CFG, uniform grid without shift, fixed shared noise seeds and labels ``i mod classes``
    identical across tokenizers (spec metrics-diffusability.md §9 setup).
    """
    cfg = settings["latent_metrics"]
    net, recipe, _, payload = load_diffusion(model)
    shape = tuple(payload["latent_shape"])
    n = cfg["trajectory_samples"]
    labels = torch.arange(n) % payload["num_classes"]
    generator = torch.Generator().manual_seed(derive_seed(settings["seed"], "trajectory"))
    _, path = run_sampler(
        net, recipe.transport(shape), (n, *shape), labels, steps=cfg["trajectory_steps"], method="euler",
        cfg_scale=1.0, sample_shift=1.0, generator=generator, record_trajectory=True,
    )
    write_json(out, trajectory_metrics(path.float()))
