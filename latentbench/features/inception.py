"""The standard FID feature network: TF Inception-v3 (2015-12-05) pool3, 2048-d (spec ifid-seesaw §1.3).

The network is torch-fidelity's ``FeatureExtractorInceptionV3`` (the pytorch-fid port of the
TF graph, with its patched blocks: avg-pool ``count_include_pad=False``, max-pool in the last
E block), not a re-implementation. Its weights are the file
``weights-inception-2015-12-05-6726825d.pth`` of the torch-fidelity v0.2.0 release; pytorch-fid's
``pt_inception-2015-12-05-6726825d.pth`` holds the same TF weights. We load the file
ourselves from a local path (``torch.load(weights_only=True)``, strict keys) and never
download.

Two input conventions (spec §1.3 table, §1.5 pitfalls 2-3); images are float NCHW in [0, 1]:

- ``input_mode="float"`` (default; pytorch-fid / iFID ``evalvae.py`` semantics): the float
  values are used as they are, **not clamped and not quantised** (decoder overshoot reaches
  the network, as in the iFID code), resized to 299x299 with
  ``F.interpolate(bilinear, align_corners=False, antialias=False)``, then scaled by
  ``2x - 1`` (pytorch-fid ``InceptionV3.forward``, ``normalize_input``).
- ``input_mode="uint8"`` (torch-fidelity / torchmetrics ``inception-v3-compat`` semantics):
  clamp to [0, 1], quantise to uint8 with ``floor(255 x + 0.5)`` (the
  ``clamp(127.5 x + 128, 0, 255).to(uint8)`` rule with which DiT/SiT sample scripts write PNGs,
  x in [-1, 1]), torch-fidelity's re-implementation of TF1 ``resize_bilinear``, then
  ``(q - 128) / 128`` as in the TF graph. Equals torch-fidelity's own ``forward`` on the
  uint8 tensor.

The two differ even for inputs already on the 1/255 grid: TF's ``(q - 128) / 128`` is
pytorch-fid's ``2 y - 1`` at ``y = x * 255/256``, and for sizes other than 299 the resizes
differ (TF1 has no half-pixel centres). Record which mode produced a number.

CPU speed: every BatchNorm is folded into its convolution (exact in real arithmetic; float32
features move by ~1e-6 relative) and the trunk runs in ``channels_last`` under
``torch.inference_mode`` (oneDNN's preferred layout); bench/bench_inception.py measures both.
"""

from __future__ import annotations

import io
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from latentbench.features import register_feature_extractor
from latentbench.weights import WeightMissing, resolve_weight

__all__ = ["INPUT_MODES", "NAME", "WEIGHTS_FILE", "WEIGHTS_SOURCE", "InceptionV3Features", "build_inception_network"]

NAME = "inception-v3-compat"
WEIGHTS_NAME = "TF Inception-v3 2015-12-05 FID weights"
WEIGHTS_FILE = "weights-inception-2015-12-05-6726825d.pth"
# torch_fidelity.feature_extractor_inceptionv3.URL_INCEPTION_V3
WEIGHTS_SOURCE = (
    "the torch-fidelity v0.2.0 release "
    "(https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/" + WEIGHTS_FILE + ")"
)
INPUT_MODES = ("float", "uint8")
INPUT_SIZE = 299  # FeatureExtractorInceptionV3.INPUT_IMAGE_SIZE
DIM = 2048

# Children of torch-fidelity's FeatureExtractorInceptionV3 in the order its forward() applies
# them up to pool3; "fc" (the 1008-way logits) is applied after it for the Inception Score.
_TRUNK = (
    "Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3", "MaxPool_1",
    "Conv2d_3b_1x1", "Conv2d_4a_3x3", "MaxPool_2",
    "Mixed_5b", "Mixed_5c", "Mixed_5d", "Mixed_6a", "Mixed_6b", "Mixed_6c", "Mixed_6d", "Mixed_6e",
    "Mixed_7a", "Mixed_7b", "Mixed_7c", "AvgPool",
)  # fmt: skip


def _torch_fidelity_network() -> nn.Module:
    """torch-fidelity's InceptionV3 module with PyTorch's default initialisation, no weights loaded.

    The upstream constructor always loads a state dict (downloading it when no path is
    given); we hand it an in-memory ``None`` and skip that one call, so that loading stays
    under our control (local file only, ``weights_only=True``).
    """
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    class _Unloaded(FeatureExtractorInceptionV3):
        def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
            if state_dict is None:  # the placeholder read by the upstream constructor
                return None
            return super().load_state_dict(state_dict, strict=strict, assign=assign)

    placeholder = io.BytesIO()
    torch.save(None, placeholder)
    placeholder.seek(0)
    return _Unloaded(NAME, ["2048"], feature_extractor_weights_path=placeholder)


def _randomise(net: nn.Module, seed: int) -> None:
    """Seeded random weights that keep activations O(1) through the whole depth (tests/bench only).

    PyTorch's default conv init shrinks the second moment ~6x per conv+ReLU, so features of
    a default-initialised Inception are ~1e-6 and every tolerance test would pass trivially.
    He-normal convs (He et al. 2015, Eq. 10) and non-trivial BatchNorm statistics avoid that.
    """
    g = torch.Generator().manual_seed(seed)
    for m in net.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, nonlinearity="relu", generator=g)
        elif isinstance(m, nn.BatchNorm2d):
            m.weight.copy_(0.75 + 0.5 * torch.rand(m.num_features, generator=g))
            m.bias.copy_(0.1 * torch.randn(m.num_features, generator=g))
            m.running_mean.copy_(0.1 * torch.randn(m.num_features, generator=g))
            m.running_var.copy_(0.75 + 0.5 * torch.rand(m.num_features, generator=g))
        elif isinstance(m, nn.Linear):  # the logits layer: unit-variance logits for O(1) features
            nn.init.normal_(m.weight, std=m.in_features**-0.5, generator=g)
            nn.init.normal_(m.bias, std=0.1, generator=g)


def _fold_batchnorm(trunk: nn.Module) -> None:
    """Fold each BasicConv2d's eval-mode BatchNorm into its conv: conv -> bn -> relu becomes conv -> relu."""
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    for block in trunk.modules():
        conv, bn = getattr(block, "conv", None), getattr(block, "bn", None)
        if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d):
            block.conv = fuse_conv_bn_eval(conv, bn)
            block.bn = nn.Identity()


def _weights_path(weights: str | Path | None) -> Path:
    """The weight file: ``weights`` itself if it is a file path, else looked up in that directory."""
    if weights is not None and Path(weights).suffix in (".pth", ".pt"):
        if not Path(weights).is_file():
            raise WeightMissing(WEIGHTS_NAME, Path(weights).name, WEIGHTS_SOURCE, [Path(weights).parent])
        return Path(weights)
    return resolve_weight(WEIGHTS_NAME, WEIGHTS_FILE, weights, WEIGHTS_SOURCE)


@torch.no_grad()
def build_inception_network(weights: str | Path | None = None, random_init: bool = False, seed: int = 0) -> nn.Module:
    """torch-fidelity's InceptionV3 in eval mode with frozen parameters.

    ``weights``: the ``.pth`` file, or a directory searched for ``WEIGHTS_FILE`` (then the
    Hugging Face and torch.hub caches, see latentbench.weights). Missing -> WeightMissing.
    ``random_init=True`` skips the file and draws seeded random weights: same architecture,
    meaningless features, for tests and benchmarks only.
    """
    net = _torch_fidelity_network()
    if random_init:
        _randomise(net, seed)
    else:
        path = _weights_path(weights)
        state = torch.load(path, map_location="cpu", weights_only=True)
        net.load_state_dict(state)  # strict: a wrong or truncated file fails here, naming the keys
    return net.eval().requires_grad_(False)


def _check_images(images: torch.Tensor) -> None:
    if not isinstance(images, torch.Tensor):
        raise ValueError(f"images: expected a torch.Tensor, got {type(images).__name__}")
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"images: expected float NCHW with 3 channels, got shape {tuple(images.shape)}")
    if not images.is_floating_point():
        raise ValueError(f"images: expected floating-point values in [0, 1], got dtype {images.dtype}")
    if not bool(torch.isfinite(images).all()):
        raise ValueError("images: contains NaN or inf")


class InceptionV3Features:
    """Registry wrapper: images float NCHW in [0, 1] (any size) -> pool3 features [N, 2048] (float32).

    ``input_mode`` picks the preprocessing ("float": pytorch-fid / iFID, unclamped, bilinear
    without antialias; "uint8": torch-fidelity, clamped, quantised, TF1 resize; see the
    module docstring). ``channels_last`` runs the trunk in NHWC (faster on CPU, same values
    to float rounding); ``fold_batchnorm`` merges each BatchNorm into its convolution (same
    values to float rounding, fewer passes over memory). ``random_init`` is for tests and
    benchmarks only.
    """

    name = NAME
    dim = DIM

    def __init__(
        self,
        weights: str | Path | None = None,
        device: str | torch.device = "cpu",
        input_mode: str = "float",
        channels_last: bool = True,
        fold_batchnorm: bool = True,
        random_init: bool = False,
        seed: int = 0,
    ) -> None:
        if input_mode not in INPUT_MODES:
            raise ValueError(f"input_mode: expected one of {INPUT_MODES}, got {input_mode!r}")
        self.device = torch.device(device)
        self.input_mode = input_mode
        self.channels_last = channels_last
        self.random_init = random_init
        net = build_inception_network(weights, random_init=random_init, seed=seed)
        self.trunk = nn.Sequential(*(getattr(net, child) for child in _TRUNK))
        if fold_batchnorm:
            _fold_batchnorm(self.trunk)
        self.trunk = self.trunk.to(self.device)
        # IS logits: pool3 times the fc weight, no bias (ADM evaluator _create_softmax_graph reads
        # only the MatMul weight; torch-fidelity calls this feature "logits_unbiased").
        self.fc_weight = net.fc.weight.detach().to(self.device, torch.float32)
        if channels_last:
            self.trunk = self.trunk.to(memory_format=torch.channels_last)

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """Images in [0, 1] -> the network input: float32 [N, 3, 299, 299] on [-1, 1]."""
        _check_images(images)
        x = images.to(self.device, torch.float32)
        if self.input_mode == "uint8":
            from torch_fidelity.interpolate_compat_tensorflow import interpolate_bilinear_2d_like_tensorflow1x

            # the uint8 value as a float (exact), i.e. what torch-fidelity's x.to(float32) sees
            q = torch.floor(x.clamp(0.0, 1.0) * 255.0 + 0.5)
            # torch-fidelity FeatureExtractorInceptionV3.forward: TF1 resize, then (x - 128) / 128
            q = interpolate_bilinear_2d_like_tensorflow1x(q, size=(INPUT_SIZE, INPUT_SIZE), align_corners=False)
            return (q - 128) / 128
        # pytorch-fid InceptionV3.forward (resize_input, normalize_input), copied in iFID ifid/fid/fid.py
        if x.shape[-2:] != (INPUT_SIZE, INPUT_SIZE):  # same-size bilinear is the identity
            x = F.interpolate(x, size=(INPUT_SIZE, INPUT_SIZE), mode="bilinear", align_corners=False, antialias=False)
        return 2 * x - 1

    num_classes = 1008  # the TF graph's softmax width (1000 ImageNet classes + 8 unused)

    @torch.inference_mode()
    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        x = self.preprocess(images)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return self.trunk(x).flatten(1)

    @torch.inference_mode()
    def features_and_logits(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """pool3 features [N, 2048] and the unbiased 1008-way logits [N, 1008] (for IS)."""
        feats = self(images)
        return feats, feats @ self.fc_weight.T


register_feature_extractor(NAME)(InceptionV3Features)
