"""The ViT-based zoo adapters C1 DeTok, C2 DM-VAE, C7 SoftVQ-L-64, C8 MAETok-B-128 (spec zoo.md §2-§4).

Full-size models are built on the meta device only (parameter counts, latent shapes); forward
passes and the strict loading of files in the released layouts use narrow copies (tiny widths,
one or two blocks, 32 px images) of the same classes.
"""

from __future__ import annotations

import json
import pickle
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from einops import rearrange
from safetensors.torch import save_file

from latentbench.tokenizers.pretrained import (
    build_pretrained,
    ct_vit,
    detok,
    dmvae,
    maetok,
    softvq,
    zoo_row,
)
from latentbench.tokenizers.pretrained.base import WeightsError

VIT_TINY = {"embed_dim": 32, "depth": 2, "num_heads": 2}
NARROW = {
    "detok": ({"img_size": 32, "patch_size": 8, "width": 32, "depth": 2, "heads": 2, "token_channels": 4}, (16, 4)),
    "dmvae": (
        {
            **dmvae.ROWS[0].config,
            "encoder_kwargs": VIT_TINY,
            "image_size": 32,
            "patch_size": 8,
            "z_channels": 4,
            "hidden": 16,
            "decoder": {"ch": 16, "ch_mult": (1, 1, 1), "num_res_blocks": 1, "norm_groups": 4},
        },
        (16, 4),
    ),
    "softvq": (
        {
            **softvq.ROWS[0].config,
            "timm_overrides": VIT_TINY,
            "image_size": 32,
            "base_image_size": 32,
            "enc_patch_size": 8,
            "dec_patch_size": 8,
            "num_latent_tokens": 8,
            "codebook_embed_dim": 4,
            "codebook_size": 16,
            "num_codebooks": 2,
        },
        (8, 4),
    ),
    "maetok": (
        {
            **maetok.ROWS[0].config,
            "timm_overrides": VIT_TINY,
            "image_size": 32,
            "base_image_size": 32,
            "enc_patch_size": 8,
            "dec_patch_size": 8,
            "num_latent_tokens": 8,
            "codebook_embed_dim": 4,
        },
        (8, 4),
    ),
}
MODULES = {"detok": detok, "dmvae": dmvae, "softvq": softvq, "maetok": maetok}


def narrow(name: str, weights: Path | None = None, seed: int = 0):
    """The narrow copy of row ``name`` (random init from ``seed``, or loaded from ``weights``)."""
    config, shape = NARROW[name]
    row = replace(zoo_row(name), config=config, latent_shape=shape, resolution=32)
    torch.manual_seed(seed)
    return MODULES[name].build(row, weights)


def images(n: int = 2) -> torch.Tensor:
    return torch.rand(n, 3, 32, 32, generator=torch.Generator().manual_seed(1))


# ---- full-size builds on the meta device -----------------------------------------------------


@pytest.mark.parametrize(
    ("name", "expected"),
    [("detok", 171_712_628), ("dmvae", 355_205_443), ("maetok", 172_681_760), ("softvq", 608_924_448)],
)
def test_parameter_count_and_latent_shape_on_meta(name: str, expected: int) -> None:
    with torch.device("meta"):
        tok = build_pretrained(name)
    n = sum(p.numel() for p in tok.parameters())
    # detok / dmvae: zoo.md §2 [V]. maetok: zoo.md's 172.7 M is [U]; this pinned build gives
    # 172,681,760. softvq: zoo.md leaves 391 M or 609 M open; the pinned ViT-L/ViT-L build is 609 M.
    assert n == expected
    row = zoo_row(name)
    if row.params is not None:
        assert n == row.params
    assert tok.latent_shape == row.latent_shape == tok.latent_shape_at(256)
    assert tok.is_1d


def test_zoo_numbers_of_the_rows() -> None:
    assert zoo_row("detok").params == 171_712_628 and zoo_row("detok").latent_shape == (256, 16)
    assert zoo_row("dmvae").params == 355_205_443 and zoo_row("dmvae").latent_shape == (256, 32)
    assert zoo_row("softvq").latent_shape == (64, 32) and zoo_row("maetok").latent_shape == (128, 32)
    assert round(172_681_760 / 1e5) == 1727  # the [U] 172.7 M of zoo.md, to its printed precision


@pytest.mark.parametrize(
    ("alias", "name"),
    [("DE-TOK", "detok"), ("l-DeTok", "detok"), ("DM-VAE", "dmvae"), ("dm_vae", "dmvae"), ("SOFT-VQ", "softvq"),
     ("softvq-l-64", "softvq"), ("MAE-TOK", "maetok"), ("mae_tok", "maetok"), ("maetok-b-128", "maetok")],
)  # fmt: skip
def test_alias_lookup(alias: str, name: str) -> None:
    assert zoo_row(alias).name == name


def test_rows_declare_zoo_columns() -> None:
    assert zoo_row("detok").encode == "mean"
    assert {zoo_row(n).encode for n in ("dmvae", "softvq", "maetok")} == {"deterministic"}
    assert [zoo_row(n).arch for n in ("detok", "dmvae", "softvq", "maetok")] == ["C1", "C2", "C7", "C8"]
    assert zoo_row("softvq").unverified and zoo_row("maetok").unverified


# ---- narrow forward passes ---------------------------------------------------------------


@pytest.mark.parametrize("name", list(NARROW))
def test_narrow_encode_decode(name: str) -> None:
    tok = narrow(name)
    x = images()
    with torch.no_grad():
        mean, std = tok.encode_moments(x)
        assert mean.shape == std.shape == (2, *NARROW[name][1])
        assert torch.isfinite(mean).all()
        if tok.posterior == "deterministic":
            assert torch.equal(std, torch.zeros_like(std))
            assert torch.equal(tok.encode(x), mean)
        else:  # DeTok's Gaussian posterior: positive std, mean when not sampling
            assert (std > 0).all()
            assert torch.equal(tok.encode(x, sample=False), mean)
        out = tok.decode(mean)
    assert out.shape == x.shape and torch.isfinite(out).all()


def test_batch_independence() -> None:
    # every encoder here is per-image (unlike SVG's batch statistics, zoo.md §5)
    for name in NARROW:
        tok = narrow(name)
        x = images(3)
        with torch.no_grad():
            both = tok.encode_moments(x)[0]
            one = tok.encode_moments(x[1:2])[0]
        torch.testing.assert_close(both[1:2], one, rtol=1e-4, atol=1e-5)


def test_decode_is_not_clamped() -> None:
    tok = narrow("detok")
    with torch.no_grad():
        tok.net.decoder.conv_out.bias.fill_(5.0)  # pushes every pixel far above 1
        out = tok.decode(torch.zeros(1, 16, 4))
    assert out.min() > 1.0


# ---- formulas against oracles ---------------------------------------------------------------


def test_detok_rope_table_and_rotation() -> None:
    table = detok.rope_table(head_dim=16, side=4)
    assert table.shape == (16, 32)
    cos, sin = table.chunk(2, dim=-1)
    assert torch.allclose(cos[0], torch.ones(16)) and torch.allclose(sin[0], torch.zeros(16))  # origin: no turn
    freqs = 7.0 * (7.0 / 7e-4) ** torch.linspace(0, -1, 4)
    # last token: row = col = 1; first half of the channels turns with the row, second with the column
    ang = torch.cat([freqs, freqs]) * 2 * torch.pi
    torch.testing.assert_close(cos[15], torch.cat([ang, ang]).cos())
    # token 4 of the row-major 4x4 grid: row coordinate 1/3, column 0
    torch.testing.assert_close(sin[4], (torch.cat([torch.full((8,), 1 / 3), torch.zeros(8)]) * torch.cat([ang, ang])).sin())
    x = torch.randn(2, 3, 16, 16)
    got = detok.apply_rope(x, table)
    pairs = rearrange(x, "... (d r) -> ... d r", r=2)
    rot = rearrange(torch.stack((-pairs[..., 1], pairs[..., 0]), -1), "... d r -> ... (d r)")
    torch.testing.assert_close(got, x * cos + rot * sin)


def test_detok_patch_order_matches_einops() -> None:
    tok = narrow("detok")
    dec = tok.net.decoder
    with torch.no_grad():
        dec.conv_out.weight.zero_()
        dec.conv_out.weight[:, :, 1, 1] = torch.eye(3)  # identity 3x3 conv
        dec.conv_out.bias.zero_()
        h = torch.randn(1, 16, 32)
        patches = dec.ffn(h.transpose(1, 2).reshape(1, 32, 4, 4))
        want = rearrange(patches, "b (p1 p2 c) h w -> b c (h p1) (w p2)", p1=8, p2=8)
        dec.run = lambda t: h  # isolate the token -> pixel path
        got = dec(torch.zeros(1, 16, 4))
    torch.testing.assert_close(got, want)


def test_ct_to_pixel_matches_upstream_unpatchify() -> None:
    to_pixel = ct_vit.ToPixel(width=8, patch=4)
    x = torch.randn(2, 9, 8)
    with torch.no_grad():
        want = rearrange(to_pixel.model(x), "n (h w) (p q c) -> n c (h p) (w q)", h=3, p=4, q=4)
        torch.testing.assert_close(to_pixel(x), want)


def test_mixed_rope_is_a_relative_rotation() -> None:
    torch.manual_seed(0)
    freqs = ct_vit.init_mixed_freqs(depth=2, heads=2, head_dim=8, theta=10.0)
    assert freqs.shape == (2, 2, 8)
    t_x, t_y = ct_vit.grid_coords(3, 3)
    assert t_x.tolist() == [0, 1, 2] * 3 and t_y.tolist() == [0] * 3 + [1] * 3 + [2] * 3  # row-major
    ang = ct_vit.mixed_angles(freqs, t_x, t_y, heads=2)
    assert ang.shape == (2, 2, 9, 4)
    torch.testing.assert_close(ang[1, 0, 5], 2 * freqs[0, 1, :4] + 1 * freqs[1, 1, :4])  # token 5 = (x 2, y 1)
    q, k = torch.randn(1, 2, 9, 8), torch.randn(1, 2, 9, 8)
    # upstream's complex product
    want = torch.view_as_real(torch.view_as_complex(q.unflatten(-1, (-1, 2))) * torch.polar(torch.ones_like(ang[0]), ang[0])).flatten(-2)
    torch.testing.assert_close(ct_vit.rotate_pairs(q, ang[0]), want)
    # <R(a) q, R(b) k> depends on a - b only
    shift = torch.randn(2, 1, 4)
    dot = (ct_vit.rotate_pairs(q, ang[0]) * ct_vit.rotate_pairs(k, ang[0])).sum(-1)
    dot_shifted = (ct_vit.rotate_pairs(q, ang[0] + shift) * ct_vit.rotate_pairs(k, ang[0] + shift)).sum(-1)
    torch.testing.assert_close(dot, dot_shifted, rtol=1e-4, atol=1e-5)


def test_soft_vq_limits() -> None:
    cfg = ct_vit.CTConfig(**{**NARROW["softvq"][0], "codebook_size": 8})
    vq = ct_vit.SoftVectorQuantizer(cfg)
    z = torch.randn(3, 8, 4, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        vq.embedding.copy_(torch.stack([torch.cat([torch.eye(4), -torch.eye(4)]), torch.cat([-torch.eye(4), torch.eye(4)])]))
        soft = vq(z)
        vq.tau = 1e-6  # hard limit: the nearest (cosine) codeword of the segment's codebook
        hard = vq(z)
    emb = torch.nn.functional.normalize(vq.embedding.detach(), dim=-1)
    zs = torch.nn.functional.normalize(z.view(3, 2, 4, 4), dim=-1)
    idx = torch.einsum("bnsc,nkc->bnsk", zs, emb).argmax(-1)
    want = torch.stack([emb[n][idx[:, n]] for n in range(2)], dim=1).reshape(3, 8, 4)
    torch.testing.assert_close(hard, want)
    assert (soft.norm(dim=-1) <= 1 + 1e-5).all()  # convex combination of unit codewords


def test_dmvae_preprocessing_and_token_grid() -> None:
    tok = narrow("dmvae")
    x = images()
    enc = tok.net.encoder
    mean, std = torch.tensor(dmvae.IMAGENET_MEAN).view(1, 3, 1, 1), torch.tensor(dmvae.IMAGENET_STD).view(1, 3, 1, 1)
    torch.testing.assert_close(enc.scale(enc.de_scale(x * 2 - 1)), (x - mean) / std)
    z = torch.randn(1, 16, 4)
    seen = {}
    tok.net.decoder.register_forward_pre_hook(lambda m, a: seen.setdefault("grid", a[0]))
    with torch.no_grad():
        tok.decode(z)
    torch.testing.assert_close(seen["grid"], rearrange(z, "b (h w) c -> b c h w", h=4))


def test_native_normalisations() -> None:
    z = torch.randn(2, 16, 4)
    tok = narrow("dmvae")
    torch.testing.assert_close(tok.native_normalize(z), (z - 0.0685) * 0.1763)
    torch.testing.assert_close(tok.native_denormalize(tok.native_normalize(z)), z)
    for name in ("detok", "softvq", "maetok"):  # statistics come with the released files only
        with pytest.raises(ValueError, match="native normalisation needs"):
            narrow(name).native_normalize(z)


# ---- released file layouts: strict loading ------------------------------------------------


def _same_outputs(a, b) -> None:
    x = images()
    with torch.no_grad():
        za, zb = a.encode_moments(x)[0], b.encode_moments(x)[0]
        torch.testing.assert_close(za, zb)
        torch.testing.assert_close(a.decode(za), b.decode(zb))


def _write_detok(tmp: Path, state: dict) -> Path:
    torch.save({"model": state, "model_ema": None, "epoch": 7, "last_elapsed_time": 1.5}, tmp / detok.CHECKPOINT)
    stats = {detok.STATS_KEY: {"single": (torch.tensor(0.1), torch.tensor(2.0)),
                               "channel": (torch.arange(8.0), torch.arange(8.0) + 1.0)}}  # fmt: skip
    with open(tmp / "stats.pkl", "wb") as fh:  # the repo's name; the manifest name also works
        pickle.dump(stats, fh)
    return tmp / detok.CHECKPOINT


def test_detok_released_layout_loads_strictly(tmp_path: Path) -> None:
    src = narrow("detok", seed=3)
    path = _write_detok(tmp_path, src.net.state_dict())
    for weights in (tmp_path, path):
        got = narrow("detok", weights=weights, seed=4)
        _same_outputs(src, got)
    z = torch.randn(1, 16, 4)
    # first 4 of the 8 moment channels: the means'
    torch.testing.assert_close(got.native_normalize(z), (z - torch.arange(4.0)) / (torch.arange(4.0) + 1))
    torch.testing.assert_close(got.native_denormalize(got.native_normalize(z)), z)


@pytest.mark.parametrize("defect", ["leftover", "missing"])
def test_detok_key_mismatch_is_one_line(tmp_path: Path, defect: str) -> None:
    state = dict(narrow("detok").net.state_dict())
    if defect == "leftover":
        state["encoder.extra.weight"] = torch.zeros(1)
    else:
        del state["decoder.conv_out.bias"]
    path = _write_detok(tmp_path, state)
    with pytest.raises(WeightsError) as err:
        narrow("detok", weights=path)
    msg = str(err.value)
    assert "\n" not in msg and str(path) in msg and ("unexpected" if defect == "leftover" else "missing") in msg


def test_dmvae_released_layout_loads_strictly(tmp_path: Path) -> None:
    src, ema = narrow("dmvae", seed=3), narrow("dmvae", seed=5)
    path = tmp_path / dmvae.CHECKPOINT
    blob = {"vae_wo_ddp": src.net.state_dict(), "vae_ema": ema.net.state_dict(), "steps": 10, "args": {"lr": 1e-4}}
    torch.save(blob, path)
    _same_outputs(src, narrow("dmvae", weights=tmp_path))  # iFID's choice: vae_wo_ddp
    row = replace(zoo_row("dmvae"), config={**NARROW["dmvae"][0], "state_key": "vae_ema"}, latent_shape=(16, 4), resolution=32)
    _same_outputs(ema, dmvae.build(row, path))
    blob["vae_wo_ddp"] = {k: v for k, v in blob["vae_wo_ddp"].items() if k != "encoder.scale.mean"}
    torch.save(blob, path)
    with pytest.raises(WeightsError, match=r"dmvae-vae\.pt: does not match .*missing 1 key"):
        narrow("dmvae", weights=path)
    torch.save({"model": src.net.state_dict()}, path)
    with pytest.raises(WeightsError, match="under key 'vae_wo_ddp'"):
        narrow("dmvae", weights=path)


def _write_hub(tmp: Path, name: str, state: dict, **config_changes) -> Path:
    cfg = ct_vit.CTConfig(**NARROW[name][0])
    # what PyTorchModelHubMixin writes: asdict(ModelArgs), i.e. every ModelArgs field
    shipped = {**ct_vit.MODELARGS_DEFAULTS, **{k: v for k, v in cfg.__dict__.items() if k not in ("quantizer", "timm_overrides")}}
    shipped.update(enc_token_drop=0.4 if cfg.enc_token_drop else 0.0, repa=True, vq_mean=0.25, vq_std=2.0, **config_changes)
    (tmp / "config.json").write_text(json.dumps(shipped))
    save_file({k: v.contiguous() for k, v in state.items()}, str(tmp / "model.safetensors"))
    return tmp / "model.safetensors"


@pytest.mark.parametrize("name", ["softvq", "maetok"])
def test_hub_snapshot_loads_strictly(tmp_path: Path, name: str) -> None:
    src = narrow(name, seed=3)
    state = dict(src.net.state_dict())
    state["repa_model.blocks.0.attn.qkv.weight"] = torch.zeros(2, 2)  # training-only module: filtered
    path = _write_hub(tmp_path, name, state)
    for weights in (tmp_path, path):
        got = narrow(name, weights=weights, seed=4)
        _same_outputs(src, got)
    z = torch.randn(1, 8, 4)
    torch.testing.assert_close(got.native_normalize(z), (z - 0.25) / 2.0)
    if name == "maetok":
        assert torch.equal(got.net.encoder.freqs, src.net.encoder.freqs)  # learned RoPE frequencies travel


@pytest.mark.parametrize("name", ["softvq", "maetok"])
def test_hub_snapshot_mismatches_are_one_line(tmp_path: Path, name: str) -> None:
    state = dict(narrow(name).net.state_dict())
    _write_hub(tmp_path, name, {**state, "decoder.extra": torch.zeros(1)})
    with pytest.raises(WeightsError, match=r"model\.safetensors: does not match .*unexpected 1 key"):
        narrow(name, weights=tmp_path)
    _write_hub(tmp_path, name, {k: v for k, v in state.items() if k != "quant_conv.bias"})
    with pytest.raises(WeightsError, match=r"model\.safetensors: does not match .*missing 1 key"):
        narrow(name, weights=tmp_path)
    _write_hub(tmp_path, name, state, use_rope=name == "softvq", num_latent_tokens=16)
    with pytest.raises(WeightsError) as err:
        narrow(name, weights=tmp_path)
    msg = str(err.value)
    assert "\n" not in msg and "config.json: config differs" in msg and "num_latent_tokens=16" in msg and "use_rope" in msg


def test_missing_companion_file_is_named(tmp_path: Path) -> None:
    src = narrow("detok")
    torch.save({"model": src.net.state_dict()}, tmp_path / detok.CHECKPOINT)
    with pytest.raises(WeightsError, match="no DeTok latent statistics found"):
        narrow("detok", weights=tmp_path)
    save_file({"x": torch.zeros(1)}, str(tmp_path / "model.safetensors"))
    with pytest.raises(WeightsError, match="no config.json found"):
        narrow("maetok", weights=tmp_path)


def test_rows_name_manifest_entries() -> None:
    from latentbench.weights_fetch import load_manifest

    manifest = load_manifest()
    for name in ("detok", "dmvae", "softvq", "maetok"):
        for entry in zoo_row(name).files:
            assert entry in manifest and manifest[entry].kind == "hf"
    assert manifest["dmvae-vae"].hf_filename == "vae.pt" and manifest["detok-stats"].hf_filename == "stats.pkl"
    # the loaders find the manifest's file names in a weights directory
    assert manifest["detok-bb-decoder-tuned"].file == detok.CHECKPOINT and manifest["detok-stats"].file == detok.STATS_FILE
    assert manifest["dmvae-vae"].file == dmvae.CHECKPOINT
    assert manifest["softvq-l-64-model"].file == f"{softvq.STEM}-model.safetensors"
    assert manifest["maetok-b-128-config"].file == f"{maetok.STEM}-config.json"
