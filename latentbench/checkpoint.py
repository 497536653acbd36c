"""Checkpoint and resume for long training jobs.

One implementation serves every training loop (demo feature net, tokenizers, diffusion).
A checkpoint holds the model, optimiser(s), EMA, step, data position and all RNG states,
so that a run killed with ``kill -9`` and resumed reproduces the uninterrupted run exactly
on CPU. Files are written atomically; the previous checkpoint stays valid until the new
one is complete.
"""

from __future__ import annotations

import logging
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from latentbench.io import atomic_path

log = logging.getLogger(__name__)


def rng_state() -> dict[str, Any]:
    """Capture python, numpy and torch RNG states (CUDA too when present)."""
    state = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore RNG states captured by :func:`rng_state`."""
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> None:
    """Atomically save a training state dict (plus RNG states) to ``path``."""
    payload = dict(state)
    payload["rng"] = rng_state()
    with atomic_path(path, suffix=".pt") as tmp:
        torch.save(payload, tmp)


def load_checkpoint(path: str | Path, restore_rng: bool = True, run: Any = None) -> dict[str, Any] | None:
    """Load a checkpoint if it exists (None otherwise) and restore its RNG states.

    ``run`` identifies the training run (its settings, saved under the key ``"run"``): a
    checkpoint of another run, e.g. left by a config the study has since changed, is ignored
    with a warning (None), so the job starts over instead of continuing someone else's
    optimisation; its file is replaced by the first new checkpoint.
    """
    path = Path(path)
    if not path.exists():
        return None
    try:
        payload = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure means a bad file
        raise ValueError(f"{path}: corrupt checkpoint ({exc})") from None
    if run is not None and payload.get("run") != run:
        log.warning("%s: checkpoint of a different run (the settings changed); starting over", path)
        return None
    if restore_rng and "rng" in payload:
        set_rng_state(payload["rng"])
    return payload


class EMA:
    """Exponential moving average of a model's parameters, and of its float buffers when
    ``buffers`` (the recipe's ``ema_buffers``).

    The iFID recipe averages float buffers (BatchNorm statistics) too (spec models.md §1.6, iFID
    ``train.py``); the others copy them, like integer buffers (SiT/LightningDiT ``update_ema``
    average ``named_parameters`` only).
    """

    def __init__(self, model: torch.nn.Module, decay: float, buffers: bool = True) -> None:
        self.decay = decay
        self.buffers = buffers
        self._params = {k for k, _ in model.named_parameters()}
        self.shadow = {k: v.detach().clone() for k, v in model.state_dict().items()}

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        """shadow <- decay * shadow + (1 - decay) * current (copied where not averaged)."""
        for k, v in model.state_dict().items():
            s = self.shadow[k]
            if v.dtype.is_floating_point and (self.buffers or k in self._params):
                s.mul_(self.decay).add_(v.detach(), alpha=1.0 - self.decay)
            else:
                s.copy_(v)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.shadow

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.shadow = {k: v.clone() for k, v in state.items()}

    def copy_to(self, model: torch.nn.Module) -> None:
        """Load the averaged weights into ``model``."""
        model.load_state_dict(self.shadow)
