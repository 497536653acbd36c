"""The five timm representation spaces of FDr6 (spec metrics-diffusability §10; Yang et al. 2026).

Each space is a timm model, a pooling and an input size, exactly as the spec's table (from
FD-Loss ``eval_all_fds.py`` ``FDR6_MODELS``). Weights are the timm Hugging Face checkpoints
(``timm/<model>``, file ``model.safetensors``), read from local disk only (latentbench.weights);
the sixth space of FDr6 is the Inception pool3 of ``latentbench.features.inception``.

Preprocessing (spec §10): [0, 1] images, bicubic antialiased resize to the space's size, then
the model's own mean/std (timm ``pretrained_cfg``); bf16 autocast on a CUDA GPU with native bf16
(latentbench.precision.autocast_dtype), else fp32; features returned
as float32 (statistics accumulate in float64 downstream). Pooling:
- ``cls``: the class token of the final (normed) token sequence, ``forward_features(x)[:, 0]``;
- ``avg`` / ``attn``: timm's pooled pre-logits feature, ``forward_head(..., pre_logits=True)``
  (ConvNeXt: global average pool + the head's LayerNorm; SigLIP: the attention-pool head).
  The spec names the pooling, not the exact call; this is timm's standard pooled feature.
ViTs are built with ``dynamic_img_size=True``, so a size other than the pretraining one
(DINOv2 and CLIP at 256, SigLIP at 224) interpolates the position embeddings at run time.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from latentbench.features import register_feature_extractor
from latentbench.features.checkpoints import load_timm_weights
from latentbench.precision import autocast_dtype
from latentbench.weights import WeightMissing, resolve_weight

__all__ = ["REPRESENTATION_SPACES", "RepresentationSpace", "TimmRepresentation", "representation_weights"]

WEIGHTS_FILE = "model.safetensors"  # the file of every timm/<model> Hugging Face repo


@dataclass(frozen=True)
class RepresentationSpace:
    """One FDr6 space: timm model name, pooling ("cls" | "avg" | "attn") and input size."""

    key: str
    model: str
    pooling: str
    size: int

    @property
    def repo(self) -> str:
        return f"timm/{self.model}"

    @property
    def feature_name(self) -> str:
        return f"fdr-{self.key}"


# spec metrics-diffusability.md §10 table (FD-Loss eval_all_fds.py FDR6_MODELS)
REPRESENTATION_SPACES: dict[str, RepresentationSpace] = {
    s.key: s
    for s in (
        RepresentationSpace("convnext", "convnextv2_base.fcmae_ft_in22k_in1k", "avg", 224),
        RepresentationSpace("dinov2_cls", "vit_large_patch14_dinov2.lvd142m", "cls", 256),
        RepresentationSpace("mae_cls", "vit_large_patch16_224.mae", "cls", 224),
        RepresentationSpace("siglip_cls", "vit_so400m_patch16_siglip_256.v2_webli", "attn", 224),
        RepresentationSpace("clip_cls", "vit_large_patch14_clip_224.openai", "cls", 256),
    )
}


def representation_weights(space: RepresentationSpace, weights_dir: str | Path | None) -> Path:
    """The space's checkpoint: ``<weights_dir>/<model>.safetensors``, else ``model.safetensors`` of
    the ``timm/<model>`` snapshot in the Hugging Face cache. Missing -> WeightMissing naming both."""
    source = f"the Hugging Face repo {space.repo} (file {WEIGHTS_FILE})"
    local = f"{space.model}.safetensors"
    if weights_dir is not None and (Path(weights_dir).expanduser() / local).is_file():
        return Path(weights_dir).expanduser() / local
    try:
        return resolve_weight(space.model, WEIGHTS_FILE, None, source, repo=space.repo)
    except WeightMissing as missing:
        searched = ([Path(weights_dir)] if weights_dir is not None else []) + list(map(Path, missing.searched))
        raise WeightMissing(space.model, local, source, searched) from None


def _create(model: str, device: torch.device):
    import timm

    kwargs = {"dynamic_img_size": True} if model.startswith("vit_") else {}
    return timm.create_model(model, pretrained=False, **kwargs).to(device)


class TimmRepresentation:
    """Registry wrapper: images float NCHW in [0, 1] -> the space's pooled features [N, D] (float32).

    ``weights``: the ``model.safetensors`` file or a weights directory (see
    :func:`representation_weights`); missing -> WeightMissing. ``random_init`` keeps timm's
    random initialisation (tests and benchmarks only).
    """

    def __init__(
        self,
        space: RepresentationSpace | str,
        weights: str | Path | None = None,
        device: str | torch.device = "cpu",
        random_init: bool = False,
    ) -> None:
        self.space = REPRESENTATION_SPACES[space] if isinstance(space, str) else space
        if self.space.pooling not in ("cls", "avg", "attn"):
            raise ValueError(f"pooling: expected cls, avg or attn, got {self.space.pooling!r}")
        self.name = self.space.feature_name
        self.device = torch.device(device)
        self.model = _create(self.space.model, self.device).eval().requires_grad_(False)
        if not random_init:
            path = Path(weights) if weights is not None and Path(weights).is_file() else representation_weights(self.space, weights)
            load_timm_weights(self.model, path)  # strict: a wrong file fails naming its keys
        cfg = self.model.pretrained_cfg
        self.mean = torch.tensor(cfg["mean"], device=self.device).view(1, 3, 1, 1)
        self.std = torch.tensor(cfg["std"], device=self.device).view(1, 3, 1, 1)
        self.dim = int(self.model.num_features)

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """[0, 1] images -> bicubic antialiased resize to the space's size -> the model's mean/std."""
        if images.ndim != 4 or images.shape[1] != 3 or not images.is_floating_point():
            raise ValueError(f"images: expected float NCHW with 3 channels, got {tuple(images.shape)} {images.dtype}")
        x = images.to(self.device, torch.float32)
        if x.shape[-2:] != (self.space.size, self.space.size):
            x = F.interpolate(x, size=(self.space.size,) * 2, mode="bicubic", antialias=True, align_corners=False)
        return (x - self.mean) / self.std

    @torch.inference_mode()
    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        x = self.preprocess(images)
        # bf16 autocast only on a GPU with native bf16 (latentbench.precision, logged once).
        dtype = autocast_dtype(self.device)
        with torch.autocast("cuda", dtype=dtype or torch.float32, enabled=dtype is not None):
            tokens = self.model.forward_features(x)
            if self.space.pooling == "cls":
                pooled = tokens[:, 0]
            else:
                pooled = self.model.forward_head(tokens, pre_logits=True)
        return pooled.float()


for _space in REPRESENTATION_SPACES.values():
    register_feature_extractor(_space.feature_name)(
        lambda weights=None, device="cpu", _s=_space, **kw: TimmRepresentation(_s, weights, device, **kw)
    )


def fdr6_plan(weights_dir: str | Path | None) -> dict:
    """The weight file of each of FDr6's six spaces, or why FDr6 cannot run here.

    Returns ``{"spaces": {space: path}}`` when all six files are found (inception = FID(ADM)'s
    Inception pool3), else ``{"not_run": "not run: needs ..."}`` naming every missing file.
    """
    from latentbench.features import inception

    spaces: dict[str, str] = {}
    missing: list[str] = []
    try:
        spaces["inception"] = str(resolve_weight(inception.WEIGHTS_NAME, inception.WEIGHTS_FILE, weights_dir, inception.WEIGHTS_SOURCE))
    except WeightMissing as err:
        missing.append(f"{err.filename} ({err.source})")
    for key, space in REPRESENTATION_SPACES.items():
        try:
            spaces[key] = str(representation_weights(space, weights_dir))
        except WeightMissing as err:
            missing.append(f"{err.filename} ({err.source})")
    if missing:
        return {"not_run": f"not run: FDr6 needs all six weights in {weights_dir}; missing: " + "; ".join(missing)}
    return {"spaces": spaces}


def fdr6_extractors(spaces: dict[str, str], device: str | torch.device = "cpu") -> dict:
    """The six FDr6 feature extractors from :func:`fdr6_plan`'s ``spaces``.

    Inception reads 8-bit images as the ADM evaluator does (``input_mode="uint8"``).
    """
    from latentbench.features.inception import InceptionV3Features

    nets = {}
    for key, path in spaces.items():
        if key == "inception":
            nets[key] = InceptionV3Features(weights=path, device=device, input_mode="uint8")
        else:
            nets[key] = TimmRepresentation(key, weights=path, device=device)
    return nets
