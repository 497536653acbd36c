"""Exact k-nearest neighbours over flattened rows, streaming the references in chunks.

The one nearest-neighbour routine of latentbench (iFID, spec metrics-ifid-seesaw §3.2 steps
2-3 and §3.5; LNC reuses it). References may be a torch tensor, a numpy array or a numpy
memmap larger than memory: they are read ``chunk_size`` rows at a time, each chunk goes
through one GEMM against a block of queries, and the per-chunk top-k is merged into a
running top-k. Peak extra memory is O(chunk_size * D + query_block * chunk_size + Nq * k),
independent of the number of references (precision="bf16" also keeps one norm, 4 bytes,
per reference row); the queries are held on the device in full.

Ordering is exact and deterministic: rows are ranked by (cost, reference index), so ties
go to the lower index regardless of chunking.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator

import numpy as np
import torch

from latentbench.precision import choose_knn_precision

ArrayLike = torch.Tensor | np.ndarray

METRICS = ("l2", "cosine")
PRECISIONS = ("auto", "fp32", "bf16")
BACKENDS = ("torch", "faiss")

# Spec §3.2 step 2: cosine cost -(r.q) / (||r|| ||q|| + 1e-8) (evalvae.py).
COSINE_EPS = 1e-8
# Default streaming budget: ~256 MiB per reference chunk, at most 8192 rows per chunk.
CHUNK_BYTES = 256 * 2**20
MAX_CHUNK_ROWS = 8192
# Default query block: the score matrix query_block x chunk_size holds <= 2**25 entries.
SCORE_ENTRIES = 2**25


def nearest_neighbors(
    queries: ArrayLike,
    references: ArrayLike,
    k: int = 1,
    metric: str = "l2",
    exclude_self: bool = False,
    chunk_size: int | None = None,
    device: str | torch.device | None = None,
    precision: str = "auto",
    backend: str = "torch",
    query_block: int | None = None,
    shortlist: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact top-k neighbours of every query row among the reference rows.

    Rows are flattened: ``queries`` (Nq, ...) and ``references`` (Nr, ...) with the same
    number of elements per row. ``metric="l2"`` returns squared L2 distances ascending;
    ``metric="cosine"`` returns (r.q) / (||r|| ||q|| + 1e-8) descending. ``exclude_self``
    drops reference i for query i (queries and references must then be the same set).
    Costs accumulate in float32 (float64 when either input is float64) with TF32 off.
    ``precision="bf16"`` shortlists ``shortlist`` candidates (default k + max(k, 8)) with a
    bf16 GEMM and re-ranks them exactly in the accumulation dtype; ``precision="auto"`` (the
    default) takes bf16 only where ``latentbench.precision.choose_knn_precision`` measured it
    faster on the compute device (native bf16 on CUDA; on CPU AVX512-BF16/AMX and a probe); ``backend="faiss"``
    searches each chunk with a faiss flat index (float32; GPU index when faiss has GPUs;
    ``precision`` does not apply). ``chunk_size`` defaults to ~256 MiB of float32 rows (at
    most 8192); ``query_block`` to 2**25 score entries per GEMM. ``device`` defaults to the
    queries' device (CPU for numpy input).
    Returns (scores [Nq, k], indices [Nq, k] int64) on the compute device.
    """
    n_q, dim = _row_shape("queries", queries)
    n_r, dim_r = _row_shape("references", references)
    if dim != dim_r:
        raise ValueError(f"references: rows have {dim_r} elements, queries have {dim}")
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if exclude_self and n_q != n_r:
        raise ValueError(
            f"exclude_self: queries ({n_q}) and references ({n_r}) must be the same set"
        )
    available = n_r - int(exclude_self)
    if not isinstance(k, int) or isinstance(k, bool) or not 1 <= k <= available:
        raise ValueError(f"k must be an int in [1, {available}], got {k!r}")
    chunk_size = _positive("chunk_size", chunk_size, _auto_chunk(dim))
    query_block = _positive("query_block", query_block, max(1, SCORE_ENTRIES // chunk_size))
    device = _resolve_device(device, queries)
    dtype = torch.float64 if _is_float64(queries) or _is_float64(references) else torch.float32
    if precision == "auto" and backend == "torch":
        precision = "bf16" if choose_knn_precision(device) == "bf16-shortlist" else "fp32"

    with torch.no_grad(), _ieee_fp32():
        if backend == "faiss":
            costs, indices = _search_faiss(
                queries, references, k, metric, exclude_self, chunk_size, device
            )
        elif precision == "bf16":
            short = min(available, _positive("shortlist", shortlist, k + max(k, 8)))
            if short < k:
                raise ValueError(f"shortlist must be >= k ({k}), got {short}")
            costs, indices = _search_bf16(
                queries, references, k, short, metric, exclude_self, chunk_size,
                query_block, device, dtype,
            )
        else:
            costs, indices = _search_exact(
                queries, references, k, metric, exclude_self, chunk_size, query_block,
                device, dtype,
            )
    # Internal costs are minimised; cosine reports the similarity itself (descending).
    scores = costs.neg() if metric == "cosine" else costs
    return scores, indices


def gather_rows(
    array: ArrayLike,
    index: torch.Tensor,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """Rows ``array[index]`` as a tensor of shape index.shape + array.shape[1:].

    Works for torch tensors, numpy arrays and numpy memmaps (reads only the rows asked
    for). ``out``: optional flat scratch tensor reused for a contiguous tensor ``array``
    of its dtype and device (repeated large gathers then skip fresh allocations).
    """
    index = torch.as_tensor(index)
    flat = index.reshape(-1).long()
    if isinstance(array, np.ndarray):
        rows = torch.from_numpy(np.asarray(array[flat.cpu().numpy()]))
    elif isinstance(array, torch.Tensor):
        flat = flat.to(array.device)
        reusable = (
            out is not None and array.is_contiguous()
            and (out.dtype, out.device) == (array.dtype, array.device)
        )
        if reusable:
            source = array.view(array.shape[0], -1)
            view = _buffer_view(out, (flat.numel(), source.shape[1]))
            rows = torch.index_select(source, 0, flat, out=view)
        else:
            rows = array.index_select(0, flat)
    else:
        raise ValueError(f"array must be a torch.Tensor or numpy array, got {type(array).__name__}")
    rows = rows.to(device=device if device is not None else rows.device, dtype=dtype)
    return rows.reshape(*index.shape, *array.shape[1:])


# ----------------------------------------------------------------------------- search loops


def _search_exact(
    queries: ArrayLike,
    references: ArrayLike,
    k: int,
    metric: str,
    exclude_self: bool,
    chunk_size: int,
    query_block: int,
    device: torch.device,
    dtype: torch.dtype,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact running top-k of the cost over reference chunks."""
    q, q_norm = _read_queries(queries, metric, device, dtype)
    costs, indices, _ = _stream_topk(
        q, q_norm, references, k, metric, exclude_self, chunk_size, query_block, False
    )
    if metric == "l2":
        # ||q - r||^2 = ||q||^2 + (||r||^2 - 2 q.r); the per-query term does not change ranks.
        costs = costs.add_(q_norm[:, None]).clamp_min_(0.0)
    return costs, indices


def _search_bf16(
    queries: ArrayLike,
    references: ArrayLike,
    k: int,
    short: int,
    metric: str,
    exclude_self: bool,
    chunk_size: int,
    query_block: int,
    device: torch.device,
    dtype: torch.dtype,
) -> tuple[torch.Tensor, torch.Tensor]:
    """bf16 GEMM shortlist of ``short`` candidates per query, then an exact re-rank to top-k."""
    q, q_norm = _read_queries(queries, metric, device, dtype)
    _, candidates, r_norms = _stream_topk(
        q, q_norm, references, short, metric, exclude_self, chunk_size, query_block, True
    )
    # Exact re-rank in query sub-blocks sized so that the gathered rows fit in one chunk.
    step = max(1, chunk_size // short)
    scratch = None
    if isinstance(references, torch.Tensor) and references.device == device:
        entries = min(step, q.shape[0]) * short * q.shape[1]
        scratch = torch.empty(entries, device=device, dtype=references.dtype)
    costs, indices = [], []
    for s0 in range(0, q.shape[0], step):
        cand = candidates[s0 : s0 + step]
        rows = gather_rows(references, cand, device, dtype, out=scratch).flatten(2)
        dots = torch.einsum("bsd,bd->bs", rows, q[s0 : s0 + step])
        r_norm = r_norms[cand]
        cost = _cost_from_dots(dots, q_norm[s0 : s0 + step, None], r_norm, metric, outer=False)
        cost, cand = _sort_by_cost_then_index(cost, cand)
        costs.append(cost[:, :k])
        indices.append(cand[:, :k])
    cost = torch.cat(costs)
    if metric == "l2":
        cost = (cost + q_norm[:, None]).clamp_min_(0.0)
    return cost, torch.cat(indices)


def _stream_topk(
    q: torch.Tensor,
    q_norm: torch.Tensor,
    references: ArrayLike,
    keep: int,
    metric: str,
    exclude_self: bool,
    chunk_size: int,
    query_block: int,
    low_precision: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """The ``keep`` smallest costs per query (l2 without the ||q||^2 term), streaming R.

    Returns (costs, indices, reference norms or None). ``low_precision``: bf16 GEMM; the
    exact reference norms are then kept (4 bytes per reference row) for the re-rank.
    Score matrices are written into buffers allocated once: fresh large allocations cost
    page faults on every chunk otherwise.
    """
    n_q, device, dtype = q.shape[0], q.device, q.dtype
    blocks = _blocks(n_q, query_block)
    best = [_empty_topk(b1 - b0, device, dtype) for b0, b1 in blocks]
    # The result, O(Nq * keep): a block's running list lives in its rows once it is full width
    # (after the first chunk in practice), so no concatenated copy of all of it is made at the end.
    costs = torch.empty((n_q, keep), device=device, dtype=dtype)
    indices = torch.empty((n_q, keep), device=device, dtype=torch.long)
    rows_max = min(chunk_size, _n_rows(references))
    entries = min(query_block, n_q) * rows_max
    scratch = torch.empty(entries, device=device, dtype=dtype)
    denom = torch.empty(entries, device=device, dtype=dtype) if metric == "cosine" else None
    q_low = q.to(torch.bfloat16) if low_precision else None
    dots_low = torch.empty(entries, device=device, dtype=torch.bfloat16) if low_precision else None
    norms = []
    for r0, r in _reference_chunks(references, chunk_size, device, dtype):
        r_norm = _checked_norms("references", r, r0, metric)
        r_low = r.to(torch.bfloat16) if low_precision else None
        if low_precision:
            norms.append(r_norm)
        for j, (b0, b1) in enumerate(blocks):
            shape = (b1 - b0, r.shape[0])
            out = _buffer_view(scratch, shape)
            if low_precision:
                dots = torch.mm(q_low[b0:b1], r_low.T, out=_buffer_view(dots_low, shape))
                if metric == "l2":  # ||r||^2 - 2 q.r, upcast to the accumulation dtype in one pass
                    cost = torch.add(r_norm, dots, alpha=-2.0, out=out)
                else:
                    cost = out.copy_(dots)
                    cost = _cost_from_dots(cost, q_norm[b0:b1], r_norm, metric, denom=denom)
            elif metric == "l2":
                # Spec §3.2 step 2: ||r||^2 + ||q||^2 - 2 r.q; ||q||^2 is added after the top-k.
                cost = torch.addmm(r_norm, q[b0:b1], r.T, beta=1.0, alpha=-2.0, out=out)
            else:
                dots = torch.mm(q[b0:b1], r.T, out=out)
                cost = _cost_from_dots(dots, q_norm[b0:b1], r_norm, metric, denom=denom)
            if exclude_self:
                _mask_self(cost, b0, r0)
            merged = _merge(*best[j], *_chunk_topk(cost, keep, r0), keep)
            if merged[0].shape[1] == keep:
                costs[b0:b1].copy_(merged[0])
                indices[b0:b1].copy_(merged[1])
                merged = costs[b0:b1], indices[b0:b1]
            best[j] = merged
    # keep <= the references available, so every block has filled its rows by now
    return costs, indices, torch.cat(norms) if low_precision else None


def _search_faiss(
    queries: ArrayLike,
    references: ArrayLike,
    k: int,
    metric: str,
    exclude_self: bool,
    chunk_size: int,
    device: torch.device,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-chunk faiss IndexFlatL2 / IndexFlatIP (on unit vectors), merged like the GEMM path."""
    import faiss  # faiss-cpu; faiss-gpu-cu12 in the gpu extra

    def prepared(rows: torch.Tensor) -> np.ndarray:
        if metric == "cosine":
            rows = rows / rows.norm(dim=1, keepdim=True).clamp_min(COSINE_EPS)
        return np.ascontiguousarray(rows.cpu().numpy())

    cpu = torch.device("cpu")
    q = _read_queries(queries, "l2", cpu, torch.float32)[0]
    n_q, dim = q.shape
    q = prepared(q)
    gpu = faiss.get_num_gpus() > 0 if hasattr(faiss, "get_num_gpus") else False
    resources = faiss.StandardGpuResources() if gpu else None
    best = _empty_topk(n_q, cpu, torch.float32)
    for r0, r in _reference_chunks(references, chunk_size, cpu, torch.float32):
        _checked_norms("references", r, r0, metric)
        index = faiss.IndexFlatL2(dim) if metric == "l2" else faiss.IndexFlatIP(dim)
        if gpu:
            index = faiss.index_cpu_to_gpu(resources, 0, index)
        index.add(prepared(r))
        # One extra result per query covers the dropped self-match.
        found, ids = index.search(q, min(k + int(exclude_self), r.shape[0]))
        cost = torch.from_numpy(found if metric == "l2" else -found)
        ids = torch.from_numpy(ids) + r0
        if exclude_self:
            cost[ids == torch.arange(n_q)[:, None]] = math.inf
        cost, ids = _sort_by_cost_then_index(cost, ids)
        best = _merge(*best, cost[:, :k], ids[:, :k], k)
    return best[0].to(device), best[1].to(device)


# ----------------------------------------------------------------------------- top-k pieces


def _cost_from_dots(
    dots: torch.Tensor,
    q_norm: torch.Tensor,
    r_norm: torch.Tensor,
    metric: str,
    outer: bool = True,
    denom: torch.Tensor | None = None,
) -> torch.Tensor:
    """Cost (smaller is nearer) from dot products, in place; norms are ||.||^2 for l2.

    ``outer``: dots is (Bq, Nr) against shared references; else (Bq, S) against per-query
    rows with r_norm (Bq, S). ``denom`` is an optional scratch buffer for the cosine path.
    """
    if metric == "l2":
        # Spec §3.2 step 2: ||r||^2 - 2 r.q (+ ||q||^2 added by the caller).
        return dots.mul_(-2.0).add_(r_norm[None, :] if outer else r_norm)
    # Spec §3.2 step 2: -(r.q) / (||r|| ||q|| + 1e-8).
    if outer:
        out = _buffer_view(denom, dots.shape) if denom is not None else None
        scale = torch.outer(q_norm, r_norm, out=out)
    else:
        scale = q_norm * r_norm
    return dots.div_(scale.add_(COSINE_EPS)).neg_()


def _row_norms(rows: torch.Tensor, metric: str) -> torch.Tensor:
    """||x||^2 per row for l2, ||x|| per row for cosine."""
    norms = torch.linalg.vector_norm(rows, dim=1)
    return norms.square_() if metric == "l2" else norms


def _checked_norms(name: str, rows: torch.Tensor, start: int, metric: str) -> torch.Tensor:
    """Row norms; a non-finite norm means NaN/inf (or float overflow) in the input rows."""
    norms = _row_norms(rows, metric)
    if not torch.isfinite(norms).all():
        bad = start + int((~torch.isfinite(norms)).nonzero()[0, 0])
        raise ValueError(f"{name}: row {bad} contains NaN or inf (or overflows {rows.dtype})")
    return norms


def _mask_self(cost: torch.Tensor, q0: int, r0: int) -> None:
    """Set cost[i - q0, i - r0] = inf for every global index i present in both ranges."""
    lo, hi = max(q0, r0), min(q0 + cost.shape[0], r0 + cost.shape[1])
    if lo < hi:
        same = torch.arange(lo, hi, device=cost.device)
        cost[same - q0, same - r0] = math.inf


def _chunk_topk(cost: torch.Tensor, k: int, offset: int) -> tuple[torch.Tensor, torch.Tensor]:
    """k smallest costs per row, ordered by (cost, column), ties won by the lower column."""
    kk = min(k, cost.shape[1])
    # One extra value shows whether a tie straddles the k-th place: torch.topk picks
    # arbitrary members of such a tie, so those (rare) rows are repaired from the full row.
    probe = min(kk + 1, cost.shape[1])
    values, cols = torch.topk(cost, probe, dim=1, largest=False, sorted=True)
    straddles = (values[:, kk - 1] == values[:, probe - 1]) if probe > kk else None
    values, cols = values[:, :kk], cols[:, :kk]
    if straddles is not None and straddles.any():
        rows = straddles.nonzero()[:, 0]
        sub, thr = cost[rows], values[rows, kk - 1 :]
        below, tied = sub < thr, sub == thr
        need = kk - below.sum(dim=1, keepdim=True)
        take = below | (tied & (tied.cumsum(dim=1) <= need))
        fixed = take.nonzero()[:, 1].view(rows.numel(), kk)
        cols[rows] = fixed
        values[rows] = sub.gather(1, fixed)
    return _sort_by_cost_then_index(values, cols + offset)


def _sort_by_cost_then_index(
    cost: torch.Tensor, index: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sort each row by index, then stably by cost: the (cost, index) order."""
    index, order = index.sort(dim=1)
    cost, order = cost.gather(1, order).sort(dim=1, stable=True)
    return cost, index.gather(1, order)


def _merge(
    cost_a: torch.Tensor,
    index_a: torch.Tensor,
    cost_b: torch.Tensor,
    index_b: torch.Tensor,
    k: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Merge two (cost, index)-sorted lists whose indices satisfy all(a) < all(b)."""
    cost, order = torch.cat([cost_a, cost_b], dim=1).sort(dim=1, stable=True)
    index = torch.cat([index_a, index_b], dim=1).gather(1, order[:, :k])
    return cost[:, :k], index


def _empty_topk(
    n: int, device: torch.device, dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor]:
    """An empty running top-k for n queries."""
    return (
        torch.empty(n, 0, device=device, dtype=dtype),
        torch.empty(n, 0, device=device, dtype=torch.long),
    )


# ----------------------------------------------------------------------------- input handling


def _read_queries(
    queries: ArrayLike, metric: str, device: torch.device, dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor]:
    """All query rows flattened on the device, with their checked norms."""
    q = next(_reference_chunks(queries, _n_rows(queries), device, dtype))[1]
    return q, _checked_norms("queries", q, 0, metric)


def _reference_chunks(
    array: ArrayLike, chunk_size: int, device: torch.device, dtype: torch.dtype
) -> Iterator[tuple[int, torch.Tensor]]:
    """(first row, rows flattened to (n, D)) of consecutive chunks, on the device.

    numpy input that torch cannot share (read-only memmap, other dtype, strided) is copied
    into one staging buffer reused for every chunk.
    """
    n = _n_rows(array)
    staging = None
    for r0 in range(0, n, chunk_size):
        r1 = min(n, r0 + chunk_size)
        part = array[r0:r1].reshape(r1 - r0, -1)
        if isinstance(part, np.ndarray):
            np_dtype = np.float64 if dtype == torch.float64 else np.float32
            shareable = part.flags.writeable and part.flags.c_contiguous and part.dtype == np_dtype
            if not shareable:
                if staging is None:
                    staging = np.empty((min(chunk_size, n), part.shape[1]), dtype=np_dtype)
                np.copyto(staging[: r1 - r0], part, casting="same_kind")
                part = staging[: r1 - r0]
            part = torch.from_numpy(part)
        yield r0, part.to(device=device, dtype=dtype)


def _row_shape(name: str, array: object) -> tuple[int, int]:
    """(rows, elements per row) of a floating tensor/array with at least two dims."""
    if not isinstance(array, (torch.Tensor, np.ndarray)):
        raise ValueError(
            f"{name} must be a torch.Tensor or numpy array, got {type(array).__name__}"
        )
    if array.ndim < 2:
        raise ValueError(f"{name} must have shape (N, ...), >= 2 dims; got {tuple(array.shape)}")
    floating = (
        array.is_floating_point()
        if isinstance(array, torch.Tensor)
        else np.issubdtype(array.dtype, np.floating)
    )
    if not floating:
        raise ValueError(f"{name} must hold floating-point values, got dtype {array.dtype}")
    n, dim = int(array.shape[0]), math.prod(int(s) for s in array.shape[1:])
    if n == 0 or dim == 0:
        raise ValueError(f"{name} is empty: shape {tuple(array.shape)}")
    return n, dim


def _n_rows(array: ArrayLike) -> int:
    return int(array.shape[0])


def _is_float64(array: ArrayLike) -> bool:
    if isinstance(array, torch.Tensor):
        return array.dtype == torch.float64
    return array.dtype == np.float64


def _auto_chunk(dim: int) -> int:
    """Reference rows per chunk: ~CHUNK_BYTES of float32, capped at MAX_CHUNK_ROWS."""
    return max(1, min(MAX_CHUNK_ROWS, CHUNK_BYTES // (4 * dim)))


def _positive(name: str, value: int | None, default: int) -> int:
    """value, or default when None; a positive int."""
    if value is None:
        return default
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return value


def _resolve_device(device: str | torch.device | None, queries: ArrayLike) -> torch.device:
    """The requested device, else the queries' device (CPU for numpy input)."""
    if device is not None:
        return torch.device(device)
    return queries.device if isinstance(queries, torch.Tensor) else torch.device("cpu")


def _blocks(n: int, size: int) -> list[tuple[int, int]]:
    return [(s, min(n, s + size)) for s in range(0, n, size)]


def _buffer_view(buffer: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    """A contiguous (rows, cols) view on the front of a flat scratch buffer."""
    return buffer[: shape[0] * shape[1]].view(shape)


@contextlib.contextmanager
def _ieee_fp32() -> Iterator[None]:
    """Full-precision float32 matmuls (TF32 off, spec §3.5) for the duration of a search."""
    previous = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("highest")
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(previous)
