"""ControlDiT (Seesaw ControlNet, spec metrics-ifid-seesaw §9): zero-init identity, gradient flow,
learning from the condition, the convergence rule, exact resume, the Table 3 metric oracles."""

from __future__ import annotations

import dataclasses

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from latentbench.diffusion import build_backbone
from latentbench.diffusion.controlnet import (
    ControlConfig,
    ControlDiT,
    ControlTrainSettings,
    condition_input,
    condition_l1,
    condition_l1_fn,
    condition_rgb,
    evaluate_controlnet,
    generate_controlled,
    hyperparameter_record,
    image_feature_stats,
    load_branch,
    per_class_subset,
    save_branch,
    score_controlnet,
    train_controlnet,
    validation_loss_fn,
)
from latentbench.diffusion.recipes import get_recipe
from latentbench.diffusion.samplers import sample
from latentbench.io import read_json
from latentbench.seeding import derive_seed

SHAPE = (2, 4, 4)  # latent (C, H, W); patch 1 -> a 4 x 4 token grid
MAP = (16, 16)  # condition map resolution (4x the token grid)
TINY = {"hidden": 32, "depth": 2, "heads": 2}


def _backbone(recipe: str = "study_sit", shape=SHAPE, seed: int = 0):
    """A tiny backbone whose zero-initialised layers are perturbed, as if trained (else its output is 0)."""
    torch.manual_seed(seed)
    model = build_backbone("demo", recipe, shape, 1, num_classes=4, **TINY)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "adaLN_modulation" in name or "final_layer.linear" in name:
                p.normal_(std=0.1)
    return model.eval()


def _conv_config(**kw) -> ControlConfig:
    return ControlConfig(cond_encoder="conv", cond_size=MAP, conv_widths=(8, 16), **kw)


def _inputs(n: int = 3, shape=SHAPE, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, *shape, generator=g)
    t = torch.rand(n, generator=g)
    y = torch.randint(0, 4, (n,), generator=g)
    return x, t, y, g


def _cond(config: ControlConfig, n: int, g: torch.Generator, shape=SHAPE) -> torch.Tensor:
    if config.cond_encoder == "ae":
        return torch.randn(n, *shape, generator=g)
    return torch.rand(n, config.cond_channels, *config.cond_size, generator=g)


# --- the models.py hook ------------------------------------------------------------------------


def test_backbone_hook_default_is_bit_identical():
    model = _backbone("lightningdit_official")
    x, t, y, g = _inputs()
    with torch.no_grad():
        # the forward pass as it was before the hook, written out
        h = model.x_embedder(x) + model.pos_embed
        c = model.t_embedder(t) + model.y_embedder(y)
        for block in model.blocks:
            h = block(h, c, model.feat_rope)
        reference = model.unpatchify(model.final_layer(h, c))
        out = model(x, t, y)
        assert torch.equal(out, reference)
        h0, c0 = model.embed(x, t, y)
        zeros = [torch.zeros_like(h0)] * 2
        assert torch.equal(model.forward_tokens(h0, c0, zeros), out)
        assert torch.equal(model.forward_tokens(h0, c0, [None, None]), out)
        # a residual after block 0 is what block 1 sees added to its input
        r = torch.randn(h0.shape, generator=g)
        h1 = model.blocks[1](model.blocks[0](h0, c0, model.feat_rope) + r, c0, model.feat_rope)
        assert torch.allclose(model.forward_tokens(h0, c0, [r]), model.unpatchify(model.final_layer(h1, c0)))
    with pytest.raises(ValueError, match="block_residuals"):
        model.forward_tokens(h0, c0, [None] * 3)


# --- zero initialisation -----------------------------------------------------------------------


@pytest.mark.parametrize("recipe", ["study_sit", "lightningdit_official", "ifid_sit"])
@pytest.mark.parametrize("encoder", ["ae", "conv"])
def test_zero_initialised_branch_equals_backbone_exactly(recipe, encoder):
    backbone = _backbone(recipe)
    config = _conv_config() if encoder == "conv" else ControlConfig(cond_encoder="ae")
    control = ControlDiT(backbone, config)
    assert len(control.branch.blocks) == 1  # half of depth 2
    x, t, y, g = _inputs()
    with torch.no_grad():
        out = control(x, t, y, _cond(config, 3, g))
        ref = backbone(x, t, y)
    assert ref.abs().max() > 0.01  # not the trivial all-zero output of a fresh DiT
    assert torch.equal(out, ref)


def test_token_latents_and_interval_injection_start_at_the_backbone():
    shape = (8, 4)  # (L, C) tokens
    backbone = _backbone("study_sit", shape)
    config = ControlConfig(cond_encoder="ae", num_blocks=1, injection="interval")
    control = ControlDiT(backbone, config)
    assert control.block_map == (0, 0)  # diffusers SD3: every block gets residual int(i / (depth / N))
    x, t, y, g = _inputs(shape=shape)
    cond = _cond(config, 3, g, shape)
    with torch.no_grad():
        assert torch.equal(control(x, t, y, cond), backbone(x, t, y))
        # the bound view repeats the condition for a CFG-doubled batch
        torch.nn.init.normal_(control.branch.projections[0].weight)
        doubled = control.bind(cond)(torch.cat([x, x]), torch.cat([t, t]), torch.cat([y, y]))
        assert torch.allclose(doubled, torch.cat([control(x, t, y, cond)] * 2), atol=1e-6)
    with pytest.raises(ValueError, match="2-D latent grid"):
        ControlDiT(backbone, ControlConfig(cond_encoder="conv", cond_size=(8, 8)))


def test_bad_configuration_and_condition_are_named():
    backbone = _backbone()
    with pytest.raises(ValueError, match="cond_size"):
        ControlConfig(cond_encoder="conv")
    with pytest.raises(ValueError, match="power of 2"):
        ControlDiT(backbone, ControlConfig(cond_encoder="conv", cond_size=(12, 12)))
    with pytest.raises(ValueError, match="exceeds the backbone depth"):
        ControlDiT(backbone, ControlConfig(cond_encoder="ae", num_blocks=3))
    control = ControlDiT(backbone, _conv_config())
    x, t, y, _ = _inputs()
    with pytest.raises(ValueError, match=r"cond for cond_encoder 'conv' must be float of shape \(3, 1, 16, 16\)"):
        control(x, t, y, torch.zeros(3, 1, 8, 8))


def test_condition_map_layouts():
    maps = np.random.default_rng(0).random((2, 8, 8))
    assert condition_input(maps).shape == (2, 1, 8, 8)
    rgb = condition_rgb(maps)
    assert rgb.shape == (2, 3, 8, 8) and torch.equal(rgb[:, 0], rgb[:, 2])
    assert condition_input(np.zeros((2, 8, 8, 3))).shape == (2, 3, 8, 8)
    with pytest.raises(ValueError, match="1 or 3 channels"):
        condition_rgb(np.zeros((2, 8, 8, 2)))


# --- gradient flow -----------------------------------------------------------------------------


@pytest.mark.parametrize("encoder", ["ae", "conv"])
def test_gradient_reaches_only_the_branch(encoder):
    backbone = _backbone()
    config = _conv_config() if encoder == "conv" else ControlConfig(cond_encoder="ae")
    control = ControlDiT(backbone, config).train()
    assert not backbone.training  # the frozen backbone stays in eval mode
    x, t, y, g = _inputs()
    cond = _cond(config, 3, g)
    target = torch.randn(x.shape, generator=g)
    (control(x, t, y, cond) - target).square().mean().backward()
    assert all(p.grad is None for p in backbone.parameters())
    # zero-init projections: the first step's gradient reaches exactly the projections' weights
    assert all(p.weight.grad.abs().sum() > 0 for p in control.branch.projections)
    later = list(control.branch.cond_embed.parameters()) + list(control.branch.blocks.parameters())
    assert all(p.grad is None or not p.grad.any() for p in later)
    # once the projections are non-zero, the condition embedding and the copied blocks learn too
    torch.optim.SGD(control.branch.parameters(), lr=0.1).step()
    control.zero_grad()
    (control(x, t, y, cond) - target).square().mean().backward()
    assert all(p.grad is None for p in backbone.parameters())
    out_layer = control.branch.cond_embed.out if encoder == "conv" else control.branch.cond_embed.proj
    assert out_layer.weight.grad.abs().sum() > 0
    assert control.branch.blocks[0].attn.qkv.weight.grad.abs().sum() > 0


def test_mixed_precision_forward_backward():
    """bf16 autocast (what training uses on GPU) runs through both encoders; checked on CPU."""
    for config in (_conv_config(), ControlConfig(cond_encoder="ae")):
        control = ControlDiT(_backbone("lightningdit_official"), config).train()
        x, t, y, g = _inputs()
        transport = get_recipe("lightningdit_official").transport(SHAPE)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss, _ = transport.training_loss(control.bind(_cond(config, 3, g)), x, y, t=t, eps=torch.randn_like(x))
        loss.backward()
        assert torch.isfinite(loss) and control.branch.projections[0].weight.grad.abs().sum() > 0


# --- training ----------------------------------------------------------------------------------


def _toy_data(n: int, seed: int):
    """Condition = a random binary 4 x 4 pattern at 16 x 16; target latent = the condition pooled to 4 x 4."""
    g = torch.Generator().manual_seed(seed)
    cells = (torch.rand(n, 1, 4, 4, generator=g) > 0.5).float()
    cond = F.interpolate(cells, scale_factor=4, mode="nearest")
    pooled = F.avg_pool2d(cond, 4)
    x = torch.cat([2 * pooled - 1, 1 - 2 * pooled], dim=1)
    y = torch.randint(0, 4, (n,), generator=g)
    return x, y, cond


def _settings(**kw) -> ControlTrainSettings:
    base = {"max_steps": 60, "eval_every": 20, "patience": 10, "checkpoint_every": 20, "seed": 3, "micro_batch": 16,
            "grad_accumulation": 2, "lr": 3e-3, "precision": "fp32"}
    base.update(kw)
    return ControlTrainSettings(**base)


def _train_toy(tmp_path, name: str, settings: ControlTrainSettings, with_condition: bool = True, stop_after=None,
               validate=None, seed: int = 0):
    control = ControlDiT(_backbone(seed=seed), _conv_config())
    torch.manual_seed(seed + 100)  # branch init is a copy + zeros; keep any other draw fixed
    x, y, cond = _toy_data(256, 0)
    vx, vy, vcond = _toy_data(64, 1)
    if not with_condition:
        cond, vcond = torch.zeros_like(cond), torch.zeros_like(vcond)
    transport = get_recipe("study_sit").transport(SHAPE)
    validate = validate or validation_loss_fn(transport, vx, vy, vcond, batch_size=32)
    start = validate(control.eval())
    result = train_controlnet(control, transport, lambda idx, g: (x[idx], y[idx], cond[idx]), len(x), settings,
                              tmp_path / f"{name}.pt", validate, curves=tmp_path / f"{name}.json",
                              stop_after=stop_after)
    return control, result, start


def test_training_uses_the_condition(tmp_path):
    settings = _settings()
    _, with_cond, start = _train_toy(tmp_path, "cond", settings)
    _, without, start0 = _train_toy(tmp_path, "nocond", settings, with_condition=False)
    assert start == pytest.approx(start0)  # zero-init: the condition does not matter yet
    assert with_cond.best_value < 0.8 * start  # training reduces the held-out loss
    assert with_cond.best_value < 0.6 * without.best_value  # and the condition carries the information
    curves = read_json(tmp_path / "cond.json")
    assert [r["step"] for r in curves["validation"]] == [20, 40, 60]
    assert len(curves["train"]) == 60 and curves["metric"] == "val_loss"


def test_convergence_rule_stops_on_a_plateau_and_keeps_the_best(tmp_path):
    values = iter([9.0, 3.0, 2.0, 1.0, 1.5, 1.2, 0.1])  # the first scores the untrained branch
    snapshots = []

    def scripted(control):
        snapshots.append({k: v.clone() for k, v in control.branch.state_dict().items()})
        return next(values)

    settings = _settings(max_steps=50, eval_every=2, patience=2, checkpoint_every=100)
    control, result, _ = _train_toy(tmp_path, "plateau", settings, validate=scripted)
    snapshots = snapshots[1:]  # the first call scored the untrained branch
    assert result.stopped_early and result.steps == 10 and result.best_step == 6 and result.best_value == 1.0
    assert [r["value"] for r in result.validation] == [3.0, 2.0, 1.0, 1.5, 1.2]
    for key, value in control.branch.state_dict().items():
        assert torch.equal(value, snapshots[2][key]), key  # the weights scored 1.0
    assert not torch.equal(snapshots[2]["projections.0.weight"], snapshots[4]["projections.0.weight"])
    # a finished (stopped) run is not continued when called again
    again, result2, _ = _train_toy(tmp_path, "plateau", settings, validate=lambda c: 0.0)
    assert result2.steps == 10 and result2.best_step == 6
    assert all(torch.equal(v, control.branch.state_dict()[k]) for k, v in again.branch.state_dict().items())


def test_resume_is_exact(tmp_path, caplog):
    settings = _settings(max_steps=6, eval_every=2, checkpoint_every=2, grad_accumulation=2, micro_batch=4)
    _train_toy(tmp_path, "run", settings, stop_after=3)  # interrupted after step 3 (checkpoint at step 2)
    resumed, r1, _ = _train_toy(tmp_path, "run", dataclasses.replace(settings, checkpoint_every=1))
    whole, r2, _ = _train_toy(tmp_path, "whole", settings)
    assert r1.to_json() == r2.to_json()
    for key, value in whole.branch.state_dict().items():
        assert torch.equal(resumed.branch.state_dict()[key], value), key
    # the branch file the evaluation job reads back
    save_branch(tmp_path / "branch.pt", whole, {"best_step": r2.best_step})
    loaded, extra = load_branch(tmp_path / "branch.pt", _backbone())
    x, t, y, g = _inputs()
    cond = _cond(loaded.config, 3, g)
    with torch.no_grad():
        assert torch.equal(loaded(x, t, y, cond), whole(x, t, y, cond)) and extra == {"best_step": r2.best_step}
    with pytest.raises(ValueError, match="another backbone"):
        load_branch(tmp_path / "branch.pt", _backbone(seed=5))
    # another backbone is another run: the finished checkpoint is not resumed
    with caplog.at_level("WARNING"):
        _, r3, _ = _train_toy(tmp_path, "whole", settings, seed=5)
    assert "different run" in caplog.text and r3.steps == 6 and r3.validation != r2.validation


def test_settings_are_checked():
    with pytest.raises(ValueError, match="patience"):
        _settings(patience=0)
    assert ControlTrainSettings(max_steps=1, eval_every=1, patience=1, checkpoint_every=1, seed=0).effective_batch == 32


# --- evaluation (Table 3) ----------------------------------------------------------------------


def _canny(images: np.ndarray) -> np.ndarray:
    """cv2.Canny(rgb, 100, 200) / 255 (spec §7.2), the stand-in for the drift projector."""
    return np.stack([cv2.Canny(im, 100, 200) for im in images]).astype(np.float64) / 255.0


def _features(images: np.ndarray) -> np.ndarray:
    """A fixed random projection of 4x-pooled pixels (a stand-in for the FID extractor)."""
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255
    pooled = F.avg_pool2d(x, 4).flatten(1)
    w = torch.randn(pooled.shape[1], 6, generator=torch.Generator().manual_seed(0))
    return (pooled @ w).numpy()


def _images(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    out = np.zeros((n, 16, 16, 3), np.uint8)
    for i in range(n):
        r, c = rng.integers(1, 8, 2)
        out[i, r:r + 7, c:c + 7] = rng.integers(120, 256, 3)
    return out


def test_l1_and_fid_oracles():
    real = _images(40, 0)
    maps = _canny(real)
    real_stats = image_feature_stats(real, _features, batch_size=16)
    metrics = score_controlnet(real, maps, _canny, _features, real_stats, batch_size=16)
    assert metrics["l1"] == 0.0 and metrics["num_images"] == 40
    assert abs(metrics["fid"]) < 1e-8
    # other images: L1 is the fraction of disagreeing edge pixels, image by image
    other = _images(40, 1)
    per = condition_l1(maps, other, _canny, batch_size=16)
    assert np.allclose(per, np.abs(maps - _canny(other)).mean(axis=(1, 2)))
    assert per.mean() > 0.01
    assert score_controlnet(other, maps, _canny, _features, real_stats)["fid"] > 0.01
    with pytest.raises(ValueError, match="projector output"):
        condition_l1(maps[:, :8], real, _canny)
    with pytest.raises(ValueError, match="uint8 NHWC"):
        condition_l1(maps, real.astype(np.float32), _canny)


def _decode(z: torch.Tensor) -> np.ndarray:
    """Toy decoder: latent (2, 4, 4) -> 16 x 16 RGB uint8."""
    rgb = torch.cat([z, z.mean(1, keepdim=True)], dim=1)
    up = F.interpolate(torch.sigmoid(rgb), scale_factor=4, mode="nearest")
    return (up.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()


def test_generation_matches_the_backbone_at_init_and_scores():
    backbone = _backbone()
    control = ControlDiT(backbone, _conv_config())
    recipe = get_recipe("study_sit")
    transport = recipe.transport(SHAPE)
    sampling = {**recipe.sampling(SHAPE), "steps": 4}
    _, y, cond = _toy_data(5, 2)
    images = generate_controlled(control, transport, sampling, cond, y, _decode, batch_size=2, seed=7)
    assert images.shape == (5, 16, 16, 3) and images.dtype == np.uint8
    # batching does not change Euler samples
    assert np.array_equal(images, generate_controlled(control, transport, sampling, cond, y, _decode, 3, seed=7))
    # zero-initialised branch: exactly the backbone's own samples from the same noise
    first = generate_controlled(control, transport, sampling, cond[:1], y[:1], _decode, 1, seed=7)
    noise = torch.randn(SHAPE, generator=torch.Generator().manual_seed(derive_seed(7, "controlnet-noise", 0)),
                        dtype=torch.float64)[None]
    u = sample(backbone, transport, (1, *SHAPE), y[:1], start=noise, **sampling)
    assert np.array_equal(first, _decode(u.float()))
    real = _images(5, 3)
    real_stats = image_feature_stats(_images(20, 4), _features)
    metrics, gen = evaluate_controlnet(control, transport, sampling, cond, _canny(real), y, _decode, _canny,
                                       _features, real_stats, batch_size=2, seed=7)
    assert np.array_equal(gen, images)
    assert 0.0 <= metrics["l1"] <= 1.0 and metrics["fid"] > 0 and metrics["num_images"] == 5
    # the convergence rule's L1 score is the same computation
    score = condition_l1_fn(transport, sampling, cond, _canny(real), y, _decode, _canny, batch_size=2, seed=7)
    assert score(control) == pytest.approx(metrics["l1"])


def test_per_class_subset():
    labels = np.repeat(np.arange(5), 30)
    idx = per_class_subset(labels, 10, seed=0)
    assert len(idx) == 50 and np.all(np.bincount(labels[idx]) == 10) and np.all(np.diff(idx) > 0)
    assert np.array_equal(idx, per_class_subset(labels, 10, seed=0))
    assert not np.array_equal(idx, per_class_subset(labels, 10, seed=1))


def test_hyperparameter_record_sits_beside_table_4():
    settings = ControlTrainSettings(max_steps=1000, eval_every=100, patience=5, checkpoint_every=100, seed=0)
    rows = hyperparameter_record(settings, ControlConfig(cond_encoder="ae"), depth=28, num_items=32_000)
    names = [r["hyperparameter"] for r in rows]
    assert names[:7] == ["base_batch_size", "gradient_accumulation", "effective_batch_size", "learning_rate",
                         "optimizer", "gradient_clipping", "total_epochs"]
    by_name = {r["hyperparameter"]: r for r in rows}
    assert by_name["base_batch_size"]["paper"] == "4" and by_name["base_batch_size"]["ours"] == 4
    assert by_name["effective_batch_size"]["ours"] == 32 and by_name["gradient_clipping"]["ours"] == 0.5
    assert by_name["learning_rate"]["paper"] == "(lost in extraction)"
    assert by_name["learning_rate"]["ours"].startswith("1e-05")
    assert by_name["total_epochs"]["ours"].startswith("<= 1 ")
    assert by_name["control_blocks"]["ours"] == "14 of 28 (corresponding)"
