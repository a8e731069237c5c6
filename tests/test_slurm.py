"""The demo workflow through a real SLURM scheduler, with the shipped profiles/slurm.

A single-node cluster (tests/slurm_cluster.py) runs on this machine for the module; the
workflow is submitted with `--profile profiles/slurm` exactly as the README says, each job
goes through sbatch, and `sacct` shows them. The report must equal a local run's.

Needs the Debian packages in slurm_cluster.PACKAGES and root. Without them the test is
skipped, except under CI=true, where it fails: CI must run it (.ci/run installs them).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from conftest import ROOT, TINY_ARCH, snakemake_env
from slurm_cluster import ACCOUNT, PARTITION, SlurmCluster, unavailable

pytestmark = pytest.mark.slurm

MODELS = ("rand-a", "rand-b")
RULES = ("demo_benchmark", "manifest", "embed", "evaluate", "report")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    reason = unavailable()
    if reason:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI must run the SLURM test: {reason}")
        pytest.skip(reason)
    c = SlurmCluster(keep_logs_in=tmp_path_factory.mktemp("slurm-logs"))
    try:  # stop() runs even when start() fails half-way
        c.start()
        yield c
    finally:
        c.stop()


def write_config(workdir: Path) -> None:
    cfg = {
        "demo": {"seed": 1, "n_train": 20, "n_val": 5, "n_test": 30, "n_csv_images": 10},
        "datasets": {
            "demo": {
                "format": "karpathy-json",
                "annotations": "results/demo/data/dataset_demo.json",
                "images": "results/demo/data/images",
                "expected": {"test": {"images": 30, "captions": 150}},
            }
        },
        "models": {
            name: {"arch": str(TINY_ARCH), "random": 7 + i} for i, name in enumerate(MODELS)
        },
        # auto: under SLURM the job gets CUDA_VISIBLE_DEVICES for a fake GPU; torch sees no
        # CUDA here and falls back to the CPU.
        "embed": {"batch_size": 32, "workers": 0, "device": "auto"},
    }
    (workdir / "config.yaml").write_text(yaml.safe_dump(cfg))


def snakemake(workdir: Path, *extra: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    cmd = [
        sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"),
        "--directory", str(workdir), "--configfile", str(workdir / "config.yaml"), *extra,
    ]  # fmt: skip
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)


def test_job_inherits_environment_and_gets_a_gpu(cluster, tmp_path):
    """sbatch --export=ALL (what the plugin uses) carries PATH; a GPU job sees its device."""
    env = cluster.env(snakemake_env())
    env["RSM_SLURM_MARKER"] = "inherited"
    out = tmp_path / "job.out"
    script = (
        'echo "python=$(command -v python)"; echo "marker=${RSM_SLURM_MARKER:-missing}"; '
        'echo "cvd=${CUDA_VISIBLE_DEVICES:-unset}"; echo "job=${SLURM_JOB_ID:-none}"'
    )
    proc = subprocess.run(
        ["sbatch", "--wait", "--export=ALL", "--gpus=1", "--cpus-per-gpu=1", "--mem=500",
         "-t", "5", "-o", str(out), "--wrap", script],
        capture_output=True, text=True, env=env, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    lines = dict(line.split("=", 1) for line in out.read_text().splitlines() if "=" in line)
    assert lines["python"] == str(Path(sys.executable).parent / "python")
    assert lines["marker"] == "inherited"
    assert lines["cvd"] in ("0", "1")
    assert lines["job"].isdigit()


def test_demo_workflow_through_slurm_matches_local_run(cluster, tmp_path_factory):
    t0 = time.monotonic()
    local, remote = tmp_path_factory.mktemp("local"), tmp_path_factory.mktemp("slurm")
    for wd in (local, remote):
        write_config(wd)

    proc = snakemake(local, "--cores", "2", env=snakemake_env())
    assert proc.returncode == 0, proc.stdout + proc.stderr
    t_local = time.monotonic() - t0

    proc = snakemake(
        remote,
        "--profile", str(ROOT / "profiles" / "slurm"),
        "--default-resources", f"slurm_account={ACCOUNT}", f"slurm_partition={PARTITION}",
        "--slurm-init-seconds-before-status-checks", "2",
        "--slurm-keep-successful-logs",
        env=cluster.env(snakemake_env()),
    )  # fmt: skip
    log = proc.stdout + proc.stderr
    (remote / "snakemake.log").write_text(log)
    assert proc.returncode == 0, f"{log}\n{cluster.logs()}"
    t_slurm = time.monotonic() - t0 - t_local

    # Every job of the run went through SLURM and completed; the embedding jobs held a GPU.
    lines = cluster.sacct()
    record = tmp_path_factory.getbasetemp() / "sacct.txt"
    record.write_text("\n".join(lines) + "\n")
    print(f"\nlocal run {t_local:.0f} s, SLURM run {t_slurm:.0f} s; sacct ({record}):")
    print("\n".join(lines))
    jobs = [dict(zip(("id", "name", "comment", "partition", "account", "state", "exit",
                      "elapsed", "tres"), line.split("|"), strict=True))
            for line in lines]  # fmt: skip
    run_jobs = [j for j in jobs if j["comment"].startswith("rule_")]
    by_rule = {
        rule: [j for j in run_jobs if j["comment"].startswith(f"rule_{rule}")] for rule in RULES
    }
    assert {r: len(js) for r, js in by_rule.items()} == {
        "demo_benchmark": 1, "manifest": 1, "embed": 2, "evaluate": 2, "report": 1,
    }, lines  # fmt: skip
    assert len({j["name"] for j in run_jobs}) == 1  # one Snakemake run id
    for j in run_jobs:
        assert (j["state"], j["exit"]) == ("COMPLETED", "0:0"), j
        assert (j["partition"], j["account"]) == (PARTITION, ACCOUNT), j
    for j in by_rule["embed"]:
        assert "gres/gpu=1" in j["tres"] and "cpu=8" in j["tres"], j  # profile: cpus_per_gpu 8
    for j in by_rule["report"]:
        assert "gres/gpu" not in j["tres"] and "mem=2000M" in j["tres"], j

    # The same numbers as the local run.
    csv = "results/report/retrieval.csv"
    assert (remote / csv).read_text() == (local / csv).read_text()
    assert len((remote / csv).read_text().splitlines()) == 1 + len(MODELS)

    # Each embedding job's log says which device it used: the CPU, as torch has no CUDA here.
    embed_logs = sorted((remote / "results/logs/embed").rglob("*.log"))
    assert len(embed_logs) == len(MODELS)
    for path in embed_logs:
        assert "device cpu" in path.read_text(), path
