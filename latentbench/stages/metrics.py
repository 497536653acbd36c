"""Per-tokenizer metric jobs (rules/metrics.smk): reconstruction + iFID, and the iFID table variants.

``reconstruction_metrics`` is one pass over the val latents that yields rFID, PSNR, SSIM and
iFID together, all from the same latent sample per image (spec metrics-ifid-seesaw.md §3.2
step 6: "the same pass also gives rFID ... all on the SAME latent sample q"). The reference
latents reach the neighbour search as a memory map (latentbench.latents), never whole in memory.
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
from latentbench.images import save_grid
from latentbench.io import write_json
from latentbench.latents import LatentCache, decoded_fid
from latentbench.metrics.fid import FeatureStats
from latentbench.metrics.ifid import ifid_latents
from latentbench.metrics.lpips import LPIPSMetric
from latentbench.metrics.neighbors import gather_rows
from latentbench.metrics.reconstruction import psnr, ssim
from latentbench.progress import progress
from latentbench.seeding import derive_seed
from latentbench.tokenizers import load_tokenizer
from latentbench.weights import WeightMissing

log = logging.getLogger(__name__)
SWITCHED_OFF = "not run: switched off in the config's metrics list"


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


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """Images [N, 3, H, W] on the [0, 1] scale -> uint8 NHWC (clamped, rounded): what a viewer sees."""
    return (images.detach().float().clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


class ReconstructionWriter:
    """Rows of uint8 NHWC reconstructions into a memory-mapped ``.npy``, renamed into place on close."""

    def __init__(self, path: str | Path, count: int) -> None:
        self.path, self.count = Path(path), count
        self.tmp = self.path.with_name(self.path.name + ".partial.npy")
        self.array: np.ndarray | None = None

    def write(self, start: int, images: torch.Tensor) -> None:
        rows = to_uint8(images)
        if self.array is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.array = np.lib.format.open_memmap(self.tmp, mode="w+", dtype=np.uint8, shape=(self.count, *rows.shape[1:]))
        self.array[start : start + len(rows)] = rows

    def close(self) -> None:
        if self.array is None:
            raise InputError(f"{self.path}: no reconstructions were written")
        self.array.flush()
        self.array = None
        self.tmp.replace(self.path)


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
    reconstructions: str | Path | None = None,
) -> None:
    """rFID, PSNR, SSIM and iFID of one tokenizer from one pass over the val latents.

    ``latents``: the tokenizer's cache folder (``train/``, ``val/``). ``val``: the val manifest.
    ``val_stats``: reference feature statistics of val. ``strip``: the PNG of originals,
    reconstructions, decoded neighbours and decoded interpolations.
    """
    cfg, protocol, seed = settings["ifid"], settings["reconstruction"]["protocol"], settings["seed"]
    wanted = set(settings["metrics"])
    device = compute_device()
    vae = load_tokenizer(tokenizer).eval().to(device)
    extractor = load_feature_extractor(settings["feature_net"], feature_net, device)
    reference = FeatureStats.load(val_stats)
    val_cache = LatentCache(Path(latents) / "val")
    queries = val_cache.latents(cfg["latent"], seed, "val")
    same_split = cfg["references"] == "val"
    picked, neighbors, num_references = None, None, None
    if "ifid" in wanted:
        ref_cache = val_cache if same_split else LatentCache(Path(latents) / "train")
        with ref_cache.array(cfg["latent"], seed, cfg["references"]) as references:
            picked = ifid_latents(
                queries, references, k=cfg["k"], alpha=cfg["alpha"], method=cfg["interpolation"],
                topk_pick=cfg["topk_pick"], exclude_self=same_split, seed=derive_seed(seed, "ifid"),
            )
            neighbors = gather_rows(references, picked["neighbor_index"][:8])  # for the strip
            num_references = len(references)

    not_run = {m: SWITCHED_OFF for m in ("rfid", "psnr", "ssim", "lpips", "ifid") if m not in wanted}
    lpips_metric = None
    if "lpips" in wanted:
        try:
            lpips_metric = LPIPSMetric(settings["weights_dir"], protocol=protocol, device=device)
        except WeightMissing as missing:
            not_run["lpips"] = str(missing)
    recon_stats, interp_stats = FeatureStats(), FeatureStats()
    psnrs, ssims, lpipses = [], [], []
    originals = None  # the first images, kept for the thumbnail strip
    start = 0
    recon_out = None if reconstructions is None else ReconstructionWriter(reconstructions, len(queries))
    split = ShardedSplit(Path(val).parent)
    for batch in progress(split.iter_batches(batch_size, ("image",)), len(split), "reconstruction", "img",
                          weight=lambda b: len(b["image"])):
        x = images_to_tensor(batch["image"]).to(device)
        if originals is None:
            originals = x[:8]
        sl = slice(start, start + len(x))
        recon = vae.decode(queries[sl].to(device))
        if recon_out is not None:
            recon_out.write(start, recon)
        if "psnr" in wanted:
            psnrs.append(psnr(x, recon, protocol=protocol).cpu())
        if "ssim" in wanted:
            ssims.append(ssim(x, recon, protocol=protocol).cpu())
        if lpips_metric is not None:
            lpipses.append(lpips_metric(x, recon).cpu())
        if "rfid" in wanted:
            recon_stats.update(extractor(recon))
        if picked is not None:
            interp_stats.update(extractor(vae.decode(picked["latents"][sl].to(device))))
        start += len(x)
    if start != len(queries):
        raise InputError(f"{val}: {start} images but {len(queries)} cached latents; re-encode the split")
    if recon_out is not None:
        recon_out.close()

    def mean(values: list[torch.Tensor]) -> float | None:
        return float(torch.cat(values).mean()) if values else None

    metrics = {
        "rfid": recon_stats.fd(reference) if "rfid" in wanted else None,
        "ifid": interp_stats.fd(reference) if picked is not None else None,
        "psnr": mean(psnrs),
        "ssim": mean(ssims),
        "lpips": mean(lpipses),
        "not_run": not_run,
        "feature_net": extractor.name,
        "num_images": start,
        "protocol": protocol,
        "ifid_settings": {**cfg, "num_references": num_references, "exclude_self": same_split},
        "ifid_topk_entropy": picked["entropy"] if picked is not None else None,
    }
    write_json(out, metrics)
    log.info("reconstruction metrics: %s", {k: v for k, v in metrics.items() if isinstance(v, float)})

    # Figure-5-style strip: originals, reconstructions, decoded nearest neighbours, decoded interpolations.
    n = len(originals)
    rows = [queries[:n]] + ([neighbors[:n], picked["latents"][:n]] if picked is not None else [])
    save_grid([originals, *(vae.decode(r.to(device)) for r in rows)], strip)


@torch.inference_mode()
def ifid_variants(
    settings: dict, tokenizer: str | Path, latents: str | Path, feature_net: str | Path, val_stats: str | Path, out: str | Path
) -> None:
    """iFID for every row of the paper's Tables 4 and 5 (interpolation, reference-set size, K, alpha).

    ``latents``: the tokenizer's cache folder; the train latents are the references, streamed.
    """
    cfg, seed = settings["ifid"], settings["seed"]
    if "ifid" not in settings["metrics"]:
        write_json(out, {"variants": [], "not_run": {"ifid": SWITCHED_OFF}})
        return
    device = compute_device()
    vae = load_tokenizer(tokenizer).eval().to(device)
    extractor = load_feature_extractor(settings["feature_net"], feature_net, device)
    reference = FeatureStats.load(val_stats)
    queries = LatentCache(Path(latents) / "val").latents(cfg["latent"], seed, "val")
    train_cache = LatentCache(Path(latents) / "train")
    rows = []
    for variant in progress(ifid_variant_grid(cfg), desc="iFID variants", unit="variant", every=0):
        n = max(variant["k"], round(variant["reference_fraction"] * len(train_cache)))
        # seeded uniform subsets (spec §3.4 [DEFAULT]); the full set when the fraction is 1
        generator = torch.Generator().manual_seed(derive_seed(seed, "ifid-refs", n))
        subset = None if n >= len(train_cache) else np.sort(torch.randperm(len(train_cache), generator=generator)[:n].numpy())
        with train_cache.array(cfg["latent"], seed, "train", rows=subset) as refs:
            picked = ifid_latents(
                queries, refs, k=variant["k"], alpha=variant["alpha"], method=variant["interpolation"],
                topk_pick=cfg["topk_pick"], seed=derive_seed(seed, "ifid"),
            )
            rows.append({**variant, "num_references": len(refs)})
        rows[-1]["ifid"] = decoded_fid(vae, extractor, picked["latents"], reference)
        log.info("iFID %s: %.4f", variant, rows[-1]["ifid"])
    write_json(out, {"variants": rows, "feature_net": extractor.name})  # rFID: reconstruction.json
