"""Depth as ControlNet-1.0's MiDaS annotator: DPT-Hybrid (MiDaS v3.0) + min-max normalisation.

Implementation choice (seesaw-notes §3): timm builds the backbone (``vit_base_r50_s16_384``: a
ResNet-50 stem/stages 0-2 + ViT-B/16), and the DPT reassemble/fusion/head modules are our own,
laid out under MiDaS' key names so ``dpt_hybrid-midas-501f0c75.pt`` loads as is:
``pretrained.model.*`` (the timm ViT), ``pretrained.act_postprocess{3,4}.*`` (readout projection +
1x1 conv; +3x3 stride-2 conv for layer 4), ``scratch.layer{1-4}_rn``, ``scratch.refinenet{1-4}``,
``scratch.output_conv``. Structure from isl-org/MiDaS as vendored in lllyasviel/ControlNet
``annotator/midas/midas/{dpt_depth,vit,blocks}.py`` (``DPTDepthModel(backbone="vitb_rn50_384",
non_negative=True)``, features 256, readout "project", hooks: ResNet stages 0 and 1, ViT
blocks 8 and 11, fusion blocks with bilinear align_corners=True up-sampling, no BN). The key
names agree with the rename rules of transformers' ``convert_dpt_hybrid_to_pytorch.py``, which
also shows the file carries the timm classifier (``pretrained.model.head.*``): built here too,
so loading stays strict.
Parity (recorded 2026-12-03, random weights, timm 1.0.31): the state dict of upstream's
``DPTDepthModel(backbone="vitb_rn50_384", non_negative=True)`` loads strictly into
:class:`DPTHybrid` and both give identical outputs on 2x3x256x256 inputs (max |diff| 0.0).
Position embeddings are resized bilinearly to the input grid at run time, as MiDaS'
``_resize_pos_embed`` does, so the 256x256 image runs as is (spec §7.2 "native").

Annotator semantics (``annotator/midas/__init__.py``): input = uint8 / 127.5 - 1 (no MiDaS
transform); output d -> d - min -> / max -> x255 -> clip -> truncate to uint8 (``astype``, not
round); we then divide by 255 for the [0, 1] map, and return zeros for a constant map (where
the annotator would divide by zero).
"""

from __future__ import annotations

import math

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

MANIFEST_ENTRY = "midas-dpt-hybrid"
FEATURES = 256


def normalise_depth(depth: torch.Tensor | np.ndarray) -> np.ndarray:
    """Raw network output (H, W) -> the annotator's uint8 depth image (H, W).

    ``(d - min) / max(d - min) * 255``, clipped, truncated by ``astype(uint8)``; a constant map
    gives zeros. Invariant to ``a * d + b`` for a > 0 up to float rounding (spec §7.5).
    """
    d = depth.detach().float().cpu().numpy() if isinstance(depth, torch.Tensor) else np.asarray(depth, np.float32)
    d = d - d.min()
    top = d.max()
    if not top > 0:
        return np.zeros(d.shape, np.uint8)
    return (d / top * 255.0).clip(0, 255).astype(np.uint8)


class _ProjectReadout(nn.Module):
    """Concatenate the class token to every patch token, Linear(2C, C) + GELU (MiDaS ``ProjectReadout``)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.project = nn.Sequential(nn.Linear(2 * dim, dim), nn.GELU())

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        patches = tokens[:, 1:]
        readout = tokens[:, :1].expand_as(patches)
        return self.project(torch.cat((patches, readout), -1))


class _ResidualConvUnit(nn.Module):
    """ReLU-conv3x3-ReLU-conv3x3 + skip (MiDaS ``ResidualConvUnit_custom``, bn=False)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(dim, dim, 3, padding=1)
        self.conv2 = nn.Conv2d(dim, dim, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(F.relu(self.conv1(F.relu(x))))


class _FusionBlock(nn.Module):
    """(x [+ RCU(skip)]) -> RCU -> x2 bilinear (align_corners) -> 1x1 conv (``FeatureFusionBlock_custom``)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.resConfUnit1 = _ResidualConvUnit(dim)
        self.resConfUnit2 = _ResidualConvUnit(dim)
        self.out_conv = nn.Conv2d(dim, dim, 1)

    def forward(self, x: torch.Tensor, skip: torch.Tensor | None = None) -> torch.Tensor:
        if skip is not None:
            x = x + self.resConfUnit1(skip)
        x = F.interpolate(self.resConfUnit2(x), scale_factor=2, mode="bilinear", align_corners=True)
        return self.out_conv(x)


class DPTHybrid(nn.Module):
    """MiDaS v3.0 DPT-Hybrid: images in [-1, 1] (N, 3, H, W), H and W multiples of 32 -> relative
    inverse depth (N, H, W), non-negative."""

    def __init__(self) -> None:
        super().__init__()
        import timm

        self.pretrained = nn.Module()
        self.pretrained.model = timm.create_model("vit_base_r50_s16_384", pretrained=False)
        dim = self.pretrained.model.embed_dim
        # act_postprocess3/4 keep MiDaS' Sequential indices (0 readout, 1-2 reshape, 3+ convs).
        self.pretrained.act_postprocess3 = nn.Sequential(
            _ProjectReadout(dim), nn.Identity(), nn.Identity(), nn.Conv2d(dim, 768, 1)
        )
        self.pretrained.act_postprocess4 = nn.Sequential(
            _ProjectReadout(dim), nn.Identity(), nn.Identity(), nn.Conv2d(dim, 768, 1), nn.Conv2d(768, 768, 3, stride=2, padding=1)
        )
        self.scratch = nn.Module()
        for i, c in enumerate((256, 512, 768, 768), start=1):
            setattr(self.scratch, f"layer{i}_rn", nn.Conv2d(c, FEATURES, 3, padding=1, bias=False))
        for i in range(1, 5):
            setattr(self.scratch, f"refinenet{i}", _FusionBlock(FEATURES))
        self.scratch.output_conv = nn.Sequential(
            nn.Conv2d(FEATURES, FEATURES // 2, 3, padding=1),
            nn.Upsample(scale_factor=2, mode="bilinear", align_corners=True),
            nn.Conv2d(FEATURES // 2, 32, 3, padding=1),
            nn.ReLU(True),
            nn.Conv2d(32, 1, 1),
            nn.ReLU(True),  # non_negative=True
            nn.Identity(),
        )

    def _backbone(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """The four hooked activations of MiDaS' ``forward_vit`` for the hybrid backbone."""
        vit = self.pretrained.model
        resnet = vit.patch_embed.backbone
        h, w = x.shape[-2] // 16, x.shape[-1] // 16
        y = resnet.stem(x)
        layer1 = resnet.stages[0](y)
        layer2 = resnet.stages[1](layer1)
        y = resnet.norm(resnet.stages[2](layer2))
        tokens = vit.patch_embed.proj(y).flatten(2).transpose(1, 2)
        pos = vit.pos_embed
        grid = pos[:, 1:]
        side = math.isqrt(grid.shape[1])
        grid = grid.reshape(1, side, side, -1).permute(0, 3, 1, 2)
        grid = F.interpolate(grid, size=(h, w), mode="bilinear")  # MiDaS _resize_pos_embed
        pos = torch.cat((pos[:, :1], grid.permute(0, 2, 3, 1).reshape(1, h * w, -1)), 1)
        tokens = torch.cat((vit.cls_token.expand(x.shape[0], -1, -1), tokens), 1) + pos
        hooked = {}
        for i, block in enumerate(vit.blocks):
            tokens = block(tokens)
            if i in (8, 11):
                hooked[i] = tokens
        layers = []
        for post, t in ((self.pretrained.act_postprocess3, hooked[8]), (self.pretrained.act_postprocess4, hooked[11])):
            t = post[0](t).transpose(1, 2).reshape(x.shape[0], -1, h, w)
            layers.append(post[3:](t))
        return layer1, layer2, layers[0], layers[1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] % 32 or x.shape[-2] % 32:
            raise ValueError(f"images: DPT-Hybrid needs sides that are multiples of 32, got {tuple(x.shape[-2:])}")
        l1, l2, l3, l4 = self._backbone(x)
        s = self.scratch
        path = s.refinenet4(s.layer4_rn(l4))
        path = s.refinenet3(path, s.layer3_rn(l3))
        path = s.refinenet2(path, s.layer2_rn(l2))
        path = s.refinenet1(path, s.layer1_rn(l1))
        return s.output_conv(path).squeeze(1)


def load_midas_state(model: DPTHybrid, path) -> None:
    """Load ``dpt_hybrid-midas-501f0c75.pt`` (a plain state dict, or {"model": ...} as MiDaS'
    ``BaseModel.load`` accepts); strict, so a wrong file fails naming the keys."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    if "optimizer" in state or "model" in state:
        state = state["model"]
    assign_state(model, state, path)


class MidasDepthProjector:
    """uint8 RGB (N, H, W, 3) -> the annotator's normalised depth maps float32 (N, H, W) in [0, 1]."""

    kind = "map"

    def __init__(self, weights=None, device="cpu", random_init: bool = False, batch_size: int = 16) -> None:
        self.device = torch.device(device)
        self.batch_size = batch_size
        path = None if random_init else manifest_weight(MANIFEST_ENTRY, weights)  # WeightMissing before building
        if path is None:
            self.model = DPTHybrid()
        else:
            with torch.device("meta"):  # no random init of 123 M parameters that the file replaces
                self.model = DPTHybrid()
            load_midas_state(self.model, path)
        self.model.to(self.device).eval().requires_grad_(False)

    @torch.inference_mode()
    def raw(self, images: np.ndarray) -> torch.Tensor:
        """The network's relative inverse depth (N, H, W), before normalisation."""
        images = check_images(images)
        out = []
        for i in range(0, len(images), self.batch_size):
            x = torch.from_numpy(images[i : i + self.batch_size]).to(self.device).permute(0, 3, 1, 2).float()
            out.append(self.model(x / 127.5 - 1.0).float().cpu())
        return torch.cat(out)

    def __call__(self, images: np.ndarray) -> np.ndarray:
        return np.stack([normalise_depth(d) for d in self.raw(images)]).astype(np.float32) / 255.0


register_projector("midas-dpt-hybrid", "depth")(MidasDepthProjector)
