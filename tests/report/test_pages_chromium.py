"""Every report page in headless Chromium at 1400 px: tables and figures present, images loaded,
and no page scrolls horizontally outside its tables (tests/report/chromium.py). The paper-scale
variant (configs/scale-test.yaml's shape, render < 60 s, overview < 2 MB) is marked slow; the same
numbers are printed by bench/bench_report.py."""

from __future__ import annotations

import os
import time

import pytest

from latentbench.report.render import PAGES, render_report
from latentbench.report.tokenizers import card_file
from tests.report.chromium import check_page, chromium, screenshot
from tests.report.synthetic_study import make_study, scale_config

WIDTH = 1400
# (tables, images) each page has at least, for a study with drift measures and several backbones
EXPECTED = {"index.html": (2, 1), "correlations.html": (4, 1), "ifid.html": (4, 1), "diffusability.html": (4, 4),
            "seesaw.html": (6, 2), "tokenizers.html": (1, 0), "methods.html": (1, 0)}


@pytest.fixture(scope="module")
def browser():
    path = chromium()
    if path is None:
        if os.environ.get("LATENTBENCH_REQUIRE_CHROMIUM"):
            pytest.fail("chromium is required (LATENTBENCH_REQUIRE_CHROMIUM is set) but not installed")
        pytest.skip("chromium not installed (make chromium)")
    return path


def _check_all(browser: str, report, tok: str, tmp_path) -> None:
    for name in [*EXPECTED, card_file(tok)]:
        got = check_page(browser, report / name, tmp_path / "profile", width=WIDTH)
        tables, images = EXPECTED.get(name, (3, 2))
        assert got["scroll_width"] <= got["viewport"] == WIDTH, (name, got)
        assert got["outside"] == [], (name, got["outside"][:5])
        assert got["tables"] >= tables and got["images"] >= images and got["broken"] == [], (name, got)
        shot = screenshot(browser, report / name, tmp_path / f"{name}.png", tmp_path / "profile", width=WIDTH)
        assert shot.stat().st_size > 20_000, name  # a rendered page, not a blank one


def test_every_page_fits_1400px(browser, larger, tmp_path) -> None:
    report, _ = larger
    assert {f for f, _ in PAGES} == set(EXPECTED)
    _check_all(browser, report, "tok3", tmp_path)


def test_probe_sees_a_page_that_scrolls_sideways(browser, tmp_path) -> None:
    page = tmp_path / "wide.html"
    page.write_text('<!DOCTYPE html><html><body><p style="width: 3000px">too wide</p>'
                    '<div style="overflow-x: auto"><table><tr><td style="min-width: 3000px">ok</td></tr></table></div>'
                    "</body></html>")
    got = check_page(browser, page, tmp_path / "profile", width=WIDTH)
    assert got["scroll_width"] > WIDTH and got["outside"] == ["P."]


@pytest.mark.slow
def test_paper_scale_report(browser, tmp_path) -> None:
    config = scale_config(n_boot=200)
    results = make_study(tmp_path, config, drift=True)
    out = results / "report" / "index.html"
    start = time.monotonic()
    render_report(results, config, out)
    assert time.monotonic() - start < 60
    overview = out.stat().st_size + sum((out.parent / "img" / f).stat().st_size
                                        for f in ("overview-ranked-proxies.png",))
    assert overview < 2_000_000
    _check_all(browser, out.parent, next(iter(config["tokenizers"])), tmp_path)
