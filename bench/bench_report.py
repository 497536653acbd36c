"""Render the report of a synthetic study and print the render time and page sizes (issue 14.4).

    uv run --frozen python bench/bench_report.py                 # scale-test shape: 86 x 4 x 11
    uv run --frozen python bench/bench_report.py --scale tiny    # 5 tokenizers, 1 backbone, 2 scales

The study (metrics.csv of configs/scale-test.yaml's shape, the correlate job's tables, small PNG
strips and samples) is made by tests/report/synthetic_study.py; only ``render_report`` is timed.
Targets: render < 60 s, overview page (index.html + what it loads) < 2 MB.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from latentbench.report.render import render_report
from tests.report.synthetic_study import make_study, scale_config, small_config


def page_weight(page: Path) -> int:
    """Bytes of an HTML page plus the local files its src / href attributes load (images, CSS)."""
    html = page.read_text()
    total = len(html.encode())
    for ref in set(re.findall(r'(?:src|href)="([^"#:]+\.(?:png|css))"', html)):
        total += (page.parent / ref).stat().st_size
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", choices=["paper", "tiny"], default="paper")
    parser.add_argument("--n-boot", type=int, default=1000)
    parser.add_argument("--keep", type=Path, default=None, help="write the study and report here (kept)")
    parser.add_argument("--reuse", action="store_true", help="with --keep: render the study already there")
    args = parser.parse_args()
    config = scale_config(args.n_boot) if args.scale == "paper" else small_config(n_boot=args.n_boot)
    with tempfile.TemporaryDirectory() as tmp:
        root = args.keep or Path(tmp)
        start = time.monotonic()
        results = root / config["study"]
        if not (args.reuse and (results / "metrics.csv").exists()):
            results = make_study(root, config, drift=True)
        made = time.monotonic() - start
        out = results / "report" / "index.html"
        start, cpu = time.monotonic(), time.process_time()
        render_report(results, config, out)
        elapsed, cpu = time.monotonic() - start, time.process_time() - cpu
        pages = sorted(out.parent.glob("*.html"))
        total = sum(f.stat().st_size for f in out.parent.rglob("*") if f.is_file())
        print(f"study {config['study']}: {len(config['tokenizers'])} tokenizers, {len(config['backbones'])} backbones, "
              f"{len(config['sampling']['cfg_scales'])} scales, n_boot {config['analysis']['n_boot']} "
              f"(made in {made:.1f} s)")
        print(f"render: {elapsed:.1f} s wall, {cpu:.1f} s CPU (load average {os.getloadavg()[0]:.1f}); {len(pages)} pages; report directory {total / 1e6:.1f} MB")
        for page in pages:
            if not page.name.startswith("tok-"):
                print(f"  {page.name:22s} html {page.stat().st_size / 1e3:8.1f} kB   with its images {page_weight(page) / 1e6:6.2f} MB")
        cards = [p for p in pages if p.name.startswith("tok-")]
        if cards:
            sizes = [page_weight(p) for p in cards]
            print(f"  {len(cards)} tokenizer cards: largest {max(sizes) / 1e6:.2f} MB with images")


if __name__ == "__main__":
    main()
