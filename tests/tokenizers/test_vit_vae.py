"""The Trans. family's ViT KL autoencoder (spec models.md §3.2): sizes, layout, masking, contract."""

from __future__ import annotations

import pytest
import torch

from latentbench.tokenizers import build_tokenizer, load_tokenizer, save_tokenizer
from latentbench.tokenizers.kl_vae import count_parameters
from latentbench.tokenizers.regularizers import MaeRegularizer, build_regularizer
from latentbench.tokenizers.vit_vae import VIT_PRESETS, TransKLTokenizer, ViTAutoencoderKL, resolve_vit_arch


def test_paper_scale_is_a_vit_b16_pair():
    # spec models.md §3.2: ViT-B/16, 85.8 M per trunk at 256 px; latent 32x16x16.
    # Analytic: patch embed 3*16*16*768 + 768, pos 256*768, 12 blocks of
    # (4*768^2 + 4*768 qkv/proj + 2*768*3072 + 3072 + 768 MLP + 4*768 LN), final LN 2*768.
    block = 4 * 768 * 768 + 4 * 768 + 2 * 768 * 3072 + 3072 + 768 + 4 * 768
    trunk = 3 * 16 * 16 * 768 + 768 + 256 * 768 + 12 * block + 2 * 768
    assert trunk == 85_843_200
    with torch.device("meta"):
        vae = ViTAutoencoderKL(VIT_PRESETS["f16d32"])
    enc = vae.encoder
    assert count_parameters(enc) - count_parameters(enc.head) - enc.mask_token.numel() == trunk
    assert count_parameters(enc.head) == 768 * 64 + 64  # Linear(768 -> 2C), C = 32
    assert count_parameters(vae.decoder) == trunk - (3 * 16 * 16 * 768 + 768) + (32 * 768 + 768) + (768 * 768 + 768)
    assert VIT_PRESETS["f16d32"].latent_shape == (32, 16, 16)


def test_demo_tokenizer_contract():
    torch.manual_seed(0)
    tok = build_tokenizer({"family": "trans_kl", "arch": "demo"})
    assert isinstance(tok, TransKLTokenizer) and tok.latent_shape == (4, 8, 8) and tok.masks_tokens
    x = torch.rand(3, 3, 32, 32)
    mean, std = tok.encode_moments(x)
    assert mean.shape == std.shape == (3, 4, 8, 8) and bool((std > 0).all())
    assert tok.decode(mean).shape == (3, 3, 32, 32)
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    assert torch.equal(tok.encode(x, generator=g1), tok.encode(x, generator=g2))
    assert torch.equal(tok.encode(x, sample=False), mean)
    with pytest.raises(ValueError, match="4 channels"):
        tok.decode(torch.zeros(1, 3, 8, 8))
    with pytest.raises(ValueError, match="3 channels"):
        tok.encode_moments(torch.rand(1, 1, 32, 32))


def test_latent_position_i_j_comes_from_patch_i_j():
    # A row-major layout error would move information between latent positions: with no
    # attention mixing (depth 0), position (i, j) must depend on patch (i, j) alone.
    vae = ViTAutoencoderKL(resolve_vit_arch({"preset": "demo", "depth": 0}))
    x = torch.rand(1, 3, 32, 32)
    y = x.clone()
    y[:, :, 8:12, 20:24] += 1.0  # patch (2, 5)
    diff = (vae.encoder(y) - vae.encoder(x)).abs().sum(1)[0]
    assert diff[2, 5] > 0 and diff.flatten().count_nonzero() == 1
    z = torch.randn(1, 4, 8, 8)
    z2 = z.clone()
    z2[:, :, 6, 1] += 1.0
    pix = (vae.decoder(z2) - vae.decoder(z)).abs().sum(1)[0]
    assert pix[24:28, 4:8].min() > 0 and pix.count_nonzero() == 16


def test_unpatchify_matches_mae_order():
    # MAE unpatchify: patches [N, h*w, p*p*3] -> reshape (N, h, w, p, q, c) -> einsum nhwpqc->nchpwq.
    vae = ViTAutoencoderKL(resolve_vit_arch({"preset": "demo", "depth": 0}))
    dec = vae.decoder
    patches = torch.randn(2, 64, 4 * 4 * 3)
    dec.head.forward = lambda _x: patches  # the head's output is what unpatchify sees
    out = dec(torch.zeros(2, 4, 8, 8))
    ref = torch.einsum("nhwpqc->nchpwq", patches.reshape(2, 8, 8, 4, 4, 3)).reshape(2, 3, 32, 32)
    assert torch.equal(out, ref)


def test_masked_tokens_ignore_their_pixels():
    torch.manual_seed(1)
    vae = ViTAutoencoderKL(VIT_PRESETS["demo"]).eval()
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    mask = torch.zeros(2, 8, 8, dtype=torch.bool)
    mask[0, 3, 4] = mask[1, 0, 0] = True
    y = x.clone()
    y[0, :, 12:16, 16:20] = 5.0  # only inside masked patches
    y[1, :, 0:4, 0:4] = -5.0
    assert torch.allclose(vae.encoder(x, mask), vae.encoder(y, mask), atol=1e-6)
    assert not torch.allclose(vae.encoder(x), vae.encoder(y), atol=1e-3)


def test_mae_regulariser_masks_tokens_on_the_vit():
    reg = build_regularizer({"regularizer": "mae", "variant": "r0.7"}, 4, 4, masks_tokens=True)
    assert isinstance(reg, MaeRegularizer) and reg.tokens and not list(reg.parameters())
    plan = reg.plan(torch.Generator().manual_seed(0), 2, (8, 8))
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    x_in, target = reg.encoder_input(x, plan)
    assert x_in is x and target is x  # pixels untouched: the ViT masks its tokens
    vae = ViTAutoencoderKL(VIT_PRESETS["demo"])
    assert torch.equal(reg.encode(vae, x, plan).mean, vae.encode(x, plan["mask"]).mean)


def test_position_embedding_resamples_for_other_grids():
    vae = ViTAutoencoderKL(VIT_PRESETS["demo"])
    trunk = vae.encoder.trunk
    assert trunk.position_embedding(8, 8) is trunk.pos_embed
    assert trunk.position_embedding(5, 5).shape == (1, 25, 64)
    post = vae.encode(torch.rand(1, 3, 20, 20))  # EQ-VAE's downscaled input (5 patches a side)
    assert post.mean.shape == (1, 4, 5, 5) and vae.decode(post.mean).shape == (1, 3, 20, 20)


def test_registry_errors_and_roundtrip(tmp_path):
    with pytest.raises(ValueError, match="unknown arch 'f16d64'"):
        build_tokenizer({"family": "trans_kl", "arch": "f16d64"})
    with pytest.raises(ValueError, match="divisible"):
        build_tokenizer({"family": "trans_kl", "arch": {"preset": "demo", "heads": 3}})
    tok = build_tokenizer({"family": "trans_kl", "latent_channels": 6})
    assert tok.latent_shape == (6, 8, 8)
    cfg = {"family": "trans_kl", "arch": tok.arch.to_dict()}
    save_tokenizer(tmp_path / "t.pt", tok, cfg)
    back = load_tokenizer(tmp_path / "t.pt")
    x = torch.rand(2, 3, 32, 32)
    assert torch.equal(back.encode_moments(x)[0], tok.eval().encode_moments(x)[0])
