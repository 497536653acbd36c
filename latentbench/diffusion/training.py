"""Training a diffusion backbone on cached latents: AdamW, EMA, clipping, checkpoint/resume.

The loop is deterministic on CPU: the batch order is a seeded permutation per epoch, all other
randomness (posterior noise, t, eps, label dropout) comes from the global torch RNG, whose
state is saved in every checkpoint. A run killed at any point and resumed from its last
checkpoint therefore reproduces the uninterrupted run bit for bit.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from latentbench.checkpoint import EMA, load_checkpoint, save_checkpoint
from latentbench.diffusion.transport import Transport
from latentbench.seeding import derive_seed, seed_everything

log = logging.getLogger(__name__)

BatchFn = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


@dataclass(frozen=True)
class TrainSettings:
    """Optimisation settings of one run (recipe values unless the study overrides them)."""

    steps: int
    batch_size: int
    lr: float
    betas: tuple[float, float]
    weight_decay: float
    adam_eps: float
    ema: float
    grad_clip: float | None
    checkpoint_every: int
    seed: int
    precision: str = "fp32"


def batch_indices(step: int, batch_size: int, num_items: int, seed: int) -> torch.Tensor:
    """Indices of the batch at ``step``: epoch-wise seeded permutations, so any step is reproducible."""
    per_epoch = max(1, num_items // batch_size)
    epoch, offset = divmod(step, per_epoch)
    perm = torch.randperm(num_items, generator=torch.Generator().manual_seed(derive_seed(seed, "epoch", epoch)))
    return perm[offset * batch_size : (offset + 1) * batch_size]


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

    ``get_batch(indices) -> (x1 normalised, labels)``. ``stop_after`` ends this call after that
    many steps (used by tests to simulate an interruption). Returns the EMA of the weights.
    A non-finite loss stops with an error naming the step; the last good checkpoint is kept.
    """
    device = next(model.parameters()).device
    opt = torch.optim.AdamW(
        model.parameters(), lr=settings.lr, betas=settings.betas, weight_decay=settings.weight_decay, eps=settings.adam_eps
    )
    ema = EMA(model, settings.ema)
    state = load_checkpoint(checkpoint)
    if state is None:
        seed_everything(settings.seed)
        start = 0
    else:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        ema.load_state_dict(state["ema"])
        start = state["step"]
        log.info("resumed from %s at step %d", checkpoint, start)
    autocast = settings.precision == "bf16" and device.type == "cuda"
    model.train()
    end = settings.steps if stop_after is None else min(settings.steps, start + stop_after)
    for step in range(start, end):
        x, y = get_batch(batch_indices(step, settings.batch_size, num_items, settings.seed))
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
            loss, _ = transport.training_loss(model, x.to(device), y.to(device))
        if not math.isfinite(loss.item()):
            raise ValueError(
                f"non-finite diffusion loss ({loss.item()}) at step {step}; "
                f"the last good checkpoint {checkpoint} is kept"
            )
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if settings.grad_clip:
            nn.utils.clip_grad_norm_(model.parameters(), settings.grad_clip)
        opt.step()
        ema.update(model)
        done = step + 1
        if done % 50 == 0 or done == settings.steps:
            log.info("step %d/%d loss %.4f", done, settings.steps, loss.item())
        if done % settings.checkpoint_every == 0 or done == settings.steps:
            save_checkpoint(
                checkpoint,
                {"model": model.state_dict(), "optimizer": opt.state_dict(), "ema": ema.state_dict(), "step": done},
            )
    return ema
