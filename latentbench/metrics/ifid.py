"""iFID latent operations (spec metrics-ifid-seesaw §3): neighbour search, top-K pick,
interpolation and reproducible posterior samples.

iFID = FD(x, g(z_hat)) with z_hat = I_m(z, c, alpha), c a neighbour of z among reference
latents (iFID paper Eq. 6; configuration of the tables in spec §3.1-3.2). This module
produces z_hat and stays free of any model: the caller decodes the returned latents and
computes the Fréchet distance.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

from latentbench.metrics.neighbors import gather_rows, nearest_neighbors
from latentbench.seeding import derive_seed

__all__ = [
    "ifid_latents",
    "interpolate",
    "nearest_neighbors",
    "pick_topk",
    "sample_posterior",
    "topk_weights",
]

METHODS = ("linear", "slerp", "mask")
MASKS = ("half_fixed", "random_bernoulli")
TOPK_PICKS = ("softmax_mse", "uniform")
# Spec §3.3 (evalvae.py `slerp`): eps added to sin(theta) in the weights (here also the
# zero-norm guard, see _slerp), and the sin(theta) below which slerp falls back to linear.
SLERP_EPS = 1e-7
SLERP_LINEAR_BELOW = 1e-6
# Latent elements handled at once by ifid_latents: a block of B queries gathers B * K
# candidate latents (K >= 8 assumed when sizing, which also bounds slerp's float64 temps).
BLOCK_ELEMENTS = 2**25


def interpolate(
    a: torch.Tensor,
    b: torch.Tensor,
    alpha: float = 0.5,
    method: str = "linear",
    mask: str = "half_fixed",
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """I_m(a, b, alpha) per sample (batched over dim 0), spec §3.3.

    "linear": (1-alpha) a + alpha b. "slerp": spherical weights on the flattened,
    unnormalised samples (eps 1e-7), linear where sin(theta) < 1e-6. "mask": latents
    (N, C, H, W) or (N, L, C); ``mask="half_fixed"`` takes rows 0..H//2-1 (tokens
    0..L//2-1) from b and ignores alpha (the official code's choice); ``"random_bernoulli"``
    takes each spatial position / token (all channels) from b with probability alpha,
    drawn from ``generator``. alpha = 0 returns a, alpha = 1 returns b (linear, slerp).
    """
    if not isinstance(a, torch.Tensor) or not isinstance(b, torch.Tensor):
        raise ValueError("a and b must be torch tensors")
    if a.shape != b.shape or a.ndim < 2:
        raise ValueError(f"b: shape {tuple(b.shape)} must equal a's {tuple(a.shape)}, (N, ...)")
    if not 0.0 <= float(alpha) <= 1.0:
        raise ValueError(f"alpha must lie in [0, 1], got {alpha!r}")
    alpha = float(alpha)
    if method == "linear":
        # Spec §3.3 linear; iFID paper Eq. 6 at alpha = 0.5.
        return (1.0 - alpha) * a + alpha * b
    if method == "slerp":
        return _slerp(a, b, alpha)
    if method == "mask":
        return _mask_mix(a, b, alpha, mask, generator)
    raise ValueError(f"method must be one of {METHODS}, got {method!r}")


def topk_weights(mse: torch.Tensor, how: str = "softmax_mse") -> torch.Tensor:
    """Pick probabilities over K candidates from their (N, K) MSEs to the query.

    Spec §3.2 step 4 (evalvae.py): w_k = softmax_k(-MSE(q, c_k)); "uniform": 1/K.
    """
    if mse.ndim != 2 or mse.shape[1] < 1:
        raise ValueError(f"mse must have shape (N, K), got {tuple(mse.shape)}")
    if how == "softmax_mse":
        return torch.softmax(-mse.double(), dim=1)
    if how == "uniform":
        return torch.full(mse.shape, 1.0 / mse.shape[1], dtype=torch.float64, device=mse.device)
    raise ValueError(f"how must be one of {TOPK_PICKS}, got {how!r}")


def pick_topk(
    queries: torch.Tensor,
    candidates: torch.Tensor,
    how: str = "softmax_mse",
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, float]:
    """Draw one of K candidates per query: (chosen index in [0, K), mean entropy in nats).

    ``queries`` (N, ...), ``candidates`` (N, K, ...). Spec §3.2 step 4: k ~ Categorical(w)
    with w = topk_weights(MSE), MSE = mean over elements of (q - c_k)^2. K = 1 is
    deterministic (no draw); K > 1 needs ``generator``.
    """
    if candidates.ndim != queries.ndim + 1 or candidates.shape[0] != queries.shape[0] or (
        candidates.shape[2:] != queries.shape[1:]
    ):
        raise ValueError(
            f"candidates: shape {tuple(candidates.shape)} must be (N, K) + "
            f"{tuple(queries.shape[1:])} with N = {queries.shape[0]}"
        )
    n, k = candidates.shape[:2]
    if k > 1 and generator is None:
        raise ValueError("generator is required to pick among K > 1 candidates")
    uniforms = _uniforms(n, generator) if k > 1 else None
    chosen, entropy = _choose(_mse(queries, candidates), how, uniforms)
    return chosen, float(entropy.mean())


def ifid_latents(
    query_latents: torch.Tensor | np.ndarray,
    reference_latents: torch.Tensor | np.ndarray,
    k: int = 10,
    alpha: float = 0.5,
    method: str = "slerp",
    topk_pick: str = "softmax_mse",
    exclude_self: bool = False,
    seed: int = 0,
    chunk_size: int | None = None,
    mask: str = "half_fixed",
    precision: str = "auto",
) -> dict[str, torch.Tensor | float]:
    """Interpolated latents z_hat for iFID (spec §3.2 steps 2-5), ready for decoding.

    Neighbours: exact top-k over ``reference_latents`` (tensor, array or memmap, streamed)
    by cosine for slerp/mask and squared L2 for linear; one of the k is picked per query
    (``topk_pick``), then z_hat = interpolate(q, neighbour, alpha, method). Seeded: the same
    inputs and seed give the same output. Returns latents (query shape and dtype),
    neighbor_index (N,) into the references, topk_index (N, k), and entropy (mean entropy
    of the pick weights, the diagnostic logged by evalvae.py).
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if topk_pick not in TOPK_PICKS:
        raise ValueError(f"topk_pick must be one of {TOPK_PICKS}, got {topk_pick!r}")
    if mask not in MASKS:
        raise ValueError(f"mask must be one of {MASKS}, got {mask!r}")
    if not 0.0 <= float(alpha) <= 1.0:
        raise ValueError(f"alpha must lie in [0, 1], got {alpha!r}")
    if isinstance(query_latents, np.ndarray):
        query_latents = torch.from_numpy(np.array(query_latents))
    if not isinstance(query_latents, torch.Tensor) or not hasattr(reference_latents, "shape"):
        raise ValueError("query_latents and reference_latents must be tensors or numpy arrays")
    q = query_latents
    if tuple(reference_latents.shape[1:]) != tuple(q.shape[1:]):
        raise ValueError(
            f"reference_latents: latent shape {tuple(reference_latents.shape[1:])} "
            f"differs from the queries' {tuple(q.shape[1:])}"
        )
    if method == "mask" and q.ndim not in (3, 4):
        raise ValueError(f"query_latents: mask needs (N, C, H, W) or (N, L, C), got {tuple(q.shape)}")
    # Spec §3.2 step 2: L2 cost for linear, negative cosine for slerp and mask.
    metric = "l2" if method == "linear" else "cosine"
    _, topk = nearest_neighbors(
        q, reference_latents, k=k, metric=metric, exclude_self=exclude_self,
        chunk_size=chunk_size, precision=precision,
    )
    n = q.shape[0]
    latents = torch.empty_like(q)
    neighbor_index = torch.empty(n, dtype=torch.long, device=topk.device)
    entropy = torch.zeros(n, dtype=torch.float64)
    # Separate seeded streams: one uniform per query for the pick (drawn up front, so the
    # pick does not depend on blocking) and the random_bernoulli mask stream.
    pick_rng = torch.Generator().manual_seed(derive_seed(seed, "ifid", "pick"))
    uniforms = _uniforms(n, pick_rng) if k > 1 else None
    mask_rng = torch.Generator().manual_seed(derive_seed(seed, "ifid", "mask"))
    step = max(1, BLOCK_ELEMENTS // (max(k, 8) * math.prod(q.shape[1:])))
    for s0 in range(0, n, step):
        block = slice(s0, s0 + step)
        if k > 1 and topk_pick == "softmax_mse":
            candidates = gather_rows(reference_latents, topk[block], q.device, q.dtype)
            chosen, entropy[block] = _choose(_mse(q[block], candidates), topk_pick, uniforms[block])
            neighbours = candidates[torch.arange(len(chosen), device=q.device), chosen]
        else:  # K = 1 or uniform pick: the MSEs do not matter, gather only the chosen rows
            mse = torch.zeros(topk[block].shape, device=q.device)
            chosen, entropy[block] = _choose(mse, topk_pick, uniforms[block] if k > 1 else None)
            neighbours = None
        neighbor_index[block] = topk[block].gather(1, chosen[:, None]).squeeze(1)
        if neighbours is None:
            neighbours = gather_rows(reference_latents, neighbor_index[block], q.device, q.dtype)
        latents[block] = interpolate(q[block], neighbours, alpha, method, mask, mask_rng)
    return {
        "latents": latents,
        "neighbor_index": neighbor_index,
        "topk_index": topk,
        "entropy": float(entropy.mean()),
    }


def sample_posterior(
    mean: torch.Tensor, std: torch.Tensor, seeds: Sequence[int] | torch.Tensor
) -> torch.Tensor:
    """z_i = mean_i + std_i * eps_i with eps_i ~ N(0, I) from a generator seeded by seeds[i].

    Spec §3.5: each image's sample depends only on its own seed, so re-drawing image i
    alone (e.g. a chosen neighbour, re-encoded later) gives the same latent. eps is drawn
    in float32 on the CPU, so the result does not depend on device or batch.
    """
    if mean.shape != std.shape or mean.ndim < 2:
        raise ValueError(f"std: shape {tuple(std.shape)} must equal mean's {tuple(mean.shape)}")
    seeds = [int(s) for s in (seeds.tolist() if isinstance(seeds, torch.Tensor) else seeds)]
    if len(seeds) != mean.shape[0]:
        raise ValueError(f"seeds: {len(seeds)} given for {mean.shape[0]} latents")
    if any(not 0 <= s < 2**64 for s in seeds):
        raise ValueError("seeds must be integers in [0, 2**64)")
    eps = torch.empty(mean.shape, dtype=torch.float32)
    generator = torch.Generator()
    for i, s in enumerate(seeds):
        torch.randn(mean.shape[1:], generator=generator.manual_seed(s), out=eps[i])
    dtype = torch.promote_types(mean.dtype, torch.float32)
    return mean.to(dtype) + std.to(dtype) * eps.to(device=mean.device, dtype=dtype)


# ----------------------------------------------------------------------------- helpers


def _slerp(a: torch.Tensor, b: torch.Tensor, alpha: float) -> torch.Tensor:
    """Spherical interpolation with the semantics of evalvae.py `slerp` (spec §3.3).

    Computed in float64 and cast back to the inputs' dtype. One deliberate difference:
    the reference normalises by (||a|| + 1e-7). In its float32 arithmetic that bias vanishes
    for parallel latents of realistic norm (a_n.b_n rounds to 1, so the linear fallback
    applies), but in exact arithmetic it keeps cos(theta) < 1 for parallel inputs and
    misses the fallback that spec §3.7 requires (slerp(a, a) = a, slerp(a, 2a) = (1+t) a).
    We normalise by the exact norm (1e-7 only guards zero vectors); elsewhere this changes
    the result by O(1e-7) relative. The 1e-7 in the sin(theta) denominators is kept.
    """
    out_dtype = torch.promote_types(a.dtype, b.dtype)
    fa, fb = a.reshape(a.shape[0], -1).double(), b.reshape(b.shape[0], -1).double()
    a_n = fa / fa.norm(dim=1, keepdim=True).clamp_min(SLERP_EPS)
    b_n = fb / fb.norm(dim=1, keepdim=True).clamp_min(SLERP_EPS)
    theta = torch.arccos((a_n * b_n).sum(dim=1, keepdim=True).clamp(-1.0, 1.0))
    sin_theta = torch.sin(theta)
    w1 = torch.sin((1.0 - alpha) * theta) / (sin_theta + SLERP_EPS)
    w2 = torch.sin(alpha * theta) / (sin_theta + SLERP_EPS)
    # The weights multiply the UNNORMALISED a, b: norms are not re-interpolated.
    spherical = w1 * fa + w2 * fb
    linear = (1.0 - alpha) * fa + alpha * fb
    out = torch.where(sin_theta < SLERP_LINEAR_BELOW, linear, spherical)
    return out.reshape(a.shape).to(out_dtype)


def _mask_mix(
    a: torch.Tensor,
    b: torch.Tensor,
    alpha: float,
    mask: str,
    generator: torch.Generator | None,
) -> torch.Tensor:
    """Positions from b where the mask is set, else from a (spec §3.3 mask)."""
    # The mask covers positions (H, W) or tokens (L) and is shared by all channels.
    if a.ndim == 4:  # (N, C, H, W)
        positions, channel_dim = a.shape[2:], 1
    elif a.ndim == 3:  # (N, L, C)
        positions, channel_dim = a.shape[1:2], 2
    else:
        raise ValueError(
            f"a: mask interpolation needs (N, C, H, W) or (N, L, C), got {tuple(a.shape)}"
        )
    if mask == "half_fixed":
        # evalvae.py: the first floor(H/2) rows (floor(L/2) tokens) come from the neighbour.
        take_b = torch.zeros((1, *positions), dtype=torch.bool)
        take_b[:, : positions[0] // 2] = True
    elif mask == "random_bernoulli":
        if generator is None:
            raise ValueError("generator is required for mask='random_bernoulli'")
        draws = torch.rand((a.shape[0], *positions), generator=generator, device=generator.device)
        take_b = draws < alpha
    else:
        raise ValueError(f"mask must be one of {MASKS}, got {mask!r}")
    return torch.where(take_b.unsqueeze(channel_dim).to(a.device), b, a)


def _mse(queries: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
    """(N, K) mean over elements of (q - c_k)^2 (spec §3.2 step 4)."""
    diff = candidates - queries.unsqueeze(1).to(candidates.dtype)
    return diff.flatten(2).pow(2).mean(dim=2)


def _uniforms(n: int, generator: torch.Generator) -> torch.Tensor:
    """n float64 uniforms in [0, 1), one per query, drawn up front (batch-independent)."""
    return torch.rand(n, generator=generator, dtype=torch.float64, device=generator.device).cpu()


def _choose(
    mse: torch.Tensor, how: str, uniforms: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Inverse-CDF draw from topk_weights(mse); returns (index, entropy per query)."""
    n, k = mse.shape
    if k == 1:
        chosen = torch.zeros(n, dtype=torch.long, device=mse.device)
        return chosen, torch.zeros(n, dtype=torch.float64)
    weights = topk_weights(mse, how).cpu()
    entropy = torch.special.entr(weights).sum(dim=1)
    below = weights.cumsum(dim=1) <= uniforms[:, None]
    chosen = below.sum(dim=1).clamp_max(k - 1)
    return chosen.to(mse.device), entropy

