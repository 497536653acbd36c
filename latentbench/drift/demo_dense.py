"""The demo's dense stand-in for MiDaS and UniFormer (seesaw-notes §4): one encoder, two heads.

Trained in the DAG on the synthetic set's ground-truth depth and segmentation
(``latentbench.data.synthetic``: ``depth`` float16 (N, H, W), ``seg`` uint8 (N, H, W) with
0 = background and k + 1 = class k), then frozen. It must run on reconstructions too, which is
why the ground truth alone cannot serve as the projector. Its depth output goes through the
paper's normalisation (min-max, x255, truncate) and its class map through the ADE20K palette
(``latentbench.drift.projectors.demo``). Every number it produces is labelled a stand-in.

A small U-Net: three conv stages (widths 8/16/32 at full, /2, /4 resolution), two up-sampling
steps with skip connections, a 1-channel depth head and a ``num_classes``-way segmentation head.
Training: AdamW, L1 on depth + cross-entropy on segmentation, seconds on a CPU at 32x32.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

NAME = "demo-dense"


def _block(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True),
        nn.Conv2d(c_out, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True),
    )


class DenseDemoNet(nn.Module):
    """Images float (N, 3, H, W) in [0, 1] (H, W divisible by 4) -> (depth (N, H, W), seg logits (N, K, H, W))."""

    def __init__(self, num_classes: int = 11, widths: tuple[int, int, int] = (8, 16, 32)) -> None:
        super().__init__()
        w1, w2, w3 = widths
        self.enc1, self.enc2, self.enc3 = _block(3, w1), _block(w1, w2), _block(w2, w3)
        self.dec2, self.dec1 = _block(w3 + w2, w2), _block(w2 + w1, w1)
        self.depth_head = nn.Conv2d(w1, 1, 1)
        self.seg_head = nn.Conv2d(w1, num_classes, 1)
        self.config = {"num_classes": num_classes, "widths": list(widths)}

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        e1 = self.enc1((x - 0.5) / 0.25)
        e2 = self.enc2(F.max_pool2d(e1, 2))
        e3 = self.enc3(F.max_pool2d(e2, 2))
        d2 = self.dec2(torch.cat((F.interpolate(e3, scale_factor=2, mode="nearest"), e2), 1))
        d1 = self.dec1(torch.cat((F.interpolate(d2, scale_factor=2, mode="nearest"), e1), 1))
        return self.depth_head(d1).squeeze(1), self.seg_head(d1)


def _images(images: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 (N, H, W, 3) arrays -> float (N, 3, H, W) in [0, 1]; float NCHW tensors pass through."""
    if isinstance(images, torch.Tensor) and images.is_floating_point():
        return images
    return torch.as_tensor(np.asarray(images)).permute(0, 3, 1, 2).float() / 255.0


def train_dense_demo_net(
    images: np.ndarray,
    depth: np.ndarray,
    seg: np.ndarray,
    num_classes: int,
    val: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
    epochs: int = 6,
    batch_size: int = 64,
    lr: float = 1e-2,
    seed: int = 0,
    log=print,
) -> tuple[DenseDemoNet, dict]:
    """Train on (images uint8 (N, H, W, 3), depth (N, H, W), seg (N, H, W) ints); return the frozen
    eval-mode net and its metrics (final train losses; on ``val`` = (images, depth, seg): depth
    L1 and segmentation pixel accuracy)."""
    if not (len(images) == len(depth) == len(seg)):
        raise ValueError(f"images/depth/seg: lengths differ ({len(images)}, {len(depth)}, {len(seg)})")
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    x_all = _images(images)
    d_all = torch.as_tensor(np.asarray(depth, np.float32))
    s_all = torch.as_tensor(np.asarray(seg, np.int64))
    if int(s_all.max()) >= num_classes:
        raise ValueError(f"seg: label {int(s_all.max())} >= num_classes {num_classes}")
    net = DenseDemoNet(num_classes)
    steps = max(1, len(x_all) // batch_size)
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=epochs * steps)
    depth_loss = seg_loss = float("nan")
    for epoch in range(epochs):
        net.train()
        perm = torch.randperm(len(x_all), generator=generator)
        totals = [0.0, 0.0]
        for step in range(steps):
            idx = perm[step * batch_size : (step + 1) * batch_size]
            pred_depth, logits = net(x_all[idx])
            l_depth = F.l1_loss(pred_depth, d_all[idx])
            l_seg = F.cross_entropy(logits, s_all[idx])
            opt.zero_grad(set_to_none=True)
            (l_depth + l_seg).backward()
            opt.step()
            sched.step()
            totals[0] += l_depth.item()
            totals[1] += l_seg.item()
        depth_loss, seg_loss = totals[0] / steps, totals[1] / steps
        log(f"epoch {epoch + 1}/{epochs}: depth L1 {depth_loss:.4f}, seg CE {seg_loss:.4f}")
    net.eval().requires_grad_(False)
    metrics: dict = {"name": NAME, "epochs": epochs, "train_depth_l1": depth_loss, "train_seg_ce": seg_loss}
    if val is not None:
        pred_depth, pred_seg = predict(net, val[0])
        metrics["val_depth_l1"] = float(np.abs(pred_depth - np.asarray(val[1], np.float32)).mean())
        metrics["val_seg_accuracy"] = float((pred_seg == np.asarray(val[2])).mean())
        log(f"val depth L1 {metrics['val_depth_l1']:.4f}, seg accuracy {metrics['val_seg_accuracy']:.4f}")
    return net, metrics


@torch.inference_mode()
def predict(net: DenseDemoNet, images: np.ndarray, batch_size: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """uint8 (N, H, W, 3) -> (raw depth float32 (N, H, W), class map int64 (N, H, W))."""
    device = next(net.parameters()).device
    depths, segs = [], []
    for i in range(0, len(images), batch_size):
        d, logits = net(_images(images[i : i + batch_size]).to(device))
        depths.append(d.float().cpu().numpy())
        segs.append(logits.argmax(1).cpu().numpy())
    return np.concatenate(depths), np.concatenate(segs).astype(np.int64)


def save_dense_demo_net(net: DenseDemoNet, path: str | Path, extra: dict | None = None) -> None:
    """Save weights and config atomically."""
    from latentbench.io import atomic_path

    with atomic_path(path, suffix=".pt") as tmp:
        torch.save({"config": net.config, "state_dict": net.state_dict(), **(extra or {})}, tmp)


def load_dense_demo_net(path: str | Path, device: str | torch.device = "cpu") -> DenseDemoNet:
    """Load a trained dense demo net, eval mode, frozen."""
    path = Path(path) if path is not None else None
    if path is None or not path.is_file():
        raise FileNotFoundError(f"{path}: dense demo net weights not found (trained by the DAG's drift rule)")
    payload = torch.load(path, map_location="cpu", weights_only=False)
    net = DenseDemoNet(payload["config"]["num_classes"], tuple(payload["config"]["widths"]))
    net.load_state_dict(payload["state_dict"])
    return net.to(device).eval().requires_grad_(False)
