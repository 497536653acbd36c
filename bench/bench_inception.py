"""Benchmark: Inception-v3 pool3 extraction on CPU, our extractor vs the default eager layout.

Run: ``uv run python bench/bench_inception.py [--batch 32] [--rounds 3] [--threads 2] [--jit] [--compile]``.
All variants run float mode on 256x256 inputs (resized to 299) with the same seeded
random-init weights (the real file is not needed for timing: same architecture, same FLOPs):

- baseline, ``InceptionV3Features(channels_last=False, fold_batchnorm=False)``: torch-fidelity's
  network as it runs by default (contiguous NCHW, BatchNorm as separate layers), in
  ``torch.inference_mode``;
- ``InceptionV3Features(fold_batchnorm=False)``: channels_last alone;
- ``InceptionV3Features(channels_last=False)``: BatchNorm folded into the convolutions alone;
- ``InceptionV3Features()`` (the default): folded BatchNorm and channels_last;
- ``--jit``: the default trunk traced, frozen and ``optimize_for_inference`` (TorchScript);
- ``--compile``: the default trunk through ``torch.compile`` with inductor freezing (needs a
  C++ compiler; compiling takes minutes on 2 loaded cores and is reported separately).

Rounds alternate between the variants so machine load hits all alike. Per variant: best and
median images/s over the rounds, CPU seconds of the best round, "CPU-bound img/s" = images
per (CPU seconds / threads), i.e. the rate if the threads had the cores to themselves (the
shared machines are often loaded: wall time then inflates while CPU time does not), the
speed-up of the best round over the baseline's best, and the max feature difference from
the baseline relative to its largest feature. Load averages are printed before and after.
Targets (issue): >= 10.5 images/s float32 on 2 threads and >= 1.35x the baseline.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable

import torch

from latentbench.features.inception import InceptionV3Features

TARGET_IMAGES_PER_S, TARGET_RATIO = 10.5, 1.35
BASELINE, DEFAULT = "baseline (contiguous, eager)", "default (BN folded, NHWC)"
Extract = Callable[[torch.Tensor], torch.Tensor]


def timed(fn: Extract, images: torch.Tensor) -> tuple[float, float]:
    """(wall seconds, CPU seconds of all threads) of one call."""
    start, start_cpu = time.perf_counter(), time.process_time()
    fn(images)
    return time.perf_counter() - start, time.process_time() - start_cpu


def with_trunk(extractor: InceptionV3Features, trunk: Callable, grad_mode=torch.inference_mode) -> Extract:
    """The extractor's preprocessing followed by another trunk."""

    def run(images: torch.Tensor) -> torch.Tensor:
        with grad_mode():
            x = extractor.preprocess(images)
            if extractor.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            return trunk(x).flatten(1)

    return run


def jit_variant(extractor: InceptionV3Features, example: torch.Tensor) -> Extract:
    with torch.inference_mode():
        x = extractor.preprocess(example).contiguous(memory_format=torch.channels_last)
        trunk = torch.jit.optimize_for_inference(torch.jit.freeze(torch.jit.trace(extractor.trunk.eval(), x)))
    return with_trunk(extractor, trunk)


def compile_variant(extractor: InceptionV3Features, images: torch.Tensor) -> Extract:
    """torch.compile with inductor freezing (constant-folds weights; needs no_grad, not inference_mode)."""
    trunk = torch.compile(extractor.trunk, options={"freezing": True})
    run = with_trunk(extractor, trunk, grad_mode=torch.no_grad)
    start = time.perf_counter()
    run(images)
    print(f"torch.compile: first call (compilation) took {time.perf_counter() - start:.0f} s")
    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--size", type=int, default=256, help="input side length (resized to 299)")
    parser.add_argument("--jit", action="store_true", help="also time a frozen TorchScript trunk")
    parser.add_argument("--compile", action="store_true", help="also time torch.compile (slow to compile)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    load = os.getloadavg()
    print(f"torch {torch.__version__}, threads={args.threads}, batch={args.batch}, input {args.size}px -> 299")
    print(f"load average at the start: {load[0]:.2f} (1 min), {load[1]:.2f} (5 min), on {os.cpu_count()} cores")

    images = torch.rand(args.batch, 3, args.size, args.size, generator=torch.Generator().manual_seed(0))
    default = InceptionV3Features(random_init=True)
    variants: dict[str, Extract] = {
        BASELINE: InceptionV3Features(random_init=True, channels_last=False, fold_batchnorm=False),
        "NHWC, BN not folded": InceptionV3Features(random_init=True, fold_batchnorm=False),
        "BN folded, contiguous": InceptionV3Features(random_init=True, channels_last=False),
        DEFAULT: default,
    }
    if args.jit:
        variants["default + jit.freeze"] = jit_variant(default, images[:2])
    if args.compile:
        variants["default + torch.compile"] = compile_variant(default, images)

    outputs = {name: fn(images) for name, fn in variants.items()}  # warm-up: oneDNN primitives per shape
    walls: dict[str, list[float]] = {name: [] for name in variants}
    cpus: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(args.rounds):
        for name, fn in variants.items():
            wall, cpu = timed(fn, images)
            walls[name].append(wall)
            cpus[name].append(cpu)

    reference = outputs[BASELINE]
    base = min(walls[BASELINE])
    for name in variants:
        best = min(walls[name])
        cpu = cpus[name][walls[name].index(best)]
        diff = float((outputs[name] - reference).abs().max() / reference.abs().max())
        print(
            f"{name:28s} best {args.batch / best:6.2f} img/s, median {args.batch / statistics.median(walls[name]):6.2f},"
            f" CPU {cpu:5.1f} s ({args.batch * args.threads / cpu:5.2f} CPU-bound img/s),"
            f" x{base / best:4.2f} vs baseline, max rel. diff {diff:.1e}"
        )
    rate, ratio = args.batch / min(walls[DEFAULT]), base / min(walls[DEFAULT])
    print(
        f"default extractor: {rate:.2f} img/s (target >= {TARGET_IMAGES_PER_S}: "
        f"{'met' if rate >= TARGET_IMAGES_PER_S else 'NOT met'}), x{ratio:.2f} vs baseline "
        f"(target >= {TARGET_RATIO}: {'met' if ratio >= TARGET_RATIO else 'NOT met'})"
    )
    print(f"load average at the end: {os.getloadavg()[0]:.2f} (1 min)")


if __name__ == "__main__":
    main()
