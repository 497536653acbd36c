"""Per-vae metric jobs (rules/metrics.smk).

``reconstruction_metrics`` is one pass over the val latents that yields rFID, PSNR, SSIM and
iFID together, all from the same latent sample per image (spec metrics-ifid-seesaw.md §3.2
step 6: "the same pass also gives rFID ... all on the SAME latent sample q").
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from latentbench.data.shards import ShardedSplit, images_to_tensor
from latentbench.device import compute_device
from latentbench.errors import InputError
from latentbench.features import load_feature_extractor
from latentbench.io import write_json
from latentbench.metrics.fid import FeatureStats
from latentbench.metrics.ifid import ifid_latents, sample_posterior
from latentbench.metrics.lpips import LPIPSMetric
from latentbench.metrics.reconstruction import psnr, ssim
from latentbench.seeding import derive_seed
from latentbench.stages.images import save_grid
from latentbench.stages.latents import LatentCache
from latentbench.tokenizers import load_tokenizer
from latentbench.weights import WeightMissing

log = logging.getLogger(__name__)


def cached_latents(cache: LatentCache, mode: str, seed: int, split: str) -> torch.Tensor:
    """All latents of a cached split: the posterior mean, or a per-image seeded posterior sample.

    Per-image seeds (spec metrics-ifid-seesaw.md §3.5) make image i's sample independent of
    batching, so any job that draws it again gets the same latent.
    """
    mean = torch.from_numpy(np.asarray(cache.mean))
    if mode == "mean":
        return mean.clone()
    std = torch.from_numpy(np.asarray(cache.std))
    seeds = [derive_seed(seed, "posterior", split, i) for i in range(len(mean))]
    return sample_posterior(mean, std, seeds)


@torch.inference_mode()
def decoded_fid(vae, extractor, latents: torch.Tensor, reference: FeatureStats, batch_size: int = 250) -> float:
    """Fréchet distance between the decoded ``latents`` and the reference statistics, streamed."""
    stats = FeatureStats()
    device = next(vae.parameters()).device
    for i in range(0, len(latents), batch_size):
        stats.update(extractor(vae.decode(latents[i : i + batch_size].to(device))))
    return stats.fd(reference)


def ifid_variant_grid(cfg: dict) -> list[dict]:
    """The iFID settings of the paper's Tables 4 and 5 (spec metrics-ifid-seesaw.md §3.4).

    Table 4: linear / mask / slerp with K = 1 on the smaller reference subset, slerp K = 1 on the
    larger subset and on all references, slerp with the study's K on all references (alpha 0.5).
    Table 5: slerp, all references, the study's K, alpha over ``cfg["alpha_grid"]``.
    """
    small, large = cfg["reference_fractions"]
    rows = [
        {"interpolation": "linear", "reference_fraction": small, "k": 1, "alpha": 0.5},
        {"interpolation": "mask", "reference_fraction": small, "k": 1, "alpha": 0.5},
        {"interpolation": "slerp", "reference_fraction": small, "k": 1, "alpha": 0.5},
        {"interpolation": "slerp", "reference_fraction": large, "k": 1, "alpha": 0.5},
        {"interpolation": "slerp", "reference_fraction": 1.0, "k": 1, "alpha": 0.5},
    ]
    rows += [{"interpolation": "slerp", "reference_fraction": 1.0, "k": cfg["k"], "alpha": a} for a in cfg["alpha_grid"]]
    unique = {tuple(sorted(r.items())): r for r in rows}
    return list(unique.values())


@torch.inference_mode()
def reconstruction_metrics(
    settings: dict,
    tokenizer: str | Path,
    val: str | Path,
    latents: str | Path,
    feature_net: str | Path,
    val_stats: str | Path,
    out: str | Path,
    strip: str | Path,
    batch_size: int = 250,
) -> None:
    """rFID, PSNR, SSIM and iFID of one tokenizer from one pass over the val latents."""
    cfg_ifid, protocol = settings["ifid"], settings["reconstruction"]["protocol"]
    seed = settings["seed"]
    device = compute_device()
    vae = load_tokenizer(tokenizer).eval().to(device)
    extractor = load_feature_extractor(settings["feature_net"], feature_net, device)
    reference = FeatureStats.load(val_stats)
    latents = Path(latents)

    queries = cached_latents(LatentCache(latents / "val"), cfg_ifid["latent"], seed, "val")
    same_split = cfg_ifid["references"] == "val"
    references = queries if same_split else cached_latents(
        LatentCache(latents / "train"), cfg_ifid["latent"], seed, "train"
    )
    picked = ifid_latents(
        queries,
        references,
        k=cfg_ifid["k"],
        alpha=cfg_ifid["alpha"],
        method=cfg_ifid["interpolation"],
        topk_pick=cfg_ifid["topk_pick"],
        exclude_self=same_split,
        seed=derive_seed(seed, "ifid"),
    )

    not_run: dict[str, str] = {}
    lpips_metric = None
    if "lpips" in settings["metrics"]:
        try:
            lpips_metric = LPIPSMetric(settings["weights_dir"], protocol=protocol, device=device)
        except WeightMissing as missing:
            not_run["lpips"] = str(missing)
    recon_stats, interp_stats = FeatureStats(), FeatureStats()
    psnrs, ssims, lpipses = [], [], []
    originals = None  # the first images, kept for the thumbnail strip
    start = 0
    for batch in ShardedSplit(Path(val).parent).iter_batches(batch_size, ("image",)):
        x = images_to_tensor(batch["image"]).to(device)
        if originals is None:
            originals = x[:8]
        sl = slice(start, start + len(x))
        recon = vae.decode(queries[sl].to(device))
        interp = vae.decode(picked["latents"][sl].to(device))
        psnrs.append(psnr(x, recon, protocol=protocol).cpu())
        ssims.append(ssim(x, recon, protocol=protocol).cpu())
        if lpips_metric is not None:
            lpipses.append(lpips_metric(x, recon).cpu())
        recon_stats.update(extractor(recon))
        interp_stats.update(extractor(interp))
        start += len(x)
    if start != len(queries):
        raise InputError(f"{val}: {start} images but {len(queries)} cached latents; re-encode the split")

    metrics = {
        "rfid": recon_stats.fd(reference),
        "ifid": interp_stats.fd(reference),
        "psnr": float(torch.cat(psnrs).mean()),
        "ssim": float(torch.cat(ssims).mean()),
        "lpips": float(torch.cat(lpipses).mean()) if lpipses else None,
        "not_run": not_run,
        "feature_net": extractor.name,
        "num_images": start,
        "protocol": protocol,
        "ifid_settings": {**cfg_ifid, "num_references": len(references), "exclude_self": same_split},
        "ifid_topk_entropy": picked["entropy"],
    }
    write_json(out, metrics)
    log.info("reconstruction metrics: %s", {k: v for k, v in metrics.items() if isinstance(v, float)})

    # Figure-5-style strip: originals, reconstructions, decoded nearest neighbours, decoded interpolations.
    n = len(originals)
    neighbors = references[picked["neighbor_index"][:n]]
    save_grid(
        [
            originals,
            vae.decode(queries[:n].to(device)),
            vae.decode(neighbors.to(device)),
            vae.decode(picked["latents"][:n].to(device)),
        ],
        strip,
    )


@torch.inference_mode()
def ifid_variants(
    settings: dict, tokenizer: str | Path, latents: str | Path, feature_net: str | Path, val_stats: str | Path, out: str | Path
) -> None:
    """iFID for every row of the paper's Tables 4 and 5 (interpolation, reference-set size, K, alpha)."""
    cfg, seed = settings["ifid"], settings["seed"]
    device = compute_device()
    vae = load_tokenizer(tokenizer).eval().to(device)
    extractor = load_feature_extractor(settings["feature_net"], feature_net, device)
    reference = FeatureStats.load(val_stats)
    queries = cached_latents(LatentCache(Path(latents) / "val"), cfg["latent"], seed, "val")
    all_refs = cached_latents(LatentCache(Path(latents) / "train"), cfg["latent"], seed, "train")
    rows = []
    for variant in ifid_variant_grid(cfg):
        n = max(variant["k"], round(variant["reference_fraction"] * len(all_refs)))
        # seeded uniform subsets (spec §3.4 [DEFAULT]); the full set when the fraction is 1
        subset = torch.randperm(len(all_refs), generator=torch.Generator().manual_seed(derive_seed(seed, "ifid-refs", n)))[:n]
        refs = all_refs if n >= len(all_refs) else all_refs[subset.sort().values]
        picked = ifid_latents(
            queries, refs, k=variant["k"], alpha=variant["alpha"], method=variant["interpolation"],
            topk_pick=cfg["topk_pick"], seed=derive_seed(seed, "ifid"),
        )
        rows.append({**variant, "num_references": len(refs), "ifid": decoded_fid(vae, extractor, picked["latents"], reference)})
        log.info("iFID %s: %.4f", variant, rows[-1]["ifid"])
    write_json(out, {"variants": rows, "feature_net": extractor.name})  # rFID: reconstruction.json
