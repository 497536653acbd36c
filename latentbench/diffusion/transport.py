"""Flow-matching transport: the linear path in two explicit time conventions, time shift,
t-samplers, the training loss and the held-out diffusion loss.

Time conventions (spec models.md §1.1). Both use the linear path and velocity prediction:

=============  =====================================  ==============  ===============
name           interpolant                            target v        sampling
=============  =====================================  ==============  ===============
``data_at_1``  ``x_t = t x + (1 - t) eps`` (SiT,       ``x - eps``     t: 0 -> 1
               LightningDiT, diffusability Eq. 1)
``noise_at_1`` ``x_t = (1 - t) x + t eps`` (iFID,      ``eps - x``     t: 1 -> 0
               REPA-E, RAE)
=============  =====================================  ==============  ===============

Conversion: ``t_noise = 1 - t_data`` and ``v_noise = -v_data`` (:func:`to_noise_time`,
:func:`velocity_to_noise_time`); a shift ``s`` in one convention is a shift ``1/s`` in the other
(:func:`convert_shift`). A network is conditioned on its own convention's t, so checkpoints are
never converted; the convention is pinned by the recipe.

The *user time* of a convention is the un-shifted time that t-samplers draw and sampler grids
are laid out in; the model is conditioned on the shifted time ``shift_s(t)``.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Literal, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from latentbench.seeding import derive_seed

TimeConvention = Literal["data_at_1", "noise_at_1"]
TIME_CONVENTIONS: tuple[str, ...] = ("data_at_1", "noise_at_1")
T_SAMPLERS: tuple[str, ...] = ("uniform", "logit_normal")
LOSSES: tuple[str, ...] = ("mse", "mse_cos")


def _check_convention(convention: str) -> None:
    if convention not in TIME_CONVENTIONS:
        raise ValueError(f"time_convention must be one of {TIME_CONVENTIONS}, got {convention!r}")


def shift_time(t: Tensor | float, s: float) -> Tensor | float:
    """Time shift ``shift_s(t) = s t / (1 + (s - 1) t)``: monotone, fixes 0 and 1 (spec models.md §1.1)."""
    if s <= 0:
        raise ValueError(f"shift s must be > 0, got {s}")
    return s * t / (1 + (s - 1) * t)


def auto_shift(latent_shape: Sequence[int]) -> float:
    """iFID resolution shift ``s = sqrt(numel(z) / 4096)`` for one latent (ifid-seesaw §2.2)."""
    return math.sqrt(math.prod(int(d) for d in latent_shape) / 4096.0)


def to_noise_time(t: Tensor | float, convention: str) -> Tensor | float:
    """Time in ``convention`` -> noise-time (t = 1 is noise). The map is its own inverse."""
    _check_convention(convention)
    return t if convention == "noise_at_1" else 1 - t


def from_noise_time(tau: Tensor | float, convention: str) -> Tensor | float:
    """Noise-time -> time in ``convention`` (inverse of :func:`to_noise_time`)."""
    return to_noise_time(tau, convention)


def velocity_to_noise_time(v: Tensor, convention: str) -> Tensor:
    """Velocity in ``convention`` -> noise-time velocity ``eps - x`` (``v_noise = -v_data``)."""
    _check_convention(convention)
    return v if convention == "noise_at_1" else -v


def convert_shift(s: float, from_convention: str, to_convention: str) -> float:
    """The shift in ``to_convention`` equal to shift ``s`` in ``from_convention`` (``s <-> 1/s``)."""
    _check_convention(from_convention)
    _check_convention(to_convention)
    return s if from_convention == to_convention else 1.0 / s


@functools.lru_cache(maxsize=8)
def _stratified_times_cached(n: int, seed: int) -> Tensor:
    gen = torch.Generator().manual_seed(derive_seed(seed, "diffusion-loss-t"))
    perm = torch.randperm(n, generator=gen)
    return (perm.to(torch.float64) + 0.5) / n


def stratified_times(n: int, seed: int) -> Tensor:
    """Stratified user times: image ``i`` gets ``(perm[i] + 0.5) / n`` for a seeded permutation.

    ifid-seesaw §5.1 (variance reduction of the held-out diffusion loss). float64 ``[n]``.
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    return _stratified_times_cached(int(n), int(seed)).clone()


def standard_normal(
    shape: Sequence[int], generator: torch.Generator | None, device: torch.device, dtype: torch.dtype
) -> Tensor:
    """Standard normal on ``device``, drawn on the generator's device (so CPU seeds work for CUDA)."""
    if generator is None:
        return torch.randn(tuple(shape), device=device, dtype=dtype)
    return torch.randn(tuple(shape), generator=generator, device=generator.device, dtype=dtype).to(device)


def _rand(n: int, generator: torch.Generator | None, device: torch.device) -> Tensor:
    """Uniform [0, 1) float32 ``[n]`` on ``device``."""
    if generator is None:
        return torch.rand(n, device=device)
    return torch.rand(n, generator=generator, device=generator.device).to(device)


def _broadcast(t: Tensor, x: Tensor) -> Tensor:
    """``[B] -> [B, 1, ..., 1]`` matching ``x``."""
    return t.reshape(-1, *([1] * (x.dim() - 1)))


def _normalize(model: nn.Module, x: Tensor) -> Tensor:
    """Apply the model's in-model latent normaliser if it has one (DiT.normalize)."""
    model = getattr(model, "module", model)  # unwrap DistributedDataParallel
    normalize = getattr(model, "normalize", None)
    return normalize(x) if callable(normalize) else x


@dataclass(frozen=True)
class Transport:
    """Linear flow-matching path with velocity prediction in an explicit time convention.

    Attributes:
        time_convention: ``"data_at_1"`` or ``"noise_at_1"`` (module docstring).
        t_sampler: ``"uniform"`` (t ~ U(0,1)) or ``"logit_normal"`` (t = sigmoid(n), n ~ N(m, s^2),
            LightningDiT ``use_lognorm``), drawn in user time, then shifted.
        train_shift: ``s`` of ``shift_s`` applied to training times (iFID: sqrt(numel/4096) in
            noise-time; 1 = no shift).
        loss: ``"mse"`` (mean over elements of (v_hat - v)^2) or ``"mse_cos"`` (MSE plus
            ``mean(1 - cos_sim(v_hat, v, dim=channel))`` over positions, weight 1; LightningDiT
            ``transport.py`` ``use_cosine_loss``).
        logit_normal_mean, logit_normal_std: parameters of the logit-normal sampler.
    """

    time_convention: TimeConvention = "data_at_1"
    t_sampler: str = "uniform"
    train_shift: float = 1.0
    loss: str = "mse"
    logit_normal_mean: float = 0.0
    logit_normal_std: float = 1.0

    def __post_init__(self) -> None:
        _check_convention(self.time_convention)
        if self.t_sampler not in T_SAMPLERS:
            raise ValueError(f"t_sampler must be one of {T_SAMPLERS}, got {self.t_sampler!r}")
        if self.loss not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES}, got {self.loss!r}")
        if not self.train_shift > 0:
            raise ValueError(f"train_shift must be > 0, got {self.train_shift}")
        if not self.logit_normal_std > 0:
            raise ValueError(f"logit_normal_std must be > 0, got {self.logit_normal_std}")

    # -- the path ------------------------------------------------------------------------------

    def coefficients(self, t: Tensor) -> tuple[Tensor, Tensor]:
        """``(alpha_t, sigma_t)`` with ``x_t = alpha_t x + sigma_t eps`` (spec models.md §1.1)."""
        if self.time_convention == "data_at_1":
            return t, 1 - t
        return 1 - t, t

    def noise(self, x: Tensor, t: Tensor, eps: Tensor) -> Tensor:
        """Point on the path at model time ``t [B]`` for clean ``x`` and noise ``eps``."""
        if eps.shape != x.shape:
            raise ValueError(f"eps must have the shape of x {tuple(x.shape)}, got {tuple(eps.shape)}")
        if t.dim() != 1 or t.shape[0] != x.shape[0]:
            raise ValueError(f"t must have shape [{x.shape[0]}], got {tuple(t.shape)}")
        alpha, sigma = self.coefficients(_broadcast(t, x).to(x.dtype))
        return alpha * x + sigma * eps

    def velocity_target(self, x: Tensor, eps: Tensor) -> Tensor:
        """``d x_t / dt``: ``x - eps`` in data-time, ``eps - x`` in noise-time."""
        return x - eps if self.time_convention == "data_at_1" else eps - x

    def noise_level(self, t: Tensor | float) -> Tensor | float:
        """Noise-time of model time ``t`` (the coefficient of eps)."""
        return to_noise_time(t, self.time_convention)

    # -- training ------------------------------------------------------------------------------

    def sample_time(
        self, n: int, generator: torch.Generator | None = None, device: torch.device | str = "cpu"
    ) -> Tensor:
        """Draw ``n`` training times (float32, model time = shifted user time)."""
        device = torch.device(device)
        if self.t_sampler == "uniform":
            t = _rand(n, generator, device)
        else:
            normal = standard_normal((n,), generator, device, torch.float32)
            t = torch.sigmoid(self.logit_normal_mean + self.logit_normal_std * normal)
        return shift_time(t, self.train_shift)

    def loss_per_sample(self, pred: Tensor, target: Tensor) -> Tensor:
        """Per-sample loss ``[B]`` in float32 for this transport's ``loss``."""
        pred, target = pred.float(), target.float()
        dims = tuple(range(1, pred.dim()))
        per_sample = (pred - target).pow(2).mean(dim=dims)
        if self.loss == "mse_cos":
            # Channel axis: 1 for NCHW grids, last for [B, T, C] tokens.
            channel = 1 if pred.dim() == 4 else -1
            cos = F.cosine_similarity(pred, target, dim=channel)
            per_sample = per_sample + (1 - cos).mean(dim=tuple(range(1, cos.dim())))
        return per_sample

    def training_loss(
        self,
        model: nn.Module,
        x1_normalised: Tensor,
        y: Tensor,
        generator: torch.Generator | None = None,
        t: Tensor | None = None,
        eps: Tensor | None = None,
    ) -> tuple[Tensor, Tensor]:
        """One flow-matching step's loss: ``(mean loss, per-sample loss [B])``.

        ``x1_normalised`` is the clean latent after the recipe's outside normalisation
        (``channel_stats``; identity for ``bn_online``); the model's own BN, if any, is applied
        here via ``model.normalize`` (batch statistics in train mode, iFID ``SiT.forward``).
        t and eps come from ``generator`` (global RNG if None); class dropout happens in the model.
        """
        if y.shape != (x1_normalised.shape[0],):
            raise ValueError(f"y must have shape [{x1_normalised.shape[0]}], got {tuple(y.shape)}")
        x = _normalize(model, x1_normalised)
        # t and eps may be given (drawn for a whole global batch, so DDP ranks agree with one process)
        t = self.sample_time(x.shape[0], generator, x.device) if t is None else t.to(x.device)
        eps = standard_normal(x.shape, generator, x.device, x.dtype) if eps is None else eps.to(x.device, x.dtype)
        x_t = self.noise(x, t, eps)
        pred = model(x_t, t.to(x.dtype), y)
        per_sample = self.loss_per_sample(pred, self.velocity_target(x, eps))
        return per_sample.mean(), per_sample

    # -- held-out diffusion loss (a metric) ------------------------------------------------------

    @torch.no_grad()
    def validation_loss(
        self,
        model: nn.Module,
        x: Tensor,
        y: Tensor,
        index: Tensor | Sequence[int],
        num_total: int,
        seed: int = 0,
    ) -> Tensor:
        """Held-out diffusion loss per sample ``[B]`` (ifid-seesaw §5.1); average over all images.

        For image ``index[b]`` of ``num_total``: user time from :func:`stratified_times`, model
        time ``shift(t)`` with ``train_shift``, eps seeded per image (drawn on CPU, so results do
        not depend on device or batching), the true label, the model in eval mode (its BN uses
        running stats), loss = mean over elements of ``(v_hat - v)^2`` (MSE whatever the training
        loss, so values compare across recipes). ``x`` is the clean latent as fed to training.
        """
        index = torch.as_tensor(index, dtype=torch.int64).cpu()
        if index.shape != (x.shape[0],):
            raise ValueError(f"index must have shape [{x.shape[0]}], got {tuple(index.shape)}")
        if y.shape != (x.shape[0],):
            raise ValueError(f"y must have shape [{x.shape[0]}], got {tuple(y.shape)}")
        if index.numel() and (int(index.min()) < 0 or int(index.max()) >= num_total):
            raise ValueError(f"index must lie in [0, num_total={num_total})")
        was_training = model.training
        model.eval()
        try:
            u = _normalize(model, x)
            t = shift_time(stratified_times(num_total, seed)[index], self.train_shift).to(u.device)
            eps = torch.stack(
                [
                    torch.randn(
                        tuple(u.shape[1:]),
                        generator=torch.Generator().manual_seed(derive_seed(seed, "diffusion-loss-eps", int(i))),
                    )
                    for i in index
                ]
            ).to(device=u.device, dtype=u.dtype)
            x_t = self.noise(u, t.to(u.dtype), eps)
            pred = model(x_t, t.to(u.dtype), y)
            target = self.velocity_target(u, eps)
            return (pred.float() - target.float()).pow(2).mean(dim=tuple(range(1, u.dim())))
        finally:
            model.train(was_training)
