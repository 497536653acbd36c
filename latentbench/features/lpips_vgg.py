"""LPIPS-VGG v0.1, the perceptual term of Eq. 12 (spec models.md §3.3, metrics-diffusability §11.1).

The ``lpips`` package's own model (richzhang/PerceptualSimilarity; LightningDiT's
``contperceptual.py`` uses the same network): ``lpips.LPIPS(net="vgg", version="0.1",
pretrained=True, pnet_rand=True)`` — built with ``pretrained=False`` and the heads loaded (and
checked) here — makes the VGG16 trunk without torchvision's download, with the v0.1 linear
heads from the manifest entry ``lpips-vgg-head`` (a file of the lpips wheel);
the trunk is then loaded from ``lpips-vgg16-trunk`` (torchvision's ``vgg16-397923af.pth``).
Only the file's ``features.*`` tensors are read: LPIPS uses no classifier.
"""

from __future__ import annotations

import re
import warnings
from contextlib import nullcontext
from pathlib import Path

import torch
from torch import nn

from latentbench.features.checkpoints import load_state_strict, read_state_dict
from latentbench.features.foundation import LPIPS_VGG, LPIPS_VGG_WEIGHTS

__all__ = ["LpipsVgg", "load_vgg_trunk"]

_SLICE_KEY = re.compile(r"slice\d+\.(\d+\..+)")  # lpips keeps each layer under its vgg16().features index


def load_vgg_trunk(trunk: nn.Module, path: str | Path) -> None:
    """Copy ``features.<i>.*`` of a torchvision VGG16 state-dict file into lpips' ``slice<k>.<i>.*``."""
    state = read_state_dict(path)
    mapped, absent = {}, []
    for key in trunk.state_dict():
        source = "features." + _SLICE_KEY.fullmatch(key)[1]
        if source in state:
            mapped[key] = state[source]
        else:
            absent.append(source)
    if absent:
        raise ValueError(f"{path}: not a torchvision VGG16 state dict; missing {', '.join(absent)}")
    load_state_strict(trunk, mapped, path, "torchvision VGG16 (features)")


class LpipsVgg:
    """Perceptual distance ``P(x, y) -> [N]`` on [0, 1] images, differentiable in both inputs.

    ``weights_dir``: where the manifest files are (also searched: Hugging Face and torch.hub
    caches); a missing trunk raises WeightMissing naming the file and its source.
    ``random_init`` keeps a random trunk (tests only). A plain callable, not a Module, so the
    frozen network never enters a trainer's state dict or optimiser.
    """

    name = LPIPS_VGG

    def __init__(
        self,
        weights_dir: str | Path | None = None,
        device: str | torch.device = "cpu",
        random_init: bool = False,
        trunk: str | Path | None = None,
    ) -> None:
        import lpips

        from latentbench.weights_fetch import resolve_entry

        trunk_name, heads_name = LPIPS_VGG_WEIGHTS
        trunk_path = None if random_init else Path(trunk) if trunk is not None else resolve_entry(trunk_name, weights_dir)
        heads = resolve_entry(heads_name, weights_dir)
        # With a trunk file every tensor is loaded below, so the network is built on the meta
        # device (torchvision's VGG16 would otherwise initialise its unused 120M-weight classifier).
        with warnings.catch_warnings(), torch.device("meta") if trunk_path is not None else nullcontext():
            warnings.filterwarnings("ignore", category=UserWarning, module="torchvision")  # lpips' pretrained=False
            model = lpips.LPIPS(net="vgg", version="0.1", pretrained=False, pnet_rand=True, verbose=False)
        if trunk_path is not None:
            model = model.to_empty(device="cpu")
            model.scaling_layer = type(model.scaling_layer)()  # its constant shift/scale, made on the real device
        # the heads as LPIPS(pretrained=True) loads them, but checked: lpips itself loads with strict=False
        head_state = read_state_dict(heads)
        absent = [k for k in model.state_dict() if re.match(r"lin\d", k) and k not in head_state]  # lins.* alias lin*
        result = model.load_state_dict(head_state, strict=False)
        if absent or result.unexpected_keys:
            raise ValueError(f"{heads}: not the LPIPS v0.1 VGG heads (missing {absent}, unexpected {result.unexpected_keys})")
        if trunk_path is not None:
            load_vgg_trunk(model.net, trunk_path)
        self.device = torch.device(device)
        self.model = model.eval().requires_grad_(False).to(self.device)

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """LPIPS(x, y) per image pair; inputs [N, 3, H, W] in [0, 1] (``normalize=True`` maps to [-1, 1])."""
        if x.shape != y.shape or x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"LPIPS-VGG: expected two [N, 3, H, W] images of one shape, got {tuple(x.shape)}, {tuple(y.shape)}")
        return self.model(x, y, normalize=True).reshape(-1)
