"""The progress helper off a terminal: log lines with rate and ETA, every N seconds and at the end."""

from __future__ import annotations

import logging

from latentbench.progress import ProgressMeter, progress, progress_line


def test_progress_line_has_rate_and_eta():
    line = progress_line("encode", 250, 1000, 10.0, "img")
    assert line == "encode: 250/1000 (25%), 25 img/s, elapsed 0:10, ETA 0:30"
    assert "ETA" not in progress_line("encode", 5, None, 1.0)


def test_progress_logs_off_a_tty(caplog):
    caplog.set_level(logging.INFO, logger="latentbench.progress")
    items = list(progress(range(7), total=14, desc="loop", unit="batch", every=0, weight=lambda i: 2))
    assert items == list(range(7))
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 8  # one per item (every=0) and the closing line
    assert lines[-1].startswith("loop: 14/14 (100%)") and "batch/s" in lines[-1]


def test_meter_of_a_resumed_run_counts_this_run(caplog):
    caplog.set_level(logging.INFO, logger="latentbench.progress")
    meter = ProgressMeter(100, "training", "step", start=40, every=1e9)
    for _ in range(10):
        meter.update()
    assert not caplog.records  # nothing before `every` seconds
    meter.close()
    assert caplog.records[-1].getMessage().startswith("training: 10/60 (17%)")
    assert "(from 40)" in caplog.records[-1].getMessage()
