"""The frozen networks a trainable tokenizer trains against: perceptual term and VF/REPA target.

Torch-free tables and rules (the DAG reads them at parse time); the networks themselves are
built by :mod:`latentbench.features.foundation_net` and :mod:`latentbench.features.lpips_vgg`.

**Foundation encoders** (spec metrics-diffusability.md §11.3; naming = iREPA encoder ids,
``End2End-Diffusion/iREPA`` ``ldm/vision_encoder.py``): the 14 VFMs of the study's Table 1,
each a timm model (transformers' ``Dinov2Model`` for WebSSL, which timm lacks) built with
``pretrained=False`` and loaded from its weights-manifest file. Every encoder returns a
**16x16** grid of patch tokens: /14 models read 224 px, /16 models 256 px; learned absolute
position embeddings are resampled to the grid once when the file is loaded (as iREPA does), the
RoPE-based DINOv3 / PE adapt to it at run time (timm ``dynamic_img_size``). Per encoder, as
iREPA reads it:

- normalisation of the [0, 1] input: ImageNet mean/std (DINOv2/v3, MAE, MoCo v3, WebSSL),
  OpenAI-CLIP (CLIP; C-RADIO, whose input conditioner timm folds into its ``pretrained_cfg``),
  0.5/0.5 (Perception Encoder);
- resize to the input size: bicubic (DINOv2, CLIP, WebSSL; MAE/MoCo read 256 px unresized in
  iREPA, bicubic here when the input differs), bilinear (PE, C-RADIO), bilinear antialiased
  (DINOv3, its ``make_dinov3_transform``);
- token layer: after the final norm for DINOv2/v3, MoCo v3, WebSSL (``x_norm_patchtokens`` /
  timm ``forward_features`` / ``last_hidden_state``); **before** it for CLIP (iREPA's
  ``UpdatedVisionTransformer`` stops before ``ln_post``), MAE (its ``forward_features`` skips
  ``norm``) and PE (``forward_features(norm=False)``); C-RADIO and PE-Lang/Spatial have none.

**Perceptual term** of Eq. 12: LPIPS-VGG v0.1 (spec models.md §3.3) at paper scale; the demo
CNN's LPIPS-style distance (``demo-cnn``) in the CPU demo, whose VF/REPA variant is also
``demo-cnn`` — every number trained that way is labelled with it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "DEMO_NET",
    "FOUNDATION_SPECS",
    "GRID",
    "LPIPS_VGG",
    "LPIPS_VGG_WEIGHTS",
    "PERCEPTUAL_NETS",
    "FoundationSpec",
    "alignment_encoder",
    "network_weights",
    "perceptual_net",
]

GRID = 16  # patch tokens per side (spec §11.3)
DEMO_NET = "demo-cnn"
LPIPS_VGG = "lpips-vgg"
PERCEPTUAL_NETS = (LPIPS_VGG, DEMO_NET)
LPIPS_VGG_WEIGHTS = ("lpips-vgg16-trunk", "lpips-vgg-head")  # manifest names: VGG16 trunk, v0.1 heads

IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))  # timm IMAGENET_DEFAULT_MEAN/STD
OPENAI_CLIP = ((0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711))
HALF = ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))  # PE's Normalize([0.5]*3, [0.5]*3)
# regularisers aligned to a foundation encoder (latentbench.tokenizers.regularizers.VF_CLUSTERS + repa)
ALIGNING_REGULARIZERS = ("mcos", "mdms", "mcos+mdms", "repa")


@dataclass(frozen=True)
class FoundationSpec:
    """One foundation encoder: how to build it, load it and read its 16x16 token grid.

    ``model``: timm model name with its pretrained tag (built ``pretrained=False``), or for the
    ``transformers`` backend the ``Dinov2Config`` fields in ``kwargs``. ``weights``: its weights-
    manifest entry. ``convert``: a state-dict converter applied before loading (``"mocov3"``).
    ``kwargs``: extra model constructor arguments (tests narrow a model through them).
    """

    key: str
    irepa_id: str
    backend: str
    model: str
    weights: str
    patch: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    resize: str = "bicubic"
    antialias: bool = False
    final_norm: bool = True
    convert: str | None = None
    kwargs: Mapping[str, Any] = field(default_factory=dict)

    @property
    def input_size(self) -> int:
        """Input side giving the 16x16 grid: 224 for /14, 256 for /16."""
        return self.patch * GRID


def _timm(key, irepa_id, model, weights, patch, norm, abs_pos=False, kwargs=None, **kw) -> FoundationSpec:
    """A timm encoder. ``abs_pos``: a learned absolute position embedding, built for the 16x16 grid
    (``img_size`` = input size) so timm's checkpoint filter resamples the file's grid once at load,
    as iREPA's ``resample_abs_pos_embed`` does (RoPE / PE models adapt to the input at run time)."""
    kwargs = {**({"img_size": patch * GRID} if abs_pos else {}), **(kwargs or {})}
    return FoundationSpec(key, irepa_id, "timm", model, weights, patch, *norm, kwargs=kwargs, **kw)


# Model names: timm 1.0.31 registry; weights: latentbench/weights_manifest.yaml.
FOUNDATION_SPECS: dict[str, FoundationSpec] = {
    s.key: s
    for s in (
        # timm's QuickGELU tower = OpenAI CLIP's activation; same file as FDr6's clip_cls space
        _timm("CLIP-L", "clip-vit-L", "vit_large_patch14_clip_quickgelu_224.openai", "fdr6-clip-large", 14,
              OPENAI_CLIP, abs_pos=True, final_norm=False),
        _timm("CRadio-B", "cradio-vit-b", "vit_base_patch16_radio_v3.c_radio", "cradio-v3-base", 16, OPENAI_CLIP,
              abs_pos=True, resize="bilinear"),
        _timm("CRadio-L", "cradio-vit-l", "vit_large_patch16_radio_v3.c_radio", "cradio-v3-large", 16, OPENAI_CLIP,
              abs_pos=True, resize="bilinear"),
        _timm("DINOv2-B", "dinov2-vit-b", "vit_base_patch14_dinov2.lvd142m", "dinov2-base", 14, IMAGENET, abs_pos=True),
        _timm("DINOv2-L", "dinov2-vit-l", "vit_large_patch14_dinov2.lvd142m", "fdr6-dinov2-large", 14, IMAGENET,
              abs_pos=True),
        _timm("DINOv3-B", "dinov3-vit-b16", "vit_base_patch16_dinov3.lvd1689m", "dinov3-base", 16, IMAGENET,
              resize="bilinear", antialias=True),
        _timm("DINOv3-L", "dinov3-vit-l16", "vit_large_patch16_dinov3.lvd1689m", "dinov3-large", 16, IMAGENET,
              resize="bilinear", antialias=True),
        _timm("LangPE-L", "langpe-vit-l", "vit_pe_lang_large_patch14_448.fb", "pe-lang-large", 14, HALF,
              resize="bilinear", final_norm=False),
        _timm("MAE-L", "mae-vit-l", "vit_large_patch16_224.mae", "fdr6-mae-large", 16, IMAGENET, abs_pos=True,
              final_norm=False),
        # MoCo v3 ViT-L = timm's ViT-L/16 layout (moco-v3 vits.py); iREPA's converted-key file, no head
        _timm("MoCov3-L", "mocov3-vit-l", "vit_large_patch16_224", "mocov3-vit-large", 16, IMAGENET,
              abs_pos=True, convert="mocov3", kwargs={"num_classes": 0}),
        _timm("PE-B", "pe-vit-b", "vit_pe_core_base_patch16_224.fb", "pe-core-base", 16, HALF,
              resize="bilinear", final_norm=False),
        _timm("PE-L", "pe-vit-l", "vit_pe_core_large_patch14_336.fb", "pe-core-large", 14, HALF,
              resize="bilinear", final_norm=False),
        _timm("SpatialPE-B", "spatialpe-vit-b", "vit_pe_spatial_base_patch16_512.fb", "pe-spatial-base", 16, HALF,
              resize="bilinear", final_norm=False),
        _timm("SpatialPE-L", "spatialpe-vit-l", "vit_pe_spatial_large_patch14_448.fb", "pe-spatial-large", 14, HALF,
              resize="bilinear", final_norm=False),
        # Web-DINO ViT-300M = DINOv2 ViT-L/14 with SwiGLU FFN and LayerScale 1e-5, 224 px, no registers
        # (facebookresearch/webssl dinov2/vision_transformer.py webssl_dino300m_full2b_224)
        FoundationSpec(
            "WebSSL-300m", "webssl-vit-dino300m_full2b_224", "transformers", "Dinov2Model", "webssl-dino300m",
            14, *IMAGENET,
            kwargs={"hidden_size": 1024, "num_hidden_layers": 24, "num_attention_heads": 16, "mlp_ratio": 4,
                    "image_size": 224, "patch_size": 14, "use_swiglu_ffn": True, "layerscale_value": 1e-5,
                    "layer_norm_eps": 1e-6},
        ),
    )
}  # fmt: skip


def alignment_encoder(cfg: Mapping[str, Any]) -> str | None:
    """The encoder a tokenizer config aligns to (its ``variant`` for mcos/mdms/repa), else None."""
    if cfg.get("regularizer", "baseline") not in ALIGNING_REGULARIZERS:
        return None
    variant = cfg.get("variant")
    if variant != DEMO_NET and variant not in FOUNDATION_SPECS:
        known = ", ".join([*FOUNDATION_SPECS, DEMO_NET])
        raise ValueError(f"variant: unknown encoder {variant!r} for {cfg.get('regularizer')!r}; known: {known}")
    return variant


def perceptual_net(cfg: Mapping[str, Any], demo: bool) -> str:
    """The perceptual network of Eq. 12: ``cfg["perceptual"]`` if set, else ``demo-cnn`` when the
    study uses the demo network (``demo``), else LPIPS-VGG (the paper's)."""
    name = cfg.get("perceptual")
    if name is None:
        return DEMO_NET if demo else LPIPS_VGG
    if name not in PERCEPTUAL_NETS:
        raise ValueError(f"perceptual: unknown network {name!r}; known: {', '.join(PERCEPTUAL_NETS)}")
    return name


def network_weights(cfg: Mapping[str, Any], demo: bool) -> list[str]:
    """Manifest names of the external weights a trainable tokenizer config trains against."""
    if cfg.get("family") == "pretrained":  # released autoencoders are not trained here
        return []
    names = list(LPIPS_VGG_WEIGHTS) if perceptual_net(cfg, demo) == LPIPS_VGG else []
    encoder = alignment_encoder(cfg)
    if encoder is not None and encoder != DEMO_NET:
        names.append(FOUNDATION_SPECS[encoder].weights)
    return names
