"""Tests of the flow-matching transport: conventions, shift, t-samplers, losses, and the held-out
diffusion loss against the analytic oracle of spec metrics-ifid-seesaw.md §5.1."""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor, nn

from latentbench.diffusion import build_backbone
from latentbench.diffusion.transport import (
    Transport,
    auto_shift,
    convert_shift,
    shift_time,
    stratified_times,
    to_noise_time,
    velocity_to_noise_time,
)


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def optimal_c(tau: Tensor) -> Tensor:
    """c(t) of the exact noise-time velocity c(t) x for N(0, I) data (ifid-seesaw §2.5)."""
    return (2 * tau - 1) / ((1 - tau) ** 2 + tau**2)


class AnalyticVelocity(nn.Module):
    """Optimal velocity for N(0, I) data in a given convention; ``scale=0`` gives the zero model."""

    num_classes = 10

    def __init__(self, convention: str, scale: float = 1.0) -> None:
        super().__init__()
        self.convention = convention
        self.scale = scale

    def forward(self, x: Tensor, t: Tensor, y: Tensor) -> Tensor:
        tau = to_noise_time(t.double(), self.convention).reshape(-1, *([1] * (x.dim() - 1)))
        v_noise = self.scale * optimal_c(tau) * x.double()
        return velocity_to_noise_time(v_noise, self.convention).to(x.dtype)


def expected_optimal_loss(tau: Tensor) -> Tensor:
    """2 - (2t'-1)^2 / ((1-t')^2 + t'^2) (ifid-seesaw §5.1)."""
    return 2 - (2 * tau - 1) ** 2 / ((1 - tau) ** 2 + tau**2)


def test_shift_oracles():
    assert shift_time(0.0, 3.7) == 0.0
    assert shift_time(1.0, 3.7) == pytest.approx(1.0)
    assert shift_time(0.5, 2.0) == pytest.approx(2 / 3)
    t = torch.linspace(0, 1, 11, dtype=torch.float64)
    torch.testing.assert_close(shift_time(t, 1.0), t)
    assert torch.all(torch.diff(shift_time(t, 0.3)) > 0)  # monotone
    # a shift s in noise-time is a shift 1/s in data-time (spec models.md §1.1)
    for s in (0.3, 2.0, 6.93):
        torch.testing.assert_close(1 - shift_time(1 - t, s), shift_time(t, convert_shift(s, "noise_at_1", "data_at_1")))
    assert convert_shift(2.0, "data_at_1", "data_at_1") == 2.0
    with pytest.raises(ValueError):
        shift_time(0.5, 0.0)


def test_auto_shift_values():
    """iFID s = sqrt(numel/4096) (ifid-seesaw §2.2)."""
    assert auto_shift((4, 32, 32)) == 1.0
    assert auto_shift((32, 16, 16)) == pytest.approx(math.sqrt(2))
    assert auto_shift((16, 32, 32)) == 2.0
    assert auto_shift((768, 16, 16)) == pytest.approx(6.93, abs=0.01)
    assert auto_shift((64, 32)) == pytest.approx(0.707, abs=1e-3)


def test_conventions_are_mirror_images():
    gen = torch.Generator().manual_seed(0)
    x, eps = torch.randn(5, 3, 2, 2, generator=gen), torch.randn(5, 3, 2, 2, generator=gen)
    t = torch.rand(5, generator=gen)
    data, noise = Transport("data_at_1"), Transport("noise_at_1")
    torch.testing.assert_close(data.noise(x, t, eps), noise.noise(x, 1 - t, eps))
    torch.testing.assert_close(data.noise(x, torch.ones(5), eps), x)  # t=1 is data
    torch.testing.assert_close(noise.noise(x, torch.ones(5), eps), eps)  # t=1 is noise
    torch.testing.assert_close(data.velocity_target(x, eps), -noise.velocity_target(x, eps))
    torch.testing.assert_close(noise.velocity_target(x, eps), eps - x)
    # the target is d x_t / dt along each path
    h = 1e-3
    for tr in (data, noise):
        fd = (tr.noise(x, t + h, eps) - tr.noise(x, t - h, eps)) / (2 * h)
        torch.testing.assert_close(fd, tr.velocity_target(x, eps), atol=1e-3, rtol=1e-3)


def test_noising_statistics():
    """Mean and variance of u_t over eps equal (1-t')u and t'^2 (ifid-seesaw §2.5)."""
    gen = torch.Generator().manual_seed(1)
    u = torch.randn(1, 6, generator=gen).expand(200_000, 6)
    t = torch.full((200_000,), 0.3)
    u_t = Transport("noise_at_1").noise(u, t, torch.randn(200_000, 6, generator=gen))
    torch.testing.assert_close(u_t.mean(0), 0.7 * u[0], atol=4e-3, rtol=0)
    torch.testing.assert_close(u_t.var(0), torch.full((6,), 0.09), atol=2e-3, rtol=0)


def test_time_samplers():
    gen = torch.Generator().manual_seed(2)
    t = Transport(t_sampler="uniform").sample_time(100_000, gen)
    assert t.min() >= 0 and t.max() <= 1 and t.mean().item() == pytest.approx(0.5, abs=0.005)
    t = Transport(t_sampler="logit_normal").sample_time(100_000, gen)
    logit = torch.log(t / (1 - t))
    assert logit.mean().item() == pytest.approx(0.0, abs=0.02) and logit.std().item() == pytest.approx(1.0, abs=0.02)
    t = Transport(t_sampler="uniform", train_shift=2.0).sample_time(100_000, gen)
    assert t.median().item() == pytest.approx(2 / 3, abs=0.01)  # median of shift_2(U) = shift_2(0.5)
    a = Transport().sample_time(8, torch.Generator().manual_seed(5))
    b = Transport().sample_time(8, torch.Generator().manual_seed(5))
    assert torch.equal(a, b)


def test_loss_formulas():
    gen = torch.Generator().manual_seed(3)
    pred, target = torch.randn(4, 3, 5, 5, generator=gen), torch.randn(4, 3, 5, 5, generator=gen)
    mse = Transport(loss="mse").loss_per_sample(pred, target)
    torch.testing.assert_close(mse, ((pred - target) ** 2).mean(dim=(1, 2, 3)))
    both = Transport(loss="mse_cos").loss_per_sample(pred, target)
    cos = (pred * target).sum(1) / (pred.norm(dim=1) * target.norm(dim=1))  # over channels, per position
    torch.testing.assert_close(both, mse + (1 - cos).mean(dim=(1, 2)))
    # 1-D tokens: channel is the last axis
    p1, t1 = torch.randn(4, 7, 3, generator=gen), torch.randn(4, 7, 3, generator=gen)
    cos1 = (p1 * t1).sum(-1) / (p1.norm(dim=-1) * t1.norm(dim=-1))
    expected = ((p1 - t1) ** 2).mean((1, 2)) + (1 - cos1).mean(1)
    torch.testing.assert_close(Transport(loss="mse_cos").loss_per_sample(p1, t1), expected)


@pytest.mark.parametrize("loss, expected", [("mse", 2.0), ("mse_cos", 3.0)])
def test_training_loss_of_zero_model(loss, expected):
    """Zero output: E[(eps - x)^2] = 2 for N(0, I) data; cosine term adds exactly 1."""
    model = build_backbone("demo", "study_sit", (4, 8, 8), 1, num_classes=10)
    transport = Transport(loss=loss)
    gen = torch.Generator().manual_seed(4)
    x, y = torch.randn(128, 4, 8, 8, generator=gen), torch.randint(0, 10, (128,), generator=gen)
    total, per_sample = transport.training_loss(model, x, y, torch.Generator().manual_seed(0))
    assert per_sample.shape == (128,)
    assert total.item() == pytest.approx(expected, rel=0.03)  # 32768 elements: ~4 sigma
    again, _ = transport.training_loss(model, x, y, torch.Generator().manual_seed(0))
    assert again.item() == total.item()


def test_training_loss_applies_the_in_model_batchnorm():
    """iFID bn_online: an affine change of the raw latents leaves the loss unchanged in train mode."""
    torch.manual_seed(0)
    model = build_backbone("demo", "ifid_sit", (4, 8, 8), 1, num_classes=10)
    with torch.no_grad():
        model.final_layer.linear.weight.normal_(0, 0.1)
    model.y_embedder.dropout_prob = 0.0
    transport = Transport("noise_at_1", train_shift=auto_shift((4, 8, 8)))
    x, y = torch.randn(64, 4, 8, 8), torch.randint(0, 10, (64,))
    a, _ = transport.training_loss(model, x, y, torch.Generator().manual_seed(0))
    b, _ = transport.training_loss(model, 5.0 * x + 3.0, y, torch.Generator().manual_seed(0))
    assert a.item() == pytest.approx(b.item(), rel=1e-3)
    assert model.bn.num_batches_tracked.item() == 2


def test_stratified_times():
    t = stratified_times(1000, seed=7)
    torch.testing.assert_close(t.sort().values, (torch.arange(1000, dtype=torch.float64) + 0.5) / 1000)
    assert torch.equal(t, stratified_times(1000, seed=7))
    assert not torch.equal(t, stratified_times(1000, seed=8))


@pytest.mark.parametrize("convention", ["noise_at_1", "data_at_1"])
@pytest.mark.parametrize("s", [1.0, 2.0])
def test_validation_loss_matches_analytic_oracle(convention, s):
    """ifid-seesaw §5.1: optimal model -> 2 - (2t'-1)^2/((1-t')^2+t'^2); zero model -> 2 (1%)."""
    n, shape = 20_000, (16,)
    gen = torch.Generator().manual_seed(11)
    u = torch.randn(n, *shape, generator=gen)
    y = torch.randint(0, 10, (n,))
    transport = Transport(convention, train_shift=s)
    index = torch.arange(n)
    loss = transport.validation_loss(AnalyticVelocity(convention), u, y, index, n, seed=3)
    assert loss.shape == (n,)
    t_model = shift_time(stratified_times(n, 3), s)
    expected = expected_optimal_loss(to_noise_time(t_model, convention))
    assert loss.double().mean().item() == pytest.approx(expected.mean().item(), rel=0.01)
    zero = transport.validation_loss(AnalyticVelocity(convention, scale=0.0), u, y, index, n, seed=3)
    assert zero.mean().item() == pytest.approx(2.0, rel=0.01)


def test_validation_loss_is_batch_invariant_and_restores_mode():
    model = build_backbone("demo", "ifid_sit", (4, 4, 4), 1, num_classes=10)
    with torch.no_grad():
        model.final_layer.linear.weight.normal_(0, 0.1)
    model.train()
    model.normalize(torch.randn(64, 4, 4, 4) * 2 + 1)  # give the BN running stats
    transport = Transport("noise_at_1")
    x, y = torch.randn(10, 4, 4, 4), torch.randint(0, 10, (10,))
    whole = transport.validation_loss(model, x, y, torch.arange(10), 10, seed=0)
    parts = torch.cat(
        [transport.validation_loss(model, x[:4], y[:4], [0, 1, 2, 3], 10, seed=0),
         transport.validation_loss(model, x[4:], y[4:], torch.arange(4, 10), 10, seed=0)]
    )
    torch.testing.assert_close(whole, parts)
    assert model.training  # restored
    assert model.bn.num_batches_tracked.item() == 1  # eval mode inside: running stats untouched
    with pytest.raises(ValueError, match="index"):
        transport.validation_loss(model, x, y, torch.arange(10), 5)


def test_bad_arguments():
    with pytest.raises(ValueError, match="time_convention"):
        Transport("noise_at_0")
    with pytest.raises(ValueError, match="t_sampler"):
        Transport(t_sampler="beta")
    with pytest.raises(ValueError, match="loss"):
        Transport(loss="l1")
    with pytest.raises(ValueError, match="train_shift"):
        Transport(train_shift=-1.0)
    with pytest.raises(ValueError, match="eps"):
        Transport().noise(torch.zeros(2, 3), torch.zeros(2), torch.zeros(2, 4))
