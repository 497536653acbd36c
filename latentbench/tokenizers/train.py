"""Resumable, deterministic training of the KL tokenizer families (conv, ViT) with Eq. 12 + a regulariser.

One step (spec models.md §3.3, LightningDiT ``vavae/ldm/models/autoencoder.py``
``training_step``): autoencoder update on Eq. 12 (plus the regulariser's hooks and terms),
then — once ``step >= disc_start`` — a discriminator update on the same batch (alternating
G/D every iteration). Adam with betas (0.5, 0.9) for both.

Learning rate: the paper's 1e-4 (not batch-scaled) is far too small for the few hundred
steps a CPU demo can afford; the demo uses 1e-3 (config.yaml), as the tiny diffusion models do
(spec models.md §4, "tiny models need more than 1e-4").

Determinism: every random choice comes from ``seed`` — model init through the global RNG
seeded before building, data order from a per-epoch derived seed, posterior noise and
regulariser decisions from one ``torch.Generator`` whose state is checkpointed. On CPU the
same seed gives bitwise-identical weights, and a run resumed from a checkpoint ends
bitwise-identical to an uninterrupted one.

Run settings (steps, batch size, learning rate, discriminator start, checkpoint interval) are
required arguments: their one default is the config schema's ``tokenizer_training`` block. The
demo's values (config.yaml) were measured on the 2-core CPU machine with one torch thread, 32x32
synthetic images, the ``demo`` arch (ch 16, 1 res block), perceptual = demo CNN: 0.15 s/step at
batch 16 (0.19 s with the VF loss), 0.33 s/step at batch 32; at equal CPU, batch 16 reconstructed
better than batch 32 at half the steps (val MSE 0.027 vs 0.032).
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch

from latentbench.checkpoint import load_checkpoint, save_checkpoint
from latentbench.data.shards import ShardedSplit, images_to_tensor
from latentbench.errors import TrainingDiverged
from latentbench.metrics.reconstruction import psnr
from latentbench.progress import ProgressMeter
from latentbench.seeding import derive_seed, set_threads
from latentbench.tokenizers import build_tokenizer, save_tokenizer
from latentbench.tokenizers.discriminator import NLayerDiscriminator
from latentbench.tokenizers.kl_base import count_parameters
from latentbench.tokenizers.kl_vae import KLTokenizer
from latentbench.tokenizers.losses import Eq12Loss, Perceptual
from latentbench.tokenizers.regularizers import TargetFeatures, build_regularizer

# Weight of the demo CNN's perceptual distance (the LPIPS stand-in). LPIPS-VGG enters Eq. 12
# with weight 1; the demo distance has no learned per-channel heads and is several times
# larger: at weight 1 it was ~80% of the nll and the pixels were left unfit (val MSE 0.043
# vs 0.027 at 0.1, 400 steps). 0.1 puts it on LPIPS' scale. cfg["perceptual_weight"] overrides.
DEMO_PERCEPTUAL_WEIGHT = 0.1
PAPER_DISC = {"n_layers": 3, "ndf": 64}  # taming NLayerDiscriminator defaults (spec §3.3)
DEMO_DISC = {"n_layers": 2, "ndf": 16}  # spec models.md §4
EVAL_IMAGES = 256


class BatchStream:
    """Seeded, resumable mini-batches of uint8 NHWC images from a split.

    Epoch ``e`` visits the shards in a permutation seeded by ``(seed, "data", e)`` and the
    images of each shard in their own seeded permutation (shard-blocked shuffling, so large
    splits stream shard by shard); the last partial batch of an epoch is dropped. Batch
    ``b`` is a pure function of (seed, b), so the data position of a checkpoint is its step.
    """

    def __init__(self, source: ShardedSplit | np.ndarray, batch_size: int, seed: int, cache_bytes: int = 2**30) -> None:
        if isinstance(source, np.ndarray):
            if source.ndim != 4 or source.shape[-1] != 3 or source.dtype != np.uint8:
                raise ValueError(f"train_split array must be uint8 [N, H, W, 3], got {source.dtype} {source.shape}")
            self._counts = [len(source)]
            self._load = lambda i: source
        else:
            entries = source.manifest["shards"]
            self._counts = [int(e["count"]) for e in entries]
            self._load = lambda i: source.read_shard(i, ("image",))["image"]  # checksum-verified
        self.total = sum(self._counts)
        if self.total < batch_size:
            raise ValueError(f"train_split holds {self.total} images, fewer than batch_size {batch_size}")
        self.batch_size, self.seed = batch_size, seed
        self.batches_per_epoch = self.total // batch_size
        self._cache: OrderedDict[int, np.ndarray] = OrderedDict()
        self._cache_bytes = cache_bytes
        self._order: tuple[int, np.ndarray] | None = None

    def _shard(self, i: int) -> np.ndarray:
        if i in self._cache:
            self._cache.move_to_end(i)
            return self._cache[i]
        arr = self._load(i)
        self._cache[i] = arr
        while len(self._cache) > 1 and sum(a.nbytes for a in self._cache.values()) > self._cache_bytes:
            self._cache.popitem(last=False)
        return arr

    def epoch_order(self, epoch: int) -> np.ndarray:
        """[total, 2] (shard, index) pairs in visiting order for ``epoch``."""
        if self._order is None or self._order[0] != epoch:
            rng = np.random.default_rng(derive_seed(self.seed, "data", epoch))
            parts = []
            for s in rng.permutation(len(self._counts)):
                idx = rng.permutation(self._counts[s])
                parts.append(np.stack([np.full_like(idx, s), idx], axis=1))
            self._order = (epoch, np.concatenate(parts))
        return self._order[1]

    def batch(self, step: int) -> np.ndarray:
        """The uint8 images of batch ``step``."""
        epoch, b = divmod(step, self.batches_per_epoch)
        sel = self.epoch_order(epoch)[b * self.batch_size : (b + 1) * self.batch_size]
        return np.stack([self._shard(int(s))[int(i)] for s, i in sel])

    def first(self, n: int) -> np.ndarray:
        """The first ``n`` images of the split in storage order (a fixed evaluation subset)."""
        out, s = [], 0
        while sum(len(a) for a in out) < n and s < len(self._counts):
            out.append(self._shard(s)[: n - sum(len(a) for a in out)])
            s += 1
        return np.concatenate(out)


def _disc_config(cfg: dict[str, Any], resolution: int) -> dict[str, int]:
    """PatchGAN size: cfg ``disc_layers``/``disc_ndf``, else demo size below 128 px, paper size above."""
    base = DEMO_DISC if resolution < 128 else PAPER_DISC
    return {"n_layers": int(cfg.get("disc_layers", base["n_layers"])), "ndf": int(cfg.get("disc_ndf", base["ndf"]))}


def _check_positive(**values: float) -> None:
    for name, v in values.items():
        if not isinstance(v, (int, float)) or isinstance(v, bool) or not v > 0:
            raise ValueError(f"{name} must be a positive number, got {v!r}")


@torch.no_grad()
def evaluate_tokenizer(tokenizer: KLTokenizer, images: torch.Tensor, batch_size: int = 128) -> dict[str, float]:
    """Reconstruction and latent statistics on [0, 1] images (posterior mean decoded).

    ``mse`` and ``psnr`` on the clamped reconstruction; ``posterior_std`` = mean posterior std;
    ``latent_std`` = mean over channels of the std of posterior means over (N, H, W);
    ``latent_snr`` = latent_std / posterior_std (how far apart codes are relative to their noise).
    """
    was_training = tokenizer.training
    tokenizer.eval()
    means, stds, sq, db = [], [], [], []
    for i in range(0, len(images), batch_size):
        x = images[i : i + batch_size]
        mean, std = tokenizer.encode_moments(x)
        x_hat = tokenizer.decode(mean).clamp(0, 1)
        sq.append((x_hat - x).pow(2).flatten(1).mean(1))
        db.append(psnr(x, x_hat))  # the reconstruction metric's standard protocol (spec 4.1)
        means.append(mean)
        stds.append(std)
    tokenizer.train(was_training)
    mean, std, mse = torch.cat(means), torch.cat(stds), torch.cat(sq)
    latent_std = mean.transpose(0, 1).flatten(1).std(dim=1).mean().item()
    posterior_std = std.mean().item()
    return {
        "mse": mse.mean().item(),
        "psnr": torch.cat(db).mean().item(),
        "posterior_std": posterior_std,
        "latent_std": latent_std,
        "latent_snr": latent_std / max(posterior_std, 1e-12),
    }


def train_tokenizer(
    cfg: dict[str, Any],
    train_split: ShardedSplit | str | Path | np.ndarray,
    out_path: str | Path,
    checkpoint_path: str | Path | None = None,
    feature_net: torch.nn.Module | None = None,
    *,
    steps: int,
    batch_size: int,
    lr: float,
    disc_start: int,
    checkpoint_every: int,
    seed: int = 0,
    threads: int = 1,
    log: Callable[[str], Any] = print,
    max_steps_this_run: int | None = None,
    perceptual: Perceptual | None = None,
    target_features: TargetFeatures | None = None,
    feature_dim: int | None = None,
    device: str | torch.device = "cpu",
    on_step: Callable[[int, dict[str, float]], Any] | None = None,
    weights_dir: str | Path | None = None,
) -> dict[str, Any]:
    """Train the tokenizer ``cfg`` describes; write ``out_path`` (config + weights) atomically.

    The frozen networks come from :func:`frozen_networks`: the perceptual term is LPIPS-VGG,
    or the demo network's stand-in when ``feature_net`` (the demo
    :class:`~latentbench.features.demo_net.DemoNet`) is given; the VF/REPA target is the
    foundation encoder the config's ``variant`` names (its weights from ``weights_dir``), or
    the demo net's last stage for variant ``demo-cnn``. ``perceptual`` / ``target_features`` +
    ``feature_dim`` override them.
    The GAN term starts at step ``disc_start`` (it hurts a still-blurry autoencoder; the paper
    starts it after 5k of ~80k steps). A checkpoint is written every
    ``checkpoint_every`` steps to ``checkpoint_path`` and resumed from when present.
    ``max_steps_this_run`` stops early after that many steps (the final file is then not
    written). ``on_step(step, logs)`` is called after every completed step. Returns metrics;
    ``completed`` says whether the run reached ``steps``. A non-finite loss raises
    TrainingDiverged (a FloatingPointError) naming the step; the last good checkpoint is kept.
    """
    _check_positive(steps=steps, batch_size=batch_size, lr=lr, threads=threads, checkpoint_every=checkpoint_every)
    steps, batch_size, checkpoint_every = int(steps), int(batch_size), int(checkpoint_every)
    disc_start = int(disc_start)
    if disc_start < 0:
        raise ValueError(f"disc_start must be >= 0, got {disc_start}")
    if max_steps_this_run is not None and max_steps_this_run < 1:
        raise ValueError(f"max_steps_this_run must be >= 1, got {max_steps_this_run}")
    set_threads(threads)
    device = torch.device(device)
    source = ShardedSplit(train_split) if isinstance(train_split, (str, Path)) else train_split
    stream = BatchStream(source, batch_size, seed)

    # Build everything from the global RNG seeded once: identical init for identical seeds.
    torch.manual_seed(derive_seed(seed, "init"))
    tokenizer = build_tokenizer(cfg).to(device)
    if not isinstance(tokenizer, KLTokenizer):  # pretrained adapters are not trained here
        raise ValueError(f"train_tokenizer trains the KL families (conv_kl, trans_kl), got family {cfg.get('family')!r}")
    arch = tokenizer.arch
    with torch.random.fork_rng(devices=[]):  # building the frozen networks leaves the init RNG untouched
        nets = frozen_networks(cfg, feature_net, weights_dir, device, perceptual, target_features, feature_dim)
    perceptual, perceptual_weight = nets.perceptual, nets.perceptual_weight
    target_features, feature_dim = nets.target_features, nets.feature_dim
    log(f"perceptual term: {nets.perceptual_name} (weight {perceptual_weight:g}); alignment target: {nets.alignment_name}")
    reg = build_regularizer(
        cfg, arch.embed_dim, arch.downsample_factor, target_features, feature_dim, tokenizer.masks_tokens
    ).to(device)
    disc_cfg = _disc_config(cfg, arch.resolution)
    disc = NLayerDiscriminator(3, disc_cfg["ndf"], disc_cfg["n_layers"]).to(device)
    loss_fn = Eq12Loss(
        kl_weight=float(cfg.get("kl_weight", 1e-6)),
        perceptual_weight=perceptual_weight,
        disc_weight=float(cfg.get("disc_weight", 0.5)),
        perceptual=perceptual,
        learn_logvar=bool(cfg.get("learn_logvar", False)),
    ).to(device)
    ae_params = [*tokenizer.parameters(), *reg.parameters(), *(p for p in loss_fn.parameters() if p.requires_grad)]
    opt_ae = torch.optim.Adam(ae_params, lr=lr, betas=(0.5, 0.9))
    opt_d = torch.optim.Adam(disc.parameters(), lr=lr, betas=(0.5, 0.9))
    generator = torch.Generator().manual_seed(derive_seed(seed, "train"))

    run_id = {"cfg": cfg, "steps": steps, "batch_size": batch_size, "lr": lr, "disc_start": disc_start, "seed": seed}
    step = 0
    if checkpoint_path is not None:
        state = load_checkpoint(checkpoint_path, run=run_id)
        if state is not None:
            tokenizer.load_state_dict(state["tokenizer"])
            reg.load_state_dict(state["regularizer"])
            disc.load_state_dict(state["discriminator"])
            loss_fn.load_state_dict(state["loss"])
            opt_ae.load_state_dict(state["opt_ae"])
            opt_d.load_state_dict(state["opt_d"])
            generator.set_state(state["generator"])
            step = int(state["step"])
            log(f"resumed from {checkpoint_path} at step {step}")

    def save(at_step: int) -> None:
        for name, module in (("tokenizer", tokenizer), ("regularizer", reg), ("discriminator", disc)):
            if not all(torch.isfinite(p).all() for p in module.parameters()):
                raise TrainingDiverged(
                    f"tokenizer training: non-finite {name} weights at step {at_step}; "
                    f"last good checkpoint kept at {checkpoint_path}"
                )
        save_checkpoint(
            checkpoint_path,
            {
                "run": run_id,
                "step": at_step,
                "data_position": {
                    "epoch": at_step // stream.batches_per_epoch,
                    "batch": at_step % stream.batches_per_epoch,
                },
                "tokenizer": tokenizer.state_dict(),
                "regularizer": reg.state_dict(),
                "discriminator": disc.state_dict(),
                "loss": loss_fn.state_dict(),
                "opt_ae": opt_ae.state_dict(),
                "opt_d": opt_d.state_dict(),
                "generator": generator.get_state(),
            },
        )

    latent_hw = tuple(arch.latent_shape[1:])
    log_every = max(1, steps // 10)
    tail_from = steps - max(1, steps // 10)
    tail: dict[str, list[float]] = {}
    ran, t0, c0 = 0, time.perf_counter(), time.process_time()
    tokenizer.train(), reg.train(), disc.train()
    meter = ProgressMeter(steps, "tokenizer training", "step", start=step)
    while step < steps and (max_steps_this_run is None or ran < max_steps_this_run):
        x01 = images_to_tensor(stream.batch(step)).to(device)
        logs = _train_step(
            x01 * 2.0 - 1.0, tokenizer, reg, disc, loss_fn, opt_ae, opt_d, generator,
            latent_hw, gan_on=step >= disc_start, step=step + 1, checkpoint_path=checkpoint_path,
        )  # fmt: skip
        step += 1
        ran += 1
        if step > tail_from:
            for k, v in logs.items():
                tail.setdefault(k, []).append(v)
        if on_step is not None:
            on_step(step, logs)
        meter.update()
        if step % log_every == 0 or step == steps:
            log(f"step {step}/{steps} " + " ".join(f"{k} {v:.4g}" for k, v in sorted(logs.items())))
        if checkpoint_path is not None and (step % checkpoint_every == 0 or step == steps):
            save(step)
    meter.close()
    seconds, cpu_seconds = time.perf_counter() - t0, time.process_time() - c0
    metrics: dict[str, Any] = {
        "completed": step >= steps,
        "step": step,
        "steps_this_run": ran,
        "seconds_this_run": seconds,
        "sec_per_step": seconds / max(ran, 1),
        "cpu_sec_per_step": cpu_seconds / max(ran, 1),  # process CPU time: robust to a shared machine
        "disc_start": disc_start,
        "discriminator": disc_cfg,
        "perceptual_weight": perceptual_weight if perceptual is not None else 0.0,
        "perceptual_net": nets.perceptual_name,
        "alignment_net": nets.alignment_name,
        "params": count_parameters(tokenizer),
    }
    if step < steps:
        return metrics
    metrics["final_train"] = {k: float(np.mean(v)) for k, v in sorted(tail.items())}
    metrics["eval"] = evaluate_tokenizer(tokenizer, images_to_tensor(stream.first(EVAL_IMAGES)).to(device))
    metrics["eval_images"] = f"first {min(EVAL_IMAGES, stream.total)} training images"
    save_tokenizer(
        out_path,
        tokenizer,
        {**cfg, "arch": arch.to_dict()},  # the resolved architecture: immune to later preset changes
        extra={
            "metrics": metrics,
            "regularizer_state": reg.state_dict(),
            "train": {k: v for k, v in run_id.items() if k != "cfg"},
        },
    )
    log(f"wrote {out_path}: " + " ".join(f"{k} {v:.4g}" for k, v in metrics["eval"].items()))
    return metrics


def _train_step(
    x: torch.Tensor,
    tokenizer: KLTokenizer,
    reg: torch.nn.Module,
    disc: NLayerDiscriminator,
    loss_fn: Eq12Loss,
    opt_ae: torch.optim.Optimizer,
    opt_d: torch.optim.Optimizer,
    generator: torch.Generator,
    latent_hw: tuple[int, int],
    gan_on: bool,
    step: int,
    checkpoint_path: str | Path | None,
) -> dict[str, float]:
    """One autoencoder update (Eq. 12 + regulariser) and, when ``gan_on``, one discriminator update."""
    vae = tokenizer.vae
    plan = reg.plan(generator, x.shape[0], latent_hw)
    x_in, target = reg.encoder_input(x, plan)
    posterior = reg.encode(vae, x_in, plan)
    z = posterior.sample(generator)
    aux = reg.aux_terms(x_in, posterior, z)
    z_dec, target = reg.decoder_input(z, target, plan)
    x_hat = vae.decode(z_dec)
    disc.requires_grad_(False)
    logits_fake = disc(x_hat) if gan_on else None
    opt_ae.zero_grad(set_to_none=True)
    terms = loss_fn.generator_backward(
        target, x_hat, posterior, vae.decoder_last_layer, vae.encoder_last_layer, logits_fake, aux
    )
    _check_finite(terms["total"], "autoencoder", step, checkpoint_path)
    opt_ae.step()
    logs = {k: float(v) for k, v in terms.items()}
    if gan_on:
        disc.requires_grad_(True)
        d_loss = loss_fn.discriminator_loss(disc(target.detach()), disc(x_hat.detach()))
        _check_finite(d_loss, "discriminator", step, checkpoint_path)
        opt_d.zero_grad(set_to_none=True)
        d_loss.backward()
        opt_d.step()
        logs["d_loss"] = float(d_loss.detach())
    return logs


def _check_finite(loss: torch.Tensor, what: str, step: int, checkpoint_path: str | Path | None) -> None:
    value = float(loss.detach())
    if not math.isfinite(value):
        kept = f"last good checkpoint kept at {checkpoint_path}" if checkpoint_path else "no checkpoint path was given"
        raise TrainingDiverged(f"tokenizer training: non-finite {what} loss ({value}) at step {step}; {kept}")


@dataclass(frozen=True)
class FrozenNetworks:
    """The frozen networks of one tokenizer's training, each with the name its numbers carry."""

    perceptual: Perceptual | None
    perceptual_weight: float
    perceptual_name: str
    target_features: TargetFeatures | None
    feature_dim: int | None
    alignment_name: str


def frozen_networks(
    cfg: dict[str, Any],
    feature_net: torch.nn.Module | None = None,
    weights_dir: str | Path | None = None,
    device: str | torch.device = "cpu",
    perceptual: Perceptual | None = None,
    target_features: TargetFeatures | None = None,
    feature_dim: int | None = None,
) -> FrozenNetworks:
    """Perceptual term and VF/REPA target of the tokenizer config ``cfg`` (spec models.md §3.3, §4).

    Alignment target (mcos/mdms/repa): the foundation encoder named by ``variant``
    (latentbench.features.foundation_net, 16x16 patch tokens, weights from ``weights_dir``), or
    the demo network's last stage for ``demo-cnn``. Perceptual term:
    latentbench.features.foundation.perceptual_net — LPIPS-VGG (weight 1, Eq. 12), or the demo
    net's LPIPS-style distance when ``feature_net`` is given (weight DEMO_PERCEPTUAL_WEIGHT);
    ``perceptual_weight: 0`` builds none. Explicit ``perceptual`` / ``target_features`` +
    ``feature_dim`` (tests, custom studies) are used as given. Missing weights raise WeightMissing
    naming the file and its source before any training.
    """
    from latentbench.features.foundation import DEMO_NET, alignment_encoder, perceptual_net

    encoder = alignment_encoder(cfg)
    alignment_name = "none" if encoder is None else encoder
    if target_features is not None:
        alignment_name = "given" if encoder is not None else "none"
    elif encoder == DEMO_NET:
        if feature_net is None:
            raise ValueError(
                f"variant {DEMO_NET!r} aligns to the demo network: pass feature_net (or target_features and feature_dim)"
            )
        target_features, feature_dim = partial(_last_stage, feature_net), int(feature_net.dim)
    elif encoder is not None:
        from latentbench.features.foundation_net import build_foundation_encoder

        net = build_foundation_encoder(encoder, weights_dir, device)
        target_features, feature_dim = net, net.dim

    name = "given" if perceptual is not None else perceptual_net(cfg, demo=feature_net is not None)
    weight = float(cfg.get("perceptual_weight", DEMO_PERCEPTUAL_WEIGHT if name == DEMO_NET else 1.0))
    if perceptual is None and weight == 0:
        name = "none"
    elif name == DEMO_NET:
        if feature_net is None:
            raise ValueError(f"perceptual {DEMO_NET!r} needs the demo network: pass feature_net")
        perceptual = partial(_demo_perceptual, feature_net)
    elif perceptual is None:
        from latentbench.features.lpips_vgg import LpipsVgg

        perceptual = LpipsVgg(weights_dir, device)
    return FrozenNetworks(perceptual, weight, name, target_features, feature_dim, alignment_name)


def _demo_perceptual(net: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """demo_net.perceptual_distance bound to ``net`` (kept importable lazily)."""
    from latentbench.features.demo_net import perceptual_distance

    return perceptual_distance(net, x, y)


def _last_stage(net: torch.nn.Module, x01: torch.Tensor) -> torch.Tensor:
    """The demo net's last stage map (128 ch at 8x8 for 32 px): the VF/REPA target grid."""
    return net.feature_maps(x01)[-1]
