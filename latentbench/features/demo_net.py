"""The demo feature network: a small CNN classifier trained in the DAG on the synthetic set.

It stands in for Inception (FID), LPIPS' backbone (perceptual loss) and DINOv2 (VF
alignment) in the CPU demo, where no pretrained weights may be downloaded. Its penultimate
layer (global-average-pooled last stage, 128-d) is the feature space of every demo FID.
Every number computed with it is labelled ``demo-cnn`` in the report: it is not comparable
to Inception-FID.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from latentbench.features import register_feature_extractor

NAME = "demo-cnn"


def _stage(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
        nn.Conv2d(c_out, c_out, 3, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    )


class DemoNet(nn.Module):
    """Three conv stages (32, 64, 128 channels, /2 pooling between) + linear classifier."""

    def __init__(self, num_classes: int = 10, widths: tuple[int, ...] = (32, 64, 128)) -> None:
        super().__init__()
        chans = (3, *widths)
        self.stages = nn.ModuleList(_stage(chans[i], chans[i + 1]) for i in range(len(widths)))
        self.head = nn.Linear(widths[-1], num_classes)
        self.register_buffer("mean", torch.tensor([0.5, 0.5, 0.5]).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor([0.25, 0.25, 0.25]).view(1, 3, 1, 1))
        self.config = {"num_classes": num_classes, "widths": list(widths)}

    @property
    def dim(self) -> int:
        return self.config["widths"][-1]

    def feature_maps(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Activations of every stage (before pooling), for perceptual / alignment losses."""
        h = (x - self.mean) / self.std
        maps = []
        for i, stage in enumerate(self.stages):
            if i:
                h = F.max_pool2d(h, 2)
            h = stage(h)
            maps.append(h)
        return maps

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate features [N, D]: global average of the last stage."""
        return self.feature_maps(x)[-1].mean(dim=(2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def perceptual_distance(net: DemoNet, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """LPIPS-style distance in the demo net's feature space, one value per image.

    Same recipe as LPIPS (Zhang et al. 2018, Eq. 1) without learned linear heads:
    channel-unit-normalise each stage's activations, squared difference, spatial mean,
    sum over stages. Stands in for LPIPS-VGG in the demo tokenizer loss (spec models.md §4).
    """
    total = x.new_zeros(x.shape[0])
    for fx, fy in zip(net.feature_maps(x), net.feature_maps(y)):
        fx = fx / (fx.norm(dim=1, keepdim=True) + 1e-10)
        fy = fy / (fy.norm(dim=1, keepdim=True) + 1e-10)
        total = total + (fx - fy).pow(2).sum(dim=1).mean(dim=(1, 2))
    return total


def save_demo_net(net: DemoNet, path: str | Path, extra: dict | None = None) -> None:
    """Save weights and config atomically."""
    from latentbench.io import atomic_path

    with atomic_path(path, suffix=".pt") as tmp:
        torch.save({"config": net.config, "state_dict": net.state_dict(), **(extra or {})}, tmp)


def load_demo_net(path: str | Path) -> DemoNet:
    """Load a trained demo net in eval mode with frozen parameters."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: demo feature network weights not found (run the DAG's feature_net rule)")
    payload = torch.load(path, map_location="cpu", weights_only=False)
    net = DemoNet(payload["config"]["num_classes"], tuple(payload["config"]["widths"]))
    net.load_state_dict(payload["state_dict"])
    net.eval().requires_grad_(False)
    return net


class DemoFeatureExtractor:
    """Registry wrapper: images in [0,1] -> 128-d penultimate features."""

    name = NAME

    def __init__(self, weights: str | Path, device: str | torch.device = "cpu") -> None:
        self.net = load_demo_net(weights).to(device)
        self.device = torch.device(device)
        self.dim = self.net.dim

    @property
    def num_classes(self) -> int:
        return self.net.config["num_classes"]

    @torch.inference_mode()
    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        return self.net.features(images.to(self.device).clamp(0, 1)).float()

    @torch.inference_mode()
    def features_and_logits(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Features and the classifier's logits (the demo's stand-in for Inception's, for IS)."""
        feats = self.net.features(images.to(self.device).clamp(0, 1))
        return feats.float(), self.net.head(feats).float()


register_feature_extractor(NAME)(DemoFeatureExtractor)


def _augment(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Random horizontal flip and up-to-2-pixel translation (reflect padding)."""
    flip = torch.rand(x.shape[0], generator=generator) < 0.5
    x = torch.where(flip.view(-1, 1, 1, 1), x.flip(-1), x)
    dx, dy = (int(v) for v in torch.randint(-2, 3, (2,), generator=generator))
    return torch.roll(F.pad(x, (2, 2, 2, 2), mode="reflect"), shifts=(dy, dx), dims=(2, 3))[..., 2:-2, 2:-2]


def train_demo_net(
    train_images: torch.Tensor,
    train_labels: torch.Tensor,
    val_images: torch.Tensor,
    val_labels: torch.Tensor,
    num_classes: int,
    epochs: int = 8,
    batch_size: int = 128,
    lr: float = 2e-3,
    seed: int = 0,
    log=print,
) -> tuple[DemoNet, dict]:
    """Train the classifier (AdamW, cosine schedule); return the eval-mode net and its metrics."""
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    net = DemoNet(num_classes)
    steps_per_epoch = max(1, len(train_images) // batch_size)
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=epochs * steps_per_epoch)
    for epoch in range(epochs):
        net.train()
        perm = torch.randperm(len(train_images), generator=generator)
        total = 0.0
        for step in range(steps_per_epoch):
            idx = perm[step * batch_size : (step + 1) * batch_size]
            loss = F.cross_entropy(net(_augment(train_images[idx], generator)), train_labels[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item()
        log(f"epoch {epoch + 1}/{epochs}: train loss {total / steps_per_epoch:.4f}")
    net.eval().requires_grad_(False)
    with torch.inference_mode():
        preds = torch.cat([net(val_images[i : i + 512]).argmax(1) for i in range(0, len(val_images), 512)])
    accuracy = (preds == val_labels).float().mean().item()
    log(f"val accuracy {accuracy:.4f}")
    return net, {"val_accuracy": accuracy, "epochs": epochs, "feature_dim": net.dim, "name": NAME}
