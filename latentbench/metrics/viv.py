"""VIV, the Velocity Irreducible Variance of flow matching (spec diffusability §2).

Paper: Zhong et al. 2026, "Diffusing in the Right Space", Eq. 1-6. With the flow-matching
path ``x_t = t x1 + (1 - t) x0`` (x0 noise, x1 data, velocity ``v = x1 - x0``), a class
``x1 | y=k ~ N(mu_k, Sigma_k)`` with eigenvalues ``lambda_i`` leaves the irreducible loss

    I_k(t) = sum_i lambda_i / ((1 - t)^2 + t^2 lambda_i)          (Eq. 4)
    I_k    = int_0^1 I_k(t) dt = (pi / 2) sum_i sqrt(lambda_i)     (Eq. 5)

and the reported VIV is the per-dimension mean ``(pi/2) mean_i sqrt(lambda_i)`` averaged
over classes (§2.3). Sigma_k is the Kronecker model ``Sigma_C (x) Sigma_S`` (Eq. 3) fitted by
the flip-flop estimator of §2.4 on per-channel-standardised latents (§1.5).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from tqdm.auto import tqdm

from latentbench.metrics.normalization import Stats, prepare, resolve_stats

HALF_PI = math.pi / 2
FLIPFLOP_ITERATIONS = 5  # spec §2.4 / reference metrics/viv.py
FLIPFLOP_EPS = 1e-12  # whitening eps of the reference; no other regularisation
T_CLIP = 1e-4  # spec §2.5 step 1: t clipped to [1e-4, 1 - 1e-4]
# Spec §2.4 "Compute": the class loop's large products in fp32, factorisations in fp64. The
# last flip-flop iteration runs in fp64 whatever this is, which keeps VIV within ~1e-8
# relative of the all-fp64 estimate on ordinary and exactly singular factors (~1e-4 on
# extremely smooth, numerically singular ones) at ~2/3 of its cost
# (bench/bench_latent_metrics.py); pass torch.float64 for all-fp64 iterations.
COMPUTE_DTYPE = torch.float32


def _eigen_tensor(eigenvalues: torch.Tensor | list[float], name: str = "eigenvalues") -> torch.Tensor:
    lam = torch.as_tensor(eigenvalues, dtype=torch.float64)
    if lam.numel() == 0:
        raise ValueError(f"{name} is empty")
    if not torch.isfinite(lam).all():
        raise ValueError(f"{name} contains NaN or inf")
    return lam


def viv_from_eigenvalues(eigenvalues: torch.Tensor | list[float]) -> float:
    """Per-dimension VIV ``(pi/2) * mean(sqrt(max(lambda, 0)))`` (spec §2.3, Eq. 5 / d)."""
    lam = _eigen_tensor(eigenvalues).reshape(-1)
    return float(HALF_PI * lam.clamp_min(0).sqrt().mean())


def irreducible_variance(eigenvalues: torch.Tensor | list[float]) -> float:
    """Eq. 5 sum form ``I_k = (pi/2) * sum_i sqrt(max(lambda_i, 0))`` (spec §2.2)."""
    lam = _eigen_tensor(eigenvalues).reshape(-1)
    return float(HALF_PI * lam.clamp_min(0).sqrt().sum())


def irreducible_variance_eq6(eigenvalues: torch.Tensor | list[float]) -> float:
    """Eq. 6 ``I_k = (pi/2) sqrt(d (tau - d A))``, tau = tr Sigma, A = population Var_i(sqrt(lambda_i)).

    Equal to Eq. 5 because ``sum sqrt(lambda) = d mean(sqrt(lambda))`` and
    ``mean(sqrt(lambda))^2 = tau/d - A`` (spec §2.2); kept to expose the trace/spread split.
    """
    lam = _eigen_tensor(eigenvalues).reshape(-1).clamp_min(0)
    d = lam.numel()
    tau = lam.sum()
    spread = lam.sqrt().var(unbiased=False)
    return float(HALF_PI * torch.sqrt((d * (tau - d * spread)).clamp_min(0)))


def irreducible_variance_at(eigenvalues: torch.Tensor | list[float], t: torch.Tensor | float) -> torch.Tensor:
    """Eq. 4 ``I(t) = sum_i lambda_i / ((1-t)^2 + t^2 lambda_i)`` over the last axis.

    ``eigenvalues`` is [..., d]; ``t`` a scalar or [T] tensor; returns [..., T] (or [...]
    for a scalar t). At t = 1 a zero eigenvalue gives 1 (the noise is then unobserved),
    the limit the formula takes for every lambda > 0.
    """
    lam = _eigen_tensor(eigenvalues).clamp_min(0)
    t_ = torch.as_tensor(t, dtype=torch.float64, device=lam.device)
    if ((t_ < 0) | (t_ > 1)).any():
        raise ValueError("t must lie in [0, 1]")
    scalar = t_.ndim == 0
    tt = t_.reshape(-1)
    lam_ = lam.unsqueeze(-1)
    den = (1 - tt) ** 2 + tt**2 * lam_
    # Var(v | x_t) per eigen-direction = lambda / ((1-t)^2 + t^2 lambda)  (spec §2.2)
    per_dir = torch.where(den > 0, lam_ / den.clamp_min(torch.finfo(torch.float64).tiny), torch.ones_like(den))
    out = per_dir.sum(dim=-2)
    return out.squeeze(-1) if scalar else out


# --------------------------------------------------------------------------- flip-flop (§2.4)


@dataclass(frozen=True)
class KroneckerCovariance:
    """Trace-matched Kronecker covariance ``scale * (Sigma_C (x) Sigma_S)`` of one class.

    ``eig_c`` [C] and ``eig_s`` [S] are the factor eigenvalues of the final flip-flop step
    (float64, clamped at 0); ``basis_c`` [C, C] / ``basis_s`` [S, S] their eigenvectors as
    columns (only when requested). With the (C, H, W).reshape(-1) ordering the full
    eigenvector of (c, s) is ``basis_c[:, c] (x) basis_s[:, s]``.
    """

    eig_c: torch.Tensor
    eig_s: torch.Tensor
    scale: float
    basis_c: torch.Tensor | None = None
    basis_s: torch.Tensor | None = None

    @property
    def eigenvalues(self) -> torch.Tensor:
        """All C*S eigenvalues ``scale * eig_c[c] * eig_s[s]``, C-major (spec §2.4 step 4-5)."""
        return (self.scale * torch.outer(self.eig_c, self.eig_s)).reshape(-1)


def _whitening(cov: torch.Tensor, eps: float) -> torch.Tensor:
    """A matrix W with ``W W^T = (cov + eps I)^{-1}`` (float64).

    The flip-flop updates depend on the whitening only through ``W W^T``, so the reference's
    SVD form ``V diag(1/sqrt(eig + eps))`` and this Cholesky form ``L^{-T}`` give identical
    factors; Cholesky is ~10x cheaper than an eigendecomposition at S = 256. When the
    Cholesky fails (a numerically indefinite, rank-deficient factor) the eigen form is used.
    """
    n = cov.shape[0]
    eye = torch.eye(n, dtype=cov.dtype, device=cov.device)
    chol, info = torch.linalg.cholesky_ex(cov + eps * eye)
    if int(info) == 0:
        return torch.linalg.solve_triangular(chol, eye, upper=False).T
    evals, evecs = torch.linalg.eigh(cov)
    return evecs / torch.sqrt(evals.clamp_min(0) + eps)


def _sym(m: torch.Tensor) -> torch.Tensor:
    return 0.5 * (m + m.T)


def flipflop_covariance(
    z: torch.Tensor,
    iterations: int = FLIPFLOP_ITERATIONS,
    eps: float = FLIPFLOP_EPS,
    with_bases: bool = False,
    compute_dtype: torch.dtype = COMPUTE_DTYPE,
) -> KroneckerCovariance:
    """Kronecker flip-flop estimate of one class's covariance from ``z`` [N, C, S] (spec §2.4).

    Dutilleul's MLE in whitening form with the reference's conventions: centre over N;
    start from ``W_S = I``; each iteration sets
    ``Sigma_C = sum_n X_n W_S W_S^T X_n^T / (N S - 1)`` then
    ``Sigma_S = sum_n X_n^T W_C W_C^T X_n / (N C - 1)`` with ``W W^T = (Sigma + eps I)^{-1}``;
    finally the scale of the product is matched to the population total variance.
    ``compute_dtype`` sets the dtype of the large products of all but the last iteration
    (default float32, see COMPUTE_DTYPE); the last iteration, factorisations, centring and
    the trace always run in float64.
    """
    if not isinstance(z, torch.Tensor) or z.ndim != 3:
        raise ValueError(f"z must be a tensor [N, C, S], got {getattr(z, 'shape', type(z).__name__)}")
    n, c, s = z.shape
    if n < 2:
        raise ValueError(f"z needs at least 2 samples, got N={n}")
    if n * s < c or n * c < s:
        raise ValueError(
            f"flip-flop needs N*S >= C and N*C >= S (spec §2.4), got N={n}, C={c}, S={s}"
        )
    if iterations < 1:
        raise ValueError(f"iterations must be >= 1, got {iterations}")
    x64 = z.to(torch.float64)
    x64 = x64 - x64.mean(dim=0, keepdim=True)
    # Step 1: total variance with the population (N) divisor (spec §2.4, pitfall ii).
    v_total = float((x64**2).sum() / n)
    w_s: torch.Tensor | None = None  # W_S = I at the start
    for it in range(iterations):
        # The last iteration always runs in float64: a fixed-point step from a float32 iterate
        # restores float64 accuracy, also where a factor is singular and float32 round-off
        # would otherwise be whitened up to unit variance.
        dtype = compute_dtype if it + 1 < iterations else torch.float64
        x = x64.to(dtype)
        # Channel step: N*S rows of C-vectors of Y_n = X_n W_S.
        y = x if w_s is None else (x.reshape(n * c, s) @ w_s.to(dtype)).reshape(n, c, s)
        y = y.transpose(0, 1).reshape(c, n * s)
        cov_c = _sym((y @ y.T).to(torch.float64)) / (n * s - 1)
        w_c = _whitening(cov_c, eps).to(dtype)
        # Spatial step: N*C rows of S-vectors of W_C^T X_n.
        b = (w_c.T @ x).reshape(n * c, s)
        cov_s = _sym((b.T @ b).to(torch.float64)) / (n * c - 1)
        if it + 1 < iterations:
            w_s = _whitening(cov_s, eps)
    if with_bases:
        eig_c, basis_c = torch.linalg.eigh(cov_c)
        eig_s, basis_s = torch.linalg.eigh(cov_s)
    else:
        eig_c, eig_s = torch.linalg.eigvalsh(cov_c), torch.linalg.eigvalsh(cov_s)
        basis_c = basis_s = None
    eig_c, eig_s = eig_c.clamp_min(0), eig_s.clamp_min(0)
    # Step 5: resolve the (a Sigma_S, Sigma_C / a) ambiguity by trace matching.
    prod_trace = float(eig_c.sum() * eig_s.sum())
    scale = v_total / prod_trace if prod_trace > 0 else 0.0
    return KroneckerCovariance(eig_c=eig_c, eig_s=eig_s, scale=scale, basis_c=basis_c, basis_s=basis_s)


def flipflop_eigenvalues(
    z: torch.Tensor,
    iterations: int = FLIPFLOP_ITERATIONS,
    eps: float = FLIPFLOP_EPS,
    compute_dtype: torch.dtype = COMPUTE_DTYPE,
) -> torch.Tensor:
    """The C*S trace-matched Kronecker eigenvalues of one class ``z`` [N, C, S] (spec §2.4)."""
    return flipflop_covariance(z, iterations=iterations, eps=eps, compute_dtype=compute_dtype).eigenvalues


# --------------------------------------------------------------------------- per-class spectra


@dataclass
class ClassSpectra:
    """Per-class Kronecker spectra of a latent set, the input of every VIV variant.

    ``eigenvalues`` [L, C*S] are trace-matched (float64). ``means`` [L, C, S], ``bases_c``
    [L, C, C] and ``bases_s`` [L, S, S] are filled when kept (needed by ``viv_marginal``).
    ``skipped`` maps a skipped label to the reason.
    """

    classes: torch.Tensor
    counts: torch.Tensor
    eigenvalues: torch.Tensor
    shape: tuple[int, int, int]
    means: torch.Tensor | None = None
    bases_c: torch.Tensor | None = None
    bases_s: torch.Tensor | None = None
    skipped: dict[int, str] = field(default_factory=dict)

    def viv_per_class(self) -> torch.Tensor:
        """``VIV_k = (pi/2) mean_i sqrt(lambda_k,i)`` [L] (spec §2.3)."""
        return HALF_PI * self.eigenvalues.clamp_min(0).sqrt().mean(dim=1)

    def irreducible_per_class(self) -> torch.Tensor:
        """Eq. 5 sum form ``I_k = (pi/2) sum_i sqrt(lambda_k,i)`` [L] (spec §2.3, exported for completeness)."""
        return HALF_PI * self.eigenvalues.clamp_min(0).sqrt().sum(dim=1)

    @property
    def viv(self) -> float:
        """Class-averaged VIV (spec §2.3)."""
        return float(self.viv_per_class().mean())


def class_spectra(
    latents: torch.Tensor,
    labels: torch.Tensor,
    *,
    stats: Stats | None = None,
    standardize: bool = True,
    min_class_size: int = 2,
    iterations: int = FLIPFLOP_ITERATIONS,
    eps: float = FLIPFLOP_EPS,
    keep_bases: bool = False,
    compute_dtype: torch.dtype = COMPUTE_DTYPE,
    progress: bool = False,
) -> ClassSpectra:
    """Flip-flop spectra of every class of ``latents`` [N, C, H, W] with ``labels`` [N].

    Latents are standardised per channel (§1.5) with ``stats`` or, when None, the set's own
    statistics; pass ``standardize=False`` for latents that already are. Classes with fewer
    than ``min_class_size`` samples (reference: 2) or too few for the Kronecker estimator
    (N*C < S or N*S < C) are skipped and listed in ``skipped``. The set is read one class
    at a time, so a memory-mapped cache is never copied whole.
    """
    if not isinstance(latents, torch.Tensor) or latents.ndim != 4:
        raise ValueError(f"latents must be a tensor [N, C, H, W], got {getattr(latents, 'shape', None)}")
    labels = torch.as_tensor(labels)
    if labels.ndim != 1 or labels.shape[0] != latents.shape[0]:
        raise ValueError(f"labels must have shape [{latents.shape[0]}], got {tuple(labels.shape)}")
    if min_class_size < 2:
        raise ValueError(f"min_class_size must be >= 2, got {min_class_size}")
    n, c, h, w = latents.shape
    s = h * w
    norm = resolve_stats(latents, stats, standardize)
    labels_cpu = labels.cpu()
    order = torch.argsort(labels_cpu, stable=True)
    uniq, counts = torch.unique_consecutive(labels_cpu[order], return_counts=True)
    starts = torch.cumsum(counts, 0) - counts
    kept_classes, kept_counts, eigs, means, bases_c, bases_s = [], [], [], [], [], []
    skipped: dict[int, str] = {}
    for label, start, count in tqdm(
        list(zip(uniq.tolist(), starts.tolist(), counts.tolist())), desc="VIV classes", disable=not progress
    ):
        if count < min_class_size:
            skipped[label] = f"{count} samples < min_class_size {min_class_size}"
            continue
        if count * s < c or count * c < s:
            skipped[label] = f"{count} samples too few for the Kronecker estimator (C={c}, S={s})"
            continue
        idx = order[start : start + count].to(latents.device)
        z = prepare(latents[idx], norm).reshape(count, c, s)
        cov = flipflop_covariance(z, iterations=iterations, eps=eps, with_bases=keep_bases, compute_dtype=compute_dtype)
        kept_classes.append(label)
        kept_counts.append(count)
        eigs.append(cov.eigenvalues.cpu())
        if keep_bases:
            means.append(z.mean(dim=0).cpu())
            bases_c.append(cov.basis_c.cpu())
            bases_s.append(cov.basis_s.cpu())
    if not kept_classes:
        raise ValueError(f"labels: no class has enough samples for VIV (skipped: {skipped})")
    return ClassSpectra(
        classes=torch.tensor(kept_classes),
        counts=torch.tensor(kept_counts),
        eigenvalues=torch.stack(eigs),
        shape=(c, h, w),
        means=torch.stack(means) if keep_bases else None,
        bases_c=torch.stack(bases_c) if keep_bases else None,
        bases_s=torch.stack(bases_s) if keep_bases else None,
        skipped=skipped,
    )


def viv(
    latents: torch.Tensor,
    labels: torch.Tensor,
    *,
    stats: Stats | None = None,
    standardize: bool = True,
    min_class_size: int = 2,
    iterations: int = FLIPFLOP_ITERATIONS,
    eps: float = FLIPFLOP_EPS,
    compute_dtype: torch.dtype = COMPUTE_DTYPE,
) -> float:
    """Class-averaged VIV of per-channel-standardised latents [N, C, H, W] (spec §2.3-2.4)."""
    return class_spectra(
        latents,
        labels,
        stats=stats,
        standardize=standardize,
        min_class_size=min_class_size,
        iterations=iterations,
        eps=eps,
        compute_dtype=compute_dtype,
    ).viv


def viv_curve(spectra: ClassSpectra, times: torch.Tensor | list[float]) -> torch.Tensor:
    """``VIV(t) = (1/L) sum_k (1/d) sum_i lambda/((1-t)^2 + t^2 lambda)`` at each time (spec §2.6)."""
    d = spectra.eigenvalues.shape[1]
    return irreducible_variance_at(spectra.eigenvalues, torch.as_tensor(times, dtype=torch.float64).reshape(-1)).mean(
        dim=0
    ) / d


# --------------------------------------------------------------------------- marginal VIV (§2.5)


def _to_basis(y: torch.Tensor, basis_c: torch.Tensor, basis_s: torch.Tensor) -> torch.Tensor:
    """``U^T vec(Y)`` in Kronecker form: ``V_C^T Y V_S`` for Y [B, J, C, S], bases [J, ., .]."""
    return torch.einsum("jcd,bjcs,jsr->bjdr", basis_c, y, basis_s)


def _from_basis(coef: torch.Tensor, basis_c: torch.Tensor, basis_s: torch.Tensor) -> torch.Tensor:
    """``U vec(coef)`` in Kronecker form: ``V_C coef V_S^T``."""
    return torch.einsum("jcd,bjdr,jsr->bjcs", basis_c, coef, basis_s)


def viv_marginal(
    spectra: ClassSpectra,
    n_samples: int = 2000,
    *,
    batch_size: int = 64,
    component_chunk: int = 16,
    t: float | None = None,
    seed: int = 0,
) -> dict[str, float]:
    """Monte-Carlo VIV of the class mixture (``VIV_marg``, spec §2.5), per dimension.

    ``x1 ~ sum_k pi_k N(mu_k, Sigma_k)`` with ``pi_k = N_k / N`` and the Kronecker Sigma_k of
    ``spectra`` (built with ``keep_bases=True``). Each draw computes the exact mixture
    posterior mean ``v* = sum_j w_j v*_j`` and returns the naive estimate ``||v - v*||^2 / d``
    and the Rao-Blackwellised ``sum_j w_j (I_j(t) + ||v*_j - v*||^2) / d``, averaged over
    draws with their standard errors. ``t=None`` draws t ~ U(0, 1); a float fixes t (both
    are clipped to [1e-4, 1 - 1e-4]). Components are streamed with a running log-sum-exp, so
    memory is ``batch_size * component_chunk * d``.
    """
    if spectra.means is None or spectra.bases_c is None or spectra.bases_s is None:
        raise ValueError("spectra: viv_marginal needs class_spectra(..., keep_bases=True)")
    if n_samples < 2:
        raise ValueError(f"n_samples must be >= 2, got {n_samples}")
    if t is not None and not 0.0 <= t <= 1.0:
        raise ValueError(f"t must lie in [0, 1], got {t}")
    f64 = torch.float64
    c, h, w = spectra.shape
    s, d = h * w, c * h * w
    device = spectra.means.device
    means = spectra.means.to(f64).reshape(-1, c, s)
    bases_c, bases_s = spectra.bases_c.to(f64), spectra.bases_s.to(f64)
    lam = spectra.eigenvalues.to(f64).clamp_min(0).reshape(-1, c, s)
    n_comp = lam.shape[0]
    log_pi = torch.log(spectra.counts.to(f64) / spectra.counts.sum()).to(device)
    gen = torch.Generator(device=device).manual_seed(seed)
    naive_all, rb_all = [], []
    for start in range(0, n_samples, batch_size):
        b = min(batch_size, n_samples - start)
        k = torch.multinomial(log_pi.exp(), b, replacement=True, generator=gen)
        tt = torch.full((b,), float(t), dtype=f64, device=device) if t is not None else torch.rand(
            b, dtype=f64, device=device, generator=gen
        )
        tt = tt.clamp(T_CLIP, 1 - T_CLIP)
        eps1 = torch.randn(b, c, s, dtype=f64, device=device, generator=gen)
        x1 = means[k] + torch.einsum("bcd,bdr,bsr->bcs", bases_c[k], lam[k].sqrt() * eps1, bases_s[k])
        x0 = torch.randn(b, c, s, dtype=f64, device=device, generator=gen)
        t4 = tt[:, None, None, None]
        xt = tt[:, None, None] * x1 + (1 - tt[:, None, None]) * x0  # spec §1.1 / Eq. 1
        v = x1 - x0
        run_max = torch.full((b,), -math.inf, dtype=f64, device=device)
        s0 = torch.zeros(b, dtype=f64, device=device)
        s1 = torch.zeros(b, c, s, dtype=f64, device=device)
        s2 = torch.zeros(b, dtype=f64, device=device)
        for j0 in range(0, n_comp, component_chunk):
            j = slice(j0, min(j0 + component_chunk, n_comp))
            lam_j = lam[j][None]  # [1, J, C, S]
            y = _to_basis(xt[:, None] - t4 * means[j][None], bases_c[j], bases_s[j])
            var = t4**2 * lam_j + (1 - t4) ** 2  # s^2_{j,i} = t^2 lambda + (1-t)^2
            logw = log_pi[j][None] - 0.5 * (y**2 / var + torch.log(2 * math.pi * var)).sum(dim=(-2, -1))
            # E[v | x_t, j] = mu_j + U_j [((t lambda - (1-t)) / s^2) * y]   (spec §2.5 step 3)
            vstar_j = means[j][None] + _from_basis((t4 * lam_j - (1 - t4)) / var * y, bases_c[j], bases_s[j])
            i_t = (lam_j / var).sum(dim=(-2, -1))  # Eq. 4 per component
            new_max = torch.maximum(run_max, logw.max(dim=1).values)
            decay = torch.exp(run_max - new_max)
            wj = torch.exp(logw - new_max[:, None])
            s0 = s0 * decay + wj.sum(dim=1)
            s1 = s1 * decay[:, None, None] + torch.einsum("bj,bjcs->bcs", wj, vstar_j)
            s2 = s2 * decay + (wj * (i_t + (vstar_j**2).sum(dim=(-2, -1)))).sum(dim=1)
            run_max = new_max
        vstar = s1 / s0[:, None, None]
        naive_all.append(((v - vstar) ** 2).sum(dim=(-2, -1)) / d)
        # sum_j w_j ||v*_j - v*||^2 = sum_j w_j ||v*_j||^2 - ||v*||^2 since sum_j w_j v*_j = v*.
        rb_all.append((s2 / s0 - (vstar**2).sum(dim=(-2, -1))) / d)
    naive = torch.cat(naive_all)
    rb = torch.cat(rb_all)
    root_n = math.sqrt(n_samples)
    return {
        "naive": float(naive.mean()),
        "naive_se": float(naive.std() / root_n),
        "rao_blackwell": float(rb.mean()),
        "rao_blackwell_se": float(rb.std() / root_n),
        "class_average": spectra.viv,
        "n_samples": n_samples,
    }
