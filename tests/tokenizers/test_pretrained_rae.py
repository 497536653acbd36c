"""C3 RAE / UAE adapters (latentbench/tokenizers/pretrained/rae.py; spec zoo.md §2 C3, §4.5-4.6)."""

from __future__ import annotations

import math

import pytest
import torch
from safetensors.torch import save_file

from latentbench.tokenizers.pretrained import build_pretrained, rae, zoo_row
from latentbench.tokenizers.pretrained._common import manifest_file
from latentbench.tokenizers.pretrained.base import WeightsError, ZooRow

TINY = {"enc_hidden": 32, "enc_layers": 1, "enc_heads": 2, "dec_hidden": 32, "dec_layers": 1, "dec_heads": 2, "dec_mlp": 64}


def tiny_row(kind: str = "rae") -> ZooRow:
    files = rae._RAE_FILES if kind == "rae" else rae._UAE_FILES
    config = {"kind": kind, **TINY, **({"stats": "stat.pt"} if kind == "rae" else {})}
    return ZooRow(name=f"{kind}-tiny", arch="C3", latent_shape=(32, 16, 16), config=config, files=files)


def t5_to_t4(key: str, mlp: bool) -> str:
    """The released (transformers-4) name of a module key; the MLP renames apply to the decoder only."""
    pairs = rae.T4_TO_T5 if mlp else rae.T4_TO_T5[:4]
    for old, new in pairs:
        key = key.replace(new, old)
    return key


def images(n: int = 2, size: int = 256) -> torch.Tensor:
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(0))


def test_meta_parameter_counts_match_spec():
    with torch.device("meta"):
        model = build_pretrained("RAE")
    count = lambda m: sum(p.numel() for p in m.parameters())
    # zoo.md §2 C3: 501.9 M = encoder 86.58 M + decoder 415.35 M
    assert count(model.encoder) == 86_582_016
    assert count(model.decoder) == 415_352_704
    assert count(model) == model.row.params == 501_934_720
    assert model.encoder.layernorm.weight is None  # final LayerNorm non-affine
    assert len(model.decoder.decoder_layers) == 28


def test_rows_aliases_and_shapes():
    assert zoo_row("RAE").name == "rae_dinov2_reconstruction"
    assert zoo_row("rae-dinov2-reconstruction").name == "rae_dinov2_reconstruction"
    for name in ("rae_dinov2_reconstruction", "uae", "uae-stage2", "uae-stage3", "uae-stage4"):
        row = zoo_row(name)
        assert row.arch == "C3" and row.latent_shape == (768, 16, 16)
    assert zoo_row("uae").files == zoo_row("uae-stage4").files


def test_manifest_has_every_file_of_the_c3_to_c6_rows():
    from latentbench.tokenizers.pretrained import svg, vtp
    from latentbench.weights_fetch import load_manifest

    manifest = load_manifest()
    for module in (rae, vtp, svg):
        for row in module.ROWS:
            assert all(f in manifest for f in row.files), row.name
    assert "GATED" in manifest["dinov3-vits16plus"].used_by
    assert manifest["vtp-b-latent-stats"].sha256 and manifest["rae-dinov2-wreg-base-encoder"].sha256 is None


def test_sincos_positions_analytic():
    pos = rae.sincos_2d(8, 4)
    assert pos.shape == (17, 8) and torch.all(pos[0] == 0)  # CLS row zeros
    # token (row 2, col 3) is index 1 + 2*4 + 3; channel 0 = sin(col), channel 4 = sin(row) (omega_0 = 1)
    t = pos[1 + 2 * 4 + 3]
    assert t[0].item() == pytest.approx(math.sin(3)) and t[2].item() == pytest.approx(math.cos(3))
    assert t[4].item() == pytest.approx(math.sin(2)) and t[6].item() == pytest.approx(math.cos(2))
    assert t[1].item() == pytest.approx(math.sin(3 / 100))  # omega_1 = 1 / 10000^(1/2)


def test_tiny_forward_shapes_and_zero_std():
    model = rae.build(tiny_row(), None)
    with torch.no_grad():
        mean, std = model.encode_moments(images())
        assert mean.shape == (2, 32, 16, 16)
        assert torch.count_nonzero(std) == 0
        assert torch.equal(model.encode(images()), mean)
        assert model.decode(mean).shape == (2, 3, 256, 256)
    with pytest.raises(ValueError, match="stat.pt"):
        model.native_normalize(mean)


def write_rae_files(model: rae.RAETokenizer, folder) -> dict:
    """The three released RAE files of ``model`` (HF DINOv2 safetensors, decoder model.pt, stat.pt)."""
    enc = {t5_to_t4(k, mlp=False): v.clone() for k, v in model.encoder.state_dict().items()}
    enc["layernorm.weight"] = torch.ones(32)  # the HF file's affine final LN, dropped by RAE
    enc["layernorm.bias"] = torch.zeros(32)
    save_file(enc, str(folder / manifest_file("rae-dinov2-wreg-base-encoder")))
    dec = {t5_to_t4(k, mlp=True): v.clone() for k, v in model.decoder.state_dict().items()}
    assert any(".attention.attention.query." in k for k in dec) and any(".intermediate.dense." in k for k in dec)
    torch.save(dec, folder / manifest_file("rae-dinov2-wreg-base-vitxl-n08-decoder"))
    stats = {"mean": torch.randn(1, 32, 16, 16), "var": torch.rand(1, 32, 16, 16) + 0.5}
    torch.save(stats, folder / manifest_file("rae-dinov2-wreg-base-in1k-stat"))
    return {"enc": enc, "dec": dec, "stats": stats}


def test_rae_files_load_strictly_and_reproduce(tmp_path):
    torch.manual_seed(0)
    source = rae.build(tiny_row(), None)
    files = write_rae_files(source, tmp_path)
    loaded = rae.build(tiny_row(), tmp_path)
    x = images()
    with torch.no_grad():
        z, _ = source.encode_moments(x)
        z2, _ = loaded.encode_moments(x)
        assert torch.allclose(z, z2, atol=1e-6)
        assert torch.allclose(source.decode(z), loaded.decode(z2), atol=1e-5)
    mean, var = files["stats"]["mean"][0], files["stats"]["var"][0]
    zn = loaded.native_normalize(z)
    assert torch.allclose(zn, (z - mean) / torch.sqrt(var + 1e-5))  # RAE rae.py encode
    assert torch.allclose(loaded.native_denormalize(zn), z, atol=1e-5)


def test_rae_leftover_and_missing_keys_name_the_file(tmp_path):
    source = rae.build(tiny_row(), None)
    files = write_rae_files(source, tmp_path)
    dec_path = tmp_path / manifest_file("rae-dinov2-wreg-base-vitxl-n08-decoder")
    torch.save({**files["dec"], "mask_token": torch.zeros(1, 1, 32)}, dec_path)
    with pytest.raises(WeightsError, match="unexpected 1 key") as err:
        rae.build(tiny_row(), tmp_path)
    assert str(dec_path) in str(err.value) and "\n" not in str(err.value)
    dec = dict(files["dec"])
    dec.pop("decoder_pred.bias")
    torch.save(dec, dec_path)
    with pytest.raises(WeightsError, match="missing 1 key"):
        rae.build(tiny_row(), tmp_path)
    (tmp_path / manifest_file("rae-dinov2-wreg-base-in1k-stat")).unlink()
    with pytest.raises(WeightsError, match="stat"):
        rae.build(tiny_row(), tmp_path)


def test_uae_whole_model_file_transformers4_names(tmp_path):
    torch.manual_seed(1)
    source = rae.build(tiny_row("uae"), None)
    state = {}
    for k, v in source.state_dict().items():
        if k.startswith("encoder."):
            state["encoder." + t5_to_t4(k, mlp=False)] = v.clone()  # UAE: self.encoder = Dinov2withNorm
        else:
            state[t5_to_t4(k, mlp=True)] = v.clone()
    assert any(k.startswith("encoder.encoder.encoder.layer.0.attention.attention.query") for k in state)
    path = tmp_path / "uae-stage-x.pt"
    torch.save({"model": state, "epoch": 3}, path)
    loaded = rae.build(tiny_row("uae"), path)
    x = images(1)
    with torch.no_grad():
        z = loaded.encode(x)
        assert torch.allclose(source.encode(x), z, atol=1e-6)
    assert torch.equal(loaded.native_normalize(z), z)  # UAE has no statistics
    torch.save({"ema": state}, path)
    with pytest.raises(WeightsError, match="key 'model'"):
        rae.build(tiny_row("uae"), path)
