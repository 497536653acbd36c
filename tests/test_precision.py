"""latentbench.precision: bf16 only where the device has it and (CPU) a probe measured it faster."""

from __future__ import annotations

import logging

import pytest
import torch

from latentbench import precision
from latentbench.metrics import neighbors
from latentbench.metrics.neighbors import nearest_neighbors


@pytest.fixture(autouse=True)
def _fresh_cache():
    precision._choose_knn_precision.cache_clear()
    precision._autocast_dtype.cache_clear()
    yield
    precision._choose_knn_precision.cache_clear()
    precision._autocast_dtype.cache_clear()


def _fake(monkeypatch, hardware: bool, t_fp32: float = 1.0, t_bf16: float = 0.5) -> list[int]:
    calls = []
    monkeypatch.setattr(precision, "bf16_hardware", lambda device: (hardware, "fake CPU"))

    def probe(device):
        calls.append(1)
        return t_fp32, t_bf16

    monkeypatch.setattr(precision, "probe_knn", probe)
    return calls


def test_no_bf16_hardware_means_fp32_without_probing(monkeypatch):
    calls = _fake(monkeypatch, hardware=False)
    assert precision.choose_knn_precision("cpu") == "fp32"
    assert calls == []  # AVX2-only machines never run the bf16 path (8.5x slower there)


@pytest.mark.parametrize(("t_bf16", "expected"), [(0.5, "bf16-shortlist"), (1.5, "fp32"), (float("inf"), "fp32")])
def test_cpu_choice_follows_the_probe(monkeypatch, t_bf16, expected):
    _fake(monkeypatch, hardware=True, t_fp32=1.0, t_bf16=t_bf16)
    assert precision.choose_knn_precision("cpu") == expected


def test_choice_is_cached_and_logged_once(monkeypatch, caplog):
    calls = _fake(monkeypatch, hardware=True)
    with caplog.at_level(logging.INFO, logger="latentbench.precision"):
        choices = {precision.choose_knn_precision("cpu") for _ in range(3)}
    assert choices == {"bf16-shortlist"} and len(calls) == 1
    records = [r for r in caplog.records if r.name == "latentbench.precision"]
    assert len(records) == 1 and "bf16-shortlist" in records[0].getMessage() and "probe" in records[0].getMessage()
    assert "fp32 1000.0 ms" in precision.knn_precision_reason("cpu")


def test_real_probe_is_short_and_valid():
    """The real probe on this machine: a valid choice in well under a second (budget 0.3 s + warm-up)."""
    import time

    start = time.perf_counter()
    choice = precision.choose_knn_precision("cpu")
    assert choice in precision.KNN_PRECISIONS
    assert time.perf_counter() - start < 3.0  # generous: a shared, loaded 2-core machine
    ok, reason = precision.bf16_hardware("cpu")
    assert torch.backends.cpu.get_cpu_capability() in reason
    if not ok:
        assert choice == "fp32"


@pytest.mark.parametrize("choice", ["fp32", "bf16-shortlist"])
def test_auto_precision_uses_the_choice(monkeypatch, choice):
    monkeypatch.setattr(neighbors, "choose_knn_precision", lambda device: choice)
    used = []
    real = neighbors._search_bf16

    def spy(*args, **kwargs):
        used.append("bf16")
        return real(*args, **kwargs)

    monkeypatch.setattr(neighbors, "_search_bf16", spy)
    x = torch.randn(20, 8, generator=torch.Generator().manual_seed(0))
    nearest_neighbors(x, x, k=2)
    assert used == (["bf16"] if choice == "bf16-shortlist" else [])


@pytest.mark.parametrize(("metric", "exclude_self"), [("l2", False), ("l2", True), ("cosine", True)])
def test_bf16_shortlist_returns_the_fp32_neighbours(metric, exclude_self):
    """Random Gaussian rows (distance gaps far above bf16 rounding): identical indices, close scores."""
    g = torch.Generator().manual_seed(1)
    r = torch.randn(600, 96, generator=g)
    q = r if exclude_self else torch.randn(150, 96, generator=g)
    s32, i32 = nearest_neighbors(q, r, k=5, metric=metric, exclude_self=exclude_self, precision="fp32", chunk_size=256)
    s16, i16 = nearest_neighbors(q, r, k=5, metric=metric, exclude_self=exclude_self, precision="bf16", chunk_size=256)
    assert torch.equal(i16, i32)
    torch.testing.assert_close(s16, s32, rtol=1e-5, atol=1e-4)


def test_autocast_only_on_cuda():
    assert precision.autocast_dtype("cpu") is None
    if not torch.cuda.is_available():
        assert precision.bf16_hardware("cuda")[0] is False
