"""Deterministic seeding: every random choice takes a seed from the config."""

from __future__ import annotations

import hashlib
import random

import numpy as np
import torch


def seed_everything(seed: int) -> torch.Generator:
    """Seed python, numpy and torch; return a torch generator seeded the same way."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def derive_seed(*parts: object) -> int:
    """A stable 63-bit seed from any printable parts (e.g. global seed, split, index)."""
    digest = hashlib.sha256("/".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


def set_threads(threads: int) -> None:
    """Limit torch intra-op threads to what the Snakemake rule was given."""
    torch.set_num_threads(max(1, int(threads)))
