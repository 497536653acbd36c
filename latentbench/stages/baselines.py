"""The iFID paper's Table-3 baselines per tokenizer: EQ, SE, VF and GMM losses (spec §5.2-5.5)."""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from latentbench.data.shards import ShardedSplit, images_to_tensor
from latentbench.features.demo_net import load_demo_net
from latentbench.io import write_json
from latentbench.metrics.baselines import eq_loss, gmm_loss, se_loss, vf_metric
from latentbench.seeding import derive_seed
from latentbench.stages.latents import LatentCache
from latentbench.stages.metrics import cached_latents
from latentbench.tokenizers import load_tokenizer

log = logging.getLogger(__name__)


def _images(manifest: str | Path, limit: int) -> torch.Tensor:
    return images_to_tensor(ShardedSplit(Path(manifest).parent).load_all(("image",))["image"][:limit])


@torch.no_grad()
def _alignment_features(net, images: torch.Tensor, batch: int = 500) -> torch.Tensor:
    """The demo net's last-stage feature grid (stands in for DINOv2 patch tokens, spec §5.4)."""
    return torch.cat([net.feature_maps(images[i : i + batch])[-1] for i in range(0, len(images), batch)])


def baseline_metrics(
    settings: dict, tokenizer: str | Path, latents: str | Path, train: str | Path,
    val: str | Path, feature_net: str | Path, out: str | Path,
) -> None:
    """EQ and SE on val images, VF with a projection fitted on train, GMM fitted on train latents."""
    cfg, seed = settings["baselines"], settings["seed"]
    vae = load_tokenizer(tokenizer).eval()
    encode = lambda x: vae.encode_moments(x)[0]  # noqa: E731  (posterior mean)
    val_images = _images(val, cfg["images"])
    latents = Path(latents)
    train_z = cached_latents(LatentCache(latents / "train"), settings["ifid"]["latent"], seed, "train")
    val_z = cached_latents(LatentCache(latents / "val"), settings["ifid"]["latent"], seed, "val")
    result: dict[str, object] = {"images": len(val_images), "alignment_features": "demo-cnn stage 3"}
    with torch.no_grad():
        result["eq_loss"] = eq_loss(encode, vae.decode, val_images, tuple(val_z.shape[-2:]), seed=derive_seed(seed, "eq"))
        result["se_loss"] = se_loss(encode, vae.decode, val_images)
    net = load_demo_net(feature_net)
    train_images = _images(train, cfg["images"])
    vf = vf_metric(
        train_z[: len(train_images)], _alignment_features(net, train_images), val_z[: len(val_images)],
        _alignment_features(net, val_images), steps=cfg["vf_steps"], seed=derive_seed(seed, "vf"),
    )
    result.update(vf_loss=vf["vf_loss"], vf_fit_loss=vf["fit_loss"])
    gmm = gmm_loss(
        train_z, val_z, n_components=cfg["gmm_components"], n_fit=cfg["gmm_tokens"], n_eval=cfg["gmm_tokens"],
        seed=derive_seed(seed, "gmm") % 2**31,
    )
    result.update(gmm_loss=gmm["gmm_loss"], gmm_components=gmm["k"])
    write_json(out, result)
    log.info("baselines: %s", {k: v for k, v in result.items() if isinstance(v, float)})
