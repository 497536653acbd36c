"""Training a diffusion backbone on cached latents: AdamW, EMA, clipping, DDP, checkpoint/resume.

Every random draw of a step is a function of (seed, step, position in the global batch): the
batch order is a seeded permutation per epoch, and the posterior noise, t, eps and the
label-dropout mask are drawn for the whole global batch from a generator seeded by the step,
after which each DDP rank keeps its slice. Hence

- a run killed at any point and resumed from its last checkpoint reproduces the
  uninterrupted run bit for bit on CPU, and
- N data-parallel processes with global batch B follow one process with batch B to float
  tolerance (gradients are averaged over equal local batches).
"""

from __future__ import annotations

import dataclasses
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
import torch.distributed as dist
from torch import nn

from latentbench.checkpoint import EMA, load_checkpoint, save_checkpoint
from latentbench.diffusion.transport import Transport
from latentbench.errors import TrainingDiverged
from latentbench.precision import autocast_dtype
from latentbench.progress import ProgressMeter
from latentbench.seeding import derive_seed

log = logging.getLogger(__name__)

# get_batch(global indices, generator) -> (normalised latents, labels) of the whole global batch
BatchFn = Callable[[torch.Tensor, torch.Generator], tuple[torch.Tensor, torch.Tensor]]


@dataclass(frozen=True)
class TrainSettings:
    """Optimisation settings of one run (recipe values unless the study overrides them)."""

    steps: int
    batch_size: int  # global batch over all ranks
    lr: float
    betas: tuple[float, float]
    weight_decay: float
    adam_eps: float
    ema: float
    grad_clip: float | None
    checkpoint_every: int
    seed: int
    precision: str = "fp32"
    grad_accumulation: int = 1
    ema_buffers: bool = True  # the EMA also averages float buffers (the recipe's ema_buffers)


def batch_indices(step: int, batch_size: int, num_items: int, seed: int) -> torch.Tensor:
    """Indices of the global batch at ``step``: epoch-wise seeded permutations, so any step is reproducible."""
    per_epoch = max(1, num_items // batch_size)
    epoch, offset = divmod(step, per_epoch)
    perm = torch.randperm(num_items, generator=torch.Generator().manual_seed(derive_seed(seed, "epoch", epoch)))
    return perm[offset * batch_size : (offset + 1) * batch_size]


def world() -> tuple[int, int]:
    """(rank, world size) of the running process group, (0, 1) without one."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _label_dropout(model: nn.Module) -> tuple[nn.Module | None, float]:
    """The model's label embedder and its dropout probability (the loop applies it instead)."""
    embedder = getattr(model, "y_embedder", None)
    return embedder, float(getattr(embedder, "dropout_prob", 0.0))


def train_diffusion(
    model: nn.Module,
    transport: Transport,
    get_batch: BatchFn,
    num_items: int,
    settings: TrainSettings,
    checkpoint: str | Path,
    stop_after: int | None = None,
) -> EMA:
    """Train ``model`` to ``settings.steps``, resuming from ``checkpoint`` if it exists.

    Runs data-parallel when a torch.distributed process group is initialised (torchrun);
    rank 0 writes the checkpoints. ``stop_after`` ends this call after that many steps (tests
    use it to simulate an interruption). Returns the EMA of the weights. A non-finite loss
    stops with an error naming the step; the last good checkpoint is kept.
    """
    rank, size = world()
    micro = settings.batch_size // (size * settings.grad_accumulation)
    if micro * size * settings.grad_accumulation != settings.batch_size:
        raise ValueError(
            f"batch_size {settings.batch_size} is not divisible by world size {size} x grad_accumulation "
            f"{settings.grad_accumulation}"
        )
    device = next(model.parameters()).device
    if rank == 0:
        log.info("training on %d process(es), micro-batch %d per process", size, micro)
    net = nn.parallel.DistributedDataParallel(model) if size > 1 else model
    opt = torch.optim.AdamW(
        model.parameters(), lr=settings.lr, betas=settings.betas, weight_decay=settings.weight_decay, eps=settings.adam_eps
    )
    ema = EMA(model, settings.ema, settings.ema_buffers)
    # the run's identity: every setting that changes the result (not checkpoint_every), and the model
    run = {
        "settings": {k: v for k, v in dataclasses.asdict(settings).items() if k != "checkpoint_every"},
        "model": {k: tuple(v.shape) for k, v in model.state_dict().items()},
    }
    state = load_checkpoint(checkpoint, run=run)
    start = 0
    if state is not None:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        ema.load_state_dict(state["ema"])
        start = state["step"]
        log.info("resumed from %s at step %d", checkpoint, start)
    embedder, p_drop = _label_dropout(model)
    if embedder is not None:
        embedder.dropout_prob = 0.0  # applied below from the step's generator, identically on every rank
    null_class = getattr(embedder, "num_classes", None)
    # bf16 only on a GPU with native bf16 (latentbench.precision: chosen by capability, logged).
    autocast = settings.precision == "bf16" and autocast_dtype(device) is not None
    model.train()
    end = settings.steps if stop_after is None else min(settings.steps, start + stop_after)
    meter = ProgressMeter(settings.steps, "diffusion training", "step", start=start) if rank == 0 else None
    try:
        for step in range(start, end):
            g = torch.Generator().manual_seed(derive_seed(settings.seed, "step", step))
            x, y = get_batch(batch_indices(step, settings.batch_size, num_items, settings.seed), g)
            t = transport.sample_time(len(x), g)
            eps = torch.randn(x.shape, generator=g, dtype=x.dtype)
            if p_drop > 0:
                y = torch.where(torch.rand(len(y), generator=g) < p_drop, torch.full_like(y, null_class), y)
            opt.zero_grad(set_to_none=True)
            total = 0.0
            for a in range(settings.grad_accumulation):
                sl = slice((a * size + rank) * micro, (a * size + rank + 1) * micro)
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
                    loss, _ = transport.training_loss(net, x[sl].to(device), y[sl].to(device), t=t[sl], eps=eps[sl])
                if not math.isfinite(loss.item()):
                    raise TrainingDiverged(
                        f"non-finite diffusion loss ({loss.item()}) at step {step}; "
                        f"the last good checkpoint {checkpoint} is kept"
                    )
                (loss / settings.grad_accumulation).backward()
                total += loss.item() / settings.grad_accumulation
            if settings.grad_clip:
                nn.utils.clip_grad_norm_(model.parameters(), settings.grad_clip)
            opt.step()
            ema.update(model)
            done = step + 1
            if meter is not None:
                meter.update()
                if done % 50 == 0 or done == settings.steps:
                    log.info("step %d/%d loss %.4f lr %.3g", done, settings.steps, total, opt.param_groups[0]["lr"])
            if rank == 0 and (done % settings.checkpoint_every == 0 or done == settings.steps):
                save_checkpoint(
                    checkpoint,
                    {"model": model.state_dict(), "optimizer": opt.state_dict(), "ema": ema.state_dict(), "step": done,
                     "run": run},
                )
    finally:
        if embedder is not None:
            embedder.dropout_prob = p_drop
        if meter is not None:
            meter.close()
    return ema
