"""ControlNet on the project's class-conditional DiT: the Seesaw ControlNet experiment (Table 3).

Spec metrics-ifid-seesaw.md §9 and seesaw-notes.md §2.10-2.11. The paper trains "only the
control branch" on a frozen generator and frozen autoencoder but does not describe the branch;
diffusers has no ControlNet for class-conditional SiT/LightningDiT/DiT^DH, so :class:`ControlDiT`
is our own, modelled on diffusers' DiT ControlNets (``SD3ControlNetModel``,
``diffusers/models/controlnets/controlnet_sd3.py``, read for facts):

- the control branch holds **trainable copies of the first N backbone blocks** (diffusers
  ``from_transformer`` copies ``transformer_blocks``; N defaults to half the depth);
- the condition enters as a **zero-initialised embedding added to the input tokens**
  (diffusers ``pos_embed_input = zero_module(PatchEmbed(...))`` added to ``hidden_states``);
- after each copied block a **zero-initialised Linear(D, D)** (diffusers ``controlnet_blocks``)
  gives a residual that is added to the output of the corresponding frozen block
  (``injection="corresponding"``; diffusers' SD3 transformer instead spreads N residuals over all
  blocks, ``interval_control = depth / N``: ``injection="interval"``).

So at initialisation the controlled model equals the backbone exactly. Unlike SD3 (own
timestep/text embedders) the branch shares the frozen backbone's token embedding, position
table, timestep and label embedding: the model is class-conditional and the condition is spatial.

Two condition encoders (seesaw-notes §2.10, ``cond_encoder``):
``"ae"`` — the condition map, rendered as an image, encoded by the (frozen) tokenizer into the
latent grid (done by the caller, :func:`condition_rgb`), then a zero-init patch embedding like the
backbone's (diffusers' DiT ControlNets; works for ``(C, H, W)`` and ``(L, C)`` latents);
``"conv"`` — a small conv stack from the map at image resolution down to the token grid, last
layer zero-init (ControlNet-1.0 ``cldm/cldm.py`` ``input_hint_block``; 2-D latents only).

Also here: the training loop (frozen backbone, flow-matching loss of the project's
:class:`Transport`, AdamW at constant LR, gradient clipping, micro-batch x accumulation, bf16
autocast on GPU, a validation-based convergence rule that keeps the best branch, logged curves,
checkpoint/resume with :mod:`latentbench.checkpoint`'s run identity), the evaluation (samples from
the backbone's default sampler without CFG, condition L1 through a projector, FID through
:mod:`latentbench.metrics.fid`) and the hyper-parameter record beside the paper's Table 4.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor, nn

from latentbench.checkpoint import load_checkpoint, save_checkpoint
from latentbench.diffusion.models import DiT, PatchEmbed, TokenEmbed
from latentbench.diffusion.samplers import sample
from latentbench.diffusion.training import batch_indices
from latentbench.diffusion.transport import Transport
from latentbench.io import atomic_path, write_json
from latentbench.metrics.fid import FeatureStats
from latentbench.precision import autocast_dtype
from latentbench.seeding import derive_seed

log = logging.getLogger(__name__)

CondEncoderKind = Literal["ae", "conv"]
InjectionKind = Literal["corresponding", "interval"]

# ControlNet-1.0 input_hint_block widths (cldm/cldm.py: 16, 32, 96, 256 before the zero conv).
CONV_WIDTHS: tuple[int, ...] = (16, 32, 96, 256)

# get_batch(global indices, generator) -> (normalised latents, labels, branch condition inputs)
ControlBatchFn = Callable[[Tensor, torch.Generator], tuple[Tensor, Tensor, Tensor]]
# a validation score of the branch (lower is better): held-out loss or condition L1
ValidateFn = Callable[["ControlDiT"], float]
# uint8 NHWC images -> float condition maps (the drift projectors, spec §7.2)
ProjectFn = Callable[[np.ndarray], np.ndarray]
# uint8 NHWC images -> feature vectors [B, d] (the FID extractor)
FeatureFn = Callable[[np.ndarray], Any]
# latent (outside-normalised, as fed to training) -> uint8 NHWC images
DecodeFn = Callable[[Tensor], np.ndarray]


# ---------------------------------------------------------------------------------------------
# The model
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ControlConfig:
    """The control branch's design (seesaw-notes §2.10; defaults are the spec's §9 [DEFAULT]s).

    Attributes:
        cond_encoder: ``"conv"`` (condition map at image resolution) or ``"ae"`` (the map
            encoded by the tokenizer into the latent's shape).
        num_blocks: copied backbone blocks N; None = ``max(1, depth // 2)``.
        cond_channels: channels of the condition map (``"conv"``; 1 for Canny and depth).
        cond_size: ``(H, W)`` of the condition map (``"conv"``); a power-of-two multiple of the
            token grid.
        conv_widths: conv stack widths per resolution level (the last repeats when deeper).
        injection: ``"corresponding"`` (residual j after backbone block j) or ``"interval"``
            (diffusers SD3: block i gets residual ``int(i / (depth / N))``).
    """

    cond_encoder: CondEncoderKind = "conv"
    num_blocks: int | None = None
    cond_channels: int = 1
    cond_size: tuple[int, int] | None = None
    conv_widths: tuple[int, ...] = CONV_WIDTHS
    injection: InjectionKind = "corresponding"

    def __post_init__(self) -> None:
        if self.cond_encoder not in ("ae", "conv"):
            raise ValueError(f"cond_encoder must be 'ae' or 'conv', got {self.cond_encoder!r}")
        if self.injection not in ("corresponding", "interval"):
            raise ValueError(f"injection must be 'corresponding' or 'interval', got {self.injection!r}")
        if self.num_blocks is not None and self.num_blocks < 1:
            raise ValueError(f"num_blocks must be >= 1, got {self.num_blocks}")
        if self.cond_channels < 1 or not self.conv_widths or min(self.conv_widths) < 1:
            raise ValueError(f"cond_channels and conv_widths must be positive, got {self.cond_channels}, "
                             f"{self.conv_widths}")
        if self.cond_size is not None:
            object.__setattr__(self, "cond_size", tuple(int(s) for s in self.cond_size))
        object.__setattr__(self, "conv_widths", tuple(int(w) for w in self.conv_widths))
        if self.cond_encoder == "conv" and (self.cond_size is None or len(self.cond_size) != 2):
            raise ValueError("cond_size (H, W) of the condition map is required for cond_encoder 'conv'")

    def blocks_for(self, depth: int) -> int:
        """N for a backbone of ``depth`` blocks."""
        n = max(1, depth // 2) if self.num_blocks is None else self.num_blocks
        if n > depth:
            raise ValueError(f"num_blocks {n} exceeds the backbone depth {depth}")
        return n


def zero_init(module: nn.Module) -> nn.Module:
    """Every parameter of ``module`` set to 0 (ControlNet's ``zero_module``)."""
    with torch.no_grad():
        for p in module.parameters():
            p.zero_()
    return module


class ConvConditionEncoder(nn.Module):
    """Condition map ``[B, C_c, H, W]`` in [0, 1] -> tokens ``[B, N, D]`` on the backbone's token grid.

    Shaped like ControlNet-1.0's ``input_hint_block`` (cldm/cldm.py): a 3x3 conv and SiLU at full
    resolution, then per factor 2 a stride-2 3x3 conv and a 3x3 conv (SiLU after each), then a
    zero-initialised 3x3 conv to the hidden size; tokens flattened row-major like PatchEmbed.
    """

    def __init__(self, in_channels: int, hidden: int, cond_size: tuple[int, int], grid: tuple[int, int],
                 widths: Sequence[int] = CONV_WIDTHS) -> None:
        super().__init__()
        (h, w), (gh, gw) = cond_size, grid
        factor = h // gh
        if h % gh or w % gw or w // gw != factor or factor & (factor - 1):
            raise ValueError(f"cond_size {tuple(cond_size)} must be the token grid {tuple(grid)} times one power of 2")
        stages = int(math.log2(factor))
        chans = [widths[min(i, len(widths) - 1)] for i in range(stages + 1)]
        layers: list[nn.Module] = [nn.Conv2d(in_channels, chans[0], 3, padding=1), nn.SiLU()]
        for i in range(stages):
            layers += [nn.Conv2d(chans[i], chans[i + 1], 3, stride=2, padding=1), nn.SiLU(),
                       nn.Conv2d(chans[i + 1], chans[i + 1], 3, padding=1), nn.SiLU()]
        self.body = nn.Sequential(*layers)
        self.out = zero_init(nn.Conv2d(chans[-1], hidden, 3, padding=1))

    def forward(self, cond: Tensor) -> Tensor:
        """``[B, C_c, H, W] -> [B, gh * gw, D]``."""
        return self.out(self.body(cond)).flatten(2).transpose(1, 2)


class ControlBranch(nn.Module):
    """The trainable part: condition embedding, N copied blocks, N zero-init projections."""

    def __init__(self, backbone: DiT, config: ControlConfig) -> None:
        super().__init__()
        cfg = backbone.config
        d = cfg.hidden
        n = config.blocks_for(cfg.depth)
        if config.cond_encoder == "ae":
            # diffusers pos_embed_input: a zero-init PatchEmbed of the condition latent (no position table)
            embed: nn.Module = TokenEmbed(cfg.in_channels, d) if cfg.is_1d else PatchEmbed(cfg.in_channels, d,
                                                                                         cfg.patch_size)
            self.cond_embed: nn.Module = zero_init(embed)
        else:
            if cfg.is_1d:
                raise ValueError("cond_encoder 'conv' needs a 2-D latent grid; use 'ae' for (L, C) token latents")
            self.cond_embed = ConvConditionEncoder(config.cond_channels, d, config.cond_size, cfg.grid,
                                                   config.conv_widths)
        # trainable copies of the first N blocks, weights from the backbone (diffusers from_transformer)
        self.blocks = nn.ModuleList(copy.deepcopy(backbone.blocks[i]) for i in range(n))
        self.projections = nn.ModuleList(zero_init(nn.Linear(d, d)) for _ in range(n))
        self.requires_grad_(True)


class ControlDiT(nn.Module):
    """A frozen :class:`DiT` with a ControlNet branch: ``model(x, t, y, cond) -> velocity``.

    ``cond`` is the branch input: for ``"ae"`` the condition latent ``[B, *latent_shape]``
    normalised like ``x`` (outside normalisation; the backbone's own BN, if any, is applied here
    as to ``x``), for ``"conv"`` the condition map ``[B, C_c, H, W]`` in [0, 1]. The backbone is
    frozen in place (``requires_grad=False``) and stays in eval mode (no label dropout, BN on
    running statistics); only :attr:`branch` trains. :meth:`bind` gives the ``model(x, t, y)``
    view that :class:`Transport` and :func:`sample` call.
    """

    def __init__(self, backbone: DiT, config: ControlConfig | None = None) -> None:
        super().__init__()
        self.config = config or ControlConfig()
        self.backbone = backbone.requires_grad_(False).eval()
        self.branch = ControlBranch(backbone, self.config)
        depth, n = backbone.config.depth, len(self.branch.blocks)
        if self.config.injection == "corresponding":
            self.block_map: tuple[int | None, ...] = tuple(i if i < n else None for i in range(depth))
        else:  # diffusers transformer_sd3.py: index_block / interval_control, interval_control = depth / N
            self.block_map = tuple(int(i / (depth / n)) for i in range(depth))
        self.num_classes = backbone.num_classes

    def train(self, mode: bool = True) -> ControlDiT:
        """Train/eval the branch; the frozen backbone stays in eval mode."""
        super().train(mode)
        self.backbone.eval()
        return self

    def normalize(self, z: Tensor) -> Tensor:
        """The backbone's in-model latent normaliser (identity without ``latent_bn``)."""
        return self.backbone.normalize(z)

    def denormalize(self, u: Tensor) -> Tensor:
        """Inverse of :meth:`normalize` (for samples)."""
        return self.backbone.denormalize(u)

    def _check_cond(self, cond: Tensor, batch: int) -> None:
        cfg = self.backbone.config
        if self.config.cond_encoder == "ae":
            want: tuple[int, ...] = (batch, *cfg.latent_shape)
        else:
            want = (batch, self.config.cond_channels, *self.config.cond_size)
        if tuple(cond.shape) != want or not torch.is_floating_point(cond):
            raise ValueError(f"cond for cond_encoder {self.config.cond_encoder!r} must be float of shape {want}, "
                             f"got {cond.dtype} {tuple(cond.shape)}")

    def residuals(self, h: Tensor, c: Tensor, cond: Tensor) -> list[Tensor]:
        """The N branch residuals ``[B, N_tok, D]`` for embedded tokens ``h`` and conditioning ``c``."""
        self._check_cond(cond, h.shape[0])
        if self.config.cond_encoder == "ae":
            cond = self.backbone.normalize(cond)
        hb = h + self.branch.cond_embed(cond.to(h.dtype))
        out = []
        for block, proj in zip(self.branch.blocks, self.branch.projections):
            hb = block(hb, c, self.backbone.feat_rope)
            out.append(proj(hb))
        return out

    def forward(self, x: Tensor, t: Tensor, y: Tensor, cond: Tensor) -> Tensor:
        """Velocity of the controlled model (the backbone's convention and output shape)."""
        h, c = self.backbone.embed(x, t, y)
        res = self.residuals(h, c, cond)
        return self.backbone.forward_tokens(h, c, [None if j is None else res[j] for j in self.block_map])

    def bind(self, cond: Tensor) -> ConditionedModel:
        """The ``model(x, t, y)`` view with ``cond`` fixed (same train/eval mode as this model)."""
        return ConditionedModel(self, cond)

    def branch_device(self) -> torch.device:
        """Device of the branch parameters."""
        return next(self.branch.parameters()).device


class ConditionedModel(nn.Module):
    """``model(x, t, y)`` of a :class:`ControlDiT` with its condition bound (for Transport and sample).

    A batch that is a multiple of the condition's (CFG doubles it) repeats the condition.
    """

    def __init__(self, control: ControlDiT, cond: Tensor) -> None:
        super().__init__()
        self.control = control
        self.cond = cond
        self.num_classes = control.num_classes
        self.training = control.training

    def normalize(self, z: Tensor) -> Tensor:
        return self.control.normalize(z)

    def denormalize(self, u: Tensor) -> Tensor:
        return self.control.denormalize(u)

    def forward(self, x: Tensor, t: Tensor, y: Tensor) -> Tensor:
        cond = self.cond.to(device=x.device, dtype=x.dtype)
        if x.shape[0] != cond.shape[0] and cond.shape[0] and x.shape[0] % cond.shape[0] == 0:
            cond = cond.repeat(x.shape[0] // cond.shape[0], *([1] * (cond.dim() - 1)))
        return self.control(x, t, y, cond)


def save_branch(path: str | Path, control: ControlDiT, extra: Mapping[str, Any] | None = None) -> None:
    """Write the trained branch (config + weights + the backbone's fingerprint + ``extra``) atomically."""
    payload = {
        "control_config": dataclasses.asdict(control.config),
        "branch": _cpu_state(control.branch),
        "backbone": module_fingerprint(control.backbone),
        "extra": dict(extra or {}),
    }
    with atomic_path(path, suffix=".pt") as tmp:
        torch.save(payload, tmp)


def load_branch(path: str | Path, backbone: DiT) -> tuple[ControlDiT, dict[str, Any]]:
    """The :class:`ControlDiT` saved by :func:`save_branch` on ``backbone`` (eval mode) and its ``extra``.

    Raises ValueError naming the file when it is unreadable or was trained on another backbone.
    """
    try:
        payload = torch.load(path, map_location="cpu", weights_only=False)
        config = ControlConfig(**payload["control_config"])
    except Exception as exc:  # noqa: BLE001 - any unpickling/format failure means a bad file
        raise ValueError(f"{path}: not a ControlNet branch file ({exc})") from None
    if payload["backbone"] != module_fingerprint(backbone):
        raise ValueError(f"{path}: branch was trained on another backbone (fingerprint differs)")
    control = ControlDiT(backbone, config)
    control.branch.load_state_dict(payload["branch"])
    return control.to(next(backbone.parameters()).device).eval(), payload["extra"]


def condition_input(maps: np.ndarray | Tensor) -> Tensor:
    """Condition maps ``[N, H, W]`` or ``[N, H, W, C]`` (projector output, [0, 1]) -> float32 ``[N, C, H, W]``."""
    m = torch.as_tensor(np.asarray(maps) if not isinstance(maps, Tensor) else maps).float()
    if m.dim() == 3:
        m = m.unsqueeze(-1)
    if m.dim() != 4:
        raise ValueError(f"condition maps must be [N, H, W] or [N, H, W, C], got shape {tuple(m.shape)}")
    return m.permute(0, 3, 1, 2).contiguous()


def condition_rgb(maps: np.ndarray | Tensor) -> Tensor:
    """Condition maps as 3-channel images in [0, 1] (NCHW) for the tokenizer (``cond_encoder: ae``).

    One-channel maps (Canny, depth) are repeated over RGB, as ControlNet feeds its hint images.
    """
    m = condition_input(maps)
    if m.shape[1] == 1:
        return m.repeat(1, 3, 1, 1)
    if m.shape[1] != 3:
        raise ValueError(f"condition maps must have 1 or 3 channels to be encoded as images, got {m.shape[1]}")
    return m


# ---------------------------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ControlTrainSettings:
    """Optimisation of the branch (paper Table 4, spec A.9; unstated values are [DEFAULT]s).

    ``micro_batch`` x ``grad_accumulation`` = the effective batch (Table 4: 4 x 8 = 32). The LR is
    constant (Table 4; its value was lost in extraction: 1e-5). ``eval_every`` optimiser steps the
    ``validate`` score is computed; training stops after ``patience`` evaluations without an
    improvement of more than ``min_delta`` (or at ``max_steps``) and the best branch is kept
    (seesaw-notes §2.11). ``precision="bf16"`` autocasts on CUDA only.
    """

    max_steps: int
    eval_every: int
    patience: int
    checkpoint_every: int
    seed: int
    micro_batch: int = 4
    grad_accumulation: int = 8
    lr: float = 1e-5
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = 0.01  # torch AdamW default [DEFAULT]
    adam_eps: float = 1e-8
    grad_clip: float | None = 0.5
    min_delta: float = 0.0
    log_every: int = 1
    precision: Literal["fp32", "bf16"] = "bf16"

    def __post_init__(self) -> None:
        positive = ("max_steps", "eval_every", "patience", "checkpoint_every", "micro_batch", "grad_accumulation",
                    "log_every")
        bad = [k for k in positive if int(getattr(self, k)) < 1]
        if bad:
            raise ValueError(f"controlnet training settings {bad} must be >= 1")
        if not self.lr > 0 or (self.grad_clip is not None and not self.grad_clip > 0):
            raise ValueError(f"lr and grad_clip must be > 0, got {self.lr}, {self.grad_clip}")
        if self.precision not in ("fp32", "bf16"):
            raise ValueError(f"precision must be 'fp32' or 'bf16', got {self.precision!r}")

    @property
    def effective_batch(self) -> int:
        """Samples per optimiser step."""
        return self.micro_batch * self.grad_accumulation


@dataclass
class ControlTrainResult:
    """What a training run did: curves, best evaluation, why it stopped."""

    steps: int
    best_step: int
    best_value: float
    stopped_early: bool
    metric: str
    train: list[dict[str, float]] = field(default_factory=list)  # {"step", "loss"}: mean loss since the last entry
    validation: list[dict[str, float]] = field(default_factory=list)  # {"step", "value"}

    def to_json(self) -> dict[str, Any]:
        """The curves file's content (the report plots ``train`` and ``validation``)."""
        return dataclasses.asdict(self)


def module_fingerprint(module: nn.Module) -> str:
    """SHA-256 of a module's state (names, dtypes, shapes, bytes): the frozen backbone's identity."""
    digest = hashlib.sha256()
    for key, value in sorted(module.state_dict().items()):
        tensor = value.detach().cpu().contiguous()
        digest.update(f"{key}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def _cpu_state(module: nn.Module) -> dict[str, Tensor]:
    return {k: v.detach().to("cpu", copy=True) for k, v in module.state_dict().items()}


def train_controlnet(
    control: ControlDiT,
    transport: Transport,
    get_batch: ControlBatchFn,
    num_items: int,
    settings: ControlTrainSettings,
    checkpoint: str | Path,
    validate: ValidateFn,
    metric: str = "val_loss",
    curves: str | Path | None = None,
    stop_after: int | None = None,
) -> ControlTrainResult:
    """Train ``control.branch`` (backbone and tokenizer frozen), resuming from ``checkpoint``.

    Each step draws a seeded effective batch (``batch_indices``), t and eps for it from a
    generator seeded by the step (so resume is exact on CPU), runs ``grad_accumulation``
    micro-batches of the flow-matching loss (:meth:`Transport.training_loss` on the bound
    model), clips the branch gradient norm and takes an AdamW step. Every ``eval_every`` steps
    ``validate(control)`` (lower is better; :func:`validation_loss_fn` or
    :func:`condition_l1_fn`) feeds the convergence rule. On return the branch holds the best
    evaluated weights; ``curves`` (JSON) gets :meth:`ControlTrainResult.to_json`. ``stop_after``
    ends this call after that many steps (tests simulate an interruption with it).
    """
    device = control.branch_device()
    params = list(control.branch.parameters())
    trainable = [n for n, p in control.backbone.named_parameters() if p.requires_grad]
    if trainable:
        raise ValueError(f"the backbone must be frozen; trainable backbone parameters: {trainable[:3]}")
    opt = torch.optim.AdamW(params, lr=settings.lr, betas=settings.betas, weight_decay=settings.weight_decay,
                            eps=settings.adam_eps)
    run = {
        "settings": {k: v for k, v in dataclasses.asdict(settings).items() if k != "checkpoint_every"},
        "control": dataclasses.asdict(control.config),
        "branch": {k: tuple(v.shape) for k, v in control.branch.state_dict().items()},
        "backbone": module_fingerprint(control.backbone),
        "metric": metric,
    }
    state = load_checkpoint(checkpoint, run=run)
    start, stopped, window = 0, False, [0.0, 0]
    best: dict[str, Any] = {"value": math.inf, "step": 0, "bad": 0, "state": None}
    history: dict[str, list[dict[str, float]]] = {"train": [], "validation": []}
    if state is not None:
        control.branch.load_state_dict(state["branch"])
        opt.load_state_dict(state["optimizer"])
        start, stopped, window = state["step"], state["stopped"], list(state["window"])
        best, history = state["best"], state["history"]
        log.info("resumed from %s at step %d", checkpoint, start)
    # bf16 only on a GPU with native bf16 (latentbench.precision: chosen by capability, logged).
    autocast = settings.precision == "bf16" and autocast_dtype(device) is not None
    micro, accum = settings.micro_batch, settings.grad_accumulation
    end = settings.max_steps if stop_after is None else min(settings.max_steps, start + stop_after)
    control.train()
    step = start
    while step < end and not stopped:
        g = torch.Generator().manual_seed(derive_seed(settings.seed, "controlnet-step", step))
        x, y, cond = get_batch(batch_indices(step, settings.effective_batch, num_items, settings.seed), g)
        if len(x) != settings.effective_batch or len(y) != len(x) or len(cond) != len(x):
            raise ValueError(f"get_batch must return {settings.effective_batch} latents, labels and conditions, "
                             f"got {len(x)}, {len(y)}, {len(cond)} (num_items {num_items} too small?)")
        t = transport.sample_time(len(x), g)
        eps = torch.randn(x.shape, generator=g, dtype=x.dtype)
        opt.zero_grad(set_to_none=True)
        total = 0.0
        for a in range(accum):
            sl = slice(a * micro, (a + 1) * micro)
            model = control.bind(cond[sl].to(device))
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
                loss, _ = transport.training_loss(model, x[sl].to(device), y[sl].to(device), t=t[sl], eps=eps[sl])
            if not math.isfinite(loss.item()):
                raise ValueError(f"non-finite ControlNet loss ({loss.item()}) at step {step}; "
                                 f"the last good checkpoint {checkpoint} is kept")
            (loss / accum).backward()
            total += loss.item() / accum
        if settings.grad_clip:
            nn.utils.clip_grad_norm_(params, settings.grad_clip)
        opt.step()
        step += 1
        window = [window[0] + total, window[1] + 1]
        if step % settings.log_every == 0 or step == settings.max_steps:
            history["train"].append({"step": step, "loss": window[0] / window[1]})
            window = [0.0, 0]
        if step % settings.eval_every == 0 or step == settings.max_steps:
            control.eval()
            value = float(validate(control))
            control.train()
            if not math.isfinite(value):
                raise ValueError(f"non-finite validation {metric} ({value}) at step {step}")
            history["validation"].append({"step": step, "value": value})
            if value < best["value"] - settings.min_delta:
                best = {"value": value, "step": step, "bad": 0, "state": _cpu_state(control.branch)}
            else:
                best["bad"] += 1
            stopped = best["bad"] >= settings.patience
            log.info("step %d: %s %.5f (best %.5f at %d)", step, metric, value, best["value"], best["step"])
        if step % settings.checkpoint_every == 0 or step == settings.max_steps or stopped:
            save_checkpoint(checkpoint, {"branch": control.branch.state_dict(), "optimizer": opt.state_dict(),
                                         "step": step, "stopped": stopped, "window": window, "best": best,
                                         "history": history, "run": run})
    control.eval()
    if best["state"] is not None:
        control.branch.load_state_dict(best["state"])
    result = ControlTrainResult(steps=step, best_step=best["step"], best_value=best["value"], stopped_early=stopped,
                                metric=metric, train=list(history["train"]), validation=list(history["validation"]))
    if curves is not None:
        write_json(curves, result.to_json())
    return result


def validation_loss_fn(transport: Transport, x: Tensor, y: Tensor, cond: Tensor, batch_size: int = 64,
                       seed: int = 0) -> ValidateFn:
    """Validation score = mean held-out flow-matching loss of the controlled model on ``(x, y, cond)``.

    :meth:`Transport.validation_loss` (stratified t, eps seeded per image: a deterministic
    number that does not depend on batching or device).
    """
    n = len(x)
    if n < 1 or len(y) != n or len(cond) != n:
        raise ValueError(f"validation x, y and cond must have the same positive length, got {len(x)}, {len(y)}, "
                         f"{len(cond)}")

    def validate(control: ControlDiT) -> float:
        device = control.branch_device()
        total = 0.0
        for s in range(0, n, batch_size):
            e = min(n, s + batch_size)
            per = transport.validation_loss(control.bind(cond[s:e].to(device)), x[s:e].to(device), y[s:e].to(device),
                                            torch.arange(s, e), n, seed)
            total += float(per.double().sum())
        return total / n

    return validate


# ---------------------------------------------------------------------------------------------
# Evaluation (Table 3): condition L1 and FID of controlled samples
# ---------------------------------------------------------------------------------------------


def per_class_subset(labels: np.ndarray | Tensor, per_class: int, seed: int) -> np.ndarray:
    """Sorted indices of ``per_class`` seeded images of every class (spec §9: 10 per class of val).

    A class with fewer images contributes all it has.
    """
    labels = np.asarray(labels.cpu() if isinstance(labels, Tensor) else labels)
    if labels.ndim != 1 or per_class < 1:
        raise ValueError(f"labels must be 1-D and per_class >= 1, got shape {labels.shape}, {per_class}")
    rng = np.random.default_rng(derive_seed(seed, "controlnet-eval-subset"))
    picked = [rng.permutation(np.flatnonzero(labels == k))[:per_class] for k in np.unique(labels)]
    return np.sort(np.concatenate(picked))


def _check_uint8_nhwc(images: np.ndarray, name: str) -> np.ndarray:
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"{name} must be uint8 NHWC RGB images, got {images.dtype} {images.shape}")
    return images


@torch.no_grad()
def generate_controlled(
    control: ControlDiT,
    transport: Transport,
    sampling: Mapping[str, Any],
    cond: Tensor,
    labels: Tensor,
    decode: DecodeFn,
    batch_size: int = 64,
    seed: int = 0,
) -> np.ndarray:
    """Sample one image per (condition, label) with the branch: uint8 NHWC ``[N, H, W, 3]``.

    ``sampling`` are the backbone recipe's sampler settings (``Recipe.sampling(latent_shape)``:
    the backbone's default sampler); guidance is off (spec §9: no CFG). Image i starts from noise
    seeded by ``(seed, i)`` (Euler samples do not depend on ``batch_size``; SDE noise is seeded
    per batch). Latents are mapped out of the backbone's BN (``denormalize``) and handed to
    ``decode`` (outside de-normalisation, tokenizer decode, uint8).
    """
    n = len(labels)
    if len(cond) != n or labels.dtype != torch.int64:
        raise ValueError(f"cond ({len(cond)}) and int64 labels ({len(labels)}, {labels.dtype}) must match")
    options = {**dict(sampling), "cfg_scale": 1.0}
    latent_shape = tuple(control.backbone.config.latent_shape)
    device = control.branch_device()
    was_training = control.training
    control.eval()
    out = []
    try:
        for s in range(0, n, batch_size):
            e = min(n, s + batch_size)
            start = torch.stack([
                torch.randn(latent_shape, generator=torch.Generator().manual_seed(derive_seed(seed, "controlnet-noise", i)),
                            dtype=torch.float64)
                for i in range(s, e)
            ])
            g = torch.Generator().manual_seed(derive_seed(seed, "controlnet-sde", s))
            u = sample(control.bind(cond[s:e].to(device)), transport, (e - s, *latent_shape), labels[s:e].to(device),
                       generator=g, start=start, **options)
            images = _check_uint8_nhwc(decode(control.denormalize(u.float())), "decode output")
            if len(images) != e - s:
                raise ValueError(f"decode returned {len(images)} images for {e - s} latents")
            out.append(images)
    finally:
        control.train(was_training)
    return np.concatenate(out)


def condition_l1(cond_maps: np.ndarray, images: np.ndarray, project: ProjectFn, batch_size: int = 64) -> np.ndarray:
    """Per-image condition alignment error ``mean |c - P(x)|`` (Seesaw Eq. 4; spec §9, §7.2 distance).

    ``cond_maps`` are the normalised target conditions (the projector on the real images),
    ``images`` the generated uint8 NHWC images; ``project`` is the same projector. float64 ``[N]``.
    """
    images = _check_uint8_nhwc(images, "images")
    cond_maps = np.asarray(cond_maps)
    if len(cond_maps) != len(images):
        raise ValueError(f"{len(cond_maps)} condition maps for {len(images)} images")
    out = np.empty(len(images), dtype=np.float64)
    for s in range(0, len(images), batch_size):
        pred = np.asarray(project(images[s:s + batch_size]), dtype=np.float64)
        target = cond_maps[s:s + batch_size].astype(np.float64)
        if pred.shape != target.shape:
            raise ValueError(f"projector output {pred.shape} differs from the condition maps {target.shape}")
        out[s:s + len(pred)] = np.abs(target - pred).reshape(len(pred), -1).mean(axis=1)
    return out


def image_feature_stats(images: np.ndarray, feature_fn: FeatureFn, batch_size: int = 64) -> FeatureStats:
    """Streaming feature statistics (:class:`FeatureStats`) of uint8 NHWC images."""
    images = _check_uint8_nhwc(images, "images")
    stats = FeatureStats()
    for s in range(0, len(images), batch_size):
        feats = feature_fn(images[s:s + batch_size])
        stats.update(feats.detach().cpu().double().numpy() if isinstance(feats, Tensor) else np.asarray(feats))
    return stats


def score_controlnet(images: np.ndarray, cond_maps: np.ndarray, project: ProjectFn, feature_fn: FeatureFn,
                     real: FeatureStats, batch_size: int = 64) -> dict[str, float]:
    """Table 3 numbers of a set of controlled samples: ``fid`` vs ``real`` and condition ``l1``.

    Also ``l1_sem`` (standard error of the mean over images) and ``num_images``. FID is the
    Fréchet distance of the Gaussian fits of ``feature_fn`` features (:mod:`latentbench.metrics.fid`).
    """
    l1 = condition_l1(cond_maps, images, project, batch_size)
    fid = image_feature_stats(images, feature_fn, batch_size).fd(real)
    sem = float(l1.std(ddof=1) / math.sqrt(len(l1))) if len(l1) > 1 else math.nan
    return {"fid": float(fid), "l1": float(l1.mean()), "l1_sem": sem, "num_images": len(l1)}


def evaluate_controlnet(
    control: ControlDiT,
    transport: Transport,
    sampling: Mapping[str, Any],
    cond: Tensor,
    cond_maps: np.ndarray,
    labels: Tensor,
    decode: DecodeFn,
    project: ProjectFn,
    feature_fn: FeatureFn,
    real: FeatureStats,
    batch_size: int = 64,
    seed: int = 0,
) -> tuple[dict[str, float], np.ndarray]:
    """Generate with the branch (:func:`generate_controlled`) and score (:func:`score_controlnet`).

    ``cond`` is the branch input for each evaluation image, ``cond_maps`` its normalised condition
    map (same order), ``labels`` its true class. Returns ``(metrics, images)``.
    """
    images = generate_controlled(control, transport, sampling, cond, labels, decode, batch_size, seed)
    return score_controlnet(images, cond_maps, project, feature_fn, real, batch_size), images


def condition_l1_fn(transport: Transport, sampling: Mapping[str, Any], cond: Tensor, cond_maps: np.ndarray,
                    labels: Tensor, decode: DecodeFn, project: ProjectFn, batch_size: int = 64,
                    seed: int = 0) -> ValidateFn:
    """Validation score = condition L1 of controlled samples of a fixed validation set."""

    def validate(control: ControlDiT) -> float:
        images = generate_controlled(control, transport, sampling, cond, labels, decode, batch_size, seed)
        return float(condition_l1(cond_maps, images, project, batch_size).mean())

    return validate


# ---------------------------------------------------------------------------------------------
# Hyper-parameter record (report Table 4)
# ---------------------------------------------------------------------------------------------


def hyperparameter_record(settings: ControlTrainSettings, config: ControlConfig, depth: int,
                          num_items: int, result: ControlTrainResult | None = None) -> list[dict[str, Any]]:
    """Rows ``{hyperparameter, paper, ours}``: the paper's Table 4 (spec A.9) beside our settings.

    The first seven rows are Table 4's (same names and order, paper values from
    ``report/paper/seesaw_table4.csv``); the rest are choices the paper does not state. Epochs
    are the ``max_steps`` budget (and, given ``result``, the steps actually run) in passes over
    ``num_items`` training images.
    """
    from latentbench.report.paper_values import (
        load_paper_table,  # report layer, imported on use
    )

    table = load_paper_table("seesaw_table4")
    paper = dict(zip(table["hyperparameter"], table["value"]))
    epochs = settings.max_steps * settings.effective_batch / num_items
    ours_epochs = f"<= {epochs:.4g} (max_steps {settings.max_steps})"
    if result is not None:
        ours_epochs += f"; ran {result.steps} steps = {result.steps * settings.effective_batch / num_items:.4g}"
    ours = {
        "base_batch_size": settings.micro_batch,
        "gradient_accumulation": settings.grad_accumulation,
        "effective_batch_size": settings.effective_batch,
        "learning_rate": f"{settings.lr:g} (constant)",
        "optimizer": f"AdamW (betas {settings.betas}, weight decay {settings.weight_decay:g}, eps {settings.adam_eps:g})",
        "gradient_clipping": settings.grad_clip,
        "total_epochs": ours_epochs,
    }
    rows = [{"hyperparameter": k, "paper": paper[k], "ours": ours[k]} for k in paper]
    extra = {
        "convergence_rule": f"validation every {settings.eval_every} steps, patience {settings.patience} "
                            f"(min_delta {settings.min_delta:g}), best kept",
        "mixed_precision": settings.precision,
        "cond_encoder": config.cond_encoder,
        "control_blocks": f"{config.blocks_for(depth)} of {depth} ({config.injection})",
    }
    rows += [{"hyperparameter": k, "paper": "(not stated)", "ours": v} for k, v in extra.items()]
    return rows
