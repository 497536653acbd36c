"""The LDM conv KL-VAE (spec models.md §3.1, §4) and the tokenizer registry."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from latentbench.tokenizers import build_tokenizer, known_families, known_regularizers, load_tokenizer, save_tokenizer
from latentbench.tokenizers.base import Tokenizer
from latentbench.tokenizers.kl_vae import (
    LOGVAR_MAX,
    LOGVAR_MIN,
    ArchConfig,
    AttnBlock,
    AutoencoderKL,
    ConvKLTokenizer,
    DiagonalGaussian,
    count_parameters,
    resolve_arch,
)

TINY = {"ch": 8, "ch_mult": (1, 2), "num_res_blocks": 1, "attn_resolutions": (8,), "z_channels": 2, "embed_dim": 2,
        "resolution": 16, "norm_groups": 4}  # fmt: skip


def _meta_model(arch) -> AutoencoderKL:
    with torch.device("meta"):
        return AutoencoderKL(resolve_arch(arch))


@pytest.mark.parametrize(
    "arch, total, enc, dec",
    [
        ("f16d32", 69.84, 28.41, 41.42),  # spec models.md §3.1 [COMPUTED]
        ("f16d64", 70.29, None, None),
        ("f8d4", 83.65, None, None),  # SD-VAE, spec §2.2
        ("f16d32_s", 17.59, None, None),  # small tier, spec §3.4
        ("demo_ch32", 1.37, None, None),  # spec §4
        ({"preset": "demo", "ch": 32, "num_res_blocks": 2, "norm_groups": 8}, 1.37, None, None),
        ("demo", 0.26, None, None),  # the fast demo default
    ],
)
def test_parameter_counts(arch, total, enc, dec):
    m = _meta_model(arch)
    assert round(count_parameters(m) / 1e6, 2) == total
    if enc is not None:
        assert round(count_parameters(m.encoder) / 1e6, 2) == enc
        assert round(count_parameters(m.decoder) / 1e6, 2) == dec


def test_paper_scale_shapes_and_layout():
    m = _meta_model("f16d32")
    x = torch.empty(1, 3, 256, 256, device="meta")
    post = m.encode(x)
    assert tuple(post.mean.shape) == (1, 32, 16, 16)
    assert tuple(m.decode(post.mean).shape) == (1, 3, 256, 256)
    # attention only at resolution 16 = the last encoder level / first decoder level
    assert [len(lv.attn) for lv in m.encoder.down] == [0, 0, 0, 0, 2]
    assert [len(lv.attn) for lv in m.decoder.up] == [0, 0, 0, 0, 3]
    assert [len(lv.block) for lv in m.decoder.up] == [3] * 5
    keys = set(m.state_dict())
    for k in ("encoder.down.0.block.1.norm1.weight", "encoder.down.3.downsample.conv.weight",
              "encoder.mid.attn_1.q.weight", "encoder.down.2.block.0.nin_shortcut.weight",
              "decoder.up.4.attn.2.proj_out.bias", "decoder.up.1.upsample.conv.weight",
              "quant_conv.weight", "post_quant_conv.bias", "encoder.conv_out.weight", "decoder.conv_out.weight"):  # fmt: skip
        assert k in keys, k  # LDM checkpoint key layout
    assert ArchConfig().latent_shape == (32, 16, 16)
    assert resolve_arch("f16d64").latent_shape == (64, 16, 16)


def test_demo_latent_shape_and_tokenizer_contract():
    torch.manual_seed(0)
    tok = build_tokenizer({"family": "conv_kl", "arch": "demo"})
    assert isinstance(tok, Tokenizer)
    assert tok.latent_shape == (4, 8, 8) and not tok.is_1d and tok.posterior == "gaussian"
    x = torch.rand(3, 3, 32, 32)
    mean, std = tok.encode_moments(x)
    assert mean.shape == std.shape == (3, 4, 8, 8) and bool((std > 0).all())
    assert torch.equal(tok.encode(x, sample=False), mean)
    a, b = tok.encode(x), tok.encode(x)
    assert not torch.equal(a, b)  # samples differ, the mean does not
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    assert torch.equal(tok.encode(x, generator=g1), tok.encode(x, generator=g2))
    assert tok.decode(mean).shape == x.shape


def test_decode_is_not_clamped_and_maps_to_unit_scale():
    tok = ConvKLTokenizer(TINY)
    with torch.no_grad():
        tok.vae.decoder.conv_out.weight.zero_()
        tok.vae.decoder.conv_out.bias.fill_(3.0)  # network output 3 in [-1,1] space
    out = tok.decode(torch.zeros(1, 2, 8, 8))
    assert torch.allclose(out, torch.full_like(out, 2.0))  # (3 + 1) / 2, not clamped to 1


def test_encoder_sees_minus_one_to_one():
    tok = ConvKLTokenizer(TINY)
    x = torch.rand(2, 3, 16, 16)
    post = tok.vae.encode(x * 2 - 1)
    assert torch.equal(tok.encode_moments(x)[0], post.mean)


def test_posterior_logvar_clamp_and_kl():
    mean = torch.randn(2, 3, 4, 4)
    logvar = torch.randn(2, 3, 4, 4)
    logvar[0, 0, 0, 0], logvar[1, 0, 0, 0] = 100.0, -100.0
    post = DiagonalGaussian(torch.cat([mean, logvar], 1))
    assert post.logvar.max().item() == LOGVAR_MAX and post.logvar.min().item() == LOGVAR_MIN
    q = torch.distributions.Normal(mean, post.std)
    p = torch.distributions.Normal(torch.zeros_like(mean), torch.ones_like(mean))
    ref = torch.distributions.kl_divergence(q, p).sum(dim=(1, 2, 3))
    assert torch.allclose(post.kl(), ref, rtol=1e-5)
    zero = DiagonalGaussian(torch.zeros(1, 4, 2, 2))
    assert zero.kl().item() == 0.0


def test_attention_matches_ldm_formula():
    torch.manual_seed(0)
    blk = AttnBlock(8, 4)
    x = torch.randn(2, 8, 3, 5)
    h = blk.norm(x)
    q, k, v = (m(h).reshape(2, 8, 15) for m in (blk.q, blk.k, blk.v))
    w = torch.softmax(torch.bmm(q.transpose(1, 2), k) * 8**-0.5, dim=2)  # LDM AttnBlock
    ref = x + blk.proj_out(torch.bmm(v, w.transpose(1, 2)).reshape(2, 8, 3, 5))
    assert torch.allclose(blk(x), ref, atol=1e-5)


def test_downsample_is_asymmetric_pad_then_stride_two():
    m = AutoencoderKL(resolve_arch(TINY))
    ds = m.encoder.down[0].downsample
    x = torch.randn(1, 8, 16, 16)
    ref = F.conv2d(F.pad(x, (0, 1, 0, 1)), ds.conv.weight, ds.conv.bias, stride=2)
    assert torch.allclose(ds(x), ref) and ds(x).shape[-1] == 8


def test_registry_and_errors():
    assert "conv_kl" in known_families()
    assert known_regularizers()[0] == "baseline" and "mcos+mdms" in known_regularizers()
    with pytest.raises(ValueError, match="vqgan"):
        build_tokenizer({"family": "vqgan"})
    with pytest.raises(ValueError, match="f99"):
        build_tokenizer({"family": "conv_kl", "arch": "f99"})
    with pytest.raises(ValueError, match="bogus"):
        build_tokenizer({"family": "conv_kl", "arch": {"preset": "demo", "bogus": 1}})
    # regularizer/variant/kl_weight are training keys: check_config validates them (tests/workflow/test_config.py)
    with pytest.raises(ValueError, match="norm_groups"):
        resolve_arch({"preset": "demo", "ch": 18})
    tok = build_tokenizer({"family": "conv_kl", "latent_channels": 8})  # arch defaults to demo
    assert tok.latent_shape == (8, 8, 8)


def test_save_load_roundtrip(tmp_path):
    torch.manual_seed(1)
    cfg = {"family": "conv_kl", "arch": TINY}
    tok = build_tokenizer(cfg)
    save_tokenizer(tmp_path / "tok.pt", tok, cfg)
    loaded = load_tokenizer(tmp_path / "tok.pt")
    x = torch.rand(2, 3, 16, 16)
    with torch.no_grad():
        assert torch.equal(loaded.encode(x, sample=False), tok.encode(x, sample=False))
    assert not any(p.requires_grad for p in loaded.parameters())
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="bad.pt"):
        load_tokenizer(tmp_path / "bad.pt")
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        load_tokenizer(tmp_path / "missing.pt")


def test_bad_inputs_raise():
    tok = ConvKLTokenizer(TINY)
    with pytest.raises(ValueError, match="x must be"):
        tok.encode_moments(torch.rand(2, 1, 16, 16))
    with pytest.raises(ValueError, match="z must be"):
        tok.decode(torch.rand(2, 5, 8, 8))
