"""One progress reporter for every long loop: a tqdm bar on a terminal, log lines in a job's log.

Snakemake redirects a job's output to its log file, where a tqdm bar would write thousands of
carriage-return frames. Off a terminal, :func:`progress` therefore logs one line every
``every`` seconds (and at the end) with items done, rate and ETA (DESIGN: "Long loops show
progress and log to the rule's log file").
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Iterable, Iterator
from typing import TypeVar

log = logging.getLogger("latentbench.progress")

T = TypeVar("T")
# Seconds between log lines off a terminal (LATENTBENCH_PROGRESS_EVERY overrides).
EVERY_S = 60.0


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def progress_line(desc: str, done: int, total: int | None, elapsed: float, unit: str = "it") -> str:
    """``desc: done/total (pct) rate unit/s, elapsed, ETA`` (ETA only when the total is known)."""
    rate = done / elapsed if elapsed > 0 else 0.0
    parts = [f"{desc}: {done}" + (f"/{total} ({100 * done / total:.0f}%)" if total else "")]
    parts.append(f"{rate:.3g} {unit}/s")
    parts.append(f"elapsed {_duration(elapsed)}")
    if total and rate > 0 and done < total:
        parts.append(f"ETA {_duration((total - done) / rate)}")
    return ", ".join(parts)


def progress(
    iterable: Iterable[T], total: int | None = None, desc: str = "", unit: str = "it", every: float | None = None,
    weight=None,
) -> Iterator[T]:
    """Iterate ``iterable`` reporting progress: tqdm on a TTY, else a log line every ``every`` s.

    ``total``: the number of units expected (``len(iterable)`` when it has one). ``weight``: a
    function item -> units it counts for (e.g. ``len`` for batches of images), default 1.
    """
    if total is None and hasattr(iterable, "__len__"):
        total = len(iterable)  # type: ignore[arg-type]
    if sys.stderr.isatty():
        from tqdm.auto import tqdm

        bar = tqdm(total=total, desc=desc, unit=unit, dynamic_ncols=True)
        try:
            for item in iterable:
                yield item
                bar.update(weight(item) if weight else 1)
        finally:
            bar.close()
        return
    every = float(os.environ.get("LATENTBENCH_PROGRESS_EVERY", EVERY_S)) if every is None else every
    start = last = time.monotonic()
    done = 0
    for item in iterable:
        yield item
        done += weight(item) if weight else 1
        now = time.monotonic()
        if now - last >= every:
            log.info(progress_line(desc, done, total, now - start, unit))
            last = now
    log.info(progress_line(desc, done, total, time.monotonic() - start, unit))
