"""C5 SVG / C6 SVG-T2I adapters (latentbench/tokenizers/pretrained/svg.py; spec zoo.md §2 C5-C6)."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from latentbench.tokenizers.pretrained import build_pretrained, svg, zoo_row
from latentbench.tokenizers.pretrained._common import manifest_file
from latentbench.tokenizers.pretrained.base import WeightsError, ZooRow

DINO = {"embed_dim": 32, "depth": 1, "num_heads": 2}
DEC = {"ch": 32, "num_res_blocks": 1}
RESIDUAL = {
    "vit-s": {"hidden": 32, "layers": 1, "heads": 2, "mlp": 64},
    "vit-rope-s": {"dim": 32, "depth": 1, "heads": 2, "img_size": 64},
}


def tiny_row(residual: str | None = "vit-s", batch: int = 1, stats: str = "svg") -> ZooRow:
    config = {"dino_kwargs": DINO, "decoder": DEC, "residual": residual, "encode_batch_size": batch, "stats": stats,
              "residual_kwargs": RESIDUAL.get(residual, {})}  # fmt: skip
    c = 32 + (8 if residual else 0)
    files = svg.ROWS[0].files if stats == "svg" else svg.ROWS[2].files
    return ZooRow(name="svg-tiny", arch="C5", latent_shape=(c, 16, 16), config=config, files=files)


def images(n: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 3, 256, 256, generator=torch.Generator().manual_seed(seed))


def count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_meta_parameter_counts():
    with torch.device("meta"):
        model = build_pretrained("svg")
        p = build_pretrained("svg_t2i_P_stage1_256")
        r = build_pretrained("svg_t2i_R_stage1_256")
    assert count(model) == model.row.params == 82_952_587  # zoo.md §2 C5
    assert count(model.encoder) == 28_683_264 and count(model.extra_vit) == 11_192_840
    assert model.decoder.conv_in.in_channels == 392 and not hasattr(model, "post_quant_conv")
    # SVG-T2I (zoo.md §2 C6 says 68.57 M / 90.74 M: the same modules without the decoder's level-4
    # attention, which SVG-T2I's model.py:518 always builds; 3 AttnBlocks of 512 ch = 3,154,944)
    assert count(p) == p.row.params == 68_567_939 + 3_154_944
    assert count(r) == r.row.params == 90_744_563 + 3_154_944
    assert count(r.extra_vit) == 22_139_760  # rope-mixed DeiT-S/16 LS + 8-d head
    assert p.encode_batch_size is None and model.encode_batch_size == 1 and r.encode_batch_size == 1


def test_rows():
    for name, c in (("svg", 392), ("svg_t2i_P_stage1_256", 384), ("svg_t2i_R_stage1_256", 392), ("svg_t2i_R_stage2_512", 392)):
        assert zoo_row(name).latent_shape == (c, 16, 16)
    assert zoo_row("SVG-T2I-P-stage1-256").name == "svg_t2i_P_stage1_256"


def test_match_distribution_matches_scalar_statistics():
    g = torch.Generator().manual_seed(0)
    h = torch.randn(3, 16, 50, generator=g) * 2.5 + 1.0
    r = torch.randn(3, 4, 50, generator=g) * 0.3 - 4.0
    out = svg.match_distribution(h, r)
    assert out.mean(dim=(0, 2)).mean().item() == pytest.approx(h.mean(dim=(0, 2)).mean().item(), abs=1e-5)
    assert out.std(dim=(0, 2)).mean().item() == pytest.approx(h.std(dim=(0, 2)).mean().item(), rel=1e-4)


@pytest.mark.parametrize("residual", ["vit-s", "vit-rope-s", None])
def test_tiny_forward(residual):
    model = svg.build(tiny_row(residual), None)
    with torch.no_grad():
        mean, std = model.encode_moments(images(2))
        c = 40 if residual else 32
        assert mean.shape == (2, c, 16, 16) and torch.count_nonzero(std) == 0
        assert model.decode(mean).shape == (2, 3, 256, 256)
    with pytest.raises(ValueError, match="256x256"):
        model.encode_moments(torch.rand(1, 3, 224, 224))


def test_batch_independence_with_fixed_encode_batch_size():
    torch.manual_seed(0)
    x = images(6, seed=3)
    with torch.no_grad():
        one = svg.build(tiny_row(batch=1), None)
        full = one.encode(x)
        assert torch.allclose(torch.cat([one.encode(x[:4]), one.encode(x[4:])]), full, atol=1e-5)
        assert torch.allclose(one.encode(x[2:3]), full[2:3], atol=1e-5)
        two = svg.build(tiny_row(batch=2), None)
        two.load_state_dict(one.state_dict())
        assert two.encode_batch_size == 2
        z2 = two.encode(x)
        # any split of the caller's batch at multiples of encode_batch_size gives the same latents
        assert torch.allclose(torch.cat([two.encode(x[:2]), two.encode(x[2:])]), z2, atol=1e-5)
        # a short chunk is padded with its own images only: x[5] alone == x[5] repeated
        assert torch.allclose(two.encode(x[5:]), two.encode(x[5:].expand(2, -1, -1, -1))[:1], atol=1e-5)
        # the statistic really is batch-dependent: chunks of 2 differ from single images (residual channels only)
        assert not torch.allclose(z2[:, 32:], full[:, 32:], atol=1e-4)
        assert torch.allclose(z2[:, :32], full[:, :32], atol=1e-5)


def to_meta_dinov3(state: dict) -> dict:
    """timm Eva DINOv3 keys in Meta's released layout (inverse of timm.models.eva.checkpoint_filter_fn)."""
    out = {}
    for k, v in state.items():
        k = k.replace("reg_token", "storage_tokens").replace("gamma_1", "ls1.gamma").replace("gamma_2", "ls2.gamma")
        k = k.replace("mlp.fc1_g.", "mlp.w1.").replace("mlp.fc1_x.", "mlp.w2.").replace("mlp.fc2.", "mlp.w3.")
        out[k] = v.clone()
    d = state["cls_token"].shape[-1]
    out["blocks.0.attn.qkv.bias"] = torch.cat([torch.zeros(d), torch.randn(d), torch.zeros(d)])  # k part masked
    out["mask_token"] = torch.zeros(1, d)
    out["rope_embed.periods"] = torch.arange(1, d // 2 // 4 + 1, dtype=torch.float32)
    return out


def lightning_state(model: svg.SVGTokenizer, with_encoder: bool) -> dict:
    state = {}
    if with_encoder:
        state.update({f"encoder.{k}": v for k, v in to_meta_dinov3(model.encoder.state_dict()).items()})
    state.update({k: v.clone() for k, v in model.state_dict().items() if not k.startswith("encoder.")})
    state.update({"loss.discriminator.main.0.weight": torch.zeros(2), "norm_vit.weight": torch.ones(40), "mask_token": torch.zeros(1, 8, 1)})
    return state


def test_svg_checkpoint_with_embedded_meta_dinov3(tmp_path):
    torch.manual_seed(0)
    source = svg.build(tiny_row(), None)
    ckpt = tmp_path / manifest_file("svg-autoencoder-dinov3s16p-vit-s-epoch40")
    torch.save({"state_dict": lightning_state(source, with_encoder=True), "epoch": 40}, ckpt)
    torch.save({"dinov3_sp_mean": torch.randn(1, 1, 400), "dinov3_sp_std": torch.rand(1, 1, 400) + 0.5},
               tmp_path / manifest_file("svg-dinov3-sp-stats"))  # fmt: skip
    loaded = svg.build(tiny_row(), tmp_path)
    rope = next(m for m in loaded.encoder.modules() if isinstance(m, svg.RotaryEmbeddingDinoV3))
    assert torch.equal(rope.periods, torch.arange(1, 5, dtype=torch.float32))  # Meta's stored periods win
    for name, p in source.state_dict().items():
        assert torch.equal(p, loaded.state_dict()[name]), name
    z = torch.randn(1, 40, 16, 16)
    stats = torch.load(tmp_path / manifest_file("svg-dinov3-sp-stats"))
    mean = stats["dinov3_sp_mean"][0, 0, :40].view(40, 1, 1)
    std = stats["dinov3_sp_std"][0, 0, :40].view(40, 1, 1)
    assert torch.allclose(loaded.native_normalize(z), (z - mean) / std)
    assert torch.allclose(loaded.native_denormalize(loaded.native_normalize(z)), z, atol=1e-5)


def test_svg_t2i_separate_timm_dinov3_and_layer_stats(tmp_path):
    torch.manual_seed(1)
    row = tiny_row("vit-rope-s", stats="t2i")
    source = svg.build(row, None)
    ckpt = tmp_path / manifest_file("svg-t2i-autoencoder-r-stage1")
    torch.save({"state_dict": lightning_state(source, with_encoder=False)}, ckpt)
    save_file({k: v.clone() for k, v in source.encoder.state_dict().items()}, str(tmp_path / manifest_file("dinov3-vits16plus")))
    layer_stats = {"mean": torch.randn(12, 32), "std": torch.rand(12, 32) + 0.5}
    torch.save(layer_stats, tmp_path / manifest_file("svg-t2i-dinov3-layer-stats"))
    loaded = svg.build(row, tmp_path)
    x = images(2)
    with torch.no_grad():
        assert torch.allclose(source.encode(x), loaded.encode(x), atol=1e-5)
    # last layer's 32 channels + 8 residual channels at the mean of the means / stds (train_svg_t2i.py)
    m, s = layer_stats["mean"][-1], layer_stats["std"][-1]
    assert torch.allclose(loaded.latent_mean.flatten(), torch.cat([m, m.mean().expand(8)]))
    assert torch.allclose(loaded.latent_std.flatten(), torch.cat([s, s.mean().expand(8)]))


def test_nonzero_dinov3_qv_bias_is_refused():
    model = svg.build(tiny_row(None), None)
    state = to_meta_dinov3(model.encoder.state_dict())
    state["blocks.0.attn.qkv.bias"] = torch.ones(96)
    with pytest.raises(WeightsError, match="qkvb"):
        svg.dinov3_to_timm(state, model.encoder)


def test_svg_leftover_key_and_missing_encoder(tmp_path):
    source = svg.build(tiny_row(), None)
    ckpt = tmp_path / manifest_file("svg-autoencoder-dinov3s16p-vit-s-epoch40")
    torch.save({"state_dict": {**lightning_state(source, True), "post_quant_conv.weight": torch.zeros(1)}}, ckpt)
    torch.save({"dinov3_sp_mean": torch.zeros(1, 1, 40), "dinov3_sp_std": torch.ones(1, 1, 40)}, tmp_path / manifest_file("svg-dinov3-sp-stats"))
    with pytest.raises(WeightsError, match="post_quant_conv") as err:
        svg.build(tiny_row(), tmp_path)
    assert str(ckpt) in str(err.value) and "\n" not in str(err.value)
    torch.save({"state_dict": lightning_state(source, False)}, ckpt)
    with pytest.raises(WeightsError, match="no encoder"):
        svg.build(tiny_row(), tmp_path)
