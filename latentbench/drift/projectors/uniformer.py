"""Segmentation as ControlNet-1.0's UniFormer annotator: UniFormer-S + UPerHead, ADE20K-150.

Written here (no maintained package has it, seesaw-notes §3) so that ``upernet_global_small.pth``
(an mmseg checkpoint: ``state_dict`` with ``backbone.*``, ``decode_head.*``, ``auxiliary_head.*``)
loads by key name. Structure from Sense-X/UniFormer as vendored in lllyasviel/ControlNet
``annotator/uniformer/mmseg/models/backbones/uniformer.py`` (``UniFormer``: embed_dim
64/128/320/512, layers 3/4/8/3, head_dim 64, mlp_ratio 4, qkv_bias, global attention in stage 3:
``exp/upernet_global_small/config.py`` windows=False, hybrid=False) and
``decode_heads/{uper_head,psp_head}.py`` (``UPerHead``: pool scales 1/2/3/6, 512 channels,
ConvModule = conv(no bias) + BN + ReLU, align_corners False). The auxiliary FCN head is a
training-only branch and is not built (its keys are ignored on load).

Inference as ``mmseg.apis.inference_segmentor`` with the ADE20K test pipeline
(``configs/_base_/datasets/ade20k.py``): keep-ratio rescale to scale (2048, 512) with cv2
bilinear (a 256^2 image runs at 512^2), Normalize(mean 123.675/116.28/103.53, std
58.395/57.12/57.375, to_rgb=True), whole-image inference, logits resized back bilinearly, argmax.
``seg_input_order`` (seesaw-notes §2.2): ControlNet passes an RGB array where mmseg expects BGR,
so ``to_rgb=True`` swaps it and the network sees **BGR** with RGB-ordered mean/std
(``controlnet_bgr``, the default: as the paper's tool ran); ``rgb`` feeds RGB as intended.
The class map is rendered with the ADE20K palette (``ade20k.py``).
Parity (recorded 2026-12-03, random weights with randomised BN statistics): upstream's
``UniFormer`` (config above) + ``UPerHead`` state dicts, prefixed ``backbone.`` /
``decode_head.``, load strictly into :class:`UniFormerUPerNet`; the four feature maps agree to
9e-6 and the logits to 9e-6 (fused attention vs upstream's explicit softmax), argmax identical.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from latentbench.drift.projectors import (
    assign_state,
    check_images,
    manifest_weight,
    register_projector,
)
from latentbench.drift.projectors.ade20k import ADE_PALETTE

MANIFEST_ENTRY = "uniformer-upernet-ade20k"
MEAN = (123.675, 116.28, 103.53)  # RGB order (ade20k.py img_norm_cfg)
STD = (58.395, 57.12, 57.375)
INPUT_ORDERS = ("controlnet_bgr", "rgb")


class _Mlp(nn.Module):
    """fc1-GELU-fc2, linear (``Mlp``) or 1x1 conv (``CMlp``) by ``conv``."""

    def __init__(self, dim: int, hidden: int, conv: bool) -> None:
        super().__init__()
        layer = (lambda a, b: nn.Conv2d(a, b, 1)) if conv else nn.Linear
        self.fc1, self.act, self.fc2 = layer(dim, hidden), nn.GELU(), layer(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class _CBlock(nn.Module):
    """Local MHRA block: depthwise-conv position encoding, BN, 1x1 -> 5x5 depthwise -> 1x1, conv MLP."""

    def __init__(self, dim: int, mlp_ratio: float) -> None:
        super().__init__()
        self.pos_embed = nn.Conv2d(dim, dim, 3, padding=1, groups=dim)
        self.norm1 = nn.BatchNorm2d(dim)
        self.conv1 = nn.Conv2d(dim, dim, 1)
        self.conv2 = nn.Conv2d(dim, dim, 1)
        self.attn = nn.Conv2d(dim, dim, 5, padding=2, groups=dim)
        self.norm2 = nn.BatchNorm2d(dim)
        self.mlp = _Mlp(dim, int(dim * mlp_ratio), conv=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.pos_embed(x)
        x = x + self.conv2(self.attn(self.conv1(self.norm1(x))))
        return x + self.mlp(self.norm2(x))


class _Attention(nn.Module):
    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, dim * 3, bias=True)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v)  # softmax(q k^T / sqrt(head_dim)) v
        return self.proj(out.transpose(1, 2).reshape(b, n, c))


class _SABlock(nn.Module):
    """Global MHRA block: depthwise-conv position encoding, then a pre-norm transformer block."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float) -> None:
        super().__init__()
        self.pos_embed = nn.Conv2d(dim, dim, 3, padding=1, groups=dim)
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = _Attention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = _Mlp(dim, int(dim * mlp_ratio), conv=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.pos_embed(x)
        b, c, h, w = x.shape
        t = x.flatten(2).transpose(1, 2)
        t = t + self.attn(self.norm1(t))
        t = t + self.mlp(self.norm2(t))
        return t.transpose(1, 2).reshape(b, c, h, w)


class _PatchEmbed(nn.Module):
    """Strided conv + LayerNorm over channels (eps 1e-5, as upstream's plain nn.LayerNorm)."""

    def __init__(self, c_in: int, c_out: int, patch: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(c_in, c_out, patch, stride=patch)
        self.norm = nn.LayerNorm(c_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.proj(x)
        return self.norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class UniFormer(nn.Module):
    """UniFormer backbone: four stages (conv, conv, global attention, global attention), each
    output LayerNorm-ed; returns the four feature maps (strides 4, 8, 16, 32)."""

    def __init__(
        self,
        embed_dim: tuple[int, ...] = (64, 128, 320, 512),
        layers: tuple[int, ...] = (3, 4, 8, 3),
        head_dim: int = 64,
        mlp_ratio: float = 4.0,
    ) -> None:
        super().__init__()
        chans = (3, *embed_dim)
        for i in range(4):
            setattr(self, f"patch_embed{i + 1}", _PatchEmbed(chans[i], chans[i + 1], 4 if i == 0 else 2))
            dim = embed_dim[i]
            blocks = [_CBlock(dim, mlp_ratio) if i < 2 else _SABlock(dim, dim // head_dim, mlp_ratio) for _ in range(layers[i])]
            setattr(self, f"blocks{i + 1}", nn.ModuleList(blocks))
            setattr(self, f"norm{i + 1}", nn.LayerNorm(dim, eps=1e-6))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        outs = []
        for i in range(1, 5):
            x = getattr(self, f"patch_embed{i}")(x)
            for block in getattr(self, f"blocks{i}"):
                x = block(x)
            outs.append(getattr(self, f"norm{i}")(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2).contiguous())
        return outs


class _ConvModule(nn.Module):
    """mmcv ConvModule with BN: conv (no bias) -> BN -> ReLU; keys ``conv.*``, ``bn.*``."""

    def __init__(self, c_in: int, c_out: int, kernel: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, kernel, padding=kernel // 2, bias=False)
        self.bn = nn.BatchNorm2d(c_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)))


def _resize(x: torch.Tensor, size) -> torch.Tensor:
    return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False)


class UPerHead(nn.Module):
    """UPerNet head: pyramid pooling on the last map, FPN top-down path, fuse, 1x1 classifier."""

    def __init__(self, in_channels=(64, 128, 320, 512), channels: int = 512, num_classes: int = 150, pool_scales=(1, 2, 3, 6)) -> None:
        super().__init__()
        self.psp_modules = nn.ModuleList(
            nn.Sequential(nn.AdaptiveAvgPool2d(s), _ConvModule(in_channels[-1], channels, 1)) for s in pool_scales
        )
        self.bottleneck = _ConvModule(in_channels[-1] + len(pool_scales) * channels, channels, 3)
        self.lateral_convs = nn.ModuleList(_ConvModule(c, channels, 1) for c in in_channels[:-1])
        self.fpn_convs = nn.ModuleList(_ConvModule(channels, channels, 3) for _ in in_channels[:-1])
        self.fpn_bottleneck = _ConvModule(len(in_channels) * channels, channels, 3)
        self.conv_seg = nn.Conv2d(channels, num_classes, 1)

    def forward(self, feats: list[torch.Tensor]) -> torch.Tensor:
        top = feats[-1]
        psp = [top] + [_resize(m(top), top.shape[2:]) for m in self.psp_modules]
        laterals = [conv(f) for conv, f in zip(self.lateral_convs, feats)] + [self.bottleneck(torch.cat(psp, 1))]
        for i in range(len(laterals) - 1, 0, -1):
            laterals[i - 1] = laterals[i - 1] + _resize(laterals[i], laterals[i - 1].shape[2:])
        outs = [conv(lat) for conv, lat in zip(self.fpn_convs, laterals)] + [laterals[-1]]
        outs = [outs[0]] + [_resize(o, outs[0].shape[2:]) for o in outs[1:]]
        return self.conv_seg(self.fpn_bottleneck(torch.cat(outs, 1)))  # dropout: identity at inference


class UniFormerUPerNet(nn.Module):
    """mmseg ``EncoderDecoder``: normalised image (N, 3, H, W) -> logits (N, 150, H, W)."""

    def __init__(self, num_classes: int = 150) -> None:
        super().__init__()
        self.backbone = UniFormer()
        self.decode_head = UPerHead(num_classes=num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _resize(self.decode_head(self.backbone(x)), x.shape[2:])


def load_uniformer_state(model: UniFormerUPerNet, path) -> None:
    """Load the mmseg checkpoint (``{"state_dict": ...}`` or a bare state dict) by key name,
    dropping the training-only ``auxiliary_head``; strict otherwise."""
    payload = torch.load(path, map_location="cpu", weights_only=False)
    state = payload.get("state_dict", payload)
    state = {k: v for k, v in state.items() if not k.startswith("auxiliary_head.")}
    assign_state(model, state, path)


def rescale_size(height: int, width: int, scale: tuple[int, int] = (2048, 512)) -> tuple[int, int]:
    """mmcv ``imrescale`` keep-ratio target (h, w): factor min(long/long_edge, short/short_edge)."""
    factor = min(max(scale) / max(height, width), min(scale) / min(height, width))
    return int(height * factor + 0.5), int(width * factor + 0.5)


class UniformerSegProjector:
    """uint8 RGB (N, H, W, 3) -> ADE20K class maps int64 (N, H, W); ``palette`` renders them."""

    kind = "labels"
    palette = ADE_PALETTE

    def __init__(self, weights=None, device="cpu", random_init: bool = False, seg_input_order: str = "controlnet_bgr", batch_size: int = 8) -> None:
        if seg_input_order not in INPUT_ORDERS:
            raise ValueError(f"seg_input_order: expected one of {INPUT_ORDERS}, got {seg_input_order!r}")
        self.seg_input_order = seg_input_order
        self.device = torch.device(device)
        self.batch_size = batch_size
        path = None if random_init else manifest_weight(MANIFEST_ENTRY, weights)
        if path is None:
            self.model = UniFormerUPerNet()
        else:
            with torch.device("meta"):
                self.model = UniFormerUPerNet()
            load_uniformer_state(self.model, path)
        self.model.to(self.device).eval().requires_grad_(False)
        self.mean = torch.tensor(MEAN, device=self.device).view(1, 3, 1, 1)
        self.std = torch.tensor(STD, device=self.device).view(1, 3, 1, 1)

    def network_input(self, images: np.ndarray) -> torch.Tensor:
        """The tensor the network sees: rescaled (cv2 bilinear), channel order per
        ``seg_input_order``, normalised with the RGB-ordered mean/std."""
        import cv2

        images = check_images(images)
        h, w = rescale_size(*images.shape[1:3])
        arr = np.stack([cv2.resize(img, (w, h), interpolation=cv2.INTER_LINEAR) for img in images])
        if self.seg_input_order == "controlnet_bgr":
            arr = arr[..., ::-1]  # mmseg's to_rgb swap applied to an array that was already RGB
        x = torch.from_numpy(np.ascontiguousarray(arr)).to(self.device).permute(0, 3, 1, 2).float()
        return (x - self.mean) / self.std

    @torch.inference_mode()
    def labels(self, images: np.ndarray) -> np.ndarray:
        images = check_images(images)
        out = []
        for i in range(0, len(images), self.batch_size):
            chunk = images[i : i + self.batch_size]
            logits = self.model(self.network_input(chunk))
            out.append(_resize(logits, chunk.shape[1:3]).argmax(1).cpu().numpy())
        return np.concatenate(out).astype(np.int64)


register_projector("uniformer-s-ade20k", "seg")(UniformerSegProjector)
