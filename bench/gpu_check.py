"""GPU check, ready to run (issue 13 item 10): one script, small fixed sizes, < 8 minutes on one GPU.

    uv run --frozen python bench/gpu_check.py        # or: make gpu-check

Checks (each prints pass / fail / skipped with its numbers; a failed agreement exits non-zero):
  1. fd-bf16        FD between two image sets from the bf16-autocast feature path
                    (latentbench.features.representations, a random-init ViT-L) vs the fp32 path;
  2. ifid-nn-bf16   iFID k-NN (latentbench.metrics.neighbors) bf16 shortlist vs fp32, l2 and cosine,
                    plus the precision production picks on this device (latentbench.precision);
  3. sit-bf16       SiT-XL/2 forward under bf16 autocast vs fp32 (TF32 off);
  4. faiss-gpu      faiss GPU flat index vs the GEMM k-NN (skipped without faiss-gpu);
  5. sit-train      SiT-XL/2 training images/s and MFU (bench_diffusion functions; target >= 500, >= 35%);
  6. sampling       SiT-XL/2 50-step Euler with CFG, images/s;
  7. ddp-nccl       train_diffusion under an NCCL process group, one process per GPU, equal to
                    one process (the gloo version is tests/diffusion/test_ddp.py).
Without CUDA every check says "skipped: no CUDA" and the script exits 0 at once.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from unittest import mock

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/ is not a package

CHECKS = ("fd-bf16", "ifid-nn-bf16", "sit-bf16", "faiss-gpu", "sit-train", "sampling", "ddp-nccl")
# Agreement tolerances (bf16 keeps 8 mantissa bits: ~0.4% per rounding).
FD_RTOL = 0.01  # relative FD difference, bf16 vs fp32 features (CPU bf16 autocast, ViT-L: 4e-4)
NN_MIN_AGREE = 0.999  # fraction of identical top-1 indices (the bf16 shortlist is re-ranked in fp32)
SIT_RTOL = 0.02  # relative L2 error of the SiT-XL/2 output (CPU bf16 autocast measured 0.36%)
DDP_RTOL, DDP_ATOL = 1e-4, 1e-5  # parameters after training, NCCL DDP vs one process (fp32, TF32 off)
# Throughput targets (issue 13; bench_diffusion): reported, not an agreement (no exit code).
TRAIN_TARGET_IPS, TRAIN_TARGET_MFU = 500.0, 0.35
# Fixed sizes: k-NN (references, queries) of 4x32x32 latents; faiss (references, queries) at d = 1024.
NN_SIZES = (16384, 2048)
FD_IMAGES = 1536  # per set, features of dimension 1024
SIT_BATCH = 16
FAISS_SIZES = (50000, 5000)


@dataclass(frozen=True)
class Check:
    """One line of the summary: name, status (pass / fail / low / info / skipped / error), numbers."""

    name: str
    status: str
    detail: str

    @property
    def failed(self) -> bool:
        return self.status in ("fail", "error")


# ----------------------------------------------------------------------------- agreement pieces


def relative_error(reference: torch.Tensor, candidate: torch.Tensor) -> float:
    """||candidate - reference|| / ||reference|| in float64 (inf for a zero reference)."""
    reference, candidate = reference.double(), candidate.double()
    if reference.shape != candidate.shape:
        raise ValueError(f"shapes differ: {tuple(reference.shape)} vs {tuple(candidate.shape)}")
    norm = float(reference.norm())
    return float((candidate - reference).norm()) / norm if norm > 0 else float("inf")


def tensor_agreement(name: str, reference: torch.Tensor, candidate: torch.Tensor, rtol: float) -> Check:
    """Pass when the relative L2 error is at most ``rtol``."""
    error = relative_error(reference, candidate)
    return Check(name, "pass" if error <= rtol else "fail", f"rel. L2 error {error:.2e} (tol {rtol:.0e})")


def fd_agreement(
    name: str, reference: tuple[torch.Tensor, torch.Tensor], candidate: tuple[torch.Tensor, torch.Tensor], rtol: float
) -> Check:
    """FD(a, b) from reference features vs from candidate features (two [N, D] sets each)."""
    from latentbench.metrics.fid import frechet_distance_from_features

    fd_ref = frechet_distance_from_features(*(x.double().cpu().numpy() for x in reference))
    fd_cand = frechet_distance_from_features(*(x.double().cpu().numpy() for x in candidate))
    error = abs(fd_cand - fd_ref) / abs(fd_ref) if fd_ref != 0 else float("inf")
    status = "pass" if error <= rtol else "fail"
    return Check(name, status, f"FD fp32 {fd_ref:.6g}, bf16 {fd_cand:.6g}, rel. diff {error:.2e} (tol {rtol:.0e})")


def index_agreement(name: str, reference: torch.Tensor, candidate: torch.Tensor, min_fraction: float,
                    extra: str = "") -> Check:
    """Pass when at least ``min_fraction`` of the rows have the same top-1 index."""
    top1 = float((reference[:, 0].cpu() == candidate[:, 0].cpu()).double().mean())
    sets = float((reference.sort(dim=1).values.cpu() == candidate.sort(dim=1).values.cpu()).all(dim=1).double().mean())
    status = "pass" if top1 >= min_fraction else "fail"
    detail = f"top-1 equal {top1:.4%}, top-k sets equal {sets:.4%} (min {min_fraction:.1%} top-1){extra}"
    return Check(name, status, detail)


def state_agreement(name: str, reference: dict[str, torch.Tensor], candidate: dict[str, torch.Tensor],
                    rtol: float, atol: float) -> Check:
    """Pass when every floating tensor of two state dicts is close (torch.testing.assert_close)."""
    worst, worst_key = 0.0, ""
    for key, value in reference.items():
        other = candidate[key].to(value.device)
        if not value.dtype.is_floating_point:
            if not torch.equal(value, other):
                return Check(name, "fail", f"{key} differs")
            continue
        excess = float(((other - value).abs() - rtol * value.abs()).max()) if value.numel() else 0.0
        if excess > worst:
            worst, worst_key = excess, key
    status = "pass" if worst <= atol else "fail"
    return Check(name, status, f"max |diff| - rtol |ref| = {worst:.1e} (atol {atol:.0e}){' at ' + worst_key if worst_key else ''}")


@contextlib.contextmanager
def no_tf32() -> Iterator[None]:
    """fp32 references in true fp32: TF32 matmuls and convolutions off inside."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def seconds(fn: Callable[[], object]) -> tuple[float, object]:
    """(wall seconds, result) of one call, CUDA synchronised."""
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    start = time.perf_counter()
    out = fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - start, out


# ----------------------------------------------------------------------------- the checks


def check_fd(device: torch.device) -> Check:
    """FD of random-init ViT-L (MAE space) features: bf16 autocast (production) vs fp32."""
    from latentbench.features import representations
    from latentbench.features.representations import TimmRepresentation

    torch.manual_seed(0)
    extractor = TimmRepresentation("mae_cls", device=device, random_init=True)
    g = torch.Generator().manual_seed(0)
    a = torch.rand(FD_IMAGES, 3, 64, 64, generator=g)
    b = (0.7 * torch.rand(FD_IMAGES, 3, 64, 64, generator=g) + 0.2).clamp(0, 1)  # a different distribution

    def features(images: torch.Tensor) -> torch.Tensor:
        return torch.cat([extractor(images[i : i + 256]) for i in range(0, len(images), 256)])

    dtype = representations.autocast_dtype(device)
    with no_tf32(), mock.patch.object(representations, "autocast_dtype", lambda _device: None):
        reference = features(a), features(b)
    candidate = features(a), features(b)
    check = fd_agreement("fd-bf16", reference, candidate, FD_RTOL)
    if dtype is None:
        return Check(check.name, "skipped", "no native bf16 on this GPU: production features stay fp32")
    return check


def check_nn(device: torch.device) -> Check:
    """iFID k-NN on latent-shaped rows: bf16 shortlist + fp32 re-rank vs fp32, l2 and cosine."""
    from latentbench.metrics.neighbors import nearest_neighbors
    from latentbench.precision import choose_knn_precision, knn_precision_reason

    g = torch.Generator().manual_seed(0)
    refs = torch.randn(NN_SIZES[0], 4, 32, 32, generator=g).to(device)
    queries = torch.randn(NN_SIZES[1], 4, 32, 32, generator=g).to(device)
    lines, worst = [], None
    for metric in ("l2", "cosine"):
        with no_tf32():
            t32, (_, i32) = seconds(lambda: nearest_neighbors(queries, refs, k=10, metric=metric, precision="fp32"))
            t16, (_, i16) = seconds(lambda: nearest_neighbors(queries, refs, k=10, metric=metric, precision="bf16"))
        check = index_agreement("ifid-nn-bf16", i32, i16, NN_MIN_AGREE)
        lines.append(f"{metric}: {check.detail.split(' (min')[0]}, fp32 {t32:.3f} s, bf16 {t16:.3f} s")
        worst = check if worst is None or check.failed else worst
    choice = choose_knn_precision(device)
    detail = "; ".join(lines) + f"; production picks {choice} [{knn_precision_reason(device)}]"
    return Check("ifid-nn-bf16", worst.status, detail)


def randomised_sit_xl(device: torch.device) -> tuple[torch.nn.Module, object]:
    """SiT-XL/2 with its zero-initialised layers (adaLN-Zero, final layer) drawn at random,
    so that the output is not identically zero and the comparison means something."""
    from bench_diffusion import sit_xl

    torch.manual_seed(0)
    model, transport = sit_xl(device)
    g = torch.Generator(device=device).manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            if p.is_floating_point() and not p.any():
                p.normal_(0.0, 0.02, generator=g)
    return model.eval(), transport


def check_sit_forward(device: torch.device) -> Check:
    """SiT-XL/2 forward at batch SIT_BATCH: bf16 autocast vs fp32 (TF32 off)."""
    from bench_diffusion import SIT_XL_SHAPE

    model, _ = randomised_sit_xl(device)
    g = torch.Generator().manual_seed(2)
    x = torch.randn(SIT_BATCH, *SIT_XL_SHAPE, generator=g).to(device)
    t = torch.rand(SIT_BATCH, generator=g).to(device)
    y = torch.randint(0, 1000, (SIT_BATCH,), generator=g).to(device)
    with torch.inference_mode():
        with no_tf32():
            reference = model(x, t, y).float()
        with torch.autocast("cuda", dtype=torch.bfloat16):
            candidate = model(x, t, y).float()
    return tensor_agreement("sit-bf16", reference, candidate, SIT_RTOL)


def check_faiss(device: torch.device) -> Check:
    """faiss GPU flat L2 index (backend="faiss") vs the GEMM k-NN, same rows."""
    try:
        import faiss
    except ImportError:
        return Check("faiss-gpu", "skipped", "faiss not installed")
    if not hasattr(faiss, "get_num_gpus") or faiss.get_num_gpus() == 0:
        return Check("faiss-gpu", "skipped", "faiss-gpu not installed (faiss-cpu only)")
    from latentbench.metrics.neighbors import nearest_neighbors

    g = torch.Generator().manual_seed(3)
    refs = torch.randn(FAISS_SIZES[0], 1024, generator=g).to(device)
    queries = torch.randn(FAISS_SIZES[1], 1024, generator=g).to(device)
    with no_tf32():
        nearest_neighbors(queries[:16], refs[:1000], k=10, backend="faiss")  # warm-up: GPU resources
        t_faiss, (_, i_faiss) = seconds(lambda: nearest_neighbors(queries, refs, k=10, backend="faiss"))
        t_gemm, (_, i_gemm) = seconds(lambda: nearest_neighbors(queries, refs, k=10, precision="fp32"))
    extra = f"; faiss {t_faiss:.3f} s, GEMM fp32 {t_gemm:.3f} s"
    return index_agreement("faiss-gpu", i_gemm, i_faiss, NN_MIN_AGREE, extra)


def check_train(device: torch.device, state: dict) -> Check:
    """SiT-XL/2 bf16 training at batch 256 (bench_diffusion.train_throughput; eager, not compiled)."""
    from bench_diffusion import gemm_peak, sit_xl, train_throughput

    torch.backends.cuda.matmul.allow_tf32 = True
    peak = gemm_peak(device)
    model, transport = sit_xl(device)
    ips, mfu = train_throughput(model, transport, 256, device, peak, repeats=5)
    state["model"], state["transport"] = model, transport
    status = "pass" if ips >= TRAIN_TARGET_IPS and mfu >= TRAIN_TARGET_MFU else "low"
    return Check("sit-train", status, f"{ips:.0f} images/s, MFU {mfu:.1%} of a measured {peak / 1e12:.0f} TFLOP/s "
                 f"bf16 GEMM (targets >= {TRAIN_TARGET_IPS:.0f}, >= {TRAIN_TARGET_MFU:.0%}; eager)")


def check_sampling(device: torch.device, state: dict) -> Check:
    """SiT-XL/2 50-step Euler with CFG 1.5 at batch 256 (bench_diffusion.sampling_throughput)."""
    from bench_diffusion import sampling_throughput, sit_xl

    model, transport = state.get("model"), state.get("transport")
    if model is None:
        model, transport = sit_xl(device)
    ips = sampling_throughput(model, transport, device, batch=256, steps=50, repeats=1)
    return Check("sampling", "info", f"{ips:.0f} images/s (50-step Euler, CFG 1.5, batch 256, bf16)")


# DDP: the same tiny run as tests/diffusion/test_ddp.py, on GPUs in fp32 with TF32 off.
DDP_SHAPE = (4, 16, 16)
DDP_SETTINGS = dict(steps=4, batch_size=32, lr=1e-3, betas=(0.9, 0.999), weight_decay=0.0, adam_eps=1e-8,
                    ema=0.9, grad_clip=1.0, checkpoint_every=1000, seed=3)


def ddp_train(device: torch.device, checkpoint: str) -> dict[str, torch.Tensor]:
    """Train SiT-S/2 for a few steps on fixed data (data-parallel when a process group exists)."""
    from latentbench.diffusion import build_backbone
    from latentbench.diffusion.recipes import get_recipe
    from latentbench.diffusion.training import TrainSettings, train_diffusion

    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    torch.manual_seed(0)
    model = build_backbone("S", "study_sit", DDP_SHAPE, 2, num_classes=10).to(device)
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(128, *DDP_SHAPE, generator=g), torch.arange(128) % 10
    settings = TrainSettings(**DDP_SETTINGS)
    train_diffusion(model, get_recipe("study_sit").transport(DDP_SHAPE), lambda idx, _g: (x[idx], y[idx]), 128,
                    settings, checkpoint)
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}


def _ddp_worker(rank: int, size: int, init_file: str, out: str, backend: str) -> None:
    import torch.distributed as dist

    device = torch.device("cuda", rank) if backend == "nccl" else torch.device("cpu")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(backend, init_method=f"file://{init_file}", rank=rank, world_size=size)
    try:
        state = ddp_train(device, os.path.join(out, "ddp_ckpt.pt"))
        if rank == 0:
            torch.save(state, os.path.join(out, "ddp.pt"))
    finally:
        dist.destroy_process_group()


def check_ddp(device: torch.device, backend: str = "nccl", size: int | None = None) -> Check:
    """One process per GPU (torch.multiprocessing.spawn) vs one process on ``device``.

    ``backend="gloo"`` with an explicit ``size`` runs the same comparison on CPU processes.
    """
    import torch.distributed as dist
    import torch.multiprocessing as mp

    if backend == "nccl" and (not dist.is_available() or not dist.is_nccl_available()):
        return Check("ddp-nccl", "skipped", "NCCL not available in this torch build")
    size = size or torch.cuda.device_count()
    with tempfile.TemporaryDirectory() as tmp:
        single = ddp_train(device, os.path.join(tmp, "single.pt"))
        mp.spawn(_ddp_worker, args=(size, os.path.join(tmp, "init"), tmp, backend), nprocs=size, join=True)
        ddp = torch.load(os.path.join(tmp, "ddp.pt"))
    check = state_agreement("ddp-nccl", single, ddp, DDP_RTOL, DDP_ATOL)
    note = "" if size > 1 else "; 1 GPU: world size 1, so train_diffusion skips the DDP wrapper (all-reduce needs >= 2 GPUs)"
    return Check(check.name, check.status, f"{size} {backend} process(es): {check.detail}{note}")


# ----------------------------------------------------------------------------- driver


def run_checks(only: tuple[str, ...] = CHECKS) -> list[Check]:
    """Every check in ``only``; a check's own exception becomes an "error" line, not a crash."""
    if not torch.cuda.is_available():
        return [Check(name, "skipped", "no CUDA") for name in only]
    device = torch.device("cuda", 0)
    state: dict = {}
    runners: dict[str, Callable[[], Check]] = {
        "fd-bf16": lambda: check_fd(device),
        "ifid-nn-bf16": lambda: check_nn(device),
        "sit-bf16": lambda: check_sit_forward(device),
        "faiss-gpu": lambda: check_faiss(device),
        "sit-train": lambda: check_train(device, state),
        "sampling": lambda: check_sampling(device, state),
        "ddp-nccl": lambda: check_ddp(device),
    }
    results = []
    for name in only:
        start = time.perf_counter()
        try:
            check = runners[name]()
        except Exception as error:  # noqa: BLE001 - one broken check must not hide the others
            check = Check(name, "error", f"{type(error).__name__}: {error}")
        print(f"[{time.perf_counter() - start:6.1f} s] {check.name}: {check.status}", flush=True)
        results.append(check)
        if name == "sampling":
            state.clear()
            torch.cuda.empty_cache()
    return results


def summary(results: list[Check]) -> str:
    """The printed table: check, status, numbers."""
    width = max(len(c.name) for c in results)
    lines = [f"{'check':<{width}}  {'status':<7}  details", f"{'-' * width}  -------  -------"]
    lines += [f"{c.name:<{width}}  {c.status:<7}  {c.detail}" for c in results]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", nargs="+", choices=CHECKS, default=list(CHECKS), help="run these checks only")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    if torch.cuda.is_available():
        print(f"GPU check on {torch.cuda.device_count()} x {torch.cuda.get_device_name(0)}, torch {torch.__version__}")
    results = run_checks(tuple(args.only))
    print(summary(results))
    failed = [c.name for c in results if c.failed]
    print(f"total {time.perf_counter() - start:.1f} s; " + (f"FAILED: {', '.join(failed)}" if failed else "no failures"))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
