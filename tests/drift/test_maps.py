"""Depth (MiDaS DPT-Hybrid) and segmentation (UniFormer-S + UPerHead) projectors."""

import numpy as np
import pytest
import torch

from latentbench.drift.projectors import build_projector
from latentbench.drift.projectors.ade20k import ADE_PALETTE, colourise
from latentbench.drift.projectors.midas import DPTHybrid, normalise_depth
from latentbench.drift.projectors.uniformer import (
    UniFormerUPerNet,
    load_uniformer_state,
    rescale_size,
)


# ------------------------------------------------------------------ depth normalisation
def test_depth_normalisation_is_invariant_to_positive_affine_maps():
    d = torch.rand(64, 64, generator=torch.Generator().manual_seed(0)) * 7 + 3
    base = normalise_depth(d)
    assert base.dtype == np.uint8 and base.min() == 0 and base.max() == 255
    for a, b in ((2.0, 0.0), (0.5, -3.0), (10.0, 100.0)):
        other = normalise_depth(a * d + b)
        assert np.abs(other.astype(int) - base.astype(int)).max() <= 1  # float rounding at a truncation boundary
        assert (other != base).mean() < 0.01


def test_constant_depth_gives_zeros():
    np.testing.assert_array_equal(normalise_depth(np.full((8, 8), 3.5)), np.zeros((8, 8), np.uint8))


def test_depth_is_truncated_not_rounded():
    # (d - 0) / 1 * 255 = 254.9 and 0.6 -> truncation gives 254 and 0 (rounding would give 255 and 1)
    d = np.array([[0.0, 254.9 / 255, 0.6 / 255, 1.0]], np.float32)
    np.testing.assert_array_equal(normalise_depth(d), np.array([[0, 254, 0, 255]], np.uint8))


# ------------------------------------------------------------------ DPT-Hybrid
def test_dpt_hybrid_shapes_and_midas_key_names_on_meta():
    with torch.device("meta"):
        model = DPTHybrid()
        out = model(torch.empty(2, 3, 256, 256))
    assert out.shape == (2, 256, 256)
    keys = set(model.state_dict())
    for key in (  # key names of MiDaS' DPTDepthModel(backbone="vitb_rn50_384")
        "pretrained.model.patch_embed.backbone.stem.conv.weight",
        "pretrained.model.blocks.11.mlp.fc2.bias",
        "pretrained.act_postprocess3.0.project.0.weight",
        "pretrained.act_postprocess3.3.weight",
        "pretrained.act_postprocess4.4.weight",
        "scratch.layer1_rn.weight",
        "scratch.refinenet4.resConfUnit1.conv1.weight",
        "scratch.refinenet1.out_conv.bias",
        "scratch.output_conv.0.weight",
        "scratch.output_conv.2.weight",
        "scratch.output_conv.4.weight",
    ):
        assert key in keys, key
    assert model.state_dict()["pretrained.act_postprocess4.4.weight"].shape == (768, 768, 3, 3)
    assert model.state_dict()["scratch.layer1_rn.weight"].shape == (256, 256, 3, 3)
    assert model.state_dict()["scratch.layer2_rn.weight"].shape == (256, 512, 3, 3)


def test_dpt_hybrid_rejects_sides_not_multiple_of_32():
    with torch.device("meta"), pytest.raises(ValueError, match="multiples of 32"):
        DPTHybrid()(torch.empty(1, 3, 250, 256))


def test_missing_midas_weights_say_not_run(tmp_path, monkeypatch):
    from latentbench.weights import WeightMissing

    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    with pytest.raises(WeightMissing, match="not run: needs .*dpt_hybrid-midas-501f0c75.pt"):
        build_projector("midas-dpt-hybrid", weights=tmp_path)


# ------------------------------------------------------------------ segmentation
def test_ade_palette_and_colour_map():
    assert ADE_PALETTE.shape == (150, 3) and ADE_PALETTE.dtype == np.uint8
    assert tuple(ADE_PALETTE[0]) == (120, 120, 120) and tuple(ADE_PALETTE[149]) == (92, 0, 255)
    labels = np.array([[[0, 2], [149, 2]]])
    np.testing.assert_array_equal(colourise(labels)[0, 0, 1], [6, 230, 230])
    with pytest.raises(ValueError, match="labels"):
        colourise(np.array([[150]]))


def test_mmseg_rescale_runs_256_at_512():
    assert rescale_size(256, 256) == (512, 512)
    assert rescale_size(256, 384) == (512, 768)


def test_seg_input_order_switch_changes_exactly_the_channel_order():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (2, 32, 48, 3), dtype=np.uint8)
    quirk = build_projector("uniformer-s-ade20k", random_init=True)
    plain = build_projector("uniformer-s-ade20k", random_init=True, seg_input_order="rgb")
    assert quirk.seg_input_order == "controlnet_bgr"  # the default: as the paper's tool ran
    unnorm = lambda p, x: p.network_input(x) * p.std + p.mean
    a, b = unnorm(quirk, img), unnorm(plain, img)
    assert a.shape == (2, 3, 512, 768)  # mmcv keep-ratio rescale to (2048, 512): short side 512
    torch.testing.assert_close(a, b.flip(1), atol=1e-3, rtol=0)
    assert not torch.allclose(a, b, atol=1)
    # the mean/std stay in RGB order in both modes (mmseg Normalize with to_rgb=True)
    torch.testing.assert_close(quirk.mean.flatten(), torch.tensor([123.675, 116.28, 103.53]))
    with pytest.raises(ValueError, match="seg_input_order"):
        build_projector("uniformer-s-ade20k", random_init=True, seg_input_order="bgr")


def test_uniformer_labels_shape_and_meta_forward():
    with torch.device("meta"):
        logits = UniFormerUPerNet().eval()(torch.empty(1, 3, 512, 512))
    assert logits.shape == (1, 150, 512, 512)


def test_mmseg_checkpoint_loads_by_key_name_dropping_the_auxiliary_head(tmp_path):
    with torch.device("meta"):
        model = UniFormerUPerNet()
    state = {k: torch.zeros(v.shape) for k, v in model.state_dict().items()}
    path = tmp_path / "upernet_global_small.pth"
    torch.save({"meta": {}, "state_dict": {**state, "auxiliary_head.conv_seg.weight": torch.zeros(150, 256, 1, 1)}}, path)
    with torch.device("meta"):
        target = UniFormerUPerNet()
    load_uniformer_state(target, path)
    assert not target.decode_head.conv_seg.weight.is_meta
    del state["decode_head.conv_seg.bias"]
    torch.save({"state_dict": state}, path)
    with torch.device("meta"):
        target = UniFormerUPerNet()
    with pytest.raises(RuntimeError, match="conv_seg.bias"):
        load_uniformer_state(target, path)
