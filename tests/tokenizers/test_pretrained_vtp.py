"""C4 VTP adapter (latentbench/tokenizers/pretrained/vtp.py; spec zoo.md §2 C4, models.md §2.3)."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from latentbench.tokenizers.pretrained import build_pretrained, vtp, zoo_row
from latentbench.tokenizers.pretrained._common import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    manifest_file,
)
from latentbench.tokenizers.pretrained.base import WeightsError, ZooRow

TINY = {"vision_embed_dim": 32, "vision_depth": 1, "vision_num_heads": 2, "vision_feature_bottleneck": 8,
        "decoder_embed_dim": 32, "decoder_depth": 1, "decoder_num_heads": 2}  # fmt: skip


def tiny_row() -> ZooRow:
    return ZooRow(name="vtp-tiny", arch="C4", latent_shape=(8, 16, 16), config=TINY, files=zoo_row("vtp_b").files)


def images(n: int = 2) -> torch.Tensor:
    return torch.rand(n, 3, 256, 256, generator=torch.Generator().manual_seed(0))


def test_meta_parameter_count_base_without_text_tower():
    with torch.device("meta"):
        model = build_pretrained("vtp_b")
    assert sum(p.numel() for p in model.parameters()) == model.row.params == 171_399_168  # zoo.md §2 C4
    assert model.trunk.feature_bottleneck.bias is None
    assert model.trunk.rope_embed.periods.dtype == torch.bfloat16  # pos_embed_rope_dtype "bf16"
    for name in ("vtp_s", "vtp_b", "vtp_l"):
        assert zoo_row(name).latent_shape == (64, 16, 16)


def test_adapter_normalises_input_and_output():
    model = vtp.build(tiny_row(), None)
    x = images()
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    with torch.no_grad():
        z, s = model.encode_moments(x)
        assert z.shape == (2, 8, 16, 16) and torch.count_nonzero(s) == 0
        assert torch.allclose(z, model.trunk((x - mean) / std))  # input ImageNet-normalised
        raw = model.pixel_decoder(z)
        assert raw.shape == (2, 3, 256, 256)
        assert torch.allclose(model.decode(z), raw * std + mean)  # output de-normalised to [0, 1]


def test_rope_is_identity_at_the_grid_centre_and_rotates_elsewhere():
    rope = vtp.RopeEmbedding(32, 2)
    sin, cos = rope(1, 1)  # the single token sits at coordinate 0: angle 0
    assert torch.all(sin == 0) and torch.all(cos == 1)
    attn = vtp.SelfAttention(32, 2, qk_norm=False)
    x = torch.randn(1, 2, 32)  # CLS + one patch token
    with torch.no_grad():
        q, k, v = attn.qkv(x).reshape(1, 2, 3, 2, 16).unbind(2)
        # upstream casts q and k (CLS included) to the RoPE dtype bfloat16 and back (attention.py apply_rope)
        q, k = q.bfloat16().float(), k.bfloat16().float()
        plain = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
        plain = attn.proj(plain.transpose(1, 2).reshape(1, 2, 32))
        assert torch.allclose(attn(x, rope(1, 1)), plain, atol=1e-6)
    sin, cos = rope(4, 4)
    assert sin.shape == (16, 16) and torch.allclose((sin.float() ** 2 + cos.float() ** 2), torch.ones(16, 16), atol=2e-2)


def write_release(model: vtp.VTPTokenizer, folder, extra: dict | None = None) -> None:
    """config.json + model.safetensors (with a CLIP text tower) + latents_stats.pt, as released."""
    state = {k: v.clone() for k, v in model.state_dict().items()}
    state.update({"text_transformer.resblocks.0.attn.in_proj_weight": torch.zeros(6, 2), "token_embedding.weight": torch.zeros(3, 2),
                  "positional_embedding": torch.zeros(4, 2), "logit_scale": torch.zeros(()), "visual_proj.weight": torch.zeros(2, 32)})  # fmt: skip
    state.update(extra or {})
    save_file(state, str(folder / manifest_file("vtp-b-model")))
    config = {"model_type": "vtp", "train_clip": True, "train_reconstruction": True, **TINY, "text_embed_dim": 2}
    (folder / manifest_file("vtp-b-config")).write_text(json.dumps(config))
    torch.save({"mean": torch.randn(1, 8, 1, 1), "std": torch.rand(1, 8, 1, 1) + 0.5}, folder / manifest_file("vtp-b-latent-stats"))


def test_release_loads_strictly_without_text_tower(tmp_path):
    torch.manual_seed(0)
    source = vtp.build(tiny_row(), None)
    write_release(source, tmp_path)
    row = ZooRow(name="vtp-tiny", arch="C4", latent_shape=(8, 16, 16), files=zoo_row("vtp_b").files)  # sizes from config.json
    loaded = vtp.build(row, tmp_path)
    assert loaded.cfg.vision_embed_dim == 32
    x = images(1)
    with torch.no_grad():
        z = loaded.encode(x)
        assert torch.allclose(source.encode(x), z, atol=1e-6)
        assert torch.allclose(source.decode(z), loaded.decode(z), atol=1e-6)
    stats = torch.load(tmp_path / manifest_file("vtp-b-latent-stats"))
    assert torch.allclose(loaded.native_normalize(z), (z - stats["mean"]) / stats["std"])
    assert torch.allclose(loaded.native_denormalize(loaded.native_normalize(z)), z, atol=1e-5)


def test_release_with_leftover_key_names_the_file(tmp_path):
    source = vtp.build(tiny_row(), None)
    write_release(source, tmp_path, extra={"trunk.storage_tokens": torch.zeros(1, 4, 32)})
    path = tmp_path / manifest_file("vtp-b-model")
    with pytest.raises(WeightsError, match="storage_tokens") as err:
        vtp.build(tiny_row(), tmp_path)
    assert str(path) in str(err.value) and "\n" not in str(err.value)
    (tmp_path / manifest_file("vtp-b-config")).write_text(json.dumps({"train_reconstruction": False}))
    with pytest.raises(WeightsError, match="pixel decoder"):
        vtp.build(tiny_row(), tmp_path)
