"""The SLURM profile (profiles/slurm): how rule resources become sbatch flags, a dry run of the
multi-GPU training launch (no SLURM needed), and a shallow part of the tiny DAG run to completion
through a real single-node SLURM (root only; tests/cluster/slurm_up.sh)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import uuid
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
TINY = ROOT / "tests" / "configs" / "tiny.yaml"
SLURM_PROFILE = ROOT / "profiles" / "slurm"
TEST_PROFILE = HERE / "profile"  # fixture-only overrides, layered on SLURM_PROFILE
SCHEMA = ROOT / "latentbench" / "schemas" / "config.schema.yaml"
SLURM_CLIENTS = (
    "sbatch",
    "srun",
    "salloc",
    "squeue",
    "sacct",
    "sinfo",
    "scontrol",
    "scancel",
    "sacctmgr",
    "sshare",
)
FIXTURE_MARK = "# latentbench test fixture"
RUN_TIMEOUT_S = (
    240  # the shallow DAG (3 levels) took 100-160 s on 2 busy cores; SIGKILL after this
)
REQUIRE_SLURM = os.environ.get("LATENTBENCH_REQUIRE_SLURM") == "1"


def _venv_env(path: str | None = None) -> dict[str, str]:
    """The environment for a Snakemake run: this interpreter's bin first, so that jobs find `latentbench`."""
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join(
        [str(Path(sys.executable).parent), path or env.get("PATH", "")]
    )
    return env


def _snakemake_cmd(
    work: Path, results: Path, *args: str, configfiles: tuple[Path, ...] = ()
) -> list[str]:
    """A Snakemake call of the repo's workflow with its own working directory (own .snakemake/, so no
    lock or metadata is shared with other runs in the repo) and results under ``results``."""
    return [
        sys.executable,
        "-m",
        "snakemake",
        "--snakefile",
        str(ROOT / "Snakefile"),
        "--directory",
        str(work),
        "--profile",
        str(SLURM_PROFILE),
        "--configfile",
        str(TINY),
        *map(str, configfiles),
        "--config",
        f"results_dir={results}",
        *args,
    ]


# ------------------------------------------------------------------ resources -> sbatch flags


class _Resources(dict):
    """A job's resources as the plugin reads them (``.get`` and attribute access)."""

    __getattr__ = dict.__getitem__


def _sbatch_flags(threads: int, **resources) -> str:
    """The sbatch flags the SLURM executor plugin builds for a job with these resources."""
    from snakemake_executor_plugin_slurm.submit_string import get_submit_command
    from snakemake_executor_plugin_slurm.utils import set_gres_string

    job = SimpleNamespace(threads=threads, resources=_Resources(resources))
    params = {
        "run_uuid": "u",
        "slurm_logfile": "l",
        "comment_str": "c",
        "account": "",
        "partition": " -p p",
        "workdir": "w",
    }
    return get_submit_command(job, params) + set_gres_string(job)


def test_cpu_job_requests_no_gpu():
    flags = _sbatch_flags(2, gpu=0, mem_mb=500, runtime=10)
    assert "--gpus" not in flags and "--gres" not in flags
    assert "--ntasks=1" in flags and "--cpus-per-task=2" in flags
    assert "--mem 500" in flags and "-t 10" in flags


def test_single_node_gpu_job():
    flags = _sbatch_flags(8, gpu=8, mem_mb=64000, runtime=1440)
    assert "--gpus=8" in flags and "--cpus-per-task=8" in flags
    assert "--nodes" not in flags and "--ntasks-per-gpu" not in flags


def test_multi_node_job_one_task_per_node():
    # The resources profiles/slurm/README.md prescribes for a job on 2 nodes with 8 GPUs each.
    flags = _sbatch_flags(
        32,
        nodes=2,
        tasks=2,
        tasks_per_gpu=0,
        mpi="srun",
        gres="gpu:8",
        mem_mb=64000,
        runtime=1440,
    )
    assert "--nodes=2" in flags and "--ntasks=2" in flags and "--gres=gpu:8" in flags
    assert "--cpus-per-task=32" in flags
    assert "--gpus=" not in flags and "--ntasks-per-gpu" not in flags


# ------------------------------------------------------------------ dry run (no SLURM needed)


def _path_without_slurm(tmp: Path) -> str:
    """A PATH holding links to every program on the current PATH except the SLURM clients."""
    bin_dir = tmp / "bin-no-slurm"
    bin_dir.mkdir()
    for folder in os.environ.get("PATH", "").split(os.pathsep):
        if not os.path.isdir(folder):
            continue
        for entry in os.scandir(folder):
            link = bin_dir / entry.name
            if (
                entry.name not in SLURM_CLIENTS
                and not link.exists()
                and not link.is_symlink()
            ):
                link.symlink_to(entry.path)
    return str(bin_dir)


def _dry_run(tmp_path: Path, overrides: dict) -> str:
    """``snakemake -n -p`` through the SLURM profile for one diffusion model; returns its output."""
    study = tmp_path / "overrides.yaml"
    study.write_text(yaml.safe_dump(overrides))
    results = tmp_path / "results"
    target = results / "tiny" / "diffusion" / "baseline" / "sit-demo" / "model.pt"
    path = _path_without_slurm(tmp_path)
    env = _venv_env(path)
    assert shutil.which("sbatch", path=env["PATH"]) is None
    cmd = _snakemake_cmd(
        tmp_path / "work", results, "-n", "-p", "--", str(target), configfiles=(study,)
    )
    proc = subprocess.run(
        cmd, check=False, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    return out


def _job_blocks(out: str) -> dict[str, str]:
    """Snakemake's dry-run listing, one text block per rule (the last job of each rule)."""
    blocks = re.split(r"\n(?=rule \w+:)", out)
    return {m.group(1): b for b in blocks if (m := re.match(r"rule (\w+):", b))}


def test_dry_run_multi_gpu_training(tmp_path):
    out = _dry_run(tmp_path, {"diffusion_training": {"gpus": 8}})
    jobs = _job_blocks(out)
    train = jobs["train_diffusion"]
    assert re.search(r"resources: .*\bgpu=8\b", train), train
    shell = train.split("Shell command:", 1)[1]
    assert "torchrun" in shell and "--nproc_per_node=8" in shell, shell
    # CPU-only jobs of the same plan must not ask for a GPU
    for rule in ("dataset", "feature_net", "train_tokenizer"):
        assert not re.search(r"\bgpu=[1-9]", jobs[rule]), jobs[rule]


def _has_config_key(section: str, key: str) -> bool:
    schema = yaml.safe_load(SCHEMA.read_text())
    return key in schema["properties"][section].get("properties", {})


def test_dry_run_multi_node_training(tmp_path):
    if not _has_config_key("diffusion_training", "nodes"):
        pytest.skip(
            "the config has no diffusion_training.nodes yet (multi-node launch not wired)"
        )
    out = _dry_run(tmp_path, {"diffusion_training": {"gpus": 8, "nodes": 2}})
    train = _job_blocks(out)["train_diffusion"]
    resources = train.split("resources:", 1)[1].splitlines()[0]
    for expected in ("nodes=2", "tasks=2", "gres=gpu:8", "mpi=srun"):
        assert expected in resources, resources
    shell = train.split("Shell command:", 1)[1]
    assert "srun" in shell and "torchrun" in shell and "--nproc_per_node=8" in shell, (
        shell
    )
    assert "$SLURM_NNODES" in shell, shell


# ------------------------------------------------------------------ a real single-node SLURM


def _slurm_unavailable() -> str | None:
    """Why the SLURM fixture cannot run here, or None."""
    if os.geteuid() != 0:
        return "needs root (network namespace and SLURM daemons)"
    for tool in ("slurmctld", "slurmd", "munged", "sbatch", "nsenter", "ip"):
        if shutil.which(tool) is None:
            return f"{tool} not found (apt-get install slurm-wlm munge)"
    conf = Path("/etc/slurm/slurm.conf")
    if conf.exists() and not conf.read_text().startswith(FIXTURE_MARK):
        return "/etc/slurm/slurm.conf belongs to a real SLURM install; the fixture will not overwrite it"
    return None


@pytest.fixture(scope="module")
def slurm(tmp_path_factory):
    """A single-node SLURM in its own network namespace; always stopped afterwards."""
    reason = _slurm_unavailable()
    if reason:
        if REQUIRE_SLURM:
            pytest.fail(f"LATENTBENCH_REQUIRE_SLURM=1 but {reason}")
        pytest.skip(reason)
    state = tmp_path_factory.mktemp("slurm")
    netns = f"lbtest-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    try:
        up = subprocess.run(
            ["bash", str(HERE / "slurm_up.sh"), str(state), netns],
            check=False,
            capture_output=True,
            text=True,
            timeout=90,
        )
        # 3: a real site's slurm.conf exists; 4: another test's fixture is running
        if up.returncode in (3, 4) and not REQUIRE_SLURM:
            pytest.skip(up.stderr.strip())
        assert up.returncode == 0, f"slurm_up.sh failed:\n{up.stdout}\n{up.stderr}"
        yield SimpleNamespace(state=state, netns=netns)
    finally:
        subprocess.run(
            ["bash", str(HERE / "slurm_down.sh"), str(state)],
            check=False,
            capture_output=True,
            text=True,
            timeout=90,
        )


def _in_netns(
    netns: str, cmd: list[str], timeout: int, **kwargs
) -> subprocess.CompletedProcess:
    """Run ``cmd`` inside the fixture's network namespace, SIGKILLed after ``timeout`` seconds
    (a Snakemake driver ignores SIGTERM while jobs run)."""
    full = [
        "timeout",
        "-s",
        "KILL",
        str(timeout),
        "nsenter",
        f"--net=/run/netns/{netns}",
        *cmd,
    ]
    return subprocess.run(
        full,
        check=False,
        capture_output=True,
        text=True,
        timeout=timeout + 10,
        **kwargs,
    )


def _slurm_jobs(netns: str, workdir: Path) -> list[dict[str, str]]:
    """Every job slurmctld still remembers (MinJobAge 300 s) that ran in ``workdir``."""
    proc = _in_netns(netns, ["scontrol", "show", "job", "-o"], 20)
    jobs = [
        dict(re.findall(r"(\S+?)=(\S*)", line))
        for line in proc.stdout.splitlines()
        if line.strip()
    ]
    return [j for j in jobs if j.get("WorkDir") == str(workdir)]


@pytest.mark.cluster
@pytest.mark.timeout(300)
def test_shallow_dag_runs_through_slurm(slurm, tmp_path):
    work, results = tmp_path / "work", tmp_path / "results"
    work.mkdir()
    # three DAG levels: dataset -> feature_net -> reference_stats (train and val); by rule name,
    # so that the test does not depend on the output layout
    cmd = _snakemake_cmd(
        work,
        results,
        "--workflow-profile",
        str(TEST_PROFILE),
        "--until",
        "reference_stats",
    )
    proc = _in_netns(slurm.netns, cmd, RUN_TIMEOUT_S, cwd=ROOT, env=_venv_env())
    log = "\n".join(
        p.read_text()[-3000:]
        for p in sorted(work.glob(".snakemake/slurm_logs/*/*.log"))
    )
    ctld = slurm.state / "log" / "slurmctld.log"
    context = (
        f"rc={proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}\n--- slurm logs\n{log}"
        f"\n--- slurmctld\n{ctld.read_text()[-2000:] if ctld.exists() else ''}"
    )
    assert proc.returncode == 0, context
    study = results / "tiny"
    assert (study / "data" / "train" / "manifest.json").is_file() and (
        study / "data" / "val" / "manifest.json"
    ).is_file()
    assert (study / "features" / "demo-cnn.pt").is_file()
    assert len(list(study.glob("features/**/stats-*.npz"))) == 2, sorted(
        study.rglob("*")
    )

    # every job went through SLURM, with the flags the profile derives from each rule's resources;
    # the plugin's job comment is rule_<name>[_wildcards_<values>]
    planned = _job_blocks(proc.stdout + proc.stderr)
    jobs = [
        (job["Comment"].removeprefix("rule_").split("_wildcards_")[0], job)
        for job in _slurm_jobs(slurm.netns, work)
    ]
    rules = sorted(rule for rule, _ in jobs)
    assert rules == ["dataset", "feature_net", "reference_stats", "reference_stats"], (
        rules,
        context,
    )
    for rule, job in jobs:
        assert job["JobState"] == "COMPLETED", (rule, job)
        assert job["TimeLimit"] == "00:10:00" and job["MinMemoryNode"] == "500M", (
            rule,
            job,
        )
        assert "gres/gpu" not in job["TRES"], (rule, job)  # gpu=0 requests no GPU
        threads = re.search(r"\n\s+threads: (\d+)", planned[rule])
        assert job["NumCPUs"] == (threads.group(1) if threads else "1"), (
            rule,
            job,
        )  # threads -> -c
        log_file = Path(job["StdOut"])  # the SLURM log the plugin asked for
        assert (
            log_file.is_file()
            and (work / ".snakemake" / "slurm_logs") in log_file.parents
        ), (rule, job)


def test_training_rules_leave_retries_to_the_profile():
    """A rule's own `retries:` wins over the profile's `retries: 3`, so a pinned value would cut the
    attempts of exactly the long trainings that continue from their checkpoints (review §2 smells).
    Only the weight download retries on its own."""
    pinned = []
    for smk in sorted((ROOT / "rules").glob("*.smk")):
        rule = None
        for line in smk.read_text().splitlines():
            if m := re.match(r"(?:rule|checkpoint)\s+(\w+)\s*:", line):
                rule = m.group(1)
            elif re.match(r"\s+retries\s*:", line):
                pinned.append(rule)
    assert pinned == ["fetch_weights"]
    assert yaml.safe_load((ROOT / "profiles/slurm/config.yaml").read_text())["retries"] >= 3
