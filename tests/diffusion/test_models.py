"""Tests of the DiT backbone against the exact skeleton of spec models.md §1.2-1.5, §1.8."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from latentbench.diffusion import RECIPES, build_backbone
from latentbench.diffusion.models import (
    Attention,
    DiTBlock,
    LabelEmbedder,
    RMSNorm,
    RotaryEmbedding,
    TimestepEmbedder,
    modulate,
    rotate_half,
    sincos_pos_embed_1d,
    sincos_pos_embed_2d,
)
from latentbench.diffusion.transport import Transport


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _randomize(model: nn.Module, std: float = 0.05, seed: int = 0) -> nn.Module:
    """Give every trainable weight a random value (the zero init would hide most bugs)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.copy_(torch.randn(p.shape, generator=gen) * std)
    return model


def _n_params(model: nn.Module) -> float:
    return sum(p.numel() for p in model.parameters()) / 1e6


# spec models.md §1.5: latent shape, patch, SiT-B, SiT-XL, official (learn_sigma) B/XL, LightningDiT B/XL.
PARAM_TABLE = [
    ((4, 32, 32), 2, 130.50, 675.11, (130.51, 675.13), None),
    ((16, 32, 32), 2, 130.57, 675.22, (130.62, 675.30), None),
    ((16, 16, 16), 1, 130.50, 675.11, None, None),
    ((32, 16, 16), 1, 130.52, 675.15, (130.55, 675.18), (130.56, 675.26)),
    ((64, 16, 16), 1, 130.57, 675.22, None, (130.61, 675.33)),
    ((392, 16, 16), 1, 131.08, 675.98, None, None),
    ((768, 16, 16), 1, 131.66, 676.84, (132.25, 677.73), (131.69, 676.95)),
    ((64, 32), 1, 130.38, 674.93, None, None),
    ((128, 32), 1, 130.43, 675.00, None, None),
    ((256, 16), 1, 130.50, 675.11, None, None),
    ((256, 32), 1, 130.52, 675.15, None, None),
]


@pytest.mark.parametrize("shape, patch, sit_b, sit_xl, official, lightningdit", PARAM_TABLE)
def test_parameter_counts_match_spec_table(shape, patch, sit_b, sit_xl, official, lightningdit):
    """Counts on the meta device equal spec §1.5 to the 0.01 M shown (the table rounds or truncates)."""
    columns = [("B", "ifid_sit", {}, sit_b), ("XL", "ifid_sit", {}, sit_xl)]  # SiT: no QK-norm, learn_sigma False
    if official:
        columns += [(s, "ifid_sit", {"learn_sigma": True}, ref) for s, ref in zip(("B", "XL"), official)]
    if lightningdit:  # LightningDiT columns include QK-norm (RMSNorm(Dh) on q and k)
        columns += [(s, "study_lightningdit", {}, ref) for s, ref in zip(("B", "XL"), lightningdit)]
    for size, recipe, overrides, ref in columns:
        with torch.device("meta"):
            model = build_backbone(size, recipe, shape, patch, **overrides)
        assert abs(_n_params(model) - ref) < 0.01, (size, recipe, overrides, _n_params(model), ref)


@pytest.mark.parametrize("recipe", ["ifid_sit", "study_lightningdit"])
def test_initialize_weights_restores_every_tensor(recipe):
    """What ``to_empty`` leaves (garbage, here NaN) is fully re-set by ``initialize_weights``:
    fixed tables, norm weights, BN stats, and the exact-zero output."""
    reference = build_backbone("demo", recipe, (4, 8, 8), 1, num_classes=10)
    with torch.device("meta"):
        meta = build_backbone("demo", recipe, (4, 8, 8), 1, num_classes=10)
    assert all(t.is_meta for t in [*meta.parameters(), *meta.buffers()])
    model = build_backbone("demo", recipe, (4, 8, 8), 1, num_classes=10)
    with torch.no_grad():
        for tensor in [*model.parameters(), *model.buffers()]:
            tensor.fill_(float("nan") if tensor.is_floating_point() else 7)
    model.initialize_weights()
    fixed = [k for k in reference.state_dict() if "norm" in k or "rope" in k or k == "pos_embed" or k.startswith("bn.")]
    assert fixed
    for key in fixed:
        torch.testing.assert_close(model.state_dict()[key], reference.state_dict()[key], msg=key)
    out = model(torch.randn(2, 4, 8, 8), torch.rand(2), torch.tensor([1, 10]))
    assert torch.equal(out, torch.zeros_like(out))


def test_qk_norm_adds_its_weights():
    """LayerNorm QK-norm adds 2 x 2 Dh per block, RMSNorm QK-norm 2 Dh (spec §1.5 column note)."""
    with torch.device("meta"):
        plain = build_backbone("B", "ifid_sit", (32, 16, 16), 1)
        study = build_backbone("B", "study_sit", (32, 16, 16), 1)
        ldit = build_backbone("B", "study_lightningdit", (32, 16, 16), 1)
        ldit_off = build_backbone("B", "lightningdit_official", (32, 16, 16), 1)
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(study) - count(plain) == 12 * 4 * 64
    assert count(ldit) - count(ldit_off) == 12 * 2 * 64


@pytest.mark.parametrize("recipe", sorted(RECIPES))
@pytest.mark.parametrize("shape, patch", [((4, 8, 8), 1), ((4, 8, 8), 2), ((16, 8), 1)])
def test_output_exactly_zero_at_init_and_shapes(recipe, shape, patch):
    model = build_backbone("demo", recipe, shape, patch, num_classes=10)
    x = torch.randn(3, *shape)
    out = model(x, torch.rand(3), torch.tensor([0, 4, 10]))
    assert out.shape == x.shape
    assert torch.equal(out, torch.zeros_like(out))
    _randomize(model)
    out = model(x, torch.rand(3), torch.tensor([0, 4, 10]))
    assert out.shape == x.shape and out.abs().sum() > 0


def test_learn_sigma_keeps_first_half():
    model = build_backbone("demo", "ifid_sit", (4, 8, 8), 2, num_classes=10, learn_sigma=True)
    assert model.final_layer.linear.out_features == 2 * 2 * 2 * 4
    assert model(torch.randn(2, 4, 8, 8), torch.rand(2), torch.tensor([1, 2])).shape == (2, 4, 8, 8)


def test_recipe_architecture_flags():
    """Spec §1.10 arch flags, incl. the 1-D RoPE assumption for LightningDiT on tokens (§1.8)."""
    ifid = build_backbone("demo", "ifid_sit", (4, 8, 8), 1, num_classes=10)
    assert ifid.bn is not None and ifid.feat_rope is None
    assert isinstance(ifid.blocks[0].attn.q_norm, nn.Identity)
    study = build_backbone("demo", "study_sit", (4, 8, 8), 1, num_classes=10)
    assert study.bn is None and isinstance(study.blocks[0].attn.q_norm, nn.LayerNorm)
    ldit = build_backbone("demo", "study_lightningdit", (4, 8, 8), 1, num_classes=10)
    assert isinstance(ldit.blocks[0].norm1, RMSNorm) and isinstance(ldit.blocks[0].attn.q_norm, RMSNorm)
    assert isinstance(ldit.final_layer.norm_final, RMSNorm) and ldit.feat_rope is not None
    assert ldit.config.rope == "2d"
    assert build_backbone("demo", "study_lightningdit", (16, 8), 1, num_classes=10).config.rope == "1d"
    assert build_backbone("demo", "ifid_sit", (4, 8, 8), 1, num_classes=10, qk_norm=True).config.qk_norm


def test_swiglu_hidden_width():
    """h = int(2/3 * 4D): B 2048, XL 3072, demo 170 (spec §1.4, §4)."""
    for size, h in (("B", 2048), ("XL", 3072), ("demo", 170)):
        with torch.device("meta"):
            model = build_backbone(size, "lightningdit_official", (32, 16, 16), 1)
        assert model.blocks[0].mlp.w3.in_features == h
        assert model.blocks[0].mlp.w12.out_features == 2 * h


def test_timestep_embedding_is_cos_first():
    t = torch.tensor([0.0, 0.3, 1.0])
    emb = TimestepEmbedder.frequency_embedding(t, 256)
    k = torch.arange(128, dtype=torch.float64)
    freqs = torch.exp(-math.log(10000) * k / 128)
    expected = torch.cat([torch.cos(t.double()[:, None] * freqs), torch.sin(t.double()[:, None] * freqs)], 1)
    torch.testing.assert_close(emb.double(), expected, atol=1e-6, rtol=0)
    assert torch.allclose(emb[:, 0], torch.cos(t))  # f_0 = 1, raw t (not x1000)


def test_2d_sincos_first_half_encodes_column():
    dim, g = 16, 4
    table = sincos_pos_embed_2d(dim, g, g)
    omega = 1.0 / 10000 ** (torch.arange(dim // 4, dtype=torch.float64) / (dim / 4))
    for r, c in [(0, 3), (2, 1), (3, 3)]:
        row = table[r * g + c]  # tokens row-major
        torch.testing.assert_close(row[: dim // 4], torch.sin(c * omega))
        torch.testing.assert_close(row[dim // 4 : dim // 2], torch.cos(c * omega))
        torch.testing.assert_close(row[dim // 2 : 3 * dim // 4], torch.sin(r * omega))
        torch.testing.assert_close(row[3 * dim // 4 :], torch.cos(r * omega))


def test_1d_sincos_is_interleaved():
    dim, length = 8, 5
    table = sincos_pos_embed_1d(dim, length)
    for n in range(length):
        for k in range(dim // 2):
            d_k = math.exp(-2 * k * math.log(10000) / dim)
            assert table[n, 2 * k].item() == pytest.approx(math.sin(n * d_k), abs=1e-12)
            assert table[n, 2 * k + 1].item() == pytest.approx(math.cos(n * d_k), abs=1e-12)


def test_model_pos_embed_is_the_fixed_table():
    model = build_backbone("demo", "ifid_sit", (4, 8, 8), 2, num_classes=10)
    assert not model.pos_embed.requires_grad
    torch.testing.assert_close(model.pos_embed[0], sincos_pos_embed_2d(64, 4, 4).float())
    model_1d = build_backbone("demo", "ifid_sit", (16, 8), 1, num_classes=10)
    torch.testing.assert_close(model_1d.pos_embed[0], sincos_pos_embed_1d(64, 16).float())


def test_init_follows_the_reference():
    model = build_backbone("demo", "ifid_sit", (4, 8, 8), 1, num_classes=10)
    for block in model.blocks:
        assert torch.count_nonzero(block.adaLN_modulation[-1].weight) == 0
        assert torch.count_nonzero(block.attn.qkv.bias) == 0
    assert torch.count_nonzero(model.final_layer.linear.weight) == 0
    # label table and t-MLP weights N(0, 0.02); xavier-uniform linears bounded by sqrt(6/(fan_in+fan_out)).
    assert model.y_embedder.embedding_table.weight.std().item() == pytest.approx(0.02, rel=0.15)
    qkv = model.blocks[0].attn.qkv.weight
    assert qkv.abs().max().item() <= math.sqrt(6 / (64 + 192)) + 1e-6


def test_adaln_chunk_order():
    """Block output equals the spec formula with chunks (shift, scale, gate) x (msa, mlp)."""
    torch.manual_seed(0)
    block = _randomize(DiTBlock(32, 2, attention_backend="math"), std=0.2)
    x, c = torch.randn(2, 5, 32), torch.randn(2, 32)
    chunks = block.adaLN_modulation(c).chunk(6, dim=-1)
    shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = chunks
    h = x + gate_msa[:, None] * block.attn(block.norm1(x) * (1 + scale_msa[:, None]) + shift_msa[:, None])
    h = h + gate_mlp[:, None] * block.mlp(block.norm2(h) * (1 + scale_mlp[:, None]) + shift_mlp[:, None])
    torch.testing.assert_close(block(x, c), h)
    # gates at zero make the block the identity whatever the shifts/scales
    with torch.no_grad():
        block.adaLN_modulation[-1].weight.zero_()
        bias = block.adaLN_modulation[-1].bias.view(6, 32)
        bias[2].zero_()
        bias[5].zero_()
    torch.testing.assert_close(block(x, c), x)
    assert torch.equal(modulate(x, torch.zeros(2, 32), torch.zeros(2, 32)), x)


def test_rmsnorm_formula_and_fp32():
    norm = RMSNorm(8)
    with torch.no_grad():
        norm.weight.copy_(torch.arange(1.0, 9.0))
    x = torch.randn(3, 8)
    expected = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6) * norm.weight
    torch.testing.assert_close(norm(x), expected)
    # bf16 input: the statistic is computed in fp32 (a bf16 mean of squares of 1e-3 values would
    # lose the eps balance); the normalised value is cast back before the fp32 weight multiplies it.
    xb = (torch.randn(4, 8) * 1e-3).bfloat16()
    out = RMSNorm(8)(xb)
    ref = (xb.float() * torch.rsqrt(xb.float().pow(2).mean(-1, keepdim=True) + 1e-6)).bfloat16().float()
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, ref)


def test_rotate_half_adjacent_pairs():
    x = torch.tensor([1.0, 2.0, 3.0, 4.0])
    assert torch.equal(rotate_half(x), torch.tensor([-2.0, 1.0, -4.0, 3.0]))


def test_rope_2d_layout():
    """First half rotated by the row, second by the column, frequencies repeated interleaved (spec §1.4)."""
    head_dim, g = 16, 3
    rope = RotaryEmbedding(head_dim, "2d", (g, g))
    phi = [10000 ** (-2 * j / (head_dim // 2)) for j in range(head_dim // 4)]
    for r, c in [(0, 2), (1, 0), (2, 2)]:
        angles = [r * p for p in phi for _ in (0, 1)] + [c * p for p in phi for _ in (0, 1)]
        torch.testing.assert_close(rope.freqs_cos[r * g + c], torch.cos(torch.tensor(angles)))
        torch.testing.assert_close(rope.freqs_sin[r * g + c], torch.sin(torch.tensor(angles)))


def test_rope_scores_depend_only_on_position_difference():
    gen = torch.Generator().manual_seed(0)
    q, k = torch.randn(16, generator=gen), torch.randn(16, generator=gen)

    def score_1d(m: int, n: int) -> float:
        rope = RotaryEmbedding(16, "1d", (12,))
        qs = q.expand(1, 1, 12, 16)
        ks = k.expand(1, 1, 12, 16)
        return (rope(qs)[0, 0, m] @ rope(ks)[0, 0, n]).item()

    assert score_1d(3, 1) == pytest.approx(score_1d(9, 7), abs=1e-5)
    assert score_1d(0, 5) == pytest.approx(score_1d(6, 11), abs=1e-5)
    assert abs(score_1d(3, 1) - score_1d(3, 3)) > 1e-3
    # 2-D, one axis at a time: tokens in one row (or one column) behave like 1-D positions.
    g = 5
    rope = RotaryEmbedding(16, "2d", (g, g))
    qs, ks = rope(q.expand(1, 1, g * g, 16))[0, 0], rope(k.expand(1, 1, g * g, 16))[0, 0]
    tok = lambda r, c: r * g + c  # noqa: E731
    assert (qs[tok(2, 3)] @ ks[tok(2, 1)]).item() == pytest.approx((qs[tok(4, 4)] @ ks[tok(4, 2)]).item(), abs=1e-5)
    assert (qs[tok(3, 0)] @ ks[tok(1, 0)]).item() == pytest.approx((qs[tok(4, 2)] @ ks[tok(2, 2)]).item(), abs=1e-5)
    assert abs((qs[tok(3, 0)] @ ks[tok(1, 0)]).item() - (qs[tok(3, 0)] @ ks[tok(3, 2)]).item()) > 1e-3


@pytest.mark.parametrize("qk_norm, norm, use_rope", [(False, "layernorm", False), (True, "rmsnorm", True)])
def test_sdpa_equals_math_attention(qk_norm, norm, use_rope):
    torch.manual_seed(0)
    sdpa = _randomize(Attention(64, 4, qk_norm=qk_norm, norm=norm, backend="sdpa"), std=0.1)
    math_attn = Attention(64, 4, qk_norm=qk_norm, norm=norm, backend="math")
    math_attn.load_state_dict(sdpa.state_dict())
    rope = RotaryEmbedding(16, "2d", (4, 4)) if use_rope else None
    x = torch.randn(3, 16, 64)
    torch.testing.assert_close(sdpa(x, rope), math_attn(x, rope), atol=1e-5, rtol=1e-5)


def test_backend_choice_of_auto_and_full_model_equality(monkeypatch):
    calls = []
    real = torch.nn.functional.scaled_dot_product_attention
    spy = lambda *a, **k: calls.append(1) or real(*a, **k)  # noqa: E731
    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", spy)
    models = {
        b: build_backbone("demo", "study_lightningdit", (4, 8, 8), 1, num_classes=10, attention_backend=b)
        for b in ("auto", "sdpa", "math")
    }
    state = _randomize(models["auto"]).state_dict()
    for m in models.values():
        m.load_state_dict(state)
        m.eval()
    x, t, y = torch.randn(2, 4, 8, 8), torch.rand(2), torch.tensor([1, 10])
    outs = {}
    for backend, m in models.items():
        calls.clear()
        with torch.no_grad():
            outs[backend] = m(x, t, y)
        used_sdpa = bool(calls)
        assert used_sdpa == (backend == "sdpa"), backend  # auto: CPU inference at 64 tokens -> math
    calls.clear()
    models["auto"](x, t, y).sum().backward()
    assert calls  # auto: training (gradients needed) -> the fused kernel at any length
    torch.testing.assert_close(outs["sdpa"], outs["math"], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(outs["auto"], outs["math"])
    long = build_backbone("demo", "ifid_sit", (4, 32, 32), 1, num_classes=10).eval()  # 1024 tokens
    calls.clear()
    with torch.no_grad():
        long(torch.randn(1, 4, 32, 32), torch.rand(1), torch.tensor([0]))
    assert calls  # auto -> sdpa above AUTO_MATH_MAX_TOKENS, also in inference


def test_class_dropout_only_in_training_mode():
    torch.manual_seed(0)
    embedder = LabelEmbedder(10, 8, dropout_prob=0.1)
    labels = torch.randint(0, 10, (20000,))
    null = embedder.embedding_table.weight[10]
    embedder.train()
    dropped = (embedder(labels) == null).all(dim=1).float().mean().item()
    assert dropped == pytest.approx(0.1, abs=0.01)
    embedder.eval()
    torch.testing.assert_close(embedder(labels), embedder.embedding_table(labels))
    # whole model: eval forward is deterministic; train forward with dropout 0.5 is not
    model = _randomize(build_backbone("demo", "study_sit", (4, 8, 8), 1, num_classes=10, class_dropout_prob=0.5))
    x, t, y = torch.randn(64, 4, 8, 8), torch.rand(64), torch.randint(0, 10, (64,))
    model.eval()
    torch.testing.assert_close(model(x, t, y), model(x, t, y))
    model.train()
    assert not torch.allclose(model(x, t, y), model(x, t, y))


@pytest.mark.parametrize("shape", [(4, 8, 8), (16, 8)])
def test_in_model_batchnorm(shape):
    model = build_backbone("demo", "ifid_sit", shape, 1, num_classes=10)
    z = torch.randn(256, *shape) * 3.0 + 2.0
    channel_dims = (0, 2, 3) if len(shape) == 3 else (0, 1)
    model.train()
    u = model.normalize(z)
    channels = shape[0] if len(shape) == 3 else shape[-1]
    torch.testing.assert_close(u.mean(dim=channel_dims), torch.zeros(channels), atol=1e-5, rtol=0)
    for _ in range(200):  # running stats converge to the data stats (momentum 0.1)
        model.normalize(z)
    model.eval()
    torch.testing.assert_close(model.denormalize(model.normalize(z)), z, atol=2e-3, rtol=1e-4)
    ident = build_backbone("demo", "study_sit", shape, 1, num_classes=10)
    assert ident.normalize(z) is z and ident.denormalize(z) is z


def test_bad_inputs_raise_value_error():
    model = build_backbone("demo", "ifid_sit", (4, 8, 8), 2, num_classes=10)
    with pytest.raises(ValueError, match="x must"):
        model(torch.randn(2, 4, 8, 4), torch.rand(2), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="y must"):
        model(torch.randn(2, 4, 8, 8), torch.rand(2), torch.tensor([0.0, 1.0]))
    with pytest.raises(ValueError, match="t must"):
        model(torch.randn(2, 4, 8, 8), torch.rand(3), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="recipe"):
        build_backbone("demo", "dit", (4, 8, 8), 2)
    with pytest.raises(ValueError, match="size"):
        build_backbone("H", "ifid_sit", (4, 8, 8), 2)
    with pytest.raises(ValueError, match="overrides"):
        build_backbone("demo", "ifid_sit", (4, 8, 8), 2, width=3)
    with pytest.raises(ValueError, match="patch_size"):
        build_backbone("demo", "ifid_sit", (4, 8, 8), 3)
    with pytest.raises(ValueError, match="patch_size"):
        build_backbone("demo", "ifid_sit", (16, 8), 2)
    with pytest.raises(ValueError, match="attention_backend"):
        build_backbone("demo", "ifid_sit", (4, 8, 8), 2, attention_backend="flash")


@pytest.mark.parametrize("recipe", ["study_sit", "study_lightningdit"])
def test_tiny_overfit_sanity(recipe):
    """Demo SiT on one fixed batch with fixed t/eps: the loss falls clearly within 50 steps."""
    torch.manual_seed(0)
    model = build_backbone("demo", recipe, (4, 8, 8), 1, num_classes=10)
    transport = RECIPES[recipe].transport((4, 8, 8))
    assert isinstance(transport, Transport)
    x = torch.randn(8, 4, 8, 8)
    y = torch.randint(0, 10, (8,))
    model.y_embedder.dropout_prob = 0.0
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(50):
        loss, per_sample = transport.training_loss(model, x, y, generator=torch.Generator().manual_seed(1))
        assert per_sample.shape == (8,)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0], losses[::10]


@pytest.mark.parametrize("shape", [(6, 4, 5, 3), (6, 4, 7)])
def test_latent_batchnorm_equals_torch_batchnorm(shape):
    """One process: LatentBatchNorm == nn.BatchNorm{2d,1d}(affine=False) in train and eval mode."""
    from latentbench.diffusion.models import LatentBatchNorm

    g = torch.Generator().manual_seed(0)
    ours = LatentBatchNorm(4, eps=1e-4, momentum=0.1)
    ref = (torch.nn.BatchNorm2d if len(shape) == 4 else torch.nn.BatchNorm1d)(4, eps=1e-4, momentum=0.1, affine=False)
    for _ in range(3):
        x = 3.0 * torch.randn(shape, generator=g) + 1.5
        torch.testing.assert_close(ours(x), ref(x), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(ours.running_mean, ref.running_mean)
    torch.testing.assert_close(ours.running_var, ref.running_var)
    assert int(ours.num_batches_tracked) == int(ref.num_batches_tracked) == 3
    ours.eval(), ref.eval()
    x = torch.randn(shape, generator=g)
    torch.testing.assert_close(ours(x), ref(x), rtol=1e-5, atol=1e-5)
