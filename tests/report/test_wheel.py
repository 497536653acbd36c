"""The report from a non-editable install (review defect 1, issue 13.1): templates, stylesheet
and paper CSVs are package data, so a wheel installed into a fresh venv renders the report from a
results directory without the source tree. Offline: the wheel is built with the checkout's own
setuptools (no build isolation), the venv reuses the checkout venv's packages through a .pth."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

from tests.report.synthetic_study import make_study, small_config

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    src = tmp_path_factory.mktemp("src")
    shutil.copy(ROOT / "pyproject.toml", src)
    shutil.copy(ROOT / "README.md", src)
    shutil.copytree(ROOT / "latentbench", src / "latentbench",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info"))
    dist = tmp_path_factory.mktemp("dist")
    build = "import sys; from setuptools import build_meta; print(build_meta.build_wheel(sys.argv[1]))"
    proc = subprocess.run([sys.executable, "-c", build, str(dist)], cwd=src, capture_output=True, text=True, check=False,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return dist / proc.stdout.strip().splitlines()[-1]


def test_wheel_holds_templates_stylesheet_and_paper_tables(wheel) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    for name in ("latentbench/report/templates/base.html.j2", "latentbench/report/templates/style.css",
                 "latentbench/report/templates/seesaw.html.j2", "latentbench/report/paper/ifid_table3.csv",
                 "latentbench/report/paper/seesaw_table1.csv", "latentbench/schemas/config.schema.yaml"):
        assert name in names, name


def test_installed_wheel_renders_the_report(wheel, tmp_path) -> None:
    uv = shutil.which("uv")
    if uv is None:
        pytest.skip("uv not installed")
    venv = tmp_path / "venv"
    subprocess.run([uv, "venv", "--offline", "--python", sys.executable, str(venv)], check=True, capture_output=True,
                   timeout=120)
    python = venv / "bin" / "python"
    subprocess.run([uv, "pip", "install", "--offline", "--no-deps", "--python", str(python), str(wheel)], check=True,
                   capture_output=True, timeout=120)
    site = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    # the dependencies (pandas, jinja2, matplotlib, ...) from the checkout's venv; its editable
    # latentbench is not activated (a .pth-added folder's own .pth files are not processed)
    (Path(site) / "_checkout_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    where = subprocess.run([python, "-c", "import latentbench; print(latentbench.__file__)"], cwd=tmp_path,
                           capture_output=True, text=True, check=True).stdout.strip()
    assert where.startswith(str(venv)), where
    config = small_config(n_tok=4, n_boot=0)
    results = make_study(tmp_path / "results", config, images=False)
    out = tmp_path / "report" / "index.html"
    proc = subprocess.run([venv / "bin" / "latentbench", "report", "--results", str(results), "--config",
                           json.dumps(config), "--out", str(out)], cwd=tmp_path, capture_output=True, text=True, check=False,
                          timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    for page in ("index.html", "seesaw.html", "ifid.html", "style.css", "img/overview-ranked-proxies.png"):
        assert (out.parent / page).is_file(), page
    assert "Tilted Seesaw" in (out.parent / "seesaw.html").read_text()
