"""The diffusability study's latent metrics per tokenizer, and trajectory metrics per backbone.

Conventions (spec metrics-diffusability.md §1): the posterior mean (``latent: mean``, a
config key recorded with the result), standardised per channel with the evaluation split's
own statistics (§1.5); token-level foreground masks are the pixel masks max-pooled to the
latent grid (§1.3). The latents reach the metrics as a memory-mapped tensor, which every
metric reads chunk by chunk; pixel masks are pooled shard by shard.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from latentbench.data.shards import ShardedSplit, images_to_tensor
from latentbench.device import compute_device
from latentbench.diffusion.io import load_diffusion
from latentbench.diffusion.samplers import sample as run_sampler
from latentbench.io import write_json
from latentbench.latents import LatentCache, as_tensor
from latentbench.metrics.equivariance import affine_equivariance
from latentbench.metrics.normalization import channel_stats
from latentbench.metrics.semantic import linear_probe, neighbor_consistency, pooled_features
from latentbench.metrics.spatial import spatial_metrics, token_mask
from latentbench.metrics.spectral import sec
from latentbench.metrics.trajectory import trajectory_metrics
from latentbench.metrics.uniformity import uniformity
from latentbench.metrics.viv import class_spectra, viv_curve
from latentbench.seeding import derive_seed
from latentbench.tokenizers import load_tokenizer

log = logging.getLogger(__name__)
SWITCHED_OFF = "not run: switched off in the config's metrics list"
LATENT_METRICS = ("viv", "sec", "lnc", "linear_probe", "lds", "cds", "srss", "uniformity", "scale_eq", "rotate_eq")


def token_masks(split: ShardedSplit, latent_hw: tuple[int, int]) -> torch.Tensor:
    """Every image's token-level foreground mask [N, h, w], pooled shard by shard (spec §1.3)."""
    parts = []
    for shard in split.iter_shards(("mask",)):
        mask = torch.from_numpy(shard["mask"]).bool()
        parts.append(token_mask(mask, patch=mask.shape[-1] // latent_hw[-1]))
    return torch.cat(parts)


@torch.no_grad()  # not inference_mode: the linear probe trains a head on these tensors
def latent_metrics(
    settings: dict, tokenizer: str | Path, latents: str | Path, train: str | Path, val: str | Path, out: str | Path
) -> None:
    """VIV, SEC, LNC (+ linear probe), LDS/CDS/SRSS, uniformity and affine equivariance of one tokenizer.

    ``latents``: the tokenizer's cache folder (``val/``; ``train/`` for the linear probe).
    ``train``, ``val``: the splits' manifests (labels, masks, the equivariance images).
    """
    cfg, wanted, seed = settings["latent_metrics"], set(settings["metrics"]) & set(LATENT_METRICS), settings["seed"]
    device = compute_device()
    cache = LatentCache(Path(latents) / "val")
    val_split = ShardedSplit(Path(val).parent)
    labels = torch.from_numpy(val_split.labels())
    result: dict[str, object] = {"latent": cfg["latent"], "num_images": len(cache), "latent_shape": list(cache.latent_shape)}
    mask_metrics = wanted & {"lnc", "lds", "cds", "srss"}
    fg = None
    if mask_metrics and val_split.has_field("mask"):
        fg = token_masks(val_split, cache.latent_shape[-2:])
    elif mask_metrics:  # e.g. ImageNet without ImageNet-S masks: never computed without foreground
        result["not_run"] = {m: f"not run: needs foreground masks, which {val} lacks" for m in sorted(mask_metrics)}
        wanted -= mask_metrics

    with cache.array(cfg["latent"], seed, "val") as array:
        z = as_tensor(array)  # memory-mapped; the metrics read it in chunks
        stats = channel_stats(z)  # the evaluation split's own statistics (spec §1.5)
        if "viv" in wanted:
            spectra = class_spectra(z, labels, stats=stats)
            result["viv"] = spectra.viv
            result["viv_classes"] = len(spectra.viv_per_class())
            result["viv_curve"] = {"t": cfg["viv_curve_times"], "viv": viv_curve(spectra, cfg["viv_curve_times"]).tolist()}
        if "sec" in wanted:
            for rho in cfg["sec_rho"]:
                result[f"sec_{rho:g}"] = sec(z, rho, stats=stats)
            result["sec"] = result[f"sec_{cfg['sec_rho'][-1]:g}"]
        if "lnc" in wanted:  # pooled features once, LNC at every K (spec §3.1)
            features, keep = pooled_features(z, fg, stats=stats)
            per_k = neighbor_consistency(features, labels[keep], tuple(cfg["lnc_k"]))
            result.update({f"lnc_{k}": per_k[k] for k in cfg["lnc_k"]})
            result["lnc"] = result[f"lnc_{cfg['lnc_k'][0]}"]
        if "linear_probe" in wanted:
            fva, _ = pooled_features(z, None, stats=stats)
            train_cache = LatentCache(Path(latents) / "train")
            with train_cache.array(cfg["latent"], seed, "train") as ztr:
                ftr, _ = pooled_features(as_tensor(ztr), None, stats=stats)
            train_labels = torch.from_numpy(ShardedSplit(Path(train).parent).labels())
            with torch.enable_grad():
                result["linear_probe"] = linear_probe(
                    ftr.float().to(device), train_labels, fva.float().to(device), labels, seed=derive_seed(seed, "probe")
                )
        if wanted & {"lds", "cds", "srss"}:
            spatial = spatial_metrics(z, fg, stats=stats)
            result.update({k: spatial[k] for k in ("lds", "cds", "srss")})
            result["spatial_images_kept"] = spatial["n_kept"]
        if "uniformity" in wanted:
            uni = uniformity(
                z, n_points=min(cfg["uniformity_points"], len(z)), repeats=cfg["uniformity_repeats"],
                seed=derive_seed(seed, "uniformity") % 2**31, stats=stats,
            )
            result.update({k: uni[k] for k in ("normalized_entropy", "density_cv", "gini")})
    if wanted & {"scale_eq", "rotate_eq"}:
        vae = load_tokenizer(tokenizer).eval().to(device)
        images = images_to_tensor(val_split.load_first(cfg["equivariance_images"], ("image",))["image"])
        eq = affine_equivariance(lambda x: vae.encode_moments(x.to(device))[0].cpu(), images, stats=stats)
        result.update(rotate_eq=eq["rotate_eq"], scale_eq=eq["scale_eq"])
    write_json(out, result)
    log.info("latent metrics: %s", {k: v for k, v in result.items() if isinstance(v, float)})


@torch.inference_mode()
def trajectory(settings: dict, model: str | Path, out: str | Path) -> None:
    """Straightness, efficiency and per-segment length ratio of Euler ODE trajectories (spec §9).

    No CFG, uniform grid without shift, fixed shared noise seeds and labels ``i mod classes``
    identical across tokenizers (spec metrics-diffusability.md §9 setup). ``model``: the
    trained backbone file.
    """
    cfg = settings["latent_metrics"]
    if "trajectory" not in settings["metrics"]:
        write_json(out, {"straightness": None, "efficiency": None, "not_run": {"trajectory": SWITCHED_OFF}})
        return
    device = compute_device()
    net, recipe, _, payload = load_diffusion(model, device)
    shape = tuple(payload["latent_shape"])
    n = cfg["trajectory_samples"]
    labels = (torch.arange(n) % payload["num_classes"]).to(device)
    generator = torch.Generator().manual_seed(derive_seed(settings["seed"], "trajectory"))
    _, path = run_sampler(
        net, recipe.transport(shape), (n, *shape), labels, steps=cfg["trajectory_steps"], method="euler",
        cfg_scale=1.0, sample_shift=1.0, generator=generator, record_trajectory=True,
    )
    write_json(out, trajectory_metrics(path.float().cpu()))
