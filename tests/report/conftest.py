"""Rendered synthetic reports shared by the report tests (each is rendered once per session)."""

from __future__ import annotations

import pytest

from latentbench.report.render import render_report
from tests.report.synthetic_study import make_study, small_config

N_BOOT = 20


@pytest.fixture(scope="session")
def small(tmp_path_factory):
    """5 tokenizers, one backbone, two scales, no drift measures: the demo's size."""
    config = small_config(n_tok=5, n_boot=N_BOOT)
    results = make_study(tmp_path_factory.mktemp("small"), config)
    render_report(results, config, results / "report" / "index.html")
    return results / "report", config


@pytest.fixture(scope="session")
def larger(tmp_path_factory):
    """24 tokenizers, 2 backbones, 3 scales, drift measures and one controlnet.json."""
    config = small_config(n_tok=24, backbones=2, scales=(1.0, 1.5, 2.0), n_boot=N_BOOT)
    results = make_study(tmp_path_factory.mktemp("larger"), config, drift=True)
    render_report(results, config, results / "report" / "index.html")
    return results / "report", config
