"""Demo study end to end: wall time, peak memory of the whole job tree, per-rule times, no-op rerun.

Usage: uv run python bench/bench_demo.py [--config config.yaml] [--cores 2] [--keep]
Targets (issue 2): the demo DAG in <= 15 min wall and <= 8 GiB peak on 2 cores; a second run
with nothing changed finishes in < 10 s.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from pathlib import Path

import pandas as pd
import psutil

ROOT = Path(__file__).resolve().parents[1]


def run(cmd: list[str]) -> tuple[float, float, int]:
    """Run ``cmd``; return (wall seconds, peak RSS of the process tree in GiB, return code)."""
    start = time.monotonic()
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    peak = 0
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        root = psutil.Process(proc.pid)
        while not done.is_set():
            try:
                procs = [root, *root.children(recursive=True)]
                peak = max(peak, sum(p.memory_info().rss for p in procs if p.is_running()))
            except psutil.Error:
                pass
            time.sleep(0.5)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    code = proc.wait()
    done.set()
    thread.join()
    return time.monotonic() - start, peak / 2**30, code


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default="config.yaml")
    parser.add_argument("--cores", default="2")
    parser.add_argument("--keep", action="store_true", help="keep the results folder")
    args = parser.parse_args()
    results = Path(tempfile.mkdtemp(prefix="lb-bench-"))
    base = [sys.executable, "-m", "snakemake", "--cores", args.cores, "--configfile", args.config,
            "--config", f"results_dir={results}"]
    print(f"load average before: {psutil.getloadavg()}")
    wall, peak, code = run(base)
    print(f"demo DAG: {wall / 60:.2f} min wall, peak memory {peak:.2f} GiB (target <= 15 min, <= 8 GiB), rc {code}")
    wall2, _, code2 = run(base)
    print(f"second run (nothing to do): {wall2:.1f} s (target < 10 s), rc {code2}")

    study = next(p for p in results.iterdir() if p.is_dir())
    per_rule: dict[str, list[float]] = defaultdict(list)
    for tsv in (study / "benchmarks").glob("*.tsv"):
        rule = tsv.stem.split("-")[0]
        per_rule[rule].append(float(pd.read_csv(tsv, sep="\t")["s"].iloc[0]))
    print(f"{'rule':24s} {'jobs':>4s} {'total s':>8s} {'max s':>7s}")
    for rule, times in sorted(per_rule.items(), key=lambda kv: -sum(kv[1])):
        print(f"{rule:24s} {len(times):4d} {sum(times):8.1f} {max(times):7.1f}")
    print(f"sum of job times {sum(map(sum, per_rule.values())) / 60:.2f} min over {args.cores} cores")
    corr = study / "correlations.csv"
    if corr.exists():
        table = pd.read_csv(corr)
        columns = ["family", "backbone", "cfg_scale", "metric", "n", "pcc", "pcc_lo", "pcc_hi", "srcc"]
        print(table[columns].round(2).to_string(index=False))
    if args.keep:
        print(f"results kept in {results}")
    else:
        shutil.rmtree(results)
    return code or code2


if __name__ == "__main__":
    sys.exit(main())
