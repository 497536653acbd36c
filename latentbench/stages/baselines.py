"""The iFID paper's Table-3 baselines per tokenizer: EQ, SE, VF and GMM losses (spec §5.2-5.5)."""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from latentbench.data.shards import ShardedSplit, images_to_tensor
from latentbench.device import compute_device
from latentbench.features.demo_net import load_demo_net
from latentbench.io import write_json
from latentbench.latents import LatentCache, as_tensor
from latentbench.metrics.baselines import eq_loss, gmm_loss, se_loss, vf_metric
from latentbench.seeding import derive_seed
from latentbench.tokenizers import load_tokenizer

log = logging.getLogger(__name__)
BASELINES = ("eq_loss", "se_loss", "vf_loss", "gmm_loss")
SWITCHED_OFF = "not run: switched off in the config's metrics list"


def _first_images(manifest: str | Path, count: int) -> torch.Tensor:
    """The split's first ``count`` images (only the shards holding them are read)."""
    return images_to_tensor(ShardedSplit(Path(manifest).parent).load_first(count, ("image",))["image"])


@torch.no_grad()
def _alignment_features(net, images: torch.Tensor, device: torch.device, batch: int = 500) -> torch.Tensor:
    """The demo net's last-stage feature grid (stands in for DINOv2 patch tokens, spec §5.4)."""
    return torch.cat([net.feature_maps(images[i : i + batch].to(device))[-1].cpu() for i in range(0, len(images), batch)])


def baseline_metrics(
    settings: dict, tokenizer: str | Path, latents: str | Path, train: str | Path,
    val: str | Path, feature_net: str | Path, out: str | Path,
) -> None:
    """EQ and SE on val images, VF with a projection fitted on train, GMM fitted on train latents.

    ``latents``: the tokenizer's cache folder (``train/`` and ``val/``). ``train``, ``val``: the
    splits' manifests; only the first ``baselines.images`` images of each are read.
    """
    cfg, seed, mode = settings["baselines"], settings["seed"], settings["ifid"]["latent"]
    wanted = set(settings["metrics"])
    device = compute_device()
    vae = load_tokenizer(tokenizer).eval().to(device)
    train_cache, val_cache = LatentCache(Path(latents) / "train"), LatentCache(Path(latents) / "val")
    val_images = _first_images(val, cfg["images"])
    result: dict[str, object] = {"images": len(val_images), "alignment_features": "demo-cnn stage 3"}
    result["not_run"] = {m: SWITCHED_OFF for m in BASELINES if m not in wanted}
    encode = lambda x: vae.encode_moments(x.to(device))[0].cpu()  # noqa: E731  (posterior mean)
    decode = lambda z: vae.decode(z.to(device)).cpu()  # noqa: E731
    latent_hw = tuple(val_cache.latent_shape[-2:])
    with torch.no_grad():
        if "eq_loss" in wanted:
            result["eq_loss"] = eq_loss(encode, decode, val_images, latent_hw, seed=derive_seed(seed, "eq"))
        if "se_loss" in wanted:
            result["se_loss"] = se_loss(encode, decode, val_images)
    if "vf_loss" in wanted:
        net = load_demo_net(feature_net).to(device)
        train_images = _first_images(train, cfg["images"])
        vf = vf_metric(
            train_cache.rows(0, len(train_images), mode, seed, "train"), _alignment_features(net, train_images, device),
            val_cache.rows(0, len(val_images), mode, seed, "val"), _alignment_features(net, val_images, device),
            steps=cfg["vf_steps"], seed=derive_seed(seed, "vf"),
        )
        result.update(vf_loss=vf["vf_loss"], vf_fit_loss=vf["fit_loss"])
    if "gmm_loss" in wanted:
        # the GMM reads only its drawn tokens: hand it memory maps, not the splits
        with train_cache.array(mode, seed, "train") as ztr, val_cache.array(mode, seed, "val") as zva:
            gmm = gmm_loss(
                as_tensor(ztr), as_tensor(zva), n_components=cfg["gmm_components"], n_fit=cfg["gmm_tokens"],
                n_eval=cfg["gmm_tokens"], seed=derive_seed(seed, "gmm") % 2**31,
            )
        result.update(gmm_loss=gmm["gmm_loss"], gmm_components=gmm["k"])
    write_json(out, result)
    log.info("baselines: %s", {k: v for k, v in result.items() if isinstance(v, float)})
