"""Diffusion jobs (rules/diffusion.smk, rules/metrics.smk): train, sample, gFID, held-out loss."""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from latentbench.data.shards import ShardedSplit
from latentbench.device import compute_device
from latentbench.diffusion import build_backbone
from latentbench.diffusion.recipes import Recipe, get_recipe
from latentbench.diffusion.samplers import partial_noise
from latentbench.diffusion.samplers import sample as run_sampler
from latentbench.diffusion.training import TrainSettings, train_diffusion, world
from latentbench.errors import InputError
from latentbench.features import load_feature_extractor
from latentbench.features.representations import fdr6_extractors
from latentbench.io import atomic_path, write_json
from latentbench.metrics.fdr6 import PUBLISHED_VALIDATION_FD, fdr6
from latentbench.metrics.fid import FeatureStats, load_stats_group, save_stats_group
from latentbench.metrics.inception_score import InceptionScore
from latentbench.seeding import derive_seed, seed_everything
from latentbench.stages.images import save_grid
from latentbench.stages.latents import LatentCache
from latentbench.stages.metrics import cached_latents, decoded_fid
from latentbench.tokenizers import load_tokenizer

log = logging.getLogger(__name__)


class LatentNormalizer:
    """The recipe's latent normalisation outside the model (spec models.md §1.6 ``latent_norm``).

    ``channel_stats``: (z − mean_c)/std_c with the cache's per-channel statistics (LightningDiT);
    ``bn_online``: identity here, the model's own BatchNorm normalises (iFID SiT).
    """

    def __init__(self, kind: str, mean: torch.Tensor, std: torch.Tensor) -> None:
        if kind not in ("channel_stats", "bn_online"):
            raise InputError(f"latent_norm {kind!r} is not available for tokenizers trained in the DAG")
        self.kind, self.mean, self.std = kind, mean, std

    def __call__(self, z: torch.Tensor) -> torch.Tensor:
        return (z - self.mean) / self.std if self.kind == "channel_stats" else z

    def invert(self, u: torch.Tensor) -> torch.Tensor:
        return u * self.std + self.mean if self.kind == "channel_stats" else u


def _num_classes(labels: str | Path) -> int:
    return int(ShardedSplit(Path(labels).parent, verify=False).meta["num_classes"])


def _labels(labels: str | Path) -> torch.Tensor:
    return torch.from_numpy(ShardedSplit(Path(labels).parent).load_all(("label",))["label"])


def train_settings(recipe: Recipe, size: str, overrides: dict, seed: int, steps: int | None = None) -> TrainSettings:
    """Recipe optimisation values, overridden by the study's ``diffusion_training`` keys and by
    the backbone's own ``steps``."""
    return TrainSettings(
        steps=steps or overrides.get("steps", recipe.steps_for(size)),
        batch_size=overrides.get("batch_size", recipe.batch_size),
        lr=overrides.get("lr", recipe.lr),
        betas=tuple(recipe.betas),
        weight_decay=recipe.weight_decay,
        adam_eps=recipe.adam_eps,
        ema=overrides.get("ema", recipe.ema_decay),
        grad_clip=overrides.get("grad_clip", recipe.grad_clip),
        checkpoint_every=overrides["checkpoint_every"],
        seed=derive_seed(seed, "diffusion"),
        precision=recipe.precision,
        grad_accumulation=overrides["grad_accumulation"],
    )


def init_distributed() -> torch.device:
    """Join the torchrun process group when launched with WORLD_SIZE > 1; return this rank's device."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    if torch.cuda.is_available():
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        return torch.device("cuda", local)
    return torch.device("cpu")


def train_diffusion_job(
    backbone: dict, settings: dict, latents: str | Path, labels: str | Path, checkpoint: str | Path, out: str | Path
) -> None:
    """Train one backbone on one tokenizer's cached train latents; save the EMA model."""
    cache = LatentCache(latents)
    recipe = get_recipe(backbone["recipe"])
    latent_shape = tuple(cache.mean.shape[1:])
    num_classes = _num_classes(labels)
    targets = _labels(labels)
    if len(targets) != len(cache):
        raise InputError(f"{latents}: {len(cache)} latents but {len(targets)} labels; re-encode the split")
    opts = train_settings(recipe, backbone["size"], settings["diffusion_training"], settings["seed"], backbone.get("steps"))
    device = init_distributed()
    seed_everything(opts.seed)  # the initial weights are part of the run's determinism
    model = build_backbone(backbone["size"], recipe.name, latent_shape, backbone["patch_size"], num_classes=num_classes)
    model.to(device)
    if settings["diffusion_training"]["compile"]:
        model.forward = torch.compile(model.forward)
    normalizer = LatentNormalizer(recipe.latent_norm, *cache.channel_stats())
    mean, std = torch.from_numpy(np.asarray(cache.mean)), torch.from_numpy(np.asarray(cache.std))

    def get_batch(idx: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        # a fresh posterior sample per step (spec models.md §1.6, study default)
        z = mean[idx] + std[idx] * torch.randn(mean[idx].shape, generator=generator)
        return normalizer(z), targets[idx]

    ema = train_diffusion(model, recipe.transport(latent_shape), get_batch, len(cache), opts, checkpoint)
    if world()[0] != 0:
        dist.destroy_process_group()
        return
    ema.copy_to(model)
    model.cpu()
    with atomic_path(out, suffix=".pt") as tmp:
        torch.save(
            {
                "backbone": backbone,
                "latent_shape": list(latent_shape),
                "num_classes": num_classes,
                "state_dict": model.state_dict(),
                "channel_mean": normalizer.mean,
                "channel_std": normalizer.std,
                "train_settings": opts.__dict__,
            },
            tmp,
        )
    if dist.is_initialized():
        dist.destroy_process_group()


def load_diffusion(path: str | Path, device: torch.device | str = "cpu") -> tuple[torch.nn.Module, Recipe, LatentNormalizer, dict]:
    """The EMA model (eval mode, on ``device``), its recipe, its latent normaliser and the saved payload."""
    payload = torch.load(path, map_location="cpu", weights_only=False)
    bb = payload["backbone"]
    recipe = get_recipe(bb["recipe"])
    model = build_backbone(bb["size"], recipe.name, tuple(payload["latent_shape"]), bb["patch_size"], num_classes=payload["num_classes"])
    model.load_state_dict(payload["state_dict"])
    model.eval().requires_grad_(False).to(device)
    stats = (payload["channel_mean"].to(device), payload["channel_std"].to(device))
    return model, recipe, LatentNormalizer(recipe.latent_norm, *stats), payload


@torch.inference_mode()
def sample(
    settings: dict, model: str | Path, tokenizer: str | Path, feature_net: str | Path, scale: float, shard: int,
    out: str | Path, scores: str | Path, fdr6_plan: dict, fdr6_out: str | Path,
) -> None:
    """One sampling shard: class-balanced labels, decode, feature statistics, IS sums, the FDr6
    spaces' statistics when ``fdr6_plan`` has their weights (else an empty group) (+ a PNG grid).

    Sample i of the study (global index) always gets the same label and noise, whichever
    shard draws it, so the merged statistics do not depend on the sharding.
    """
    cfg = settings["sampling"]
    device = compute_device()
    net, recipe, normalizer, payload = load_diffusion(model, device)
    vae = load_tokenizer(tokenizer).eval().to(device)
    extractor = load_feature_extractor(settings["feature_net"], feature_net, device)
    latent_shape = tuple(payload["latent_shape"])
    per_shard = -(-cfg["num_samples"] // cfg["shards"])
    first = shard * per_shard
    count = max(0, min(per_shard, cfg["num_samples"] - first))
    stats, grid = FeatureStats(), None
    inception_score = InceptionScore(extractor.num_classes, cfg["is_split_size"])
    fdr6_nets = fdr6_extractors(fdr6_plan.get("spaces", {}), device)
    fdr6_stats = {key: FeatureStats() for key in fdr6_nets}
    options = recipe.sampling(latent_shape)
    options.update(method=cfg["method"], steps=cfg["steps"])
    transport = recipe.transport(latent_shape)
    for start in range(first, first + count, cfg["batch_size"]):
        n = min(cfg["batch_size"], first + count - start)
        labels = (torch.arange(start, start + n) % payload["num_classes"]).to(device)  # class-balanced
        generator = torch.Generator().manual_seed(derive_seed(settings["seed"], "sample", scale, start))
        u = run_sampler(net, transport, (n, *latent_shape), labels, cfg_scale=scale, generator=generator, **options)
        images = vae.decode(normalizer.invert(u.float()))
        features, logits = extractor.features_and_logits(images)
        stats.update(features)
        inception_score.update(logits, start)
        for key, net in fdr6_nets.items():
            fdr6_stats[key].update(net(images))
        if grid is None:
            grid = images[:16].cpu()
    stats.save(out)
    inception_score.save(scores)
    save_stats_group(fdr6_out, fdr6_stats if count else {})
    if grid is not None:
        save_grid([grid[:8], grid[8:16]] if len(grid) >= 16 else [grid], Path(out).with_suffix(".png"))
    log.info("shard %d: %d samples at w=%g", shard, count, scale)


def _guidance_scale(path: str | Path) -> str:
    match = re.search(r"cfg([0-9.]+)", Path(path).parent.name)
    if not match:
        raise InputError(f"{path}: cannot read the guidance scale from the folder name")
    return match.group(1)


def _fdr6_per_scale(plan: dict, shards: list[str], references: list[str], divisors: str) -> dict[str, dict]:
    """FDr6 of each guidance scale from the shards' FDr6 groups and the train/val reference groups."""
    if "spaces" not in plan:
        return {}
    reference = next(r for r in references if "stats-train-" in Path(r).name)
    ref = load_stats_group(reference)
    if divisors == "published":
        valfd = dict(PUBLISHED_VALIDATION_FD)
    else:  # recomputed reference statistics need recomputed divisors (spec diffusability §10)
        val = load_stats_group(next(r for r in references if "stats-val-" in Path(r).name))
        valfd = {k: val[k].fd(ref[k]) for k in ref}
    merged: dict[str, dict[str, FeatureStats]] = {}
    for path in shards:
        group = merged.setdefault(_guidance_scale(path), {})
        for key, stats in load_stats_group(path).items():
            group[key] = group[key].merge(stats) if key in group else stats
    return {s: {**fdr6({k: g[k].fd(ref[k]) for k in g}, valfd), "validation_fd": valfd, "divisors": divisors} for s, g in merged.items()}


def generation_metrics(
    settings: dict, shards: list[str], scores: list[str], reference: str | Path, out: str | Path,
    fdr6_plan: dict | None = None, fdr6_shards: list[str] = (), fdr6_references: list[str] = (),
) -> None:
    """Merge the sampling shards of every guidance scale exactly: gFID against the reference, IS, FDr6."""
    ref = FeatureStats.load(reference)
    per_scale: dict[str, FeatureStats] = {}
    per_scale_is: dict[str, InceptionScore] = {}
    for path in shards:
        per_scale.setdefault(_guidance_scale(path), FeatureStats()).merge(FeatureStats.load(path))
    for path in scores:
        part = InceptionScore.load(path)
        scale = _guidance_scale(path)
        per_scale_is[scale] = per_scale_is[scale].merge(part) if scale in per_scale_is else part
    if per_scale.keys() != per_scale_is.keys():
        raise InputError(f"guidance scales of the feature shards {sorted(per_scale)} and IS shards {sorted(per_scale_is)} differ")
    rows = {}
    for s, st in per_scale.items():
        score = per_scale_is[s].result()
        if score["num_samples"] != st.count:
            raise InputError(f"cfg {s}: {st.count} samples in the feature shards but {score['num_samples']} in the IS shards")
        rows[s] = {"gfid": st.fd(ref), "num_samples": st.count, "is": score["is"], "is_std": score["is_std"], "is_splits": score["splits"]}
    fdr6_plan = fdr6_plan or {}
    for s, value in _fdr6_per_scale(fdr6_plan, list(fdr6_shards), list(fdr6_references), settings["fdr6_divisors"]).items():
        rows[s]["fdr6"] = value
    not_run = {"fdr6": fdr6_plan["not_run"]} if "not_run" in fdr6_plan else {}
    write_json(out, {"per_scale": rows, "feature_net": settings["feature_net"]["name"], "reference": str(reference), "not_run": not_run})


@torch.inference_mode()
def diffusion_loss(settings: dict, model: str | Path, latents: str | Path, labels: str | Path, out: str | Path, batch_size: int = 500) -> None:
    """Held-out flow-matching loss on the val latents (spec metrics-ifid-seesaw.md §5.1)."""
    net, recipe, normalizer, payload = load_diffusion(model)
    cache = LatentCache(latents)
    z = cached_latents(cache, "sample", settings["seed"], "val")  # as in training: a posterior sample
    labels = _labels(labels)
    transport = recipe.transport(tuple(payload["latent_shape"]))
    losses = []
    for start in range(0, len(z), batch_size):
        idx = torch.arange(start, min(start + batch_size, len(z)))
        losses.append(transport.validation_loss(net, normalizer(z[idx]), labels[idx], idx, len(z), seed=derive_seed(settings["seed"], "diffusion_loss")))
    write_json(out, {"diffusion_loss": float(torch.cat(losses).mean()), "num_images": len(z), "recipe": recipe.name})


@torch.inference_mode()
def gfid_t(
    settings: dict, model: str | Path, tokenizer: str | Path, latents: str | Path, labels: str | Path,
    feature_net: str | Path, val_stats: str | Path, out: str | Path, batch_size: int = 500,
) -> None:
    """gFID(t): noise each val latent to t, run the sampler from t to data, decode, FD vs val (spec §2.4).

    t is un-shifted sampler time (1 = noise; spec §2.4 step 2 [DEFAULT]); true labels, no guidance;
    the number of steps scales with t (``round(steps * t)``, at least 1). t = 0 is rFID and t = 1 is
    the gFID of the study (§2.4 step 5), so neither is recomputed here.
    """
    cfg, seed = settings["ifid"], settings["seed"]
    device = compute_device()
    net, recipe, normalizer, payload = load_diffusion(model, device)
    vae = load_tokenizer(tokenizer).eval().to(device)
    extractor = load_feature_extractor(settings["feature_net"], feature_net, device)
    reference = FeatureStats.load(val_stats)
    shape = tuple(payload["latent_shape"])
    transport = recipe.transport(shape)
    options = recipe.sampling(shape)
    z = cached_latents(LatentCache(latents), "sample", seed, "val").to(device)  # as in training: a posterior sample
    labels = _labels(labels).to(device)
    values = []
    for t in cfg["gfid_t_times"]:
        steps = max(1, round(settings["sampling"]["steps"] * t))
        out_latents = []
        for start in range(0, len(z), batch_size):
            u = normalizer(z[start : start + batch_size])
            generator = torch.Generator().manual_seed(derive_seed(seed, "gfid_t", t, start))
            x_t = partial_noise(transport, u, t, options["sample_shift"], generator)
            u0 = run_sampler(
                net, transport, tuple(u.shape), labels[start : start + batch_size], steps=steps,
                method=settings["sampling"]["method"], cfg_scale=1.0, sample_shift=options["sample_shift"],
                generator=generator, start=x_t, t_start=t,
            )
            out_latents.append(normalizer.invert(u0.float()))
        values.append(decoded_fid(vae, extractor, torch.cat(out_latents), reference))
        log.info("gFID(t=%g) = %.4f (%d steps)", t, values[-1], steps)
    write_json(out, {"t": cfg["gfid_t_times"], "gfid_t": values, "time": "unshifted", "num_images": len(z), "feature_net": extractor.name})
