"""Tokenizers behind one registry: pretrained adapters and the DAG-trained KL families (conv, ViT).

A config entry names a ``family``; :func:`build_tokenizer` hands the entry to the builder
registered for that family, which validates the rest of the entry and returns a
:class:`~latentbench.tokenizers.base.Tokenizer`. Example (the demo's VF-aligned tokenizer)::

    {"family": "conv_kl", "arch": "demo", "regularizer": "mcos+mdms", "variant": "demo-cnn",
     "kl_weight": 1e-6}

Trained tokenizers are stored as one file holding the config entry and the weights
(:func:`save_tokenizer`), which :func:`load_tokenizer` turns back into a Tokenizer.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from latentbench.tokenizers.base import Tokenizer

FORMAT = "latentbench-tokenizer/1"
# A pretrained tokenizer is not copied into the results: its file is a JSON reference to the
# released weights (``family: pretrained`` config with the resolved ``weights`` path).
REF_FORMAT = "latentbench-tokenizer-ref/1"

_FAMILIES: dict[str, Callable[[dict[str, Any]], Tokenizer]] = {}


def register_family(name: str) -> Callable:
    """Decorator adding a ``builder(cfg) -> Tokenizer`` for config entries with ``family: name``."""

    def wrap(builder: Callable[[dict[str, Any]], Tokenizer]) -> Callable[[dict[str, Any]], Tokenizer]:
        if name in _FAMILIES:
            raise ValueError(f"tokenizer family {name!r} registered twice")
        _FAMILIES[name] = builder
        return builder

    return wrap


def _import_builtin() -> None:
    from latentbench.tokenizers import kl_vae, pretrained, vit_vae  # noqa: F401  (register the families)


def known_families() -> list[str]:
    """Names of all registered tokenizer families."""
    _import_builtin()
    return sorted(_FAMILIES)


def known_pretrained() -> list[str]:
    """Every public autoencoder of spec zoo.md §3 the ``pretrained`` family builds (registry names)."""
    from latentbench.tokenizers.pretrained import known_pretrained as names

    return names()


def known_regularizers() -> list[str]:
    """Regulariser cluster names of the diffusability study (spec §11.2), ``baseline`` first."""
    from latentbench.tokenizers.regularizers import REGULARIZERS

    return list(REGULARIZERS)


def build_tokenizer(cfg: dict[str, Any]) -> Tokenizer:
    """Build the (untrained or pretrained) tokenizer a config entry describes.

    Unknown family, arch, regulariser or variant raise one ValueError naming it.
    """
    if not isinstance(cfg, dict):
        raise ValueError(f"tokenizer config must be a dict, got {type(cfg).__name__}")
    _import_builtin()
    family = cfg.get("family")
    if family not in _FAMILIES:
        raise ValueError(f"unknown tokenizer family {family!r}; known: {', '.join(sorted(_FAMILIES))}")
    return _FAMILIES[family](cfg)


def save_tokenizer(path: str | Path, tokenizer: Tokenizer, cfg: dict[str, Any], extra: dict | None = None) -> None:
    """Atomically write ``{format, config, state_dict, **extra}`` (CPU tensors)."""
    from latentbench.io import atomic_path

    state = {k: v.detach().cpu() for k, v in tokenizer.state_dict().items()}
    with atomic_path(path, suffix=".pt") as tmp:
        torch.save({"format": FORMAT, "config": dict(cfg), "state_dict": state, **(extra or {})}, tmp)


def save_tokenizer_ref(path: str | Path, cfg: dict[str, Any], extra: dict | None = None) -> None:
    """Atomically write the JSON reference of a pretrained tokenizer (config with its weights path)."""
    from latentbench.io import write_json

    write_json(path, {"format": REF_FORMAT, "config": dict(cfg), **(extra or {})})


def tokenizer_latent_norm(path: str | Path) -> str:
    """``none`` or ``native``: the latent normalisation a tokenizer file asks the latent cache for
    (a pretrained reference's ``latent_norm``; trained tokenizers: ``none``)."""
    path = Path(path)
    if path.suffix != ".json":
        return "none"
    import json

    return json.loads(path.read_text()).get("latent_norm", "none")


def load_tokenizer(path: str | Path, device: str | torch.device = "cpu") -> Tokenizer:
    """Rebuild a tokenizer from a file written by :func:`save_tokenizer` (trained) or
    :func:`save_tokenizer_ref` (pretrained: the released weights load strictly); eval mode, frozen."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: tokenizer weights not found")
    if path.suffix == ".json":
        import json

        ref = json.loads(path.read_text())
        if not isinstance(ref, dict) or ref.get("format") != REF_FORMAT:
            raise ValueError(f"{path}: not a {REF_FORMAT} file")
        return build_tokenizer(ref["config"]).to(device).eval().requires_grad_(False)
    try:
        payload = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure means a bad file
        raise ValueError(f"{path}: corrupt tokenizer file ({exc})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ValueError(f"{path}: not a {FORMAT} file")
    tokenizer = build_tokenizer(payload["config"])
    tokenizer.load_state_dict(payload["state_dict"])
    return tokenizer.to(device).eval().requires_grad_(False)
