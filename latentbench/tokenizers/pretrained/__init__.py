"""The public autoencoders of the iFID and Tilted Seesaw papers behind the ``pretrained`` family.

Config entry: ``{family: pretrained, name: <zoo name or alias>, weights: <file or dir> | null}``.
``weights: null`` builds the exact architecture randomly initialised (no download; building
inside ``with torch.device("meta")`` works); a path loads the released file strictly.

Each architecture lives in one module of this package (spec zoo.md §2: K1-K4, C1-C8) that
declares its rows (:class:`ZooRow`, spec zoo.md §3) in a module-level ``ROWS`` tuple and a
``build(row, weights) -> PretrainedTokenizer`` function. :data:`ARCH_MODULES` lists them; the
registry is collected lazily so importing the package stays cheap.
"""

from __future__ import annotations

import importlib
from dataclasses import replace
from pathlib import Path
from typing import Any

from latentbench.tokenizers import register_family
from latentbench.tokenizers.pretrained.base import (
    PretrainedTokenizer,
    ZooRow,
    canonical,
)

# One module per architecture class of spec zoo.md §2 (import path relative to this package).
ARCH_MODULES: tuple[str, ...] = (
    "ldm",  # K1 / K3 LDM-format files into the conv_kl AutoencoderKL
    "diffusers_kl",  # K1 / K2 / K3 diffusers-format AutoencoderKL, K4 AutoencoderKLQwenImage
    "detok",  # C1
    "dmvae",  # C2
    "rae",  # C3 RAE / UAE
    "vtp",  # C4
    "svg",  # C5 SVG, C6 SVG-T2I
    "softvq",  # C7
    "maetok",  # C8
)

_ROWS: dict[str, tuple[ZooRow, Any]] | None = None


def _registry() -> dict[str, tuple[ZooRow, Any]]:
    """name and every alias (canonical form) -> (row, its module)."""
    global _ROWS
    if _ROWS is None:
        rows: dict[str, tuple[ZooRow, Any]] = {}
        for mod_name in ARCH_MODULES:
            try:
                module = importlib.import_module(f"{__name__}.{mod_name}")
            except ModuleNotFoundError as exc:
                if exc.name == f"{__name__}.{mod_name}":
                    continue  # architecture not written yet
                raise
            for row in module.ROWS:
                for key in dict.fromkeys(canonical(k) for k in (row.name, *row.aliases)):
                    if key in rows:
                        raise ValueError(f"pretrained zoo name {key!r} declared twice")
                    rows[key] = (row, module)
        _ROWS = rows
    return _ROWS


def known_pretrained() -> list[str]:
    """Every zoo name of spec zoo.md §3 (registry names, not aliases), sorted."""
    return sorted({row.name for row, _ in _registry().values()})


def zoo_row(name: str) -> ZooRow:
    """The zoo row of a name or alias (case-, '-'/'_'-insensitive); one ValueError if unknown."""
    hit = _registry().get(canonical(name))
    if hit is None:
        raise ValueError(f"unknown pretrained tokenizer {name!r}; known: {', '.join(known_pretrained())}")
    return hit[0]


def build_pretrained(name: str, weights: str | Path | None = None, arch: dict[str, Any] | None = None) -> PretrainedTokenizer:
    """The adapter of zoo row ``name``: random init (``weights=None``) or strictly loaded.

    ``arch`` overrides the row's constructor config (a narrow copy of its architecture: tests, or a
    small custom file in the row's released format; ``resolution`` sets the image size). Only the
    architectures whose module defines ``latent_shape_of`` (LDM and diffusers rows) take overrides;
    the latent shape a strict load is checked against is then the override's.
    """
    row = zoo_row(name)
    module = _registry()[canonical(name)][1]
    if arch:
        if not hasattr(module, "latent_shape_of"):
            raise ValueError(f"pretrained tokenizer {row.name!r} ({row.arch}) takes no arch overrides")
        overrides = dict(arch)
        resolution = int(overrides.get("resolution", row.resolution))
        row = replace(row, config={**row.config, **overrides, "narrow_copy": True}, resolution=resolution)
        row = replace(row, latent_shape=module.latent_shape_of(row))
    return module.build(row, None if weights is None else Path(weights))


def weights_path(name: str, weights_dir: str | Path) -> Path:
    """The ``weights`` a study entry gives for zoo row ``name`` once its files are fetched into
    ``weights_dir`` (the manifest's ``file`` names): the row's first file, or that file's folder
    when it is a model directory's ``config.json`` (diffusers / Hugging Face rows). Files a row
    reads beside it (latent statistics) sit in the same folder."""
    from latentbench.weights_fetch import load_manifest

    row = zoo_row(name)
    if not row.files:
        raise ValueError(f"pretrained tokenizer {row.name!r} names no weight files")
    manifest = load_manifest()
    missing = [f for f in row.files if f not in manifest]
    if missing:
        raise ValueError(f"pretrained tokenizer {row.name!r}: weight file(s) {missing} not in the weights manifest")
    first = Path(weights_dir) / manifest[row.files[0]].file
    return first.parent if first.name == "config.json" else first


@register_family("pretrained")
def _build_family(cfg: dict[str, Any]) -> PretrainedTokenizer:
    """Registry builder for ``family: pretrained``."""
    if "name" not in cfg:
        raise ValueError("a pretrained tokenizer needs `name` (one of known_pretrained())")
    return build_pretrained(cfg["name"], cfg.get("weights"), cfg.get("arch"))


__all__ = ["PretrainedTokenizer", "ZooRow", "build_pretrained", "known_pretrained", "weights_path", "zoo_row"]
