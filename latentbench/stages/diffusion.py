"""Diffusion jobs (rules/diffusion.smk, rules/metrics.smk): train, sample, gFID, held-out loss, gFID(t)."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import torch

from latentbench.data.shards import ShardedSplit
from latentbench.device import compute_device
from latentbench.diffusion import build_backbone
from latentbench.diffusion.distributed import close_distributed, init_distributed
from latentbench.diffusion.io import LatentNormalizer, load_diffusion, save_backbone
from latentbench.diffusion.recipes import Recipe, get_recipe, resolve_patch_size
from latentbench.diffusion.samplers import partial_noise
from latentbench.diffusion.samplers import sample as run_sampler
from latentbench.diffusion.training import TrainSettings, train_diffusion, world
from latentbench.errors import InputError
from latentbench.features import load_feature_extractor
from latentbench.features.representations import fdr6_extractors
from latentbench.images import save_grid
from latentbench.io import write_json
from latentbench.latents import LatentCache, as_tensor
from latentbench.metrics.fdr6 import PUBLISHED_VALIDATION_FD, fdr6
from latentbench.metrics.fid import FeatureStats, load_stats_group, save_stats_group
from latentbench.metrics.inception_score import InceptionScore
from latentbench.progress import progress
from latentbench.seeding import derive_seed, seed_everything
from latentbench.tokenizers import load_tokenizer

log = logging.getLogger(__name__)
SWITCHED_OFF = "not run: switched off in the config's metrics list"


def _split_labels(manifest: str | Path) -> tuple[torch.Tensor, int]:
    """(every image's label, number of classes) of a split, without reading its images."""
    split = ShardedSplit(Path(manifest).parent)
    return torch.from_numpy(split.labels()), int(split.meta["num_classes"])


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
        ema_buffers=recipe.ema_buffers,
    )


def train_diffusion_job(
    backbone: dict, settings: dict, latents: str | Path, labels: str | Path, checkpoint: str | Path, out: str | Path
) -> None:
    """Train one backbone on one tokenizer's cached train latents; save the EMA model.

    ``backbone``: the config entry (JSON). ``latents``: the train cache folder. ``labels``: the
    train manifest (its labels file is read, not its images). ``checkpoint``: resumed if present.
    """
    cache = LatentCache(latents)
    recipe = get_recipe(backbone["recipe"])
    latent_shape = cache.latent_shape
    targets, num_classes = _split_labels(labels)
    if len(targets) != len(cache):
        raise InputError(f"{latents}: {len(cache)} latents but {len(targets)} labels; re-encode the split")
    opts = train_settings(recipe, backbone["size"], settings["diffusion_training"], settings["seed"], backbone.get("steps"))
    device = init_distributed()
    seed_everything(opts.seed)  # the initial weights are part of the run's determinism
    patch = resolve_patch_size(backbone["patch_size"], latent_shape)
    model = build_backbone(backbone["size"], recipe.name, latent_shape, patch, num_classes=num_classes)
    model.to(device)
    if settings["diffusion_training"]["compile"]:
        model.forward = torch.compile(model.forward)
    normalizer = LatentNormalizer(recipe.latent_norm, *cache.channel_stats())
    mean, std = as_tensor(cache.mean), as_tensor(cache.std)  # memory-mapped: a batch reads its rows only

    def get_batch(idx: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        # a fresh posterior sample per step (spec models.md §1.6, study default)
        z = mean[idx] + std[idx] * torch.randn((len(idx), *latent_shape), generator=generator)
        return normalizer(z), targets[idx]

    ema = train_diffusion(model, recipe.transport(latent_shape), get_batch, len(cache), opts, checkpoint)
    if world()[0] == 0:
        ema.copy_to(model)
        save_backbone(out, model.cpu(), backbone, latent_shape, num_classes, normalizer, opts.__dict__)
    close_distributed()


@torch.inference_mode()
def decode_samples(vae, normalizer: LatentNormalizer, net: torch.nn.Module, u: torch.Tensor) -> torch.Tensor:
    """Images of samples ``u`` in the model's space: undo the in-model BN (``ifid_sit``'s
    ``denormalize``; identity for the other recipes), then the recipe's normaliser, then decode."""
    return vae.decode(normalizer.invert(net.denormalize(u).float()))


def sample(
    settings: dict, model: str | Path, tokenizer: str | Path, feature_net: str | Path, scale: float, shard: int,
    out: str | Path, scores: str | Path, fdr6_plan: dict, fdr6_out: str | Path, grid: str | Path,
) -> None:
    """One sampling shard: class-balanced labels, decode, feature statistics, IS sums, the FDr6
    spaces' statistics when ``fdr6_plan`` has their weights (else an empty group) (+ a PNG grid).

    Sample i of the study (global index) always gets the same label and noise, whichever
    shard draws it, so the merged statistics do not depend on the sharding.

    ``out``: the shard's feature statistics. ``scores``: its Inception-Score sums. ``fdr6_out``:
    its FDr6 statistics group. ``grid``: a PNG of its first 16 samples.
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
    stats, thumbnails = FeatureStats(), None
    inception_score = InceptionScore(extractor.num_classes, cfg["is_split_size"])
    fdr6_nets = fdr6_extractors(fdr6_plan.get("spaces", {}), device)
    fdr6_stats = {key: FeatureStats() for key in fdr6_nets}
    options = recipe.sampling(latent_shape)
    options.update(method=cfg["method"], steps=cfg["steps"])
    transport = recipe.transport(latent_shape)
    starts = range(first, first + count, cfg["batch_size"])
    for start in progress(starts, desc=f"sample shard {shard} w={scale:g}", unit="batch"):
        n = min(cfg["batch_size"], first + count - start)
        labels = (torch.arange(start, start + n) % payload["num_classes"]).to(device)  # class-balanced
        generator = torch.Generator().manual_seed(derive_seed(settings["seed"], "sample", scale, start))
        u = run_sampler(net, transport, (n, *latent_shape), labels, cfg_scale=scale, generator=generator, **options)
        images = decode_samples(vae, normalizer, net, u)
        features, logits = extractor.features_and_logits(images)
        stats.update(features)
        inception_score.update(logits, start)
        for key, fnet in fdr6_nets.items():
            fdr6_stats[key].update(fnet(images))
        if thumbnails is None:
            thumbnails = images[:16].cpu()
    stats.save(out)
    inception_score.save(scores)
    save_stats_group(fdr6_out, fdr6_stats if count else {})
    if thumbnails is not None:
        save_grid([thumbnails[:8], thumbnails[8:16]] if len(thumbnails) >= 16 else [thumbnails], grid)
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
def diffusion_loss(
    settings: dict, model: str | Path, latents: str | Path, labels: str | Path, out: str | Path, batch_size: int = 500
) -> None:
    """Held-out flow-matching loss on the val latents (spec metrics-ifid-seesaw.md §5.1).

    ``latents``: the val cache folder (a seeded posterior sample per image, as in training, read
    block by block). ``labels``: the val manifest (its labels file).
    """
    if "diffusion_loss" not in settings["metrics"]:
        write_json(out, {"diffusion_loss": None, "not_run": {"diffusion_loss": SWITCHED_OFF}})
        return
    device = compute_device()
    net, recipe, normalizer, payload = load_diffusion(model, device)
    cache = LatentCache(latents)
    targets, _ = _split_labels(labels)
    transport = recipe.transport(tuple(payload["latent_shape"]))
    seed = derive_seed(settings["seed"], "diffusion_loss")
    losses = []
    for start in progress(range(0, len(cache), batch_size), desc="diffusion loss", unit="batch"):
        stop = min(start + batch_size, len(cache))
        z = cache.rows(start, stop, "sample", settings["seed"], "val").to(device)
        idx = torch.arange(start, stop)
        losses.append(transport.validation_loss(net, normalizer(z), targets[idx].to(device), idx, len(cache), seed=seed).cpu())
    write_json(out, {"diffusion_loss": float(torch.cat(losses).mean()), "num_images": len(cache), "recipe": recipe.name})


@torch.inference_mode()
def gfid_t(
    settings: dict, model: str | Path, tokenizer: str | Path, latents: str | Path, labels: str | Path,
    feature_net: str | Path, val_stats: str | Path, out: str | Path, batch_size: int = 500,
) -> None:
    """gFID(t): noise each val latent to t, run the sampler from t to data, decode, FD vs val (spec §2.4).

    t is un-shifted sampler time (1 = noise; spec §2.4 step 2 [DEFAULT]); true labels, no guidance;
    the number of steps scales with t (``round(steps * t)``, at least 1). t = 0 is rFID and t = 1 is
    the gFID of the study (§2.4 step 5), so neither is recomputed here. ``latents``: the val cache
    folder (a seeded posterior sample per image, as in training, read block by block).
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
    cache = LatentCache(latents)
    targets, _ = _split_labels(labels)
    values = []
    for t in cfg["gfid_t_times"]:
        steps = max(1, round(settings["sampling"]["steps"] * t))
        stats = FeatureStats()
        for start in progress(range(0, len(cache), batch_size), desc=f"gFID(t={t:g})", unit="batch"):
            stop = min(start + batch_size, len(cache))
            # the model's space (recipe normaliser, then the in-model BN with its running stats, as training)
            u = net.normalize(normalizer(cache.rows(start, stop, "sample", seed, "val").to(device)))
            generator = torch.Generator().manual_seed(derive_seed(seed, "gfid_t", t, start))
            x_t = partial_noise(transport, u, t, options["sample_shift"], generator)
            u0 = run_sampler(
                net, transport, tuple(u.shape), targets[start:stop].to(device), steps=steps,
                method=settings["sampling"]["method"], cfg_scale=1.0, sample_shift=options["sample_shift"],
                generator=generator, start=x_t, t_start=t,
            )
            stats.update(extractor(decode_samples(vae, normalizer, net, u0)))
        values.append(stats.fd(reference))
        log.info("gFID(t=%g) = %.4f (%d steps)", t, values[-1], steps)
    write_json(out, {"t": cfg["gfid_t_times"], "gfid_t": values, "time": "unshifted", "num_images": len(cache),
                     "feature_net": extractor.name})
