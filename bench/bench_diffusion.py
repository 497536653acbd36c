"""Diffusion training and sampling speed, as ratios measured in the same run.

CPU (default):
  1. train step, same model and batch: ours (attention backend chosen per device and length)
     vs a plain eager fp32 baseline forced to the other attention kernel;
  2. the attention choice per sequence length (math vs fused SDPA), showing where "auto" switches;
  3. the data path: step time with real loading from memory-mapped cached latents vs a fixed
     in-memory batch (loading must not be the bottleneck);
  4. sampling: images/s of 50-step Euler with guidance at batch 256.
GPU (--gpu, on a CUDA machine): SiT-XL/2 at batch 256 on 32x32x4 latents, bf16 autocast, images/s
and model FLOP utilisation against a bf16 GEMM peak measured on the same GPU.

Usage: uv run python bench/bench_diffusion.py [--size S] [--threads 2] [--gpu]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from latentbench.diffusion import build_backbone
from latentbench.diffusion.models import attention, attention_uses_math
from latentbench.diffusion.recipes import get_recipe
from latentbench.diffusion.samplers import sample
from latentbench.diffusion.training import TrainSettings, train_diffusion


def timed(fn, repeats: int) -> float:
    """Median seconds of ``fn()`` over ``repeats`` runs after one warm-up."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def train_step_fn(model, transport, x, y, autocast: bool = False):
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def step():
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=autocast):
            loss, _ = transport.training_loss(model, x, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def cpu(args) -> None:
    torch.set_num_threads(args.threads)
    shape, recipe = (4, 8, 8), get_recipe("study_sit")
    transport = recipe.transport(shape)
    x, y = torch.randn(args.batch, *shape), torch.randint(0, 10, (args.batch,))
    ours = build_backbone(args.size, "study_sit", shape, 1, num_classes=10)
    chosen = "math" if attention_uses_math(torch.zeros(1, 1, 64, 1, requires_grad=True)) else "sdpa"  # auto, training
    other = "sdpa" if chosen == "math" else "math"
    baseline = build_backbone(args.size, "study_sit", shape, 1, num_classes=10, attention_backend=other)
    baseline.load_state_dict(ours.state_dict())
    t_ours = timed(train_step_fn(ours, transport, x, y), args.repeats)
    t_base = timed(train_step_fn(baseline, transport, x, y), args.repeats)
    print(f"1. train step, SiT-{args.size} on 4x8x8 (64 tokens), batch {args.batch}, {args.threads} threads:")
    print(f"   ours (auto -> {chosen}) {t_ours * 1e3:.1f} ms, eager baseline ({other}) {t_base * 1e3:.1f} ms, "
          f"speed-up {t_base / t_ours:.2f}x")

    print("2. attention kernel per sequence length (heads 6, dim 64, batch 8): training (forward+backward) "
          "and inference (forward under inference_mode):")
    for n in (16, 64, 256, 1024):
        q = torch.randn(8, 6, n, 64, requires_grad=True)

        def train(backend):
            return lambda: attention(q, q, q, backend).sum().backward()

        def infer(backend):
            def run():
                with torch.inference_mode():
                    attention(q.detach(), q.detach(), q.detach(), backend)
            return run

        tm, ts = timed(train("math"), 5), timed(train("sdpa"), 5)
        im, is_ = timed(infer("math"), 5), timed(infer("sdpa"), 5)
        with torch.inference_mode():
            pick_infer = "math" if attention_uses_math(q.detach()) else "sdpa"
        pick_train = "math" if attention_uses_math(q) else "sdpa"
        print(f"   {n:5d} tokens: train math {tm * 1e3:7.2f} / sdpa {ts * 1e3:7.2f} ms (auto: {pick_train}); "
              f"infer math {im * 1e3:7.2f} / sdpa {is_ * 1e3:7.2f} ms (auto: {pick_infer})")

    with tempfile.TemporaryDirectory() as tmp:
        n_items = 20000
        mean = np.lib.format.open_memmap(Path(tmp) / "mean.npy", mode="w+", dtype=np.float32, shape=(n_items, *shape))
        mean[:] = np.random.default_rng(0).normal(size=mean.shape)
        mean.flush()
        mm = np.load(Path(tmp) / "mean.npy", mmap_mode="r")
        labels = torch.randint(0, 10, (n_items,))
        fixed = (x, y)

        def loading(idx, g):
            z = torch.from_numpy(np.ascontiguousarray(mm[np.sort(idx.numpy())]))
            return z + 0.1 * torch.randn(z.shape, generator=g), labels[idx]

        def run_loop(get_batch, name):
            model = build_backbone(args.size, "study_sit", shape, 1, num_classes=10)
            settings = TrainSettings(steps=args.repeats * 4, batch_size=args.batch, lr=1e-4, betas=(0.9, 0.999),
                                     weight_decay=0.0, adam_eps=1e-8, ema=0.999, grad_clip=1.0,
                                     checkpoint_every=10**9, seed=0)
            start = time.perf_counter()
            train_diffusion(model, transport, get_batch, n_items, settings, Path(tmp) / f"{name}.pt")
            return (time.perf_counter() - start) / settings.steps

        t_load = run_loop(loading, "load")
        t_fixed = run_loop(lambda idx, g: fixed, "fixed")
        print(f"3. training loop step: real loading from memory-mapped latents {t_load * 1e3:.1f} ms, "
              f"fixed in-memory batch {t_fixed * 1e3:.1f} ms, ratio {t_load / t_fixed:.2f}")

    model = build_backbone(args.size, "study_sit", shape, 1, num_classes=10).eval()
    labels = torch.randint(0, 10, (256,))
    with torch.inference_mode():
        t = timed(lambda: sample(model, transport, (256, *shape), labels, steps=50, cfg_scale=1.5), 1)
    print(f"4. sampling: 50-step Euler with CFG 1.5, batch 256: {256 / t:.1f} images/s ({t:.2f} s per batch)")


# SiT-XL/2 on 32x32x4 latents: training = 3x forward; forward 2 x 118.6 GMACs per image (spec §1.5).
SIT_XL_SHAPE = (4, 32, 32)
SIT_XL_TRAIN_FLOPS = 3 * 2 * 118.6e9


def gemm_peak(device: torch.device, n: int = 8192) -> float:
    """Measured bf16 GEMM FLOP/s on ``device`` (the MFU reference)."""
    a = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    return 2 * n**3 / timed(lambda: a @ a, 10)


def sit_xl(device: torch.device):
    """SiT-XL/2 of the study recipe on 32x32x4 latents, and its transport."""
    model = build_backbone("XL", "study_sit", SIT_XL_SHAPE, 2).to(device)
    return model, get_recipe("study_sit").transport(SIT_XL_SHAPE)


def train_throughput(model, transport, batch: int, device: torch.device, peak: float,
                     repeats: int = 10) -> tuple[float, float]:
    """(images/s, MFU) of bf16-autocast training steps at ``batch``."""
    x = torch.randn(batch, *SIT_XL_SHAPE, device=device)
    y = torch.randint(0, 1000, (batch,), device=device)
    t = timed(train_step_fn(model, transport, x, y, autocast=True), repeats)
    return batch / t, SIT_XL_TRAIN_FLOPS * batch / t / peak


def sampling_throughput(model, transport, device: torch.device, batch: int = 256, steps: int = 50,
                        repeats: int = 2) -> float:
    """images/s of ``steps``-step Euler with CFG 1.5 under bf16 autocast."""
    y = torch.randint(0, 1000, (batch,), device=device)
    model.eval()
    with torch.inference_mode(), torch.autocast("cuda", dtype=torch.bfloat16):
        t = timed(lambda: sample(model, transport, (batch, *SIT_XL_SHAPE), y, steps=steps, cfg_scale=1.5), repeats)
    return batch / t


def gpu(args) -> None:
    device = torch.device("cuda")
    torch.backends.cuda.matmul.allow_tf32 = True
    peak = gemm_peak(device)
    print(f"bf16 GEMM 8192^3: {peak / 1e12:.0f} TFLOP/s (the MFU reference)")
    model, transport = sit_xl(device)
    for compiled in (False, True):
        if compiled:
            model.forward = torch.compile(model.forward)
        ips, mfu = train_throughput(model, transport, args.batch, device, peak)
        print(f"SiT-XL/2 bf16 batch {args.batch}{' compiled' if compiled else ''}: {ips:.0f} images/s, "
              f"MFU {mfu:.1%} (targets: >= 500 images/s, >= 35%)")
    ips = sampling_throughput(model, transport, device)
    print(f"sampling SiT-XL/2: 50-step Euler with CFG at batch 256: {ips:.0f} images/s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", default="demo", help="backbone size for the CPU runs (demo, S, B, ...)")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--gpu", action="store_true", help="run the GPU benchmark (needs CUDA)")
    args = parser.parse_args()
    if args.gpu:
        if not torch.cuda.is_available():
            raise SystemExit("--gpu needs a CUDA device")
        args.batch = max(args.batch, 256)
        gpu(args)
    else:
        cpu(args)


if __name__ == "__main__":
    main()
