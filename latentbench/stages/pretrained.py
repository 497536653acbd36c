"""The pretrained-tokenizer job (rules/tokenizers.smk): check a released file, write its reference."""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from latentbench.errors import InputError
from latentbench.tokenizers import build_tokenizer, save_tokenizer_ref
from latentbench.tokenizers.kl_vae import count_parameters

log = logging.getLogger(__name__)


def pretrained_tokenizer(name: str, spec: dict, resolution: int, out: str | Path, weights: str | None = None) -> None:
    """Load a pretrained tokenizer's released weights strictly, check its latent shape at the
    study's ``resolution`` with one encode, and write the JSON reference the later jobs load.

    ``spec``: the study's ``tokenizers.<name>`` entry (``family: pretrained``); ``weights``: the
    resolved file or folder (none: the architecture randomly initialised, as ``weights: null``).
    """
    cfg = {k: v for k, v in spec.items() if k not in ("label", "study_family", "backbones")}
    cfg["weights"] = str(Path(weights).resolve()) if weights else None
    tokenizer = build_tokenizer(cfg)
    with torch.inference_mode():
        mean, _ = tokenizer.encode_moments(torch.full((1, 3, resolution, resolution), 0.5))
    if tuple(mean.shape[1:]) != tuple(tokenizer.latent_shape):
        raise InputError(
            f"tokenizers.{name}: {tokenizer.row.name} encodes {resolution} px images to {tuple(mean.shape[1:])}, "
            f"not its latent shape {tuple(tokenizer.latent_shape)} (spec zoo.md)"
        )
    norm = spec.get("latent_norm", "none")
    if norm == "native":
        tokenizer.native_normalize(mean)  # raises now, naming the row, when it has no published statistics
    row, parameters = tokenizer.row, count_parameters(tokenizer)
    save_tokenizer_ref(
        out,
        cfg,
        {
            "zoo": {"name": row.name, "arch": row.arch, "encode": row.encode, "norm": row.norm, "unverified": list(row.unverified)},
            "latent_shape": list(tokenizer.latent_shape),
            "latent_norm": norm,
            "parameters": parameters,
            "random_init": cfg["weights"] is None,
        },
    )
    log.info("%s: %s (%s) latent %s, %d parameters, weights %s", name, row.name, row.arch, tuple(tokenizer.latent_shape),
             parameters, cfg["weights"] or "random init")
