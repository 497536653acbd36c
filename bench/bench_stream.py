"""Memory of the latent-reading jobs at two cache sizes: does it stay flat as the split grows?

Writes a synthetic latent cache of N items at 32x16x16 (f16d32 at 256 px) for each size — mean.npy
and std.npy as memory-mapped .npy, stats.json, labels — then runs each latent-reading job's
library path, the calls its stage makes, in a fresh subprocess per (job, size):

- lnc: pooled features of the memory-mapped latents + LNC@10 (latent_metrics)
- ifid_nn: ifid_latents of 500 queries against all N posterior-sampled references, streamed
  through a temporary memory map (reconstruction_metrics, ifid_variants)
- baselines: GMM loss on drawn tokens of memory-mapped sampled train/val latents (baseline_metrics)
- viv, uniformity, spatial: the latent metrics on the memory-mapped split (latent_metrics)

Each child reports its peak RSS (VmHWM, which includes the file pages of the memory maps that
the kernel keeps resident and may drop under pressure) and its peak anonymous RSS (RssAnon,
sampled every 20 ms: the memory the job itself allocates). Target (issue 13.2): the anonymous
peak at the larger size <= 1.1x the smaller. The children run with glibc's mmap threshold fixed at
1 MiB (MALLOC_MMAP_THRESHOLD_): large buffers are then returned to the kernel when freed, so the
anonymous peak follows the live arrays rather than what the allocator happens to keep (with the
default dynamic threshold the same VIV run measured 484-1014 MiB from run to run).

Usage: uv run python bench/bench_stream.py [--sizes 50000 200000] [--workdir DIR] [--keep]
(the paper sizes write 2 x 6.6 GB at 200k; `--sizes 5000 20000` is the quick check).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHAPE = (32, 16, 16)
# Images per class. VIV holds one class in memory at a time (its flip-flop covariance needs all of a
# class's latents), so its memory follows the class size, not the split size; ImageNet's classes hold
# at most 1,300 train images whatever the split. The caches therefore grow by their class count
# (N / CLASS_SIZE classes), as larger ImageNet-style splits do, at a fixed class size.
CLASS_SIZE = 500
JOBS = ("lnc", "ifid_nn", "baselines", "viv", "uniformity", "spatial")


def write_cache(folder: Path, n: int, seed: int = 0, block: int = 2048) -> None:
    """A class-structured synthetic cache: mean = class centre + noise, std = 0.1; written block by block."""
    import torch

    from latentbench.io import save_npy, write_json
    from latentbench.metrics.normalization import ChannelStats

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    classes = max(1, n // CLASS_SIZE)
    centres = rng.normal(size=(classes, *SHAPE)).astype(np.float32)
    labels = np.arange(n) % classes
    mean = np.lib.format.open_memmap(folder / "mean.npy", mode="w+", dtype=np.float32, shape=(n, *SHAPE))
    std = np.lib.format.open_memmap(folder / "std.npy", mode="w+", dtype=np.float32, shape=(n, *SHAPE))
    stats = ChannelStats()
    for b0 in range(0, n, block):
        b1 = min(n, b0 + block)
        part = centres[labels[b0:b1]] + rng.normal(size=(b1 - b0, *SHAPE)).astype(np.float32)
        mean[b0:b1] = part
        std[b0:b1] = 0.1
        stats.update(torch.from_numpy(part))
    mean.flush(), std.flush()
    del mean, std
    save_npy(folder / "labels.npy", labels)
    write_json(folder / "stats.json", {"count": n, "latent_shape": list(SHAPE), "channel_mean": stats.mean.tolist(),
                                       "channel_std": stats.std.tolist(), "posterior": "gaussian"})


class AnonPeak:
    """Samples this process's RssAnon (kB) every ``every`` s in a thread; ``peak`` in MiB."""

    def __init__(self, every: float = 0.02) -> None:
        self.peak, self._stop = 0.0, threading.Event()
        self._thread = threading.Thread(target=self._run, args=(every,), daemon=True)
        self._thread.start()

    @staticmethod
    def _status(field: str) -> float:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
        return 0.0

    def _run(self, every: float) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._status("RssAnon"))
            time.sleep(every)

    def stop(self) -> tuple[float, float]:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._status("RssAnon"))
        return self.peak, self._status("VmHWM")


def run_job(job: str, folder: Path) -> dict:
    """One job's library path on the cache in ``folder`` (run inside the child process)."""
    import torch

    from latentbench.io import load_npy
    from latentbench.latents import LatentCache, as_tensor
    from latentbench.metrics.baselines import gmm_loss
    from latentbench.metrics.ifid import ifid_latents
    from latentbench.metrics.normalization import channel_stats
    from latentbench.metrics.semantic import neighbor_consistency, pooled_features
    from latentbench.metrics.spatial import spatial_metrics
    from latentbench.metrics.uniformity import uniformity
    from latentbench.metrics.viv import class_spectra

    torch.set_num_threads(1)
    cache = LatentCache(folder)
    labels = torch.from_numpy(np.asarray(load_npy(folder / "labels.npy", mmap=False)))
    n = len(cache)
    with cache.array("mean", 0, "val") as array:
        z = as_tensor(array)
        if job == "lnc":
            stats = channel_stats(z)
            features, keep = pooled_features(z, None, stats=stats)
            return {"lnc_10": neighbor_consistency(features, labels[keep], (10,))[10]}
        if job == "viv":
            return {"viv": class_spectra(z, labels, stats=channel_stats(z)).viv}
        if job == "uniformity":
            out = uniformity(z, n_points=500, repeats=1, seed=0, stats=channel_stats(z))
            return {"gini": out["gini"]}
        if job == "spatial":
            # token masks as the stage holds them (bool per token), drawn block by block: no float
            # array of N x H x W in the child beside the metric
            rng, fg = np.random.default_rng(0), torch.zeros((n, *SHAPE[1:]), dtype=torch.bool)
            for b0 in range(0, n, 8192):
                fg[b0 : b0 + 8192] = torch.from_numpy(rng.random((min(n, b0 + 8192) - b0, *SHAPE[1:])) < 0.6)
            out = spatial_metrics(z, fg, stats=channel_stats(z))
            return {k: out[k] for k in ("lds", "cds", "srss")}
    if job == "ifid_nn":
        queries = cache.rows(0, 500, "sample", 0, "val")
        with cache.array("sample", 0, "train") as refs:
            picked = ifid_latents(queries, refs, k=5, method="slerp", seed=0)
        return {"entropy": picked["entropy"]}
    if job == "baselines":
        with cache.array("sample", 0, "train") as ztr, cache.array("sample", 0, "val") as zva:
            out = gmm_loss(as_tensor(ztr), as_tensor(zva), n_components=8, n_fit=20_000, n_eval=20_000, max_iter=20)
        return {"gmm_loss": out["gmm_loss"]}
    raise ValueError(f"unknown job {job!r}")


def child(job: str, folder: Path, scratch: Path) -> None:
    tempfile.tempdir = str(scratch)
    meter = AnonPeak()
    start = time.monotonic()
    result = run_job(job, folder)
    anon, hwm = meter.stop()
    print(json.dumps({"job": job, "seconds": time.monotonic() - start, "peak_anon_mib": anon, "peak_rss_mib": hwm,
                      "result": result}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs=2, default=[50_000, 200_000])
    parser.add_argument("--jobs", nargs="+", default=list(JOBS), choices=JOBS)
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--keep", action="store_true")
    parser.add_argument("--child", nargs=3, metavar=("JOB", "CACHE", "SCRATCH"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child[0], Path(args.child[1]), Path(args.child[2]))
        return
    work = args.workdir or Path(tempfile.mkdtemp(prefix="bench-stream-"))
    rows: dict[tuple[str, int], dict] = {}
    try:
        for n in args.sizes:
            folder = work / f"cache-{n}"
            t0 = time.monotonic()
            write_cache(folder, n)
            print(f"cache of {n} items: {time.monotonic() - t0:.1f} s, {2 * (folder / 'mean.npy').stat().st_size / 2**30:.2f} GiB",
                  flush=True)
            for job in args.jobs:
                proc = subprocess.run(
                    [sys.executable, __file__, "--child", job, str(folder), str(work)], cwd=ROOT, capture_output=True,
                    text=True, check=False, env={**os.environ, "MALLOC_MMAP_THRESHOLD_": str(1 << 20)},
                )
                if proc.returncode:
                    raise SystemExit(f"{job} at {n}: failed\n{proc.stderr[-3000:]}")
                rows[job, n] = json.loads(proc.stdout.strip().splitlines()[-1])
                r = rows[job, n]
                print(f"  {job:11s} n={n:>7d}: {r['seconds']:7.1f} s  peak anon {r['peak_anon_mib']:8.1f} MiB  "
                      f"peak RSS {r['peak_rss_mib']:8.1f} MiB", flush=True)
            if not args.keep:
                shutil.rmtree(folder)
    finally:
        if not args.keep and args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)
    small, large = args.sizes
    print(f"\n{'job':11s} {'anon ' + str(small):>12s} {'anon ' + str(large):>12s} {'ratio':>6s} "
          f"{'RSS ' + str(small):>12s} {'RSS ' + str(large):>12s} {'ratio':>6s}")
    for job in args.jobs:
        a, b = rows[job, small], rows[job, large]
        print(f"{job:11s} {a['peak_anon_mib']:10.1f}MB {b['peak_anon_mib']:10.1f}MB {b['peak_anon_mib'] / a['peak_anon_mib']:6.2f} "
              f"{a['peak_rss_mib']:10.1f}MB {b['peak_rss_mib']:10.1f}MB {b['peak_rss_mib'] / a['peak_rss_mib']:6.2f}")


if __name__ == "__main__":
    main()
