"""Latent condition probe (Seesaw Appendix A.3; spec metrics-ifid-seesaw §8).

Can the condition be recovered from the latent alone? A decoder maps the latent (C, h, w) to
the condition map of the original image (Canny edges or normalised depth at out x out):

- ``BatchNorm2d(C)``; then log2(out / h) up-stages, each nearest x2 up-sampling and
  2 x [conv3x3 (padding 1) - BN - ReLU]; channel sequence ``widths`` (default 512 -> 256 ->
  128 -> 64 [DEFAULT]; with fewer stages the widest are dropped first, so the last width is
  always the head's input); head conv1x1 -> 1 channel. Canny: logits (sigmoid at
  evaluation); depth: Sigmoid -> [0, 1].
- Canny loss 0.5 BCE-with-logits + 0.5 Dice (per image, smoothing 1: 1 - (2 sum(p y) + 1) /
  (sum p + sum y + 1), p = sigmoid(logits)); depth loss L1 + 0.5 x gradient loss (mean |dx
  pred - dx target| + mean |dy pred - dy target|, forward differences) [DEFAULT weights].
- AdamW (lr 1e-4, weight decay 0.01), batch 128, at most 100 epochs, early stopping when the
  validation loss has not improved for ``patience`` (10) epochs, keeping the best weights [PAPER].
- Reported: mean per-pixel L1 between the prediction (probabilities for Canny) and the target on
  the test set, the test loss, and for Canny the L1 of the 0.5-thresholded prediction.

1-D token latents (N, L, C): reshaped to a sqrt(L) x sqrt(L) grid (row-major token order,
as ViT patch tokens are laid out) when L is a perfect square; otherwise the probe is not
applicable and :func:`latent_grid` raises saying so.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["LatentProbe", "canny_loss", "depth_loss", "latent_grid", "train_probe"]

TASKS = ("canny", "depth")
DEFAULT_WIDTHS = (512, 256, 128, 64)


def latent_grid(latents: torch.Tensor) -> torch.Tensor:
    """(N, C, h, w) as is; (N, L, C) tokens -> (N, C, sqrt(L), sqrt(L)); else ValueError."""
    if latents.ndim == 4:
        return latents
    if latents.ndim == 3:
        n, length, c = latents.shape
        side = math.isqrt(length)
        if side * side != length:
            raise ValueError(f"latents: {length} tokens do not form a square grid; the latent probe is not applicable")
        return latents.transpose(1, 2).reshape(n, c, side, side)
    raise ValueError(f"latents: expected (N, C, h, w) or (N, L, C), got shape {tuple(latents.shape)}")


def _conv_bn_relu(c_in: int, c_out: int) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, 3, padding=1), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]


class LatentProbe(nn.Module):
    """Latent (N, C, h, w) or tokens (N, L, C) -> condition map (N, 1, out, out): Canny logits or depth in [0, 1]."""

    def __init__(self, channels: int, latent_size: int, out_size: int = 256, task: str = "canny", widths: tuple[int, ...] = DEFAULT_WIDTHS) -> None:
        super().__init__()
        if task not in TASKS:
            raise ValueError(f"task: expected one of {TASKS}, got {task!r}")
        ratio = out_size / latent_size
        stages = round(math.log2(ratio)) if ratio >= 1 else -1
        if stages < 1 or latent_size * 2**stages != out_size:
            raise ValueError(f"latent_size {latent_size} -> out_size {out_size}: needs a power-of-two up-sampling factor >= 2")
        if stages > len(widths):
            raise ValueError(f"widths: {stages} up-stages need {stages} widths, got {list(widths)}")
        self.task = task
        self.norm = nn.BatchNorm2d(channels)
        layers: list[nn.Module] = []
        c_in = channels
        for width in widths[len(widths) - stages :]:  # drop the widest stages first
            layers += [nn.Upsample(scale_factor=2, mode="nearest"), *_conv_bn_relu(c_in, width), *_conv_bn_relu(width, width)]
            c_in = width
        self.stages = nn.Sequential(*layers)
        self.head = nn.Conv2d(c_in, 1, 1)
        self.config = {"channels": channels, "latent_size": latent_size, "out_size": out_size, "task": task, "widths": list(widths)}

    def forward(self, latents: torch.Tensor) -> torch.Tensor:
        out = self.head(self.stages(self.norm(latent_grid(latents))))
        return torch.sigmoid(out) if self.task == "depth" else out


def canny_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """0.5 BCE-with-logits + 0.5 Dice (per image, smoothing 1), target in {0, 1}."""
    bce = F.binary_cross_entropy_with_logits(logits, target)
    p, y = torch.sigmoid(logits).flatten(1), target.flatten(1)
    dice = 1 - (2 * (p * y).sum(1) + 1) / (p.sum(1) + y.sum(1) + 1)
    return 0.5 * bce + 0.5 * dice.mean()


def depth_loss(pred: torch.Tensor, target: torch.Tensor, grad_weight: float = 0.5) -> torch.Tensor:
    """L1 + grad_weight x (mean |dx pred - dx target| + mean |dy pred - dy target|)."""
    dx = lambda t: t[..., :, 1:] - t[..., :, :-1]
    dy = lambda t: t[..., 1:, :] - t[..., :-1, :]
    grad = (dx(pred) - dx(target)).abs().mean() + (dy(pred) - dy(target)).abs().mean()
    return F.l1_loss(pred, target) + grad_weight * grad


def _batch(latents, targets, idx: np.ndarray, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows ``idx`` (sorted, so memory-mapped arrays read in order) as float tensors; uint8
    targets (the projectors' 0..255 maps) are scaled to [0, 1]."""
    z = torch.as_tensor(np.asarray(latents[idx]), dtype=torch.float32, device=device)
    t = np.asarray(targets[idx])
    y = torch.as_tensor(t, device=device).float()
    if t.dtype == np.uint8:
        y = y / 255.0
    return z, y.reshape(len(idx), 1, *y.shape[-2:])


def _evaluate(model: LatentProbe, latents, targets, batch_size: int, device, loss_fn) -> dict[str, float]:
    """Mean loss, per-pixel L1 (probabilities for Canny) and, for Canny, the thresholded L1."""
    model.eval()
    totals = {"loss": 0.0, "l1": 0.0, "l1_thresholded": 0.0}
    n = len(latents)
    with torch.inference_mode():
        for start in range(0, n, batch_size):
            idx = np.arange(start, min(n, start + batch_size))
            z, y = _batch(latents, targets, idx, device)
            out = model(z)
            totals["loss"] += loss_fn(out, y).item() * len(idx)
            prob = torch.sigmoid(out) if model.task == "canny" else out
            totals["l1"] += (prob - y).abs().mean(dim=(1, 2, 3)).sum().item()
            if model.task == "canny":
                totals["l1_thresholded"] += ((prob >= 0.5).float() - y).abs().mean(dim=(1, 2, 3)).sum().item()
    res = {k: v / n for k, v in totals.items()}
    if model.task != "canny":
        res.pop("l1_thresholded")
    return res


def train_probe(
    train: tuple[Any, Any],
    val: tuple[Any, Any],
    test: tuple[Any, Any],
    task: str = "canny",
    widths: tuple[int, ...] = DEFAULT_WIDTHS,
    lr: float = 1e-4,
    weight_decay: float = 0.01,
    batch_size: int = 128,
    max_epochs: int = 100,
    patience: int = 10,
    grad_weight: float = 0.5,
    seed: int = 0,
    device: str | torch.device = "cpu",
    log: Callable[[str], None] = print,
) -> tuple[LatentProbe, dict[str, Any]]:
    """Train the probe on (latents, targets) splits; return the best-validation model and results.

    Latents: arrays or memory maps (N, C, h, w) or (N, L, C); targets (N, H, W) uint8 (0..255,
    as the projectors write them) or float in [0, 1]. Results: ``test_l1`` (the reported
    number), ``test_loss``, ``test_l1_thresholded`` (Canny), ``best_epoch``, ``epochs_run``,
    ``history`` (train/val loss per epoch), the probe ``config``.
    """
    device = torch.device(device)
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    z0, y0 = _batch(train[0], train[1], np.arange(1), "cpu")
    grid = latent_grid(z0)
    model = LatentProbe(grid.shape[1], grid.shape[-1], y0.shape[-1], task, widths).to(device)
    loss_fn = canny_loss if task == "canny" else (lambda p, t: depth_loss(p, t, grad_weight))
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    n = len(train[0])
    best = (math.inf, 0, copy.deepcopy(model.state_dict()))
    history: list[dict[str, float]] = []
    epoch = 0
    for epoch in range(1, max_epochs + 1):
        model.train()
        perm = rng.permutation(n)
        total = 0.0
        for start in range(0, n, batch_size):
            idx = np.sort(perm[start : start + batch_size])
            if len(idx) < 2:  # BatchNorm needs two samples
                continue
            z, y = _batch(train[0], train[1], idx, device)
            loss = loss_fn(model(z), y)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"latent probe: non-finite training loss at epoch {epoch}")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += loss.item() * len(idx)
        val_loss = _evaluate(model, val[0], val[1], batch_size, device, loss_fn)["loss"]
        history.append({"epoch": epoch, "train_loss": total / n, "val_loss": val_loss})
        log(f"probe epoch {epoch}: train {total / n:.4f}, val {val_loss:.4f}")
        if val_loss < best[0]:
            best = (val_loss, epoch, copy.deepcopy(model.state_dict()))
        elif epoch - best[1] >= patience:
            break
    model.load_state_dict(best[2])
    test_res = _evaluate(model, test[0], test[1], batch_size, device, loss_fn)
    result = {
        "task": task,
        "test_l1": test_res["l1"],
        "test_loss": test_res["loss"],
        "best_epoch": best[1],
        "best_val_loss": best[0],
        "epochs_run": epoch,
        "history": history,
        "config": model.config,
    }
    if task == "canny":
        result["test_l1_thresholded"] = test_res["l1_thresholded"]
    return model.eval(), result
