"""bench/gpu_check.py on CPU: all checks skipped quickly, and its agreement functions on CPU tensors."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[1] / "bench" / "gpu_check.py"


@pytest.fixture(scope="module")
def gc():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_check"] = module  # dataclasses look their module up by name
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.modules.pop("gpu_check", None)


def test_without_cuda_every_check_is_skipped_quickly():
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, str(SCRIPT)], capture_output=True, text=True, timeout=60, env=env)
    assert out.returncode == 0, out.stderr
    lines = [line for line in out.stdout.splitlines() if "skipped" in line]
    names = ("fd-bf16", "ifid-nn-bf16", "sit-bf16", "faiss-gpu", "sit-train", "sampling", "ddp-nccl")
    assert len(lines) == len(names) and all("no CUDA" in line for line in lines)
    assert all(any(line.startswith(name) for line in lines) for name in names)
    assert "no failures" in out.stdout


def test_tensor_agreement(gc):
    x = torch.randn(4, 8, 8, generator=torch.Generator().manual_seed(0))
    assert gc.tensor_agreement("t", x, x.clone(), 1e-6).status == "pass"
    assert gc.tensor_agreement("t", x, x + 0.1 * torch.randn_like(x), 1e-2).status == "fail"
    assert gc.relative_error(x, 1.01 * x) == pytest.approx(0.01, rel=1e-5)


def test_fd_agreement(gc):
    g = torch.Generator().manual_seed(1)
    a, b = torch.randn(300, 16, generator=g), torch.randn(300, 16, generator=g) + 0.5
    assert gc.fd_agreement("fd", (a, b), (a.clone(), b.clone()), 1e-9).status == "pass"
    perturbed = gc.fd_agreement("fd", (a, b), (a, b + 0.2), 0.02)
    assert perturbed.status == "fail" and "rel. diff" in perturbed.detail


def test_index_agreement(gc):
    from latentbench.metrics.neighbors import nearest_neighbors

    x = torch.randn(200, 24, generator=torch.Generator().manual_seed(2))
    _, idx = nearest_neighbors(x, x, k=3, exclude_self=True, precision="fp32")
    _, again = nearest_neighbors(x, x, k=3, exclude_self=True, precision="fp32")
    assert gc.index_agreement("nn", idx, again, 0.999).status == "pass"
    wrong = idx.clone()
    wrong[:10, 0] = (wrong[:10, 0] + 1) % 200
    assert gc.index_agreement("nn", idx, wrong, 0.999).status == "fail"


def test_state_agreement(gc):
    state = {"w": torch.randn(5, 5), "step": torch.tensor(3)}
    assert gc.state_agreement("s", state, {k: v.clone() for k, v in state.items()}, 1e-4, 1e-5).status == "pass"
    assert gc.state_agreement("s", state, {"w": state["w"] + 1e-3, "step": state["step"]}, 1e-4, 1e-5).status == "fail"
    assert gc.state_agreement("s", state, {"w": state["w"], "step": torch.tensor(4)}, 1e-4, 1e-5).status == "fail"


def test_a_failed_check_exits_non_zero(gc, monkeypatch, capsys):
    monkeypatch.setattr(gc, "run_checks", lambda only: [gc.Check("sit-bf16", "fail", "rel. L2 error 1e-1"),
                                                        gc.Check("sampling", "info", "9 images/s")])
    assert gc.main([]) == 1
    assert "FAILED: sit-bf16" in capsys.readouterr().out
    monkeypatch.setattr(gc, "run_checks", lambda only: [gc.Check("sit-train", "low", "100 images/s")])
    assert gc.main([]) == 0  # throughput below target is reported, not an agreement failure


def test_fd_agreement_uses_the_project_fd(gc):
    from latentbench.metrics.fid import frechet_distance_from_features

    g = torch.Generator().manual_seed(3)
    a, b = torch.randn(100, 4, generator=g), torch.randn(100, 4, generator=g)
    fd = frechet_distance_from_features(a.double().numpy(), b.double().numpy())
    assert f"{fd:.6g}" in gc.fd_agreement("fd", (a, b), (a, b), 0.0).detail
    assert np.isfinite(fd)


def test_nn_check_runs_on_cpu_tensors(gc, monkeypatch):
    """The k-NN check itself (fixed sizes shrunk): bf16 shortlist vs fp32 agree, choice reported."""
    monkeypatch.setattr(gc, "NN_SIZES", (400, 60))
    check = gc.check_nn(torch.device("cpu"))
    assert check.status == "pass", check.detail
    assert "l2:" in check.detail and "cosine:" in check.detail and "production picks" in check.detail
