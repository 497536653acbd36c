"""Semantic separability of latents: LNC and the linear probe (spec diffusability §3).

LNC@K (Latent Neighbour Consistency, paper Fig. 2): pool each image's standardised latent
over its foreground tokens to one C-vector, find its K nearest other images by cosine, and
count how many share its class. The linear probe (§3.2) is only a reference for the
LNC-vs-probe correlation of Fig. 2 (right); its protocol is an assumption of the spec.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from latentbench.metrics.neighbors import nearest_neighbors
from latentbench.metrics.normalization import DEFAULT_CHUNK, Stats, prepare, resolve_stats

LNC_K = 5  # spec §3.1 step 6 (Fig. 2's "2/5"); K = 10 is also reported


def pooled_features(
    latents: torch.Tensor,
    token_mask: torch.Tensor | None = None,
    *,
    stats: Stats | None = None,
    standardize: bool = True,
    chunk: int = DEFAULT_CHUNK,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-image mean of the standardised latent over its FG tokens (spec §3.1 step 2).

    ``f_n = sum_hw m_n z_n[:, h, w] / max(1, sum m_n)``. ``token_mask`` [N, H, W] (bool);
    None pools all tokens (the linear-probe feature, §3.2). Returns (features [N', C]
    float64 of the kept images, keep [N] bool): images with an empty mask are dropped.
    """
    if not isinstance(latents, torch.Tensor) or latents.ndim != 4:
        raise ValueError(f"latents must be a tensor [N, C, H, W], got {getattr(latents, 'shape', None)}")
    n, _, h, w = latents.shape
    if token_mask is not None and tuple(token_mask.shape) != (n, h, w):
        raise ValueError(f"token_mask must have shape {(n, h, w)}, got {tuple(token_mask.shape)}")
    norm = resolve_stats(latents, stats, standardize)
    # filled in place: at paper scale the [N, C] table is the job's largest array, so no second copy
    features = torch.empty((n, latents.shape[1]), dtype=torch.float64, device=latents.device)
    keep = torch.ones(n, dtype=torch.bool, device=latents.device)
    for start in range(0, n, chunk):
        z = prepare(latents[start : start + chunk], norm)
        if token_mask is None:
            features[start : start + len(z)] = z.mean(dim=(2, 3))
            continue
        m = token_mask[start : start + chunk].to(z.device, torch.float64)
        features[start : start + len(z)] = torch.einsum("nchw,nhw->nc", z, m) / m.sum(dim=(1, 2)).clamp_min(1)[:, None]
        keep[start : start + len(z)] = m.flatten(1).any(dim=1)
    return (features, keep) if bool(keep.all()) else (features[keep], keep)


def neighbor_consistency(
    features: torch.Tensor, labels: torch.Tensor, ks: Sequence[int] = (LNC_K,), metric: str = "cosine"
) -> dict[int, float]:
    """``LNC@K = mean_n (1/K) sum_{j in NN_K(n)} 1[y_j = y_n]`` for each K (spec §3.1 step 5).

    Neighbours are exact, self excluded, ties to the lower index
    (``latentbench.metrics.neighbors.nearest_neighbors``); one search with the largest K.
    """
    labels = torch.as_tensor(labels)
    if features.ndim != 2 or labels.shape != (features.shape[0],):
        raise ValueError(
            f"features must be [N, C] and labels [N], got {tuple(features.shape)} and {tuple(labels.shape)}"
        )
    ks = sorted({int(k) for k in ks})
    if not ks or ks[0] < 1 or ks[-1] > features.shape[0] - 1:
        raise ValueError(f"ks must lie in [1, N-1] = [1, {features.shape[0] - 1}], got {ks}")
    _, idx = nearest_neighbors(features, features, k=ks[-1], metric=metric, exclude_self=True)
    labels = labels.to(idx.device)
    # same-class neighbours per rank (nearest first), counted in blocks of rows: no [N, Kmax] temporaries
    hits = torch.zeros(ks[-1], dtype=torch.long, device=idx.device)
    for start in range(0, len(idx), DEFAULT_CHUNK):
        hits += (labels[idx[start : start + DEFAULT_CHUNK]] == labels[start : start + DEFAULT_CHUNK, None]).sum(dim=0)
    within = hits.cumsum(0)
    return {k: int(within[k - 1]) / (len(idx) * k) for k in ks}


def lnc(
    latents: torch.Tensor,
    labels: torch.Tensor,
    token_mask: torch.Tensor | None = None,
    k: int = LNC_K,
    *,
    metric: str = "cosine",
    stats: Stats | None = None,
    standardize: bool = True,
) -> float:
    """LNC@K of latents [N, C, H, W] with class labels [N] and token FG masks [N, H, W] (spec §3.1).

    Cosine distance on masked-mean-pooled standardised latents, no extra centring. For
    several K at once use ``pooled_features`` + ``neighbor_consistency``.
    """
    labels = torch.as_tensor(labels)
    if labels.shape != (latents.shape[0],):
        raise ValueError(f"labels must have shape [{latents.shape[0]}], got {tuple(labels.shape)}")
    features, keep = pooled_features(latents, token_mask, stats=stats, standardize=standardize)
    return neighbor_consistency(features, labels.to(keep.device)[keep], (k,), metric)[k]


def linear_probe(
    train_features: torch.Tensor,
    train_labels: torch.Tensor,
    val_features: torch.Tensor,
    val_labels: torch.Tensor,
    *,
    num_classes: int | None = None,
    epochs: int = 30,
    lr: float = 1e-3,
    weight_decay: float = 0.0,
    batch_size: int = 4096,
    seed: int = 0,
) -> float:
    """Val top-1 of a BatchNorm(affine=False) + Linear head on pooled latents (spec §3.2).

    AdamW, cosine learning-rate schedule over all steps, best val top-1 over epochs (early
    stopping on val top-1). Seeded, and leaves the global RNG untouched.
    """
    for name, f, y in (("train", train_features, train_labels), ("val", val_features, val_labels)):
        if f.ndim != 2 or torch.as_tensor(y).shape != (f.shape[0],) or f.shape[0] == 0:
            raise ValueError(f"{name}_features must be [N, C] with {name}_labels [N], N > 0")
    if train_features.shape[1] != val_features.shape[1]:
        raise ValueError("train_features and val_features must have the same feature size")
    x_tr, x_va = train_features.float(), val_features.float().to(train_features.device)
    y_tr = torch.as_tensor(train_labels, device=x_tr.device).long()
    y_va = torch.as_tensor(val_labels, device=x_tr.device).long()
    n_cls = num_classes or int(max(y_tr.max(), y_va.max())) + 1
    steps_per_epoch = math.ceil(x_tr.shape[0] / batch_size)
    with torch.random.fork_rng(devices=[x_tr.device] if x_tr.is_cuda else []):
        torch.manual_seed(seed)
        head = torch.nn.Sequential(
            torch.nn.BatchNorm1d(x_tr.shape[1], affine=False), torch.nn.Linear(x_tr.shape[1], n_cls)
        ).to(x_tr.device)
        opt = torch.optim.AdamW(head.parameters(), lr=lr, weight_decay=weight_decay)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs * steps_per_epoch)
        best = 0.0
        for _ in range(epochs):
            head.train()
            perm = torch.randperm(x_tr.shape[0], device=x_tr.device)
            for start in range(0, x_tr.shape[0], batch_size):
                sel = perm[start : start + batch_size]
                if sel.numel() < 2:  # BatchNorm needs two samples in training mode
                    continue
                loss = F.cross_entropy(head(x_tr[sel]), y_tr[sel])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
            head.eval()
            with torch.no_grad():
                best = max(best, float((head(x_va).argmax(dim=1) == y_va).double().mean()))
    return best
