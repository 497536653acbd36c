"""The Seesaw ControlNet jobs (rules/seesaw.smk; spec metrics-ifid-seesaw §9, Table 3).

``controlnet_train``: a control branch (:class:`latentbench.diffusion.controlnet.ControlDiT`) on a
frozen trained backbone and frozen tokenizer, for one condition (canny | depth) whose maps come
from the drift job's projector on the train images; the best branch by the validation rule, its
curves and the hyper-parameter record (Table 4) beside the paper's.

``controlnet_evaluate``: controlled samples for the conditions and true labels of a seeded
per-class val subset, FID against those real images in the study's FID feature space and the
condition L1 through the same projector (Eq. 4), plus a PNG of originals, condition maps and
samples (Fig. 4).

A projector whose weights are missing makes both jobs record "not run: needs ..." (the branch
file then holds only that message), never a number.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch

from latentbench.data.shards import ShardedSplit, images_to_tensor
from latentbench.device import compute_device
from latentbench.diffusion.controlnet import (
    ControlConfig,
    ControlDiT,
    ControlTrainSettings,
    condition_input,
    condition_l1_fn,
    condition_rgb,
    evaluate_controlnet,
    hyperparameter_record,
    image_feature_stats,
    load_branch,
    per_class_subset,
    save_branch,
    train_controlnet,
    validation_loss_fn,
)
from latentbench.diffusion.io import load_diffusion
from latentbench.errors import InputError
from latentbench.io import atomic_path, read_json, write_json
from latentbench.seeding import derive_seed
from latentbench.stages.seesaw import (
    SPATIAL_CONDITIONS,
    map_projector,
    maps_to_uint8,
    project_maps,
    select_rows,
)
from latentbench.tokenizers import load_tokenizer

log = logging.getLogger(__name__)


def control_config(cfg: dict, image_size: tuple[int, int]) -> ControlConfig:
    """The branch design from the study's ``seesaw.controlnet`` section."""
    return ControlConfig(
        cond_encoder=cfg["cond_encoder"], num_blocks=cfg["num_blocks"], cond_channels=1,
        cond_size=tuple(image_size) if cfg["cond_encoder"] == "conv" else None,
        conv_widths=tuple(cfg["conv_widths"]), injection=cfg["injection"],
    )


def train_settings(cfg: dict, seed: int, condition: str) -> ControlTrainSettings:
    """The optimisation settings from ``seesaw.controlnet`` (Table 4 defaults in the schema)."""
    return ControlTrainSettings(
        max_steps=cfg["max_steps"], eval_every=cfg["eval_every"], patience=cfg["patience"],
        checkpoint_every=cfg["checkpoint_every"], seed=derive_seed(seed, "controlnet", condition),
        micro_batch=cfg["micro_batch"], grad_accumulation=cfg["grad_accumulation"], lr=cfg["lr"],
        grad_clip=cfg["grad_clip"], precision=cfg["precision"],
    )


def uint8_decoder(vae, normalizer):
    """latent (outside-normalised) -> uint8 NHWC images: invert the normaliser, decode, quantise."""

    def decode(z: torch.Tensor) -> np.ndarray:
        x = vae.decode(normalizer.invert(z.float())).clamp(0, 1)
        return (x * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()

    return decode


class BranchInputs:
    """The branch's condition input per image from uint8 maps (N, H, W): the map itself in [0, 1]
    (``conv``; kept as uint8 and converted per batch), or the map rendered as an image and encoded
    by the frozen tokenizer (posterior mean), normalised like the latents the backbone trained on
    (``ae``; encoded once). Indexing gives float32 CPU tensors."""

    @torch.no_grad()
    def __init__(self, maps: np.ndarray, config: ControlConfig, vae, normalizer, device, batch_size: int = 256) -> None:
        self.maps = torch.from_numpy(np.ascontiguousarray(maps))
        self.latents = None
        if config.cond_encoder == "ae":
            parts = []
            for s in range(0, len(maps), batch_size):
                z = vae.encode(condition_rgb(self.maps[s:s + batch_size].float() / 255).to(device), sample=False)
                parts.append(normalizer(z).float().cpu())
            self.latents = torch.cat(parts)

    def __len__(self) -> int:
        return len(self.maps)

    def __getitem__(self, idx) -> torch.Tensor:
        if self.latents is not None:
            return self.latents[idx]
        return condition_input(self.maps[idx].float() / 255)


def keyed_checkpoint(checkpoint: str | Path, settings: dict, condition: str, tokenizer: str | Path) -> Path:
    """``checkpoint`` renamed with a key of what the branch trains on (settings, condition,
    tokenizer file), which the library's run identity does not cover: a changed subset or
    tokenizer never resumes a stale run."""
    key = json.dumps({"settings": settings, "condition": condition, "tokenizer": str(tokenizer)}, sort_keys=True)
    path = Path(checkpoint)
    return path.with_name(f"{path.stem}-{hashlib.sha256(key.encode()).hexdigest()[:12]}{path.suffix}")


def _not_run_branch(path: str | Path, message: str) -> None:
    with atomic_path(path, suffix=".pt") as tmp:
        torch.save({"not_run": message}, tmp)


def controlnet_train(
    settings: dict, condition: str, model: str | Path, tokenizer: str | Path, latents: str | Path,
    train: str | Path, val: str | Path, checkpoint: str | Path, out: str | Path, curves: str | Path,
    dense: str | Path | None = None, demo_cnn: str | Path | None = None,
) -> None:
    """Train a ControlNet branch for ``condition`` on a frozen backbone (``model``) and tokenizer.

    ``latents``: the tokenizer's cache folder (train posterior samples per step as the backbone
    trained; val posterior means for the validation rule). ``train`` / ``val``: split manifests.
    ``checkpoint``: resumed if present (keyed by the job's settings; removed once the branch is written). ``out``: the branch. ``curves``: training / validation
    curves, why it stopped and the hyper-parameter record beside the paper's Table 4.
    """
    from latentbench.latents import LatentCache, as_tensor

    if condition not in SPATIAL_CONDITIONS:
        raise InputError(f"controlnet condition: expected one of {SPATIAL_CONDITIONS}, got {condition!r}")
    cfg, seed = settings["seesaw"]["controlnet"], settings["seed"]
    device = compute_device()
    project, not_run = map_projector(condition, settings["seesaw"], settings["weights_dir"], dense, demo_cnn, device)
    if project is None:
        _not_run_branch(out, not_run)
        write_json(curves, {"condition": condition, "not_run": {condition: not_run}})
        return
    net, recipe, normalizer, payload = load_diffusion(model, device)
    vae = load_tokenizer(tokenizer).eval().to(device)
    cpu_norm = normalizer.to("cpu")
    cache, val_cache = LatentCache(Path(latents) / "train"), LatentCache(Path(latents) / "val")
    train_split, val_split = ShardedSplit(Path(train).parent), ShardedSplit(Path(val).parent)
    rows = np.arange(len(cache))
    if cfg["train_images"] is not None and cfg["train_images"] < len(rows):
        rng = np.random.default_rng(derive_seed(seed, "controlnet-train-subset"))
        rows = np.sort(rng.permutation(len(rows))[: cfg["train_images"]])
    picked = select_rows(train_split, rows, ("image", "label"), project=project)  # uint8 maps, streamed
    config = control_config(cfg, picked["map"].shape[1:3])
    cond_all = BranchInputs(picked["map"], config, vae, normalizer, device)
    labels = torch.from_numpy(picked["label"].astype(np.int64))
    mean, std = as_tensor(cache.mean), as_tensor(cache.std)
    shape = tuple(payload["latent_shape"])
    row_index = torch.from_numpy(rows)

    def get_batch(idx: torch.Tensor, generator: torch.Generator):
        r = row_index[idx]
        z = mean[r] + std[r] * torch.randn((len(idx), *shape), generator=generator)
        return cpu_norm(z), labels[idx], cond_all[idx]

    val_rows = per_class_subset(val_split.labels(), cfg["val_per_class"], derive_seed(seed, "controlnet-validation"))
    val_data = select_rows(val_split, val_rows, ("image", "label"), project=project)
    val_maps = val_data["map"].astype(np.float32) / 255
    val_cond = BranchInputs(val_data["map"], config, vae, normalizer, device)[:]
    val_labels = torch.from_numpy(val_data["label"].astype(np.int64))
    transport = recipe.transport(shape)
    if cfg["val_metric"] == "val_loss":
        x_val = cpu_norm(torch.from_numpy(np.asarray(val_cache.mean[val_rows], np.float32)))
        validate = validation_loss_fn(transport, x_val, val_labels, val_cond, seed=derive_seed(seed, "controlnet-val-loss"))
    else:
        validate = condition_l1_fn(transport, _sampling(recipe, shape, settings), val_cond, val_maps, val_labels,
                                   uint8_decoder(vae, normalizer), project, seed=derive_seed(seed, "controlnet-val-l1"))
    control = ControlDiT(net, config).to(device)
    opts = train_settings(cfg, seed, condition)
    checkpoint = keyed_checkpoint(checkpoint, settings, condition, tokenizer)
    result = train_controlnet(control, transport, get_batch, len(rows), opts, checkpoint, validate, metric=cfg["val_metric"])
    record = hyperparameter_record(opts, config, net.config.depth, len(rows), result)
    extra = {"condition": condition, "projector": project.name, "train_images": len(rows)}
    save_branch(out, control, extra)
    write_json(curves, {**result.to_json(), **extra, "cond_encoder": config.cond_encoder, "hyperparameters": record,
                        "not_run": {}})
    checkpoint.unlink(missing_ok=True)  # the branch is the product; a rerun trains afresh


def _sampling(recipe, shape: tuple[int, ...], settings: dict) -> dict[str, Any]:
    """The backbone's default sampler with the study's sampling method and steps (as the sample job)."""
    options = recipe.sampling(shape)
    options.update(method=settings["sampling"]["method"], steps=settings["sampling"]["steps"])
    return options


@torch.inference_mode()
def controlnet_evaluate(
    settings: dict, condition: str, model: str | Path, tokenizer: str | Path, branch: str | Path, curves: str | Path,
    val: str | Path, feature_net: str | Path, out: str | Path, grid: str | Path,
    dense: str | Path | None = None, demo_cnn: str | Path | None = None,
) -> None:
    """Table 3 numbers of a trained branch: FID and condition L1 of controlled samples.

    Samples for the conditions and true labels of ``seesaw.controlnet.eval_per_class`` seeded
    images per class of ``val``, the backbone's default sampler without guidance (spec §9). FID
    against those real images in the ``feature_net`` space; L1 through the drift projector.
    ``grid``: originals, their condition maps and the controlled samples (Fig. 4).
    """
    from latentbench.features import load_feature_extractor
    from latentbench.images import save_grid

    cfg, seed = settings["seesaw"]["controlnet"], settings["seed"]
    device = compute_device()
    trained = read_json(curves)
    val_split = ShardedSplit(Path(val).parent)
    rows = per_class_subset(val_split.labels(), cfg["eval_per_class"], seed)
    data = select_rows(val_split, rows, ("image", "label"))
    record = {"condition": condition, "stand_ins": dense is not None, "feature_net": settings["feature_net"]["name"]}
    payload = torch.load(branch, map_location="cpu", weights_only=False)
    if isinstance(payload, dict) and "not_run" in payload:
        write_json(out, {**record, "fid": None, "l1": None, "not_run": {condition: payload["not_run"]}})
        save_grid([images_to_tensor(data["image"][:8])], grid)
        return
    project, not_run = map_projector(condition, settings["seesaw"], settings["weights_dir"], dense, demo_cnn, device)
    if project is None:
        raise InputError(f"{branch}: trained, but the {condition} projector is missing now ({not_run})")
    net, recipe, normalizer, meta = load_diffusion(model, device)
    vae = load_tokenizer(tokenizer).eval().to(device)
    control, extra = load_branch(branch, net)
    extractor = load_feature_extractor(settings["feature_net"], feature_net, device)

    def feature_fn(images: np.ndarray) -> torch.Tensor:
        return extractor(images_to_tensor(images).to(device))

    maps = project_maps(project, data["image"])
    cond = BranchInputs(maps_to_uint8(maps), control.config, vae, normalizer, device)[:]
    labels = torch.from_numpy(data["label"].astype(np.int64))
    shape = tuple(meta["latent_shape"])
    real = image_feature_stats(data["image"], feature_fn)
    metrics, generated = evaluate_controlnet(
        control, recipe.transport(shape), _sampling(recipe, shape, settings), cond, maps, labels,
        uint8_decoder(vae, normalizer), project, feature_fn, real, seed=derive_seed(seed, "controlnet-eval"),
    )
    training = {k: trained[k] for k in ("steps", "best_step", "best_value", "stopped_early", "metric")}
    write_json(out, {**record, **metrics, "projector": project.name, "cond_encoder": control.config.cond_encoder,
                     "training": training, "branch": extra, "hyperparameters": trained["hyperparameters"],
                     "real_images": "val subset (eval_per_class per class)", "not_run": {}})
    n = min(8, len(generated))
    save_grid([images_to_tensor(data["image"][:n]), condition_rgb(maps[:n]), images_to_tensor(generated[:n])], grid)
    log.info("controlnet %s: FID %.3f, L1 %.4f", condition, metrics["fid"], metrics["l1"])
