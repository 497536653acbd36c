"""LPIPS (Zhang et al. 2018) with the AlexNet trunk, version 0.1 (spec ifid-seesaw §4.1-4.4).

Wraps the ``lpips`` package (richzhang/PerceptualSimilarity): ``lpips.LPIPS(net="alex",
version="0.1")``. Its linear heads (``lpips/weights/v0.1/alex.pth``) ship inside the wheel;
its AlexNet trunk would normally be downloaded by torchvision, so we build the package model
with ``pnet_rand=True`` and copy the torchvision ImageNet AlexNet weights
(``alexnet-owt-7be5be79.pth``) into it from a local file found by latentbench.weights.

Protocols (same names as latentbench.metrics.reconstruction):
- ``"standard"`` (spec §4.1): both images clamped to [0, 1], then mapped to [-1, 1]
  (the package's ``normalize=True``), one spatially averaged value per image.
- ``"ifid-reference-code"`` (spec §4.2, [QUIRK]): the iFID repository's ``get_lpips`` gets
  images already in [0, 1], unclamped, where LPIPS expects [-1, 1], and passes them on
  without conversion (``normalize=False``); the values differ from the standard ones.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch

from latentbench.metrics.reconstruction import check_pair
from latentbench.weights import WeightMissing, resolve_weight

__all__ = ["ALEXNET_FILE", "ALEXNET_SOURCE", "PROTOCOLS", "LPIPSMetric"]

PROTOCOLS = ("standard", "ifid-reference-code")
ALEXNET_NAME = "torchvision AlexNet ImageNet weights (LPIPS trunk)"
ALEXNET_FILE = "alexnet-owt-7be5be79.pth"
# torchvision.models.AlexNet_Weights.IMAGENET1K_V1.url
ALEXNET_SOURCE = "torchvision (https://download.pytorch.org/models/" + ALEXNET_FILE + ")"


def _lpips_model(weights_dir: str | Path | None, random_backbone: bool) -> torch.nn.Module:
    """``lpips.LPIPS(net="alex", version="0.1")`` with the trunk loaded from a local file."""
    import lpips
    import torchvision

    heads = Path(lpips.__file__).parent / "weights" / "v0.1" / "alex.pth"
    if not heads.is_file():
        raise WeightMissing("LPIPS v0.1 AlexNet linear heads", "alex.pth", "the lpips wheel", [heads.parent])
    trunk_file = None if random_backbone else resolve_weight(ALEXNET_NAME, ALEXNET_FILE, weights_dir, ALEXNET_SOURCE)
    with warnings.catch_warnings():  # lpips passes torchvision's deprecated ``pretrained=False``
        warnings.filterwarnings("ignore", category=UserWarning, module="torchvision")
        model = lpips.LPIPS(net="alex", version="0.1", pnet_rand=True, verbose=False)
    if trunk_file is not None:
        alexnet = torchvision.models.alexnet(weights=None)
        # strict load into the full torchvision model: a wrong file fails here, naming the keys
        alexnet.load_state_dict(torch.load(trunk_file, map_location="cpu", weights_only=True))
        # lpips' slices hold the modules of ``alexnet().features`` under their original indices
        for trunk_slice in model.net.children():
            for index, module in trunk_slice.named_children():
                module.load_state_dict(alexnet.features[int(index)].state_dict())
    return model.eval().requires_grad_(False)


class LPIPSMetric:
    """LPIPS-AlexNet v0.1 distance per image pair: ``metric(x, y) -> Tensor[N]`` (float32).

    ``x``, ``y``: float NCHW images in [0, 1] of the same shape, CPU or CUDA.
    ``weights_dir``: where ``alexnet-owt-7be5be79.pth`` is (also searched: Hugging Face and
    torch.hub caches); missing -> WeightMissing. ``random_backbone=True`` keeps the random
    trunk (tests only; the numbers mean nothing). ``protocol``: see the module docstring.
    """

    name = "lpips-alex-v0.1"

    def __init__(
        self,
        weights_dir: str | Path | None,
        protocol: str = "standard",
        device: str | torch.device = "cpu",
        random_backbone: bool = False,
        seed: int = 0,
    ) -> None:
        if protocol not in PROTOCOLS:
            raise ValueError(f"protocol: expected one of {PROTOCOLS}, got {protocol!r}")
        self.protocol = protocol
        self.device = torch.device(device)
        self.random_backbone = random_backbone
        with torch.random.fork_rng(devices=[]):  # seeded random trunk without touching global RNG
            torch.manual_seed(seed)
            self.model = _lpips_model(weights_dir, random_backbone).to(self.device)

    @torch.inference_mode()
    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        check_pair(x, y, channels=3)
        x, y = x.to(self.device, torch.float32), y.to(self.device, torch.float32)
        if self.protocol == "standard":
            # spec §4.1: clamp, then [0,1] -> [-1,1] inside lpips (LPIPS.forward, normalize=True)
            out = self.model(x.clamp(0, 1), y.clamp(0, 1), normalize=True)
        else:
            # spec §4.2 [QUIRK]: [0,1] images fed as if they were [-1,1], unclamped
            out = self.model(x, y, normalize=False)
        return out.reshape(x.shape[0])
