"""The image end to end: Snakemake runs the whole tiny study, report included, inside the Apptainer
image with --use-singularity.

Slow and not in the default run. It needs the image (`containers/build.sh`, or LATENTBENCH_SIF)
and apptainer (on a test machine: `containers/install-apptainer-test.sh`):
    uv run pytest -m slow tests/workflow/test_container.py -s
The jobs run with a host PATH that has no `latentbench` on it, so they can only succeed with the
image's CLI; a probe with Snakemake's own exec line checks that it is the image's /opt/venv.
The rules come from the checkout and must match the CLI they call: when the package baked into
the image differs from the checkout's, the checkout's `latentbench/` is bound over the image's
copy (the image's environment then runs the current code) and the test says so.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.workflow.test_dag import write_study

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
SIF = Path(os.environ.get("LATENTBENCH_SIF", ROOT / "containers" / "latentbench.sif")).resolve()
TEST_APPTAINER = Path("/opt/apptainer-test/root/usr/bin")  # containers/install-apptainer-test.sh
IMAGE_PACKAGE = "/opt/latentbench/latentbench"  # the editable install in containers/Dockerfile
TIMEOUT_S = 2400  # the tiny study on 2 cores, each job in an apptainer exec

# One hash of a package folder's files (no bytecode), run by the host and by the image's Python.
TREE_HASH = (
    "import hashlib, pathlib, sys\n"
    "root = pathlib.Path(sys.argv[1]); h = hashlib.sha256()\n"
    "for p in sorted(root.rglob('*')):\n"
    "    if p.is_file() and '__pycache__' not in p.parts:\n"
    "        h.update(str(p.relative_to(root)).encode() + b'\\0' + p.read_bytes())\n"
    "print(h.hexdigest())\n"
)


def _apptainer() -> str | None:
    """The apptainer (or singularity) binary: on PATH, else the test-only install."""
    path = f"{os.environ.get('PATH', '')}{os.pathsep}{TEST_APPTAINER}"
    return shutil.which("apptainer", path=path) or shutil.which("singularity", path=path)


def _job_env(apptainer: str) -> dict[str, str]:
    """The host environment for Snakemake: user-namespace Apptainer, and a PATH with no venv."""
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME")}
    env["PATH"] = os.pathsep.join([str(Path(apptainer).parent), "/usr/local/bin", "/usr/bin", "/bin"])
    env["APPTAINER_USERNS"] = "1"  # setuid mode is refused on the test machine (notes section 4)
    return env


def _run(cmd: list[str], env: dict[str, str], timeout: float) -> subprocess.CompletedProcess:
    """Run ``cmd`` in the repository; on timeout kill its whole process group (apptainer jobs too)."""
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        pytest.fail(f"timed out after {timeout} s: {' '.join(cmd)}\n{out[-4000:]}")
    return subprocess.CompletedProcess(cmd, proc.returncode, out, None)


def _exec(apptainer: str, script: str, timeout: float = 300) -> list[str]:
    """Run a bash script the way Snakemake runs a job (repository as $HOME and workdir); its lines."""
    proc = _run([apptainer, "exec", "--home", str(ROOT), str(SIF), "bash", "-c", script],
                _job_env(apptainer), timeout)
    assert proc.returncode == 0, proc.stdout
    return [line for line in proc.stdout.splitlines() if not line.startswith("INFO:")]


@pytest.fixture(scope="module")
def apptainer() -> str:
    found = _apptainer()
    if found is None:
        pytest.skip("apptainer/singularity not installed (containers/install-apptainer-test.sh)")
    if not SIF.is_file():
        pytest.skip(f"no image at {SIF} (containers/build.sh, or set LATENTBENCH_SIF)")
    return found


def test_tiny_study_runs_inside_the_image_with_its_report(apptainer, tmp_path):
    """The whole tiny study (tiny.yaml + the two pretrained tokenizers whose files the test writes:
    every rule, Seesaw included) runs its jobs in the image, and the report job renders the site
    from the package data inside the image (templates, CSS, paper-value CSVs: issue 13.1)."""
    env = _job_env(apptainer)
    assert shutil.which("latentbench", path=env["PATH"]) is None, "the host CLI must not be reachable"
    binds = [str(tmp_path)]
    host_code = subprocess.run([sys.executable, "-c", TREE_HASH, str(ROOT / "latentbench")],
                               capture_output=True, text=True, check=True).stdout.strip()
    image_code = _exec(apptainer, f"python -P - {IMAGE_PACKAGE} <<'EOF'\n{TREE_HASH}EOF")[-1]
    if image_code != host_code:
        binds.append(f"{ROOT / 'latentbench'}:{IMAGE_PACKAGE}")
        print("\nthe image's latentbench differs from the checkout's: binding the checkout's over it "
              "(rebuild with containers/build.sh to test the baked-in code)")
    results = tmp_path / "results"
    results.mkdir()
    write_study(results)
    study = results / "tiny"
    cmd = [sys.executable, "-m", "snakemake", "--nolock", "--cores", "2",
           "--use-singularity", "--apptainer-args=" + " ".join(f"--bind {b}" for b in binds),
           "--configfile", str(results / "study.yaml"), "--config", f"results_dir={results}", f"container={SIF}"]
    start = time.monotonic()
    proc = _run(cmd, env, TIMEOUT_S)
    elapsed = time.monotonic() - start
    logs = "".join(f"\n--- {p.name}\n{p.read_text()[-1500:]}" for p in sorted((study / "logs").glob("*.log")))
    assert proc.returncode == 0, proc.stdout[-6000:] + logs[-20000:]
    done = re.search(r"(\d+) of (\d+) steps \(100%\) done", proc.stdout)
    assert done and done.group(1) == done.group(2), proc.stdout[-4000:]
    # every job but the aggregate target `all` (no shell command) activated the image
    activations = [line for line in proc.stdout.splitlines() if "Activating singularity image" in line]
    assert len(activations) == int(done.group(1)) - 1 and all(SIF.name in line for line in activations)
    print(f"\ncontainerised tiny study: {done.group(1)} jobs in {elapsed:.1f} s")

    site = study / "report"
    pages = sorted(p.name for p in site.glob("*.html"))
    assert {"index.html", "correlations.html", "seesaw.html"} <= set(pages), pages
    index = (site / "index.html").read_text()
    assert "<table" in index and 'href="' in index
    assert any(site.glob("*.css")) or "<style" in index  # the stylesheet came from the package data
    assert (study / "metrics.csv").is_file() and (study / "correlations.csv").is_file()


def test_image_cli_is_the_locked_venv(apptainer):
    """Snakemake's exec line (`apptainer exec --home <workdir> <image> bash -c ...`) resolves the
    image's CLI and package, not the checkout's, even with the repository as $HOME and workdir."""
    # python -P: no working directory on sys.path, as for the `latentbench` console script
    # (a plain `python -c` or `python -m` in the repository would import the checkout instead).
    lines = _exec(apptainer, "command -v latentbench python snakemake; python -P -c "
                  "'import latentbench, sys, torch; print(latentbench.__file__, sys.prefix, torch.__version__)'")
    assert lines[-4:-1] == ["/opt/venv/bin/latentbench", "/opt/venv/bin/python", "/opt/venv/bin/snakemake"], lines
    module, prefix, torch_version = lines[-1].split()
    assert module == f"{IMAGE_PACKAGE}/__init__.py" and prefix == "/opt/venv"
    assert torch_version.startswith("2.13.0"), torch_version
