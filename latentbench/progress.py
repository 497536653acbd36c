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


class ProgressMeter:
    """Progress of a loop that is not a plain iteration (``update`` after each unit of work).

    A tqdm bar when stderr is a terminal; otherwise a log line (items done, rate, ETA) at most
    every ``every`` seconds and one at :meth:`close`. ``start``: units already done (a resumed run).
    """

    def __init__(self, total: int | None, desc: str, unit: str = "it", start: int = 0, every: float | None = None) -> None:
        self.total, self.desc, self.unit = total, desc, unit
        self.done = self._start = start
        self.every = float(os.environ.get("LATENTBENCH_PROGRESS_EVERY", EVERY_S)) if every is None else every
        self._t0 = self._last = time.monotonic()
        self._bar = None
        if sys.stderr.isatty():
            from tqdm.auto import tqdm

            self._bar = tqdm(total=total, initial=start, desc=desc, unit=unit, dynamic_ncols=True)

    def update(self, n: int = 1) -> None:
        self.done += n
        if self._bar is not None:
            self._bar.update(n)
            return
        now = time.monotonic()
        if now - self._last >= self.every:
            self._log(now)
            self._last = now

    def _log(self, now: float) -> None:
        # rate and ETA from the units done in this run (a resumed run's earlier steps took no time here)
        elapsed = now - self._t0
        done_here = self.done - self._start
        remaining = None if not self.total else self.total - self._start
        line = progress_line(self.desc, done_here, remaining, elapsed, self.unit)
        if self._start:
            line += f" (from {self._start})"
        log.info(line)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
        else:
            self._log(time.monotonic())


def progress(
    iterable: Iterable[T], total: int | None = None, desc: str = "", unit: str = "it", every: float | None = None,
    weight=None,
) -> Iterator[T]:
    """Iterate ``iterable`` reporting progress: tqdm on a TTY, else a log line every ``every`` s.

    ``total``: the number of units expected (``len(iterable)`` when it has one). ``weight``: a
    function item -> units it counts for (e.g. ``len`` for batches of images), default 1.
    """
    if total is None and weight is None and hasattr(iterable, "__len__"):
        total = len(iterable)  # type: ignore[arg-type]
    meter = ProgressMeter(total, desc, unit, every=every)
    try:
        for item in iterable:
            yield item
            meter.update(weight(item) if weight else 1)
    finally:
        meter.close()
