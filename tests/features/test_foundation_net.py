"""Foundation encoders of spec metrics-diffusability §11.3: the 14 real configurations build (meta
device) with their feature dimension and a 16x16 token grid; small random-init networks of the
same code paths run on CPU, load the files the test writes in the released formats, and a
missing file names what to fetch and from where."""

from __future__ import annotations

import dataclasses

import pytest
import timm
import torch
from safetensors.torch import save_file

from latentbench.features import foundation
from latentbench.features.foundation import FOUNDATION_SPECS, GRID
from latentbench.features.foundation_net import build_foundation_encoder, convert_mocov3
from latentbench.tokenizers.regularizers import FOUNDATION_ENCODERS
from latentbench.weights import WeightMissing
from latentbench.weights_fetch import load_manifest

torch.set_num_threads(1)

# spec §11.3 (iREPA ids) with the width of each size: B 768, L / 300M 1024; patch /14 or /16
TABLE1 = {
    "CLIP-L": (1024, 14), "CRadio-B": (768, 16), "CRadio-L": (1024, 16), "DINOv2-B": (768, 14),
    "DINOv2-L": (1024, 14), "DINOv3-B": (768, 16), "DINOv3-L": (1024, 16), "LangPE-L": (1024, 14),
    "MAE-L": (1024, 16), "MoCov3-L": (1024, 16), "PE-B": (768, 16), "PE-L": (1024, 14),
    "SpatialPE-B": (768, 16), "SpatialPE-L": (1024, 14), "WebSSL-300m": (1024, 14),
}  # fmt: skip
NARROW_VIT = {"embed_dim": 32, "num_heads": 2}
NARROW_DINOV2 = {"hidden_size": 32, "num_attention_heads": 2, "num_hidden_layers": 1}


def _narrow(monkeypatch, key: str, **kwargs) -> foundation.FoundationSpec:
    """Replace ``key``'s spec by the same one with narrower constructor arguments."""
    spec = dataclasses.replace(FOUNDATION_SPECS[key], kwargs={**FOUNDATION_SPECS[key].kwargs, **kwargs})
    monkeypatch.setitem(FOUNDATION_SPECS, key, spec)
    return spec


def _images(n: int = 2, size: int = 40) -> torch.Tensor:
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(0))


@pytest.fixture
def no_hub(tmp_path, monkeypatch):
    """An empty Hugging Face / torch.hub cache: only the files a test writes exist."""
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))


def test_the_table_is_spec_11_3_and_the_regularisers_accept_it():
    assert set(FOUNDATION_SPECS) == set(TABLE1)
    assert FOUNDATION_ENCODERS == (*FOUNDATION_SPECS, "demo-cnn")
    manifest = load_manifest()
    for spec in FOUNDATION_SPECS.values():
        assert spec.weights in manifest, spec.key
        assert spec.input_size == {14: 224, 16: 256}[spec.patch]


@pytest.mark.parametrize("key", sorted(TABLE1))
def test_real_configuration_gives_its_dim_and_a_16x16_grid(key):
    dim, patch = TABLE1[key]
    enc = build_foundation_encoder(key, device="meta")  # full size, no memory
    assert enc.spec.patch == patch and enc.dim == dim
    model_patch = enc.model.config.patch_size if enc.spec.backend == "transformers" else enc.model.patch_embed.patch_size[0]
    assert model_patch == patch
    out = enc(torch.empty(2, 3, 64, 64, device="meta"))  # any input size: resized to 224 / 256
    assert tuple(out.shape) == (2, dim, GRID, GRID)


@pytest.mark.parametrize("key", sorted(k for k, s in FOUNDATION_SPECS.items() if s.backend == "timm" and k != "MoCov3-L"))
def test_normalisation_is_the_models_own(key):
    """timm's pretrained_cfg of the released weights is an independent record of each mean/std
    (MoCo v3 has no timm weights; iREPA normalises it with ImageNet's, as the table says)."""
    spec = FOUNDATION_SPECS[key]
    cfg = timm.models.get_pretrained_cfg(spec.model)
    assert tuple(cfg.mean) == pytest.approx(spec.mean) and tuple(cfg.std) == pytest.approx(spec.std)


def test_grid_is_row_major_and_prefix_tokens_are_dropped(monkeypatch):
    """With no transformer block, token (i, j) sees only image patch (i, j): changing that patch
    changes exactly grid cell (i, j). DINOv3 has 4 registers + a class token before the patches."""
    for key in ("DINOv2-B", "DINOv3-B"):
        _narrow(monkeypatch, key, depth=0, **NARROW_VIT)
        torch.manual_seed(0)
        enc = build_foundation_encoder(key, random_init=True)
        if key == "DINOv3-B":
            enc.model.rope = None  # no block reads it; the check is the layout
        size, p = enc.spec.input_size, enc.spec.patch
        x = _images(1, size)
        y = x.clone()
        y[..., 3 * p : 4 * p, 5 * p : 6 * p] = 1 - y[..., 3 * p : 4 * p, 5 * p : 6 * p]
        changed = (enc(x) - enc(y)).abs().amax(dim=1)[0] > 1e-6
        expected = torch.zeros(GRID, GRID, dtype=torch.bool)
        expected[3, 5] = True
        assert torch.equal(changed, expected), key


def _save_timm(model: torch.nn.Module, path) -> None:
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))


@pytest.mark.parametrize("key", ["DINOv2-B", "CLIP-L", "PE-B", "CRadio-B"])
def test_timm_encoder_loads_its_file_and_reads_the_right_layer(tmp_path, monkeypatch, no_hub, key):
    spec = _narrow(monkeypatch, key, depth=1, **NARROW_VIT)
    torch.manual_seed(1)
    source = timm.create_model(spec.model, pretrained=False, dynamic_img_size=True, **spec.kwargs).eval()
    _save_timm(source, tmp_path / load_manifest()[spec.weights].file)
    enc = build_foundation_encoder(key, weights_dir=tmp_path)
    x = _images()
    xs = torch.nn.functional.interpolate(x, size=(spec.input_size,) * 2, mode=spec.resize, antialias=spec.antialias)
    mean, std = torch.tensor(spec.mean).view(1, 3, 1, 1), torch.tensor(spec.std).view(1, 3, 1, 1)
    if not spec.final_norm:  # CLIP, PE: iREPA's tokens stop before the final norm
        source.norm = torch.nn.Identity()
    with torch.no_grad():
        tokens = source.forward_features((xs - mean) / std)[:, source.num_prefix_tokens :]
    expected = tokens.transpose(1, 2).reshape(2, 32, GRID, GRID)
    torch.testing.assert_close(enc(x), expected)
    assert all(not p.requires_grad for p in enc.model.parameters())


@pytest.mark.parametrize(("key", "prefix"), [("DINOv2-B", 1), ("MAE-L", 1)])
def test_released_position_grid_is_resampled_once_at_load(tmp_path, monkeypatch, no_hub, key, prefix):
    """DINOv2's file holds a 37x37 grid (518 px), MAE's 14x14 (224 px): loaded, the grid is 16x16,
    timm's ``resample_abs_pos_embed`` of the file's, as iREPA resamples it at load."""
    from timm.layers import resample_abs_pos_embed

    spec = _narrow(monkeypatch, key, depth=1, **NARROW_VIT)
    released = {k: v for k, v in spec.kwargs.items() if k != "img_size"}
    source = timm.create_model(spec.model, pretrained=False, **released)
    assert source.pos_embed.shape[1] != prefix + GRID * GRID
    _save_timm(source, tmp_path / load_manifest()[spec.weights].file)
    enc = build_foundation_encoder(key, weights_dir=tmp_path)
    expected = resample_abs_pos_embed(source.pos_embed.detach(), [GRID, GRID], num_prefix_tokens=prefix)
    torch.testing.assert_close(enc.model.pos_embed, expected)


def test_transformers_encoder_loads_its_file(tmp_path, monkeypatch, no_hub):
    from transformers import Dinov2Config, Dinov2Model

    spec = _narrow(monkeypatch, "WebSSL-300m", **NARROW_DINOV2)
    torch.manual_seed(2)
    source = Dinov2Model(Dinov2Config(**spec.kwargs)).eval()
    _save_timm(source, tmp_path / load_manifest()[spec.weights].file)
    enc = build_foundation_encoder("WebSSL-300m", weights_dir=tmp_path)
    x = _images(2, 224)  # the native size: no resize
    mean, std = torch.tensor(spec.mean).view(1, 3, 1, 1), torch.tensor(spec.std).view(1, 3, 1, 1)
    with torch.no_grad():
        hidden = source(pixel_values=(x - mean) / std).last_hidden_state[:, 1:]
    torch.testing.assert_close(enc(x), hidden.transpose(1, 2).reshape(2, 32, GRID, GRID))


def test_mocov3_checkpoint_is_converted_as_irepa_does(tmp_path, monkeypatch, no_hub):
    """A MoCo v3 training checkpoint: ``module.base_encoder.*`` keys, projection head, the
    block-13/14 key typos, momentum encoder; loads into timm's ViT-L/16 layout."""
    spec = _narrow(monkeypatch, "MoCov3-L", depth=15, **NARROW_VIT)
    torch.manual_seed(3)
    source = timm.create_model(spec.model, pretrained=False, dynamic_img_size=True, **spec.kwargs).eval()
    state = {}
    for key, value in source.state_dict().items():
        for fixed, typo in (("blocks.13.norm1", "blocks.13.norm13"), ("blocks.14.mlp.fc2", "blocks.14.mlp.fc14")):
            key = key.replace(fixed, typo)
        state[f"module.base_encoder.{key}"] = value
        state[f"module.momentum_encoder.{key}"] = torch.zeros_like(value)
    state["module.base_encoder.head.0.weight"] = torch.ones(4, 32)
    torch.save({"epoch": 300, "arch": "vit_large", "state_dict": state}, tmp_path / "mocov3_vitl.pth")
    enc = build_foundation_encoder("MoCov3-L", weights_dir=tmp_path)
    for name, value in source.state_dict().items():
        torch.testing.assert_close(enc.model.state_dict()[name], value)
    assert enc(_images()).shape == (2, 32, GRID, GRID)
    with pytest.raises(ValueError, match="MoCo v3"):
        convert_mocov3({"state_dict": {"blocks.0.norm1.weight": torch.ones(2)}})


def test_missing_or_wrong_file_is_named(tmp_path, monkeypatch, no_hub):
    with pytest.raises(WeightMissing) as err:
        build_foundation_encoder("DINOv3-L", weights_dir=tmp_path)
    message = str(err.value)
    assert "vit_large_patch16_dinov3.lvd1689m.safetensors" in message and str(tmp_path) in message
    assert "https://huggingface.co/timm/vit_large_patch16_dinov3.lvd1689m" in message
    spec = _narrow(monkeypatch, "DINOv2-B", depth=1, **NARROW_VIT)
    wrong = timm.create_model(spec.model, pretrained=False, depth=2, embed_dim=32, num_heads=2)
    _save_timm(wrong, tmp_path / load_manifest()[spec.weights].file)
    with pytest.raises(ValueError, match="vit_base_patch14_dinov2.lvd142m.safetensors: not the weights of"):
        build_foundation_encoder("DINOv2-B", weights_dir=tmp_path)
