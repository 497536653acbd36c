"""Samplers for flow-matching DiTs: Euler ODE and Euler-Maruyama SDE, with classifier-free
guidance (channel set and interval), trajectory recording and partial-noise starts (gFID(t)).

Grids (spec models.md §1.7, ifid-seesaw §2.2, §2.4), laid out in the transport's *user time*
and then shifted with ``sample_shift`` (the model is conditioned on the shifted time):

- ``"euler"``: N+1 points from the start to the data end, ``x <- x + (t_{k+1} - t_k) v(x, t_k)``.
  data-time: ``t_i = shift(i/N)`` (LightningDiT/study); noise-time: ``tau_k = shift(1 - k/N)``
  (iFID ``euler_sampler``). A LightningDiT grid of P "points" is ``steps = P - 1``.
- ``"sde"``: iFID ``euler_maruyama_sampler`` in noise-time: ``shift(linspace(1, 0.04, N))`` then
  a final 0; N-1 Euler-Maruyama steps with ``g^2 = 2 tau`` and one last deterministic step. For a
  data-time model the same SDE runs on the mirrored grid ``linspace(0, 0.96, N)`` then 1, which
  is official SiT ``sample_sde`` (diffusion form "sigma" ``w_t = 1 - t``, last "Mean" step).
  Either way N model evaluations.

Partial starts (gFID(t), ifid-seesaw §2.4): ``t_start`` is the **un-shifted noise-time** level of
the start (1 = pure noise, 0 = data) whatever the model's convention; the grid then covers only
``[0, t_start]`` (SDE: ``linspace(t_start, 0.04, N)`` then 0, or one deterministic step when
``t_start <= 0.04``; ``t_start = 0`` returns the start unchanged). :func:`partial_noise` builds
the matching noised start.

State arithmetic is float64; the model is called in its parameters' dtype.
"""

from __future__ import annotations

import math
from typing import Literal, Sequence

import torch
from torch import Tensor, nn

from latentbench.diffusion.transport import Transport, standard_normal, from_noise_time, shift_time, to_noise_time

SamplerMethod = Literal["euler", "sde"]
CfgChannels = Literal["all", "first3"]

# iFID euler_maruyama_sampler: the stochastic grid ends at (shifted) noise-time 0.04, then one
# deterministic step to 0 (also official SiT sample_sde's last_step_size 0.04).
SDE_LAST_NOISE_TIME = 0.04


def _check_t_start(t_start: float | None) -> float:
    if t_start is None:
        return 1.0
    t_start = float(t_start)
    if not 0.0 <= t_start <= 1.0:
        raise ValueError(f"t_start must lie in [0, 1] (un-shifted noise-time), got {t_start}")
    return t_start


def time_grid(
    transport: Transport,
    steps: int,
    method: SamplerMethod = "euler",
    sample_shift: float = 1.0,
    t_start: float | None = None,
) -> Tensor:
    """Model times (shifted, in the transport's convention) of every sampler state, float64.

    ``steps + 1`` points for a full run; see the module docstring for partial starts.
    """
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    if method not in ("euler", "sde"):
        raise ValueError(f"method must be 'euler' or 'sde', got {method!r}")
    tau0 = _check_t_start(t_start)
    conv = transport.time_convention
    if tau0 == 0.0:
        user = torch.tensor([from_noise_time(0.0, conv)], dtype=torch.float64)
    elif method == "euler":
        user = torch.linspace(from_noise_time(tau0, conv), from_noise_time(0.0, conv), steps + 1, dtype=torch.float64)
    elif tau0 <= SDE_LAST_NOISE_TIME:
        user = torch.tensor([from_noise_time(tau0, conv), from_noise_time(0.0, conv)], dtype=torch.float64)
    else:
        stochastic = torch.linspace(
            from_noise_time(tau0, conv), from_noise_time(SDE_LAST_NOISE_TIME, conv), steps, dtype=torch.float64
        )
        user = torch.cat([stochastic, torch.tensor([from_noise_time(0.0, conv)], dtype=torch.float64)])
    return shift_time(user, sample_shift)


def partial_noise(
    transport: Transport,
    u: Tensor,
    t_start: float,
    sample_shift: float = 1.0,
    generator: torch.Generator | None = None,
    eps: Tensor | None = None,
) -> Tensor:
    """Noise a clean normalised latent ``u`` to the first state of a partial run from ``t_start``.

    Noise level ``t' = shift(t_start)`` (in noise-time; ifid-seesaw §2.4 step 2, with the
    un-shifted reading of t): ``u_t = (1 - t') u + t' eps``. Pass the result as ``start`` to
    :func:`sample` with the same ``t_start`` and ``sample_shift``.
    """
    tau0 = _check_t_start(t_start)
    t0 = float(shift_time(from_noise_time(tau0, transport.time_convention), sample_shift))
    if eps is None:
        eps = standard_normal(u.shape, generator, u.device, u.dtype)
    return transport.noise(u, torch.full((u.shape[0],), t0, dtype=u.dtype, device=u.device), eps)


def _model_dtype(model: nn.Module) -> torch.dtype:
    """dtype of the model's first floating parameter; float64 for parameter-free (analytic) fields."""
    for p in model.parameters():
        if p.is_floating_point():
            return p.dtype
    return torch.float64


def _channel_slice(x: Tensor, n: int) -> tuple[slice, ...]:
    """Index of the first ``n`` channels: axis 1 for NCHW, last axis for ``[B, T, C]`` tokens."""
    if x.dim() == 4:
        return (slice(None), slice(0, n))
    return (Ellipsis, slice(0, n))


def _velocity(
    model: nn.Module,
    x: Tensor,
    t: float,
    y: Tensor,
    dtype: torch.dtype,
    cfg_scale: float,
    cfg_channels: CfgChannels,
    cfg_interval: tuple[float, float] | None,
) -> Tensor:
    """Model velocity (model convention, float64) at model time ``t``, with CFG where it applies.

    CFG (spec models.md §1.7): batch ``[x, x]`` with labels ``[y, null]``, ``v = v_u + w (v_c - v_u)``,
    only when ``lo <= t <= hi`` in shifted model time (iFID ``guidance_low/high``; LightningDiT
    ``cfg_interval_start``); ``"first3"`` guides channels [:3] and keeps the conditional output
    elsewhere (DiT/LightningDiT ``forward_with_cfg``).
    """
    b = x.shape[0]
    guide = cfg_scale != 1.0 and (cfg_interval is None or cfg_interval[0] <= t <= cfg_interval[1])
    if not guide:
        tvec = torch.full((b,), t, dtype=dtype, device=x.device)
        return model(x.to(dtype), tvec, y).to(torch.float64)
    null = torch.full_like(y, int(model.num_classes))
    tvec = torch.full((2 * b,), t, dtype=dtype, device=x.device)
    out = model(torch.cat([x, x]).to(dtype), tvec, torch.cat([y, null])).to(torch.float64)
    v_cond, v_uncond = out.chunk(2)
    guided = v_uncond + cfg_scale * (v_cond - v_uncond)
    if cfg_channels == "all":
        return guided
    v = v_cond.clone()
    index = _channel_slice(v, 3)
    v[index] = guided[index]
    return v


@torch.no_grad()
def sample(
    model: nn.Module,
    transport: Transport,
    shape: Sequence[int],
    y: Tensor,
    steps: int,
    method: SamplerMethod = "euler",
    cfg_scale: float = 1.0,
    cfg_channels: CfgChannels = "all",
    cfg_interval: tuple[float, float] | None = None,
    sample_shift: float = 1.0,
    generator: torch.Generator | None = None,
    record_trajectory: bool = False,
    start: Tensor | None = None,
    t_start: float | None = None,
) -> Tensor | tuple[Tensor, Tensor]:
    """Draw latents (in the model's normalised space, float64) with the Euler ODE or the SDE.

    Args:
        model: eval-mode velocity model ``model(x, t, y)`` in ``transport.time_convention``.
        shape: full batch shape ``(B, C, H, W)`` or ``(B, T, C)``.
        y: int64 labels ``[B]`` on the sampling device (``model.num_classes`` is the null class).
        steps: number of model evaluations (grid intervals), see :func:`time_grid`.
        cfg_scale, cfg_channels, cfg_interval: guidance scale ``w`` (1 = off), ``"all"`` or
            ``"first3"``, and the inclusive ``(lo, hi)`` window in shifted model time (None = always).
        sample_shift: shift applied to the grid in the transport's convention.
        generator: RNG for the initial noise (when ``start`` is None) and the SDE noise.
        record_trajectory: also return every state, ``[len(grid), *shape]`` (``steps + 1`` for a
            full run), first = start, last = output.
        start: the state at the first grid point: initial noise for a full run, or the noised
            latent of :func:`partial_noise` for a partial run.
        t_start: un-shifted noise-time of ``start`` (None = 1, pure noise).

    Returns ``x`` or ``(x, trajectory)``. Map samples to raw latents with ``model.denormalize``.
    """
    shape = tuple(int(s) for s in shape)
    if len(shape) not in (3, 4):
        raise ValueError(f"shape must be (B, C, H, W) or (B, T, C), got {shape}")
    if y.shape != (shape[0],) or y.dtype != torch.int64:
        raise ValueError(f"y must be int64 of shape [{shape[0]}], got {y.dtype} {tuple(y.shape)}")
    if cfg_channels not in ("all", "first3"):
        raise ValueError(f"cfg_channels must be 'all' or 'first3', got {cfg_channels!r}")
    if cfg_interval is not None:
        if len(cfg_interval) != 2 or not cfg_interval[0] <= cfg_interval[1]:
            raise ValueError(f"cfg_interval must be (lo, hi) with lo <= hi, got {cfg_interval}")
        cfg_interval = (float(cfg_interval[0]), float(cfg_interval[1]))
    if not math.isfinite(cfg_scale):
        raise ValueError(f"cfg_scale must be finite, got {cfg_scale}")
    if start is not None and tuple(start.shape) != shape:
        raise ValueError(f"start must have shape {shape}, got {tuple(start.shape)}")
    if start is None and _check_t_start(t_start) < 1.0:
        raise ValueError("t_start < 1 needs the noised latent as start (see partial_noise)")
    if getattr(model, "training", False):
        raise ValueError("model must be in eval mode for sampling (call model.eval())")

    grid = time_grid(transport, steps, method, sample_shift, t_start).tolist()
    device = y.device
    dtype = _model_dtype(model)
    if start is None:
        x = standard_normal(shape, generator, device, torch.float64)
    else:
        x = start.to(device=device, dtype=torch.float64)
    trajectory = [x] if record_trajectory else None
    conv = transport.time_convention
    n_steps = len(grid) - 1
    for k in range(n_steps):
        t_cur, t_next = grid[k], grid[k + 1]
        v = _velocity(model, x, t_cur, y, dtype, cfg_scale, cfg_channels, cfg_interval)
        if method == "euler":
            # x <- x + (t_{k+1} - t_k) v(x, t_k) in the model's own time (spec models.md §1.7).
            x = x + (t_next - t_cur) * v
        else:
            # Noise-time Euler-Maruyama (ifid-seesaw §2.2): tau = noise-time, v_noise = eps - x.
            tau, tau_next = to_noise_time(t_cur, conv), to_noise_time(t_next, conv)
            dtau = tau_next - tau
            v_noise = v if conv == "noise_at_1" else -v
            # Score from velocity on the linear path: s = (-(1 - tau) v - x) / tau; g^2 = 2 tau;
            # drift d = v - g^2/2 s. Guiding v before this conversion equals guiding d (x is
            # shared by the two halves, d is affine in v).
            score = (-(1 - tau) * v_noise - x) / tau
            drift = v_noise - tau * score
            x = x + drift * dtau
            if k < n_steps - 1:  # the last step is the deterministic mean
                xi = standard_normal(shape, generator, device, torch.float64)
                x = x + math.sqrt(2 * tau) * math.sqrt(abs(dtau)) * xi
        if trajectory is not None:
            trajectory.append(x)
    if trajectory is not None:
        return x, torch.stack(trajectory)
    return x
