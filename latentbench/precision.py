"""Reduced precision by measurement: where bf16 is used, and why (issue 13 item 9).

A bf16 path is taken only where the device has bf16 arithmetic and, on CPU, a short timed
probe shows it faster. A bf16 k-NN shortlist ran at 0.57x the fp32 time on one CPU and at
8.5x on an AVX2 CPU without bf16 instructions (emulated bf16 GEMMs), so the capability
alone is not enough on CPU. Choices are cached per process and logged once with their reason
(the job's log, logger ``latentbench.precision``).

- ``choose_knn_precision(device)``: "fp32" or "bf16-shortlist" for
  ``latentbench.metrics.neighbors.nearest_neighbors`` (the shortlist is re-ranked exactly in
  fp32, so neighbours stay those of the fp32 search).
- ``autocast_dtype(device)``: bf16 for CUDA autocast (feature extraction, training) where the
  GPU has native bf16, else None (fp32). On CPU no autocast path exists in latentbench.
"""

from __future__ import annotations

import logging
import time
from functools import lru_cache

import torch

log = logging.getLogger(__name__)

KNN_PRECISIONS = ("fp32", "bf16-shortlist")
# CPU probe: a k-NN search of this size per precision, each timed twice (~0.1 s in all on a
# 2-core AVX-512 machine; the probe stops early if the first fp32 run alone exceeds the budget).
PROBE_SHAPE = dict(n_q=256, n_r=4096, d=512, k=10)
PROBE_BUDGET_S = 0.3


def bf16_hardware(device: str | torch.device) -> tuple[bool, str]:
    """(has native bf16 arithmetic, reason) for ``device``.

    CUDA: compute capability >= 8.0 (``torch.cuda.is_bf16_supported`` without emulation).
    CPU: AVX512-BF16 or AMX tiles (``torch.cpu._is_avx512_bf16_supported`` /
    ``_is_amx_tile_supported``); ``torch.backends.cpu.get_cpu_capability()`` is reported too.
    """
    device = torch.device(device)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            return False, "CUDA not available"
        index = device.index if device.index is not None else torch.cuda.current_device()
        major, minor = torch.cuda.get_device_capability(index)
        ok = major >= 8
        return ok, f"{torch.cuda.get_device_name(index)} sm_{major}{minor} ({'native' if ok else 'no'} bf16)"
    if device.type == "cpu":
        capability = torch.backends.cpu.get_cpu_capability()
        avx512_bf16 = bool(getattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)())
        amx = bool(getattr(torch.cpu, "_is_amx_tile_supported", lambda: False)())
        ok = avx512_bf16 or amx
        return ok, f"CPU capability {capability}, AVX512-BF16 {avx512_bf16}, AMX {amx}"
    return False, f"device type {device.type!r}: no bf16 path"


def choose_knn_precision(device: str | torch.device) -> str:
    """"bf16-shortlist" where it is faster on ``device``, else "fp32" (cached, logged once)."""
    device = torch.device(device)
    if device.type == "cuda" and device.index is None and torch.cuda.is_available():
        device = torch.device("cuda", torch.cuda.current_device())
    return _choose_knn_precision(device)[0]


def knn_precision_reason(device: str | torch.device) -> str:
    """The logged reason behind ``choose_knn_precision(device)`` (for benchmarks' output)."""
    device = torch.device(device)
    if device.type == "cuda" and device.index is None and torch.cuda.is_available():
        device = torch.device("cuda", torch.cuda.current_device())
    return _choose_knn_precision(device)[1]


@lru_cache(maxsize=None)
def _choose_knn_precision(device: torch.device) -> tuple[str, str]:
    ok, hardware = bf16_hardware(device)
    if not ok:
        choice, reason = "fp32", f"{hardware}: no native bf16"
    elif device.type == "cuda":
        choice, reason = "bf16-shortlist", f"{hardware}: bf16 tensor cores"
    else:
        t_fp32, t_bf16 = probe_knn(device)
        faster = t_bf16 < t_fp32
        choice = "bf16-shortlist" if faster else "fp32"
        reason = (f"{hardware}; probe {PROBE_SHAPE['n_q']}x{PROBE_SHAPE['n_r']}x{PROBE_SHAPE['d']}: "
                  f"fp32 {t_fp32 * 1e3:.1f} ms, bf16-shortlist {t_bf16 * 1e3:.1f} ms")
    log.info("k-NN precision on %s: %s (%s)", device, choice, reason)
    return choice, reason


def probe_knn(device: torch.device) -> tuple[float, float]:
    """(fp32 seconds, bf16-shortlist seconds): best of two searches each on random rows.

    Returns (t, inf) when the first fp32 search alone takes over half of ``PROBE_BUDGET_S``
    (a slow or loaded machine: keep fp32 rather than spend more time probing).
    """
    from latentbench.metrics.neighbors import nearest_neighbors

    g = torch.Generator().manual_seed(0)
    s = PROBE_SHAPE
    r = torch.randn(s["n_r"], s["d"], generator=g).to(device)
    q = torch.randn(s["n_q"], s["d"], generator=g).to(device)
    best = {"fp32": float("inf"), "bf16": float("inf")}
    for attempt in range(2):
        for precision in best:
            start = time.perf_counter()
            nearest_neighbors(q, r, k=s["k"], precision=precision)
            best[precision] = min(best[precision], time.perf_counter() - start)
            if attempt == 0 and precision == "fp32" and best["fp32"] > PROBE_BUDGET_S / 2:
                return best["fp32"], float("inf")
    return best["fp32"], best["bf16"]


def autocast_dtype(device: str | torch.device) -> torch.dtype | None:
    """bf16 for CUDA autocast where the GPU has native bf16; None (stay fp32) otherwise."""
    device = torch.device(device)
    if device.type != "cuda":
        return None
    if device.index is None and torch.cuda.is_available():
        device = torch.device("cuda", torch.cuda.current_device())
    return _autocast_dtype(device)


@lru_cache(maxsize=None)
def _autocast_dtype(device: torch.device) -> torch.dtype | None:
    ok, hardware = bf16_hardware(device)
    dtype = torch.bfloat16 if ok else None
    log.info("autocast on %s: %s (%s)", device, "bf16" if ok else "off (fp32)", hardware)
    return dtype
