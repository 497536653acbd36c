"""Demo study end to end: wall time, peak memory of the whole job tree, per-rule times, no-op rerun.

Usage: uv run python bench/bench_demo.py [--config config.yaml] [--cores 2] [--keep]
Targets (issues 2, 14): the demo DAG in <= 10 min wall and <= 8 GiB peak on 2 cores; a second run
with nothing changed finishes in < 10 s.
"""

from __future__ import annotations

import argparse
import re
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


def run(cmd: list[str]) -> tuple[float, float, int, float]:
    """Run ``cmd``; return (wall seconds, peak RSS of the process tree in GiB, return code, CPU
    seconds of the Snakemake process itself: its scheduler, not its jobs; last sample, 0.5 s apart)."""
    start = time.monotonic()
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    peak, own_cpu = 0, 0.0
    done = threading.Event()

    def sample() -> None:
        nonlocal peak, own_cpu
        root = psutil.Process(proc.pid)
        while not done.is_set():
            try:
                procs = [root, *root.children(recursive=True)]
                peak = max(peak, sum(p.memory_info().rss for p in procs if p.is_running()))
                times = root.cpu_times()
                own_cpu = times.user + times.system
            except psutil.Error:
                pass
            time.sleep(0.5)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    code = proc.wait()
    done.set()
    thread.join()
    return time.monotonic() - start, peak / 2**30, code, own_cpu


def startup_seconds(logs: Path) -> list[float]:
    """Each job's fixed cost: the ``startup`` line the CLI logs (process start to the stage call)."""
    pattern = re.compile(r"startup (\d+\.\d+) s \(process start")
    found = (pattern.search(log.read_text(errors="replace")) for log in logs.glob("*.log"))
    return [float(m.group(1)) for m in found if m]


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
    wall, peak, code, own_cpu = run(base)
    print(f"demo DAG: {wall / 60:.2f} min wall, peak memory {peak:.2f} GiB (target <= 10 min, <= 8 GiB), rc {code}")
    print(f"Snakemake's own CPU time (scheduling, not jobs): {own_cpu:.1f} s")
    wall2, _, code2, _ = run(base)
    print(f"second run (nothing to do): {wall2:.1f} s (target < 10 s), rc {code2}")

    study = next(p for p in results.iterdir() if p.is_dir())
    per_rule: dict[str, list[float]] = defaultdict(list)
    for tsv in (study / "benchmarks").glob("*.tsv"):
        rule = tsv.stem.split("-")[0]
        per_rule[rule].append(float(pd.read_csv(tsv, sep="\t")["s"].iloc[0]))
    print(f"{'rule':24s} {'jobs':>4s} {'total s':>8s} {'max s':>7s}")
    for rule, times in sorted(per_rule.items(), key=lambda kv: -sum(kv[1])):
        print(f"{rule:24s} {len(times):4d} {sum(times):8.1f} {max(times):7.1f}")
    job_time = sum(map(sum, per_rule.values()))
    print(f"sum of job times {job_time / 60:.2f} min over {args.cores} cores, {sum(map(len, per_rule.values()))} jobs")
    startup = startup_seconds(study / "logs")
    if startup:
        print(f"per-job startup (process start + imports): {len(startup)} jobs, mean {sum(startup) / len(startup):.2f} s, "
              f"total {sum(startup):.0f} s = {sum(startup) / job_time:.1%} of job time")
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
