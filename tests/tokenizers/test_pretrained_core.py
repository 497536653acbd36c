"""The pretrained zoo's KL rows (spec zoo.md §2-4: K1-K4): architectures, loaders, key maps, norms.

Full-size models are built on the ``meta`` device only; numerics run on narrow copies (same
layout, fewer channels) whose files the tests write in the released formats.
"""

from __future__ import annotations

import argparse
import dataclasses
import json

import pytest
import torch

from latentbench.tokenizers import build_tokenizer, known_pretrained
from latentbench.tokenizers.kl_vae import count_parameters
from latentbench.tokenizers.pretrained import (
    build_pretrained,
    diffusers_kl,
    ldm,
    zoo_row,
)
from latentbench.tokenizers.pretrained.base import WeightsError

LDM_ROWS = [r.name for r in ldm.ROWS]
DIFFUSERS_ROWS = [r.name for r in diffusers_kl.ROWS]

# Narrow copies: the released layouts with fewer channels (norm groups scaled down with them).
NARROW_LDM = {"ch": 32, "norm_groups": 8}
NARROW_KL = {"block_out_channels": [32, 64, 128, 128], "norm_num_groups": 8}
NARROW_K3 = {"block_out_channels": [32, 32, 64, 64, 128], "norm_num_groups": 8}
NARROW_K4 = {"base_dim": 16}


def narrow(name: str, **overrides) -> ldm.ZooRow:
    row = zoo_row(name)
    if not overrides:
        overrides = NARROW_LDM if name in LDM_ROWS else {"K3": NARROW_K3, "K4": NARROW_K4}.get(row.arch, NARROW_KL)
    return dataclasses.replace(row, config={**row.config, **overrides})


def images(n: int = 2, side: int = 32, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 3, side, side, generator=torch.Generator().manual_seed(seed))


# ------------------------------------------------------------------ architectures (meta)


@pytest.mark.parametrize(
    "name, params",
    [("eq-vae", 83_653_863), ("sdvae", 83_653_863), ("flux-vae", 83_819_683), ("ldm_f16d16_50ep", 69_610_963),
     ("invae", 69_836_067), ("e2e-invae-hf", 69_836_067), ("ldm_f16d64_50ep", 70_293_955),
     ("qwenimage-vae", 126_892_531)],
)  # fmt: skip
def test_parameter_counts_equal_the_spec_on_meta(name, params):
    # spec zoo.md §2: K1 83,653,863; K2 83,819,683; K3 C=16/32/64 69,610,963 / 69,836,067 / 70,293,955; K4 126,892,531
    with torch.device("meta"):
        tok = build_pretrained(name)
    assert count_parameters(tok) == params == zoo_row(name).params


def test_every_row_builds_on_meta_with_its_declared_size_and_latent_at_256():
    with torch.device("meta"):
        for name in LDM_ROWS + DIFFUSERS_ROWS:
            tok = build_pretrained(name)
            assert count_parameters(tok) == tok.row.params, name
            mean, std = tok.encode_moments(torch.empty(1, 3, 256, 256))
            assert tuple(mean.shape[1:]) == tuple(std.shape[1:]) == tok.row.latent_shape == tok.latent_shape, name
            assert tuple(tok.decode(mean).shape) == (1, 3, 256, 256), name


def test_latent_shapes_follow_the_spec_not_ifid_table_2():
    # zoo.md §2 / models.md §2.5.1: IN-VAE and VA-VAE are 32x16x16 (iFID Table 2 says 16x16x16)
    assert zoo_row("IN-VAE").latent_shape == zoo_row("VA-VAE").latent_shape == (32, 16, 16)
    assert zoo_row("SD-VAE").latent_shape == (4, 32, 32)
    assert zoo_row("QwenImage-VAE").latent_shape == zoo_row("FLUX-VAE").latent_shape == (16, 32, 32)
    assert zoo_row("vavae_f16d64_mae_50ep").latent_shape == (64, 16, 16)


def test_ifid_six_level_ch_mult_is_rejected():
    with pytest.raises(ValueError, match="iFID configs' bug"):
        ldm.ldm_arch({"embed_dim": 32, "ch_mult": [1, 1, 2, 2, 4, 4]})
    with pytest.raises(ValueError, match="not a released LDM layout"):
        ldm.ldm_arch({"embed_dim": 32, "ch_mult": [1, 2, 2, 4]})
    assert ldm.ldm_arch({"embed_dim": 16, "ch_mult": [1, 1, 2, 2, 4]}).latent_shape == (16, 16, 16)


# ------------------------------------------------------------------ registry


def test_registry_names_aliases_and_family_builder():
    names = known_pretrained()
    assert set(LDM_ROWS + DIFFUSERS_ROWS) <= set(names) and len(LDM_ROWS) == 15 and len(DIFFUSERS_ROWS) == 10
    aliases = {"SD-VAE": "sdvae", "IN-VAE": "invae", "FLUX-VAE": "flux-vae", "QwenImage-VAE": "qwenimage-vae",
               "SD3-VAE": "sd3-vae", "EQ-VAE": "eq-vae", "VA-VAE": "vavae_f16d32", "REPAE-VAE": "e2e-sdvae",
               "sd_vae": "sdvae", "REPA-E": "e2e-vae"}  # fmt: skip
    for alias, name in aliases.items():
        assert zoo_row(alias).name == name
    with pytest.raises(ValueError, match="unknown pretrained tokenizer 'no-such-vae'"):
        zoo_row("no-such-vae")
    with torch.device("meta"):
        tok = build_tokenizer({"family": "pretrained", "name": "SD-VAE", "weights": None})
    assert tok.row.name == "sdvae" and tok.posterior == "gaussian" and tok.native_norm == "z * 0.18215"


def test_weights_path_names_the_file_or_the_model_directory(tmp_path):
    from latentbench.tokenizers.pretrained import weights_path

    assert weights_path("VA-VAE", tmp_path) == tmp_path / "zoo/vavae_f16d32/vavae-imagenet256-f16d32-dinov2.pt"
    assert weights_path("flux-vae", tmp_path) == tmp_path / "zoo/flux-vae"
    # the stats file the loader looks for next to the weights is the one the manifest fetches there
    row = zoo_row("invae")
    assert ldm.stats_path(row, weights_path("invae", tmp_path)) == tmp_path / "zoo/invae/invae-f16d32-latents-stats.pt"
    va = weights_path("vavae_f16d32", tmp_path)
    assert ldm.stats_path(zoo_row("vavae_f16d32"), va) == tmp_path / "zoo/vavae_f16d32/latents_stats.pt"


def test_registry_does_not_import_diffusers():
    import subprocess
    import sys

    code = "import sys; from latentbench.tokenizers import known_pretrained; known_pretrained(); print('diffusers' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "False"


def test_ifid_encode_column():
    assert {r.name for r in ldm.ROWS + diffusers_kl.ROWS if r.encode == "sample"} == {
        "sdvae", "invae", "vavae_f16d32", "e2e-sdvae", "flux-vae", "sd3-vae", "eq-vae", "qwenimage-vae"}  # fmt: skip


def test_every_row_names_manifest_files_with_licence_and_gating():
    from latentbench.weights_fetch import load_manifest

    manifest = load_manifest()
    for row in ldm.ROWS + diffusers_kl.ROWS:
        assert row.files and all(f in manifest and manifest[f].kind == "hf" for f in row.files), row.name
    assert manifest["zoo-flux-vae-weights"].gated and manifest["zoo-sd3-vae-weights"].gated
    assert not manifest["zoo-qwenimage-vae-weights"].gated
    assert manifest["zoo-vavae_f16d32"].hf_repo == "hustvl/vavae-imagenet256-f16d32-dinov2"
    with torch.device("meta"):
        refs = build_pretrained("flux-vae").declared_weights(manifest)
    assert [(r.repo, r.file, r.gated) for r in refs] == [
        ("black-forest-labs/FLUX.1-dev", "vae/config.json", True),
        ("black-forest-labs/FLUX.1-dev", "vae/diffusion_pytorch_model.safetensors", True),
    ]


# ------------------------------------------------------------------ forward on narrow copies (CPU)


@pytest.mark.parametrize("name", ["sdvae", "invae", "flux-vae", "e2e-invae-hf", "qwenimage-vae"])
def test_narrow_copy_forward(name):
    torch.manual_seed(0)
    row = narrow(name)
    tok = (ldm if name in LDM_ROWS else diffusers_kl).build(row, None)
    x = images(2, 32)
    mean, std = tok.encode_moments(x)
    f = 16 if row.arch == "K3" else 8
    assert mean.shape == std.shape == (2, row.latent_shape[0], 32 // f, 32 // f)
    assert bool((std > 0).all())
    assert torch.equal(tok.encode(x, sample=False), mean)
    assert not torch.equal(tok.encode(x), tok.encode(x))  # a posterior sample
    assert tok.decode(mean).shape == x.shape


# ------------------------------------------------------------------ LDM-format files


def ldm_model(name: str, seed: int = 0) -> tuple[ldm.ZooRow, ldm.LDMTokenizer]:
    row = narrow(name)
    torch.manual_seed(seed)
    return row, ldm.LDMTokenizer(row, ldm.ldm_arch(row.config))


def test_repae_file_and_stats_load_strictly(tmp_path):
    row, ref = ldm_model("invae")
    path = tmp_path / "invae-f16d32.pt"
    torch.save(ref.vae.state_dict(), path)
    bias, scale = torch.randn(1, 32, 1, 1), torch.rand(1, 32, 1, 1) + 0.5
    torch.save({"latents_scale": scale, "latents_bias": bias}, tmp_path / "invae-f16d32-latents-stats.pt")
    tok = ldm.build(row, path)
    x = images()
    torch.testing.assert_close(tok.encode_moments(x)[0], ref.encode_moments(x)[0], rtol=0, atol=0)
    z = torch.randn(2, 32, 2, 2)
    torch.testing.assert_close(tok.native_normalize(z), (z - bias) * scale)  # REPA-E sample_posterior
    torch.testing.assert_close(tok.native_denormalize(tok.native_normalize(z)), z)


def test_repae_file_without_stats_says_so_only_when_asked(tmp_path):
    row, ref = ldm_model("e2e-invae")
    path = tmp_path / "e2e-invae-400k.pt"
    torch.save(ref.vae.state_dict(), path)
    tok = ldm.build(row, path)  # loads; the study may use another latent_norm
    with pytest.raises(ValueError, match=r"e2e-invae-400k-latents-stats\.pt \(not found"):
        tok.native_normalize(torch.zeros(1, 32, 2, 2))


def test_ldm_leftover_or_missing_key_fails_naming_the_file(tmp_path):
    row, ref = ldm_model("invae")
    state = ref.vae.state_dict()
    path = tmp_path / "extra.pt"
    torch.save({**state, "model_ema.decay": torch.tensor(0.999)}, path)
    with pytest.raises(WeightsError, match=r"extra\.pt: .*unexpected 1 key.*model_ema\.decay") as info:
        ldm.build(row, path)
    assert "\n" not in str(info.value)
    path = tmp_path / "short.pt"
    torch.save({k: v for k, v in state.items() if k != "quant_conv.bias"}, path)
    with pytest.raises(WeightsError, match=r"short\.pt: .*missing 1 key.*quant_conv\.bias"):
        ldm.build(row, path)


def hustvl_checkpoint(state: dict, **extra) -> dict:
    """A VA-VAE Lightning checkpoint: AE + training loss + foundation model + VF projection."""
    wrapped = {**state, "loss.discriminator.main.0.weight": torch.randn(8, 3, 4, 4),
               "loss.perceptual_loss.net.slice1.0.weight": torch.randn(8, 3, 3, 3),
               "foundation_model.model.blocks.0.attn.qkv.weight": torch.randn(24, 8),
               "linear_proj.weight": torch.randn(16, 32, 1, 1), **extra}  # fmt: skip
    return {"state_dict": wrapped, "epoch": 49, "global_step": 1000, "optimizer_states": [{}]}


def test_hustvl_wrapped_file_drops_training_modules_and_reads_latents_stats(tmp_path):
    row, ref = ldm_model("vavae_f16d32")
    path = tmp_path / "vavae-imagenet256-f16d32-dinov2.pt"
    torch.save(hustvl_checkpoint(ref.vae.state_dict()), path)
    mean, std = torch.randn(1, 32, 1, 1), torch.rand(1, 32, 1, 1) + 0.5
    torch.save({"mean": mean, "std": std}, tmp_path / "latents_stats.pt")
    tok = ldm.build(row, path)
    x = images()
    torch.testing.assert_close(tok.encode_moments(x)[1], ref.encode_moments(x)[1], rtol=0, atol=0)
    z = torch.randn(3, 32, 2, 2)
    torch.testing.assert_close(tok.native_normalize(z), (z - mean) / std)  # LightningDiT img_latent_dataset.py
    # anything besides loss / foundation_model / linear_proj is an error
    torch.save(hustvl_checkpoint(ref.vae.state_dict(), **{"model_ema.encoder.conv_in.weight": torch.zeros(1)}), path)
    with pytest.raises(WeightsError, match=r"vavae-imagenet256-f16d32-dinov2\.pt: .*unexpected 1 key"):
        ldm.build(row, path)


def test_experimental_variants_have_no_published_stats(tmp_path):
    row, ref = ldm_model("ldm_f16d16_50ep")
    path = tmp_path / "ldm-imagenet256-f16d16-50ep.ckpt"
    torch.save(hustvl_checkpoint(ref.vae.state_dict()), path)
    tok = ldm.build(row, path)
    with pytest.raises(ValueError, match="no latent statistics were published"):
        tok.native_normalize(torch.zeros(1, 16, 2, 2))


def test_repae_training_checkpoint_for_e2e_vae_reads_vae_and_bn_stats(tmp_path):
    row, ref = ldm_model("e2e-vae")
    running_mean, running_var = torch.randn(32), torch.rand(32) + 0.5
    ckpt = {"vae": ref.vae.state_dict(), "ema": {"bn.running_mean": running_mean, "bn.running_var": running_var},
            "model": {}, "args": argparse.Namespace(model="SiT-XL/1")}  # fmt: skip
    path = tmp_path / "0400000.pt"
    torch.save(ckpt, path)
    tok = ldm.build(row, path)  # non-tensor objects: re-read with weights_only=False
    x = images()
    torch.testing.assert_close(tok.encode_moments(x)[0], ref.encode_moments(x)[0], rtol=0, atol=0)
    z = torch.randn(1, 32, 2, 2)
    # REPA-E save_vae_weights.py: bias = running_mean, scale = rsqrt(running_var)
    torch.testing.assert_close(tok.native_normalize(z), (z - running_mean.view(1, -1, 1, 1)) * running_var.rsqrt().view(1, -1, 1, 1))


def test_native_norm_constants_and_missing_stats():
    with torch.device("meta"):
        sd, flux, sd3, qwen = (build_pretrained(n) for n in ("sdvae", "flux-vae", "sd3-vae", "qwenimage-vae"))
        invae, e2e_flux = build_pretrained("invae"), build_pretrained("e2e-flux-vae")
    z = torch.randn(2, 16, 4, 4)
    torch.testing.assert_close(sd.native_normalize(z[:, :4]), z[:, :4] * 0.18215)
    torch.testing.assert_close(flux.native_normalize(z), (z - 0.1159) * 0.3611)
    torch.testing.assert_close(sd3.native_normalize(z), (z - 0.0609) * 1.5305)
    mean, std = torch.tensor(diffusers_kl.K4["latents_mean"]), torch.tensor(diffusers_kl.K4["latents_std"])
    torch.testing.assert_close(qwen.native_normalize(z), (z - mean.view(1, -1, 1, 1)) / std.view(1, -1, 1, 1))
    for tok in (sd, flux, qwen):
        torch.testing.assert_close(tok.native_denormalize(tok.native_normalize(z[:, : tok.latent_shape[0]])), z[:, : tok.latent_shape[0]])
    with pytest.raises(ValueError, match="invae: native latent normalisation needs the released statistics"):
        invae.native_normalize(torch.zeros(1, 32, 2, 2))
    with pytest.raises(ValueError, match="e2e-flux-vae: no native latent normalisation"):
        e2e_flux.native_normalize(z)


# ------------------------------------------------------------------ diffusers directories


def write_diffusers_dir(path, tok, extra_config=None, rename=None):
    """A diffusers release directory (config.json + diffusion_pytorch_model.safetensors) of ``tok``."""
    from safetensors.torch import save_file

    path.mkdir(parents=True, exist_ok=True)
    cfg = {"_class_name": type(tok.vae).__name__, "_diffusers_version": "0.30.0", **dict(tok.vae.config), **(extra_config or {})}
    (path / "config.json").write_text(json.dumps(cfg))
    state = {(rename(k) if rename else k): v.contiguous() for k, v in tok.vae.state_dict().items()}
    save_file(state, str(path / "diffusion_pytorch_model.safetensors"))
    return path


@pytest.mark.parametrize("name", ["e2e-sdvae-hf", "qwenimage-vae"])
def test_diffusers_directory_loads_strictly_with_its_config_norm(tmp_path, name):
    row = narrow(name)
    torch.manual_seed(1)
    ref = diffusers_kl.build(row, None)
    c = row.latent_shape[0]
    mean, std = torch.randn(c), torch.rand(c) + 0.5
    d = write_diffusers_dir(tmp_path / name, ref, {"latents_mean": mean.tolist(), "latents_std": std.tolist()})
    tok = diffusers_kl.build(row, d)
    x = images(1, 32)
    torch.testing.assert_close(tok.encode_moments(x)[0], ref.encode_moments(x)[0], rtol=0, atol=0)
    z = torch.randn(1, c, 4, 4)
    torch.testing.assert_close(tok.native_normalize(z), (z - mean.view(1, -1, 1, 1)) / std.view(1, -1, 1, 1))


def test_diffusers_deprecated_attention_names_load(tmp_path):
    # sd-vae-ft-mse's 2022 file names the mid attention query/key/value/proj_attn
    old = {"to_q": "query", "to_k": "key", "to_v": "value", "to_out.0": "proj_attn"}

    def rename(k):
        for new, dep in old.items():
            k = k.replace(f".attentions.0.{new}.", f".attentions.0.{dep}.")
        return k

    row = narrow("eq-vae")
    ref = diffusers_kl.build(row, None)
    d = write_diffusers_dir(tmp_path / "eq", ref, {"scaling_factor": 0.18215}, rename=rename)
    tok = diffusers_kl.build(row, d)
    x = images(1, 32)
    torch.testing.assert_close(tok.encode_moments(x)[0], ref.encode_moments(x)[0], rtol=0, atol=0)
    torch.testing.assert_close(tok.native_normalize(torch.ones(1, 4, 1, 1)), torch.full((1, 4, 1, 1), 0.18215))


def test_diffusers_config_mismatch_and_key_errors_name_the_file(tmp_path):
    row = narrow("flux-vae")
    ref = diffusers_kl.build(row, None)
    d = write_diffusers_dir(tmp_path / "flux", ref, {"latent_channels": 4})
    with pytest.raises(WeightsError, match=r"flux/config\.json: architecture differs .*latent_channels: 4 \(pinned 16\)"):
        diffusers_kl.build(row, d)
    d = write_diffusers_dir(tmp_path / "flux2", ref, rename=lambda k: k.replace("conv_out", "conv_last"))
    with pytest.raises(WeightsError, match=r"flux2/diffusion_pytorch_model\.safetensors: .*missing 4 key") as info:
        diffusers_kl.build(row, d)
    assert "\n" not in str(info.value)
    with pytest.raises(WeightsError, match="needs a diffusers model directory"):
        diffusers_kl.build(row, d / "config.json")


# ------------------------------------------------------------------ LDM -> diffusers equivalence


@pytest.mark.parametrize("name, dconfig", [("invae", NARROW_K3), ("sdvae", NARROW_KL)])
def test_ldm_weights_equal_their_diffusers_conversion(name, dconfig):
    """conv_kl with LDM weights == diffusers AutoencoderKL with the converted weights (zoo.md §4.1-4.2)."""
    row, ldm_tok = ldm_model(name, seed=3)
    with torch.no_grad():  # non-trivial GroupNorm affines so a wrong norm mapping shows
        for m in ldm_tok.vae.modules():
            if isinstance(m, torch.nn.GroupNorm):
                m.weight.uniform_(0.5, 1.5), m.bias.uniform_(-0.2, 0.2)
    k = diffusers_kl.K3 if row.arch == "K3" else diffusers_kl.K1
    dcfg = {**k, **dconfig, "latent_channels": row.latent_shape[0]}
    drow = dataclasses.replace(zoo_row("e2e-invae-hf" if row.arch == "K3" else "e2e-sdvae-hf"), config=dcfg)
    dif = diffusers_kl.build(drow, None)
    state = diffusers_kl.ldm_to_diffusers(ldm_tok.vae.state_dict(), dcfg)
    dif.vae.load_state_dict(state, strict=True)
    x = images(2, 32, seed=5)
    with torch.no_grad():
        (m1, s1), (m2, s2) = ldm_tok.encode_moments(x), dif.encode_moments(x)
        assert (m1 - m2).abs().max() < 1e-4 and (s1 - s2).abs().max() < 1e-4
        assert (ldm_tok.decode(m1) - dif.decode(m1)).abs().max() < 1e-4
