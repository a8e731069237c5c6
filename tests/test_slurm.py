"""The demo workflow through a real SLURM scheduler, with the shipped profiles/slurm.

A single-node cluster (tests/slurm_cluster.py) runs on this machine for the module; the
workflow is submitted with `--profile profiles/slurm` exactly as the README says, each job
goes through sbatch, and `sacct` shows them. The report must equal a local run's. The SLURM
run shards the dataset (embed.shards 2): each model's embedding runs as 2 GPU jobs and the
leakage audit's image hashing as 2 jobs, and the gathered feature and hash tables equal the
unsharded local run's bit for bit.

Needs the Debian packages in slurm_cluster.PACKAGES and root. Without them the test is
skipped, except under CI=true, where it fails: CI must run it (.ci/run installs them).
"""

from __future__ import annotations

import csv
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml
from conftest import ROOT, TINY_ARCH, snakemake_env
from rsm_eval import cas
from slurm_cluster import ACCOUNT, PARTITION, SlurmCluster, unavailable

pytestmark = pytest.mark.slurm

MODELS = ("rand-a", "rand-b")
SHARDS = 2
RULES = (
    "demo_benchmark", "manifest", "embed_shard", "embed_gather", "image_hashes_shard",
    "image_hashes_gather", "leakage_audit", "evaluate", "evaluate_clean", "report",
)  # fmt: skip


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


def write_config(workdir: Path, shards: int = 1) -> None:
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
        "embed": {"batch_size": 8, "device": "auto", "shards": shards},
        "leakage": {"train": [{"dataset": "demo", "split": "train"}]},
        "classification": {"enabled": False},
    }
    (workdir / "config.yaml").write_text(yaml.safe_dump(cfg))


def snakemake(workdir: Path, *extra: str, env: dict[str, str]) -> subprocess.Popen:
    cmd = [
        sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"),
        "--directory", str(workdir), "--configfile", str(workdir / "config.yaml"), *extra,
    ]  # fmt: skip
    log = open(workdir / "snakemake.log", "w")  # noqa: SIM115
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, text=True, env=env)
    log.close()
    return proc


def finish(proc: subprocess.Popen, workdir: Path, timeout: float = 1500) -> str:
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    log = (workdir / "snakemake.log").read_text()
    assert proc.returncode == 0, log
    return log


def report_rows(workdir: Path) -> list[dict[str, str]]:
    """retrieval.csv without `address`: that digests the feature files, whose metadata records
    each run's timings; the metrics and the model and manifest addresses must be equal."""
    with open(workdir / "results/report/retrieval.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    for row in rows:
        del row["address"]
    return rows


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
    write_config(local)
    write_config(remote, shards=SHARDS)

    # The local run goes alongside (its own hash memo): the SLURM run mostly waits for polls.
    local_env = snakemake_env()
    local_env[cas.MEMO_ENV] = str(local / "hash-memo.sqlite")
    # --cores 2: the jobs use 2 torch threads, as the SLURM jobs do on this 2-core machine
    # (CPU results are equal bit for bit only at equal thread counts).
    local_run = snakemake(local, "--cores", "2", env=local_env)

    slurm_run = snakemake(
        remote,
        "--profile", str(ROOT / "profiles" / "slurm"),
        "--default-resources", f"slurm_account={ACCOUNT}", f"slurm_partition={PARTITION}",
        "--slurm-init-seconds-before-status-checks", "2",
        "--slurm-keep-successful-logs",
        env=cluster.env(snakemake_env()),
    )  # fmt: skip
    try:
        finish(slurm_run, remote)
    except AssertionError as exc:
        local_run.kill()
        raise AssertionError(f"{exc}\n{cluster.logs()}") from None
    t_slurm = time.monotonic() - t0
    finish(local_run, local)

    # Every job of the run went through SLURM and completed; the embedding jobs held a GPU.
    lines = cluster.sacct()
    record = tmp_path_factory.getbasetemp() / "sacct.txt"
    record.write_text("\n".join(lines) + "\n")
    print(f"\nSLURM run {t_slurm:.0f} s; sacct ({record}):")
    print("\n".join(lines))
    jobs = [dict(zip(("id", "name", "comment", "partition", "account", "state", "exit",
                      "elapsed", "tres"), line.split("|"), strict=True))
            for line in lines]  # fmt: skip
    run_jobs = [j for j in jobs if j["comment"].startswith("rule_")]
    by_rule = {
        rule: [j for j in run_jobs if re.match(f"rule_{rule}(_wildcards|$)", j["comment"])]
        for rule in RULES
    }
    assert {r: len(js) for r, js in by_rule.items()} == {
        "demo_benchmark": 1, "manifest": 1, "embed_shard": SHARDS * len(MODELS),
        "embed_gather": len(MODELS), "image_hashes_shard": SHARDS, "image_hashes_gather": 1,
        "leakage_audit": 1, "evaluate": 2, "evaluate_clean": 2, "report": 1,
    }, lines  # fmt: skip
    assert len({j["name"] for j in run_jobs}) == 1  # one Snakemake run id
    for j in run_jobs:
        assert (j["state"], j["exit"]) == ("COMPLETED", "0:0"), j
        assert (j["partition"], j["account"]) == (PARTITION, ACCOUNT), j
    for j in by_rule["embed_shard"]:
        assert "gres/gpu=1" in j["tres"] and "cpu=8" in j["tres"], j  # profile: cpus_per_gpu 8
    for j in by_rule["embed_gather"] + by_rule["image_hashes_shard"]:
        assert "gres/gpu" not in j["tres"], j
    for j in by_rule["report"]:
        assert "gres/gpu" not in j["tres"] and "mem=2000M" in j["tres"], j

    # The same numbers as the local run.
    rows = report_rows(remote)
    assert [r["model"] for r in rows] == list(MODELS)
    assert rows == report_rows(local)

    # The shards' gathered tables equal the unsharded local run's, bit for bit.
    for model in MODELS:
        for kind in ("images", "texts"):
            path = f"results/features/{model}/demo/remoteclip/{kind}.parquet"
            got, want = (pq.read_table(wd / path) for wd in (remote, local))
            assert got.column("key").equals(want.column("key")), path
            assert got.column("embedding").equals(want.column("embedding")), path
    hashes = "results/leakage/hashes/demo.parquet"
    assert pq.read_table(remote / hashes).equals(pq.read_table(local / hashes))

    # Each shard job's log says which device it used (the CPU: torch has no CUDA here), its
    # CPUs as SLURM allocated them (bounded by this machine's cores) and its rate.
    shard_logs = sorted((remote / "results/logs/embed").rglob("*-of-*.log"))
    assert len(shard_logs) == SHARDS * len(MODELS)
    for path in shard_logs:
        text = path.read_text()
        assert "device cpu" in text and "SLURM job" in text, text
        assert re.search(r"CPUs [12] \(.*SLURM allocation 8\)", text), text
        assert "image rate:" in text, text
