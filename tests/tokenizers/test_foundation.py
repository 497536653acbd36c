"""The trainable family at the paper's recipe: LPIPS-VGG perceptual term and the foundation encoder
its ``variant`` names (spec models.md §3.3, metrics-diffusability §11.1-11.3), read from the weights
manifest's files — here random weights of narrow networks written by the test in the released
formats. The demo keeps its labelled stand-ins; missing weights fail before any step, naming what
to fetch and from where, and a study's needs are listed at parse time."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import timm
import torch
import torchvision
from safetensors.torch import save_file

from latentbench.data.synthetic import SyntheticSpec, generate
from latentbench.features.demo_net import DemoNet
from latentbench.features.foundation import FOUNDATION_SPECS
from latentbench.tokenizers.train import train_tokenizer
from latentbench.weights import WeightMissing
from latentbench.weights_fetch import (
    WeightFetchError,
    check_tokenizer_weights,
    load_manifest,
    required_weights,
    tokenizer_weights,
)

torch.set_num_threads(1)
ARCH = {"ch": 8, "ch_mult": [1, 2], "num_res_blocks": 1, "attn_resolutions": [], "z_channels": 2,
        "embed_dim": 2, "resolution": 32, "norm_groups": 4}  # fmt: skip  (latent 2x16x16)
QUIET = {"log": lambda s: None, "lr": 1e-3}
NARROW = {"depth": 1, "embed_dim": 32, "num_heads": 2}


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    return generate(SyntheticSpec(16, 32, seed=0))["image"]


@pytest.fixture
def weights_dir(tmp_path, monkeypatch):
    """A weights directory holding a random VGG16 trunk (features only: all LPIPS reads) and a
    narrow DINOv2-B file, with empty Hugging Face / torch.hub caches."""
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    root = tmp_path / "weights"
    root.mkdir()
    torch.manual_seed(0)
    features = torchvision.models.vgg.make_layers(torchvision.models.vgg.cfgs["D"])
    torch.save({f"features.{k}": v for k, v in features.state_dict().items()}, root / "vgg16-397923af.pth")
    spec = dataclasses.replace(FOUNDATION_SPECS["DINOv2-B"], kwargs=NARROW)
    monkeypatch.setitem(FOUNDATION_SPECS, "DINOv2-B", spec)
    vit = timm.create_model(spec.model, pretrained=False, dynamic_img_size=True, **NARROW)
    save_file({k: v.contiguous() for k, v in vit.state_dict().items()}, str(root / load_manifest()[spec.weights].file))
    return root


def _cfg(regularizer="baseline", variant=None, **extra):
    return {"family": "conv_kl", "arch": ARCH, "regularizer": regularizer, "variant": variant, **extra}


@pytest.mark.parametrize("regularizer", ["mcos+mdms", "repa"])
def test_trains_with_lpips_vgg_and_the_named_foundation_encoder(tmp_path, images, weights_dir, regularizer):
    logs = []
    metrics = train_tokenizer(
        _cfg(regularizer, "DINOv2-B", reg_options={"repa_hidden": 16}), images, tmp_path / "tok.pt",
        tmp_path / "tok.ckpt", steps=2, batch_size=4, disc_start=1, checkpoint_every=100, weights_dir=weights_dir,
        on_step=lambda step, values: logs.append(values), **QUIET,
    )  # fmt: skip
    assert metrics["completed"] and metrics["perceptual_net"] == "lpips-vgg" and metrics["alignment_net"] == "DINOv2-B"
    assert metrics["perceptual_weight"] == 1.0  # Eq. 12: L1 + 1 * LPIPS
    term = "vf" if regularizer != "repa" else "repa"
    assert all(np.isfinite(v[f"{term}_loss"]) and np.isfinite(v["nll"]) for v in logs)
    payload = torch.load(tmp_path / "tok.pt", weights_only=False)
    reg_state = payload["regularizer_state"]
    out_dim = reg_state["proj.weight"].shape[0] if term == "vf" else reg_state["mlp.4.weight"].shape[0]
    assert out_dim == 32  # the (narrow) encoder's width; its own weights stay out of the file
    assert not any("blocks" in k for k in reg_state) and not any("slice" in k for k in payload["state_dict"])


def test_lpips_term_changes_training_and_weight_zero_drops_it(tmp_path, images, weights_dir):
    run = dict(steps=1, batch_size=4, disc_start=1, checkpoint_every=100, weights_dir=weights_dir, **QUIET)
    with_lpips = train_tokenizer(_cfg(), images, tmp_path / "a.pt", **run)
    without = train_tokenizer(_cfg(perceptual_weight=0), images, tmp_path / "b.pt", **run)
    assert with_lpips["perceptual_net"] == "lpips-vgg" and without["perceptual_net"] == "none"
    assert with_lpips["final_train"]["nll"] > without["final_train"]["nll"]  # LPIPS > 0 adds to every pixel


def test_demo_keeps_its_labelled_stand_ins(tmp_path, images):
    net = DemoNet(10, widths=(8, 8, 8)).eval().requires_grad_(False)
    metrics = train_tokenizer(_cfg("mcos", "demo-cnn"), images, tmp_path / "d.pt", steps=1, batch_size=4, disc_start=1,
                              checkpoint_every=100, feature_net=net, **QUIET)  # fmt: skip
    assert metrics["perceptual_net"] == "demo-cnn" and metrics["alignment_net"] == "demo-cnn"
    assert metrics["perceptual_weight"] == 0.1


def test_missing_encoder_weights_fail_before_any_step(tmp_path, images, weights_dir):
    with pytest.raises(WeightMissing) as err:
        train_tokenizer(_cfg("mdms", "DINOv3-B"), images, tmp_path / "t.pt", tmp_path / "t.ckpt", steps=1,
                        batch_size=4, disc_start=1, checkpoint_every=100, weights_dir=weights_dir, **QUIET)  # fmt: skip
    assert "vit_base_patch16_dinov3.lvd1689m.safetensors" in str(err.value)
    assert "https://huggingface.co/timm/vit_base_patch16_dinov3.lvd1689m" in str(err.value)
    assert not (tmp_path / "t.ckpt").exists() and not (tmp_path / "t.pt").exists()


def test_a_studys_tokenizer_weights_are_listed_and_checked_at_parse_time(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    study = {
        "feature_net": {"name": "inception-v3-compat"},
        "metrics": [],
        "tokenizers": {"base": _cfg(), "vf": _cfg("mcos+mdms", "DINOv2-B"), "moco": _cfg("repa", "MoCov3-L"),
                       "moco2": _cfg("mcos", "MoCov3-L"), "eq": _cfg("eq", "scale")},
    }  # fmt: skip
    expected = ["lpips-vgg16-trunk", "lpips-vgg-head", "dinov2-base", "mocov3-vit-large"]
    assert tokenizer_weights(study) == expected
    assert required_weights(study) == ["inception-v3-fid", *expected]
    with pytest.raises(WeightFetchError) as err:
        check_tokenizer_weights(study, tmp_path)
    message = str(err.value)
    assert "3 weight file(s)" in message  # the LPIPS heads ship in the lpips wheel
    assert f"{tmp_path / 'mocov3_vitl.pth'} (for moco, moco2)" in message
    assert "https://huggingface.co/REPA-E/iREPA-collections (file pretrained_models/mocov3_vitl.pth)" in message
    assert "https://download.pytorch.org/models/vgg16-397923af.pth" in message
    demo = {"feature_net": {"name": "demo-cnn"}, "tokenizers": {"vf": _cfg("mcos+mdms", "demo-cnn"), "base": _cfg()}}
    assert tokenizer_weights(demo) == []
    check_tokenizer_weights(demo, tmp_path)  # nothing needed
    demo["tokenizers"]["real"] = _cfg("repa", "PE-B", perceptual="lpips-vgg")
    assert tokenizer_weights(demo) == ["lpips-vgg16-trunk", "lpips-vgg-head", "pe-core-base"]
    with pytest.raises(ValueError, match="variant: unknown encoder 'DINOv9'"):
        tokenizer_weights({"tokenizers": {"x": _cfg("repa", "DINOv9")}})
