"""Tests of the samplers against the oracles of spec metrics-ifid-seesaw.md §2.5 and the grids of
models.md §1.7 / ifid-seesaw §2.2, §2.4."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from latentbench.diffusion import build_backbone
from latentbench.diffusion.samplers import partial_noise, sample, time_grid
from latentbench.diffusion.transport import Transport, convert_shift, shift_time, to_noise_time, velocity_to_noise_time


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


NUM_CLASSES = 5


class GaussianField(nn.Module):
    """Exact velocity for N(0, I) data, v*(x, t) = c(t) x in noise-time (ifid-seesaw §2.5), in a
    chosen convention, plus an optional class bias ``bias[y]`` (zero for the null class) whose
    guided version is known in closed form: ``c x + w bias[y]`` on the guided channels."""

    num_classes = NUM_CLASSES

    def __init__(self, convention: str, bias: Tensor | None = None, weight=None) -> None:
        super().__init__()
        self.convention = convention
        self.bias = bias  # [K + 1, C] or None
        self.weight = weight  # reference only: callable t -> per-channel multiplier of bias [C]
        self.calls: list[tuple[int, Tensor]] = []

    def forward(self, x: Tensor, t: Tensor, y: Tensor) -> Tensor:
        self.calls.append((x.shape[0], y.clone()))
        tau = to_noise_time(t.double(), self.convention).reshape(-1, *([1] * (x.dim() - 1)))
        v = (2 * tau - 1) / ((1 - tau) ** 2 + tau**2) * x.double()
        if self.bias is not None:
            b = self.bias[y].double()  # [B, C]
            if self.weight is not None:
                b = b * self.weight(float(t[0]))
            b = b.reshape(b.shape[0], -1, *([1] * (x.dim() - 2))) if x.dim() == 4 else b[:, None, :]
            v = v + b
        return velocity_to_noise_time(v, self.convention)


def _stats(x: Tensor) -> tuple[float, float]:
    return x.mean().item(), x.var().item()


def test_time_grids():
    n = 10
    lin = torch.linspace(0, 1, n + 1, dtype=torch.float64)
    # data-time Euler: t_i = shift(i/N); noise-time Euler: tau_k = shift(1 - k/N)
    torch.testing.assert_close(time_grid(Transport("data_at_1"), n, "euler", 0.3), shift_time(lin, 0.3))
    torch.testing.assert_close(time_grid(Transport("noise_at_1"), n, "euler", 2.0), shift_time(1 - lin, 2.0))
    # iFID SDE: shift(linspace(1, 0.04, N)) then 0
    sde = time_grid(Transport("noise_at_1"), n, "sde", 2.0)
    stochastic = shift_time(torch.linspace(1, 0.04, n, dtype=torch.float64), 2.0)
    expected = torch.cat([stochastic, torch.zeros(1, dtype=torch.float64)])
    torch.testing.assert_close(sde, expected)
    # data-time SDE mirrors it (official SiT: linspace(0, 0.96, N) then 1)
    data_sde = time_grid(Transport("data_at_1"), n, "sde")
    torch.testing.assert_close(data_sde, 1 - time_grid(Transport("noise_at_1"), n, "sde"))
    # partial starts (ifid-seesaw §2.4): grid restricted to [0, t]
    part = time_grid(Transport("noise_at_1"), 5, "euler", 1.0, t_start=0.4)
    torch.testing.assert_close(part, torch.linspace(0.4, 0, 6, dtype=torch.float64))
    assert time_grid(Transport("noise_at_1"), 5, "sde", 1.0, t_start=0.03).tolist() == [0.03, 0.0]
    assert time_grid(Transport("data_at_1"), 5, "sde", 1.0, t_start=0.0).tolist() == [1.0]
    with pytest.raises(ValueError, match="t_start"):
        time_grid(Transport(), 5, t_start=1.5)


@pytest.mark.parametrize("method", ["euler", "sde"])
@pytest.mark.parametrize("convention", ["noise_at_1", "data_at_1"])
def test_analytic_field_recovers_standard_normal(method, convention):
    """ifid-seesaw §2.5: d = 2, 100k samples, 250 steps, s = 1 -> mean 0 +- 0.01, var 1 +- 0.02."""
    model = GaussianField(convention).eval()
    y = torch.zeros(100_000, dtype=torch.int64)
    gen = torch.Generator().manual_seed(0)
    x = sample(model, Transport(convention), (100_000, 2, 1, 1), y, 250, method, generator=gen)
    assert x.dtype == torch.float64
    mean, var = _stats(x)
    assert abs(mean) < 0.01 and abs(var - 1) < 0.02, (mean, var)


@pytest.mark.parametrize("convention", ["noise_at_1", "data_at_1"])
def test_euler_is_the_exact_product_for_a_linear_field(convention):
    """For v = c(tau) x the Euler map is x0 * prod_k (1 + (tau_{k+1} - tau_k) c(tau_k))."""
    tau = torch.linspace(1, 0, 31, dtype=torch.float64)
    tau = shift_time(tau, 2.0)
    c = (2 * tau - 1) / ((1 - tau) ** 2 + tau**2)
    k = torch.prod(1 + (tau[1:] - tau[:-1]) * c[:-1])
    shift = convert_shift(2.0, "noise_at_1", convention)
    start = torch.ones(1, 1, 1, 1, dtype=torch.float64)
    y = torch.zeros(1, dtype=torch.int64)
    out = sample(GaussianField(convention).eval(), Transport(convention), start.shape, y, 30, "euler",
                 sample_shift=shift, start=start)
    assert out.item() == pytest.approx(k.item(), rel=1e-12)


def test_sde_matches_the_reference_update():
    """Step-by-step re-statement of iFID ``euler_maruyama_sampler`` (ifid-seesaw §2.2): score from
    velocity s = (alpha/alpha' v - x) / (sigma^2 - alpha/alpha' sigma' sigma), g^2 = 2 tau,
    d = v - g^2/2 s, x += d dt + sqrt(g^2) sqrt(|dt|) xi, the last step without noise."""
    shape, steps, s = (3, 2, 2, 2), 4, 1.7
    start = torch.randn(shape, generator=torch.Generator().manual_seed(8), dtype=torch.float64)
    got = sample(GaussianField("noise_at_1").eval(), Transport("noise_at_1"), shape, torch.zeros(3, dtype=torch.int64),
                 steps, "sde", sample_shift=s, generator=torch.Generator().manual_seed(9), start=start)
    taus = shift_time(torch.linspace(1.0, 0.04, steps, dtype=torch.float64), s).tolist() + [0.0]
    gen = torch.Generator().manual_seed(9)
    x = start.clone()
    for i, (t_cur, t_next) in enumerate(zip(taus[:-1], taus[1:])):
        dt = t_next - t_cur
        v = (2 * t_cur - 1) / ((1 - t_cur) ** 2 + t_cur**2) * x
        alpha, d_alpha, sigma, d_sigma = 1 - t_cur, -1.0, t_cur, 1.0
        score = (alpha / d_alpha * v - x) / (sigma**2 - alpha / d_alpha * d_sigma * sigma)
        drift = v - 0.5 * (2 * t_cur) * score
        x = x + drift * dt
        if i < len(taus) - 2:
            x = x + (2 * t_cur) ** 0.5 * abs(dt) ** 0.5 * torch.randn(shape, generator=gen, dtype=torch.float64)
    torch.testing.assert_close(got, x, atol=1e-12, rtol=1e-12)


@pytest.mark.parametrize("method", ["euler", "sde"])
@pytest.mark.parametrize("s", [1.0, 2.0])
def test_partial_noising(method, s):
    """ifid-seesaw §2.5: start at t in {0.2, 0.6}, round(250 t) steps: var 1 +- 0.03, corr(u, out)
    falls with t. For the ODE the probability-flow map of N(0, I) is u_t / sqrt((1-t')^2 + t'^2), so
    corr = (1-t') / sqrt((1-t')^2 + t'^2) exactly (s = 1: 0.970 at 0.2, 0.555 at 0.6)."""
    n = 50_000
    gen = torch.Generator().manual_seed(1)
    u = torch.randn(n, 2, 1, 1, generator=gen, dtype=torch.float64)
    transport = Transport("noise_at_1")
    model = GaussianField("noise_at_1").eval()
    y = torch.zeros(n, dtype=torch.int64)
    corrs = []
    for t in (0.2, 0.6):
        start = partial_noise(transport, u, t, sample_shift=s, generator=gen)
        tp = shift_time(t, s)
        torch.testing.assert_close(start.var().item(), (1 - tp) ** 2 + tp**2, atol=0.02, rtol=0)
        out = sample(model, transport, u.shape, y, round(250 * t), method, sample_shift=s, generator=gen,
                     start=start, t_start=t)
        assert abs(out.var().item() - 1) < 0.03
        corr = torch.corrcoef(torch.stack([u.flatten(), out.flatten()]))[0, 1].item()
        if method == "euler":
            assert corr == pytest.approx((1 - tp) / ((1 - tp) ** 2 + tp**2) ** 0.5, abs=0.01)
        corrs.append(corr)
    assert corrs[0] > corrs[1] + 0.2
    # t = 0 is a short-circuit: the start comes back untouched (gFID(0) = rFID)
    assert torch.equal(sample(model, transport, u.shape, y, 10, method, start=u, t_start=0.0), u)


@pytest.mark.parametrize("method", ["euler", "sde"])
def test_conventions_give_the_same_samples(method):
    """A data-time and a noise-time model of the same field sample identically; shift s <-> 1/s."""
    gen = torch.Generator().manual_seed(2)
    noise = torch.randn(2000, 3, 2, 2, generator=gen, dtype=torch.float64)
    y = torch.zeros(2000, dtype=torch.int64)
    s_noise = 2.0
    s_data = convert_shift(s_noise, "noise_at_1", "data_at_1")
    a = sample(GaussianField("noise_at_1").eval(), Transport("noise_at_1"), noise.shape, y, 40, method,
               sample_shift=s_noise, generator=torch.Generator().manual_seed(3), start=noise)
    b = sample(GaussianField("data_at_1").eval(), Transport("data_at_1"), noise.shape, y, 40, method,
               sample_shift=s_data, generator=torch.Generator().manual_seed(3), start=noise)
    torch.testing.assert_close(a, b, atol=1e-9, rtol=1e-9)
    # and a partial start agrees too
    u = torch.randn(500, 3, 2, 2, generator=gen, dtype=torch.float64)
    eps = torch.randn(500, 3, 2, 2, generator=gen, dtype=torch.float64)
    sa = partial_noise(Transport("noise_at_1"), u, 0.5, s_noise, eps=eps)
    sb = partial_noise(Transport("data_at_1"), u, 0.5, s_data, eps=eps)
    torch.testing.assert_close(sa, sb)


def _bias(channels: int) -> Tensor:
    gen = torch.Generator().manual_seed(4)
    bias = torch.randn(NUM_CLASSES + 1, channels, generator=gen, dtype=torch.float64)
    bias[NUM_CLASSES] = 0.0  # the null class adds nothing
    return bias


@pytest.mark.parametrize("method", ["euler", "sde"])
@pytest.mark.parametrize("shape", [(6, 4, 2, 2), (6, 3, 5)])
def test_cfg_scale_one_equals_conditional_model(method, shape):
    channels = shape[1] if len(shape) == 4 else shape[-1]
    model = GaussianField("data_at_1", _bias(channels)).eval()
    y = torch.arange(6) % NUM_CLASSES
    kw = dict(generator=None, start=torch.randn(shape, dtype=torch.float64))
    torch.manual_seed(0)
    guided = sample(model, Transport("data_at_1"), shape, y, 20, method, cfg_scale=1.0, **kw)
    assert all(b == shape[0] for b, _ in model.calls)  # w = 1: no unconditional batch at all
    torch.manual_seed(0)
    plain = sample(model, Transport("data_at_1"), shape, y, 20, method, **kw)
    torch.testing.assert_close(guided, plain, atol=0, rtol=0)


@pytest.mark.parametrize("method", ["euler", "sde"])
@pytest.mark.parametrize("cfg_channels", ["all", "first3"])
@pytest.mark.parametrize("cfg_interval", [None, (0.3, 0.8)])
def test_cfg_combination(method, cfg_channels, cfg_interval):
    """Guided field of c x + b[y] (b[null] = 0) is c x + w b[y] on the guided channels inside the
    interval and c x + b[y] elsewhere; sampling it must equal sampling that field directly."""
    shape, w, channels = (8, 5, 2, 2), 2.5, 5
    bias = _bias(channels)
    y = torch.arange(8) % NUM_CLASSES
    mask = torch.ones(channels, dtype=torch.float64) if cfg_channels == "all" else (torch.arange(channels) < 3).double()

    def weight(t: float) -> Tensor:
        inside = cfg_interval is None or cfg_interval[0] <= t <= cfg_interval[1]
        return 1 + (w - 1) * mask if inside else torch.ones(channels, dtype=torch.float64)

    start = torch.randn(shape, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    model = GaussianField("noise_at_1", bias).eval()
    reference = GaussianField("noise_at_1", bias, weight=weight).eval()
    transport = Transport("noise_at_1")
    common = dict(sample_shift=1.5, start=start)
    got = sample(model, transport, shape, y, 25, method, cfg_scale=w, cfg_channels=cfg_channels,
                 cfg_interval=cfg_interval, generator=torch.Generator().manual_seed(6), **common)
    want = sample(reference, transport, shape, y, 25, method, generator=torch.Generator().manual_seed(6), **common)
    torch.testing.assert_close(got, want, atol=1e-10, rtol=1e-10)
    guided_calls = [labels for batch, labels in model.calls if batch == 16]
    cond_then_null = torch.cat([y, torch.full_like(y, NUM_CLASSES)])
    assert guided_calls and all(torch.equal(lab, cond_then_null) for lab in guided_calls)
    if cfg_interval is not None:
        assert any(batch == 8 for batch, _ in model.calls)  # outside the interval: conditional only


@pytest.mark.parametrize("method", ["euler", "sde"])
def test_trajectory_recording(method):
    model = GaussianField("noise_at_1").eval()
    shape, steps = (4, 2, 3, 3), 12
    start = torch.randn(shape, dtype=torch.float64)
    y = torch.zeros(4, dtype=torch.int64)
    x, traj = sample(model, Transport("noise_at_1"), shape, y, steps, method, record_trajectory=True, start=start,
                     generator=torch.Generator().manual_seed(0))
    assert traj.shape == (steps + 1, *shape)
    assert torch.equal(traj[0], start) and torch.equal(traj[-1], x)
    assert len(model.calls) == steps


def test_dit_sampling_runs_in_model_dtype():
    """A real (bf16) DiT: calls in the model dtype, float64 state, CFG batch of 2B with null labels."""
    model = build_backbone("demo", "study_sit", (4, 4, 4), 1, num_classes=NUM_CLASSES).eval()
    with torch.no_grad():
        model.final_layer.linear.weight.normal_(0, 0.1)
    seen = []
    model.register_forward_pre_hook(lambda m, args: seen.append((args[0].dtype, args[1].dtype, args[2].clone())))
    y = torch.tensor([0, 3])
    x = sample(model.to(torch.bfloat16), Transport("data_at_1"), (2, 4, 4, 4), y, 3, cfg_scale=1.5,
               generator=torch.Generator().manual_seed(0))
    assert x.dtype == torch.float64 and torch.isfinite(x).all()
    assert all(dx == torch.bfloat16 and dt == torch.bfloat16 for dx, dt, _ in seen)
    assert all(torch.equal(lab, torch.tensor([0, 3, NUM_CLASSES, NUM_CLASSES])) for _, _, lab in seen)


def test_sampler_arguments_are_checked():
    model = GaussianField("noise_at_1")
    y = torch.zeros(2, dtype=torch.int64)
    with pytest.raises(ValueError, match="eval mode"):
        sample(model.train(), Transport(), (2, 2, 2), y, 5)
    model.eval()
    with pytest.raises(ValueError, match="y must"):
        sample(model, Transport(), (3, 2, 2), y, 5)
    with pytest.raises(ValueError, match="cfg_channels"):
        sample(model, Transport(), (2, 2, 2), y, 5, cfg_channels="last3")
    with pytest.raises(ValueError, match="cfg_interval"):
        sample(model, Transport(), (2, 2, 2), y, 5, cfg_interval=(0.8, 0.2))
    with pytest.raises(ValueError, match="method"):
        sample(model, Transport(), (2, 2, 2), y, 5, method="heun")
    with pytest.raises(ValueError, match="start"):
        sample(model, Transport(), (2, 2, 2), y, 5, start=torch.zeros(2, 2, 3))
    with pytest.raises(ValueError, match="steps"):
        sample(model, Transport(), (2, 2, 2), y, 0)
    with pytest.raises(ValueError, match="partial_noise"):
        sample(model, Transport(), (2, 2, 2), y, 5, t_start=0.5)
