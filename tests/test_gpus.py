"""GPU placement: concurrent claims get different devices; no GPU means the CPU."""

from __future__ import annotations

import multiprocessing
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from rsm_eval import gpus
from rsm_eval.errors import RsmEvalError


def use(preference: str, lock_dir: Path, **kwargs) -> str:
    """Claim and release at once: the device that would have been used."""
    with gpus.claim_device(preference, lock_dir=lock_dir, **kwargs) as dev:
        return dev


@pytest.fixture(autouse=True)
def _no_slurm_no_cvd(monkeypatch):
    for var in ("CUDA_VISIBLE_DEVICES", "SLURM_JOB_ID", gpus.LOCK_DIR_ENV):
        monkeypatch.delenv(var, raising=False)


def test_module_does_not_import_torch():
    code = "import sys; from rsm_eval import gpus; print('torch' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(gpus.__file__).parents[1],
    )
    assert out.stdout.strip() == "False"


def test_two_concurrent_claims_get_different_devices_third_waits(tmp_path):
    got, third = [], []
    hold = threading.Event()
    both = threading.Barrier(3)

    def job():
        with gpus.claim_device("auto", lock_dir=tmp_path, n_devices=2) as dev:
            got.append(dev)
            both.wait(timeout=10)
            hold.wait(timeout=10)

    threads = [threading.Thread(target=job) for _ in range(2)]
    for t in threads:
        t.start()
    both.wait(timeout=10)
    assert sorted(got) == ["cuda:0", "cuda:1"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gpu0.lock", "gpu1.lock"]

    # Every GPU busy: the policy is to wait (and to say so once), not to share or fall back.
    messages = []
    with pytest.raises(RsmEvalError, match="stayed busy"):
        use("auto", tmp_path, n_devices=2, timeout=0.3, poll=0.05, log=messages.append)
    assert len(messages) == 1 and "waiting for a free GPU" in messages[0]

    def waiter():
        with gpus.claim_device("auto", lock_dir=tmp_path, n_devices=2, poll=0.05) as dev:
            third.append((dev, time.monotonic()))

    w = threading.Thread(target=waiter)
    w.start()
    time.sleep(0.3)
    assert third == []  # still waiting
    released = time.monotonic()
    hold.set()
    for t in [*threads, w]:
        t.join(timeout=10)
    assert third and third[0][0] in ("cuda:0", "cuda:1") and third[0][1] >= released


def _claim_in_process(lock_dir: str, queue, release) -> None:
    with gpus.claim_device("cuda", lock_dir=Path(lock_dir), n_devices=2) as dev:
        queue.put(dev)
        release.wait(10)


def test_claims_in_separate_processes_get_different_devices(tmp_path):
    ctx = multiprocessing.get_context("fork")
    queue, release = ctx.Queue(), ctx.Event()
    procs = [
        ctx.Process(target=_claim_in_process, args=(str(tmp_path), queue, release))
        for _ in range(2)
    ]
    for p in procs:
        p.start()
    devices = sorted(queue.get(timeout=10) for _ in procs)
    release.set()
    for p in procs:
        p.join(timeout=10)
    assert devices == ["cuda:0", "cuda:1"]
    # The processes are gone, so are their locks.
    with gpus.claim_device("cuda", lock_dir=tmp_path, n_devices=2, timeout=0) as dev:
        assert dev == "cuda:0"


def test_lock_released_after_block_and_on_error(tmp_path):
    with gpus.claim_device("auto", lock_dir=tmp_path, n_devices=1) as dev:
        assert dev == "cuda:0"
    with pytest.raises(ValueError), gpus.claim_device("auto", lock_dir=tmp_path, n_devices=1):
        raise ValueError("job failed")
    with gpus.claim_device("auto", lock_dir=tmp_path, n_devices=1, timeout=0) as dev:
        assert dev == "cuda:0"


def test_cuda_visible_devices_respected(tmp_path, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5")
    assert gpus.visible_ids(n_devices=2) == ["3", "5"]
    with (
        gpus.claim_device("auto", lock_dir=tmp_path, n_devices=2) as a,
        gpus.claim_device("auto", lock_dir=tmp_path, n_devices=2) as b,
    ):
        assert (a, b) == ("cuda:0", "cuda:1")  # torch numbers the visible devices
        assert sorted(p.name for p in tmp_path.iterdir()) == ["gpu3.lock", "gpu5.lock"]
    # UUIDs and CUDA's stop-at-invalid rule.
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "GPU-1a2b/3,-1,2")
    assert gpus.visible_ids(n_devices=4) == ["GPU-1a2b/3"]
    # An empty list hides every GPU, whatever the count.
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    with gpus.claim_device("auto", lock_dir=tmp_path, n_devices=2) as dev:
        assert dev == "cpu"


def test_explicit_index(tmp_path):
    with gpus.claim_device("cuda:1", lock_dir=tmp_path, n_devices=2) as dev:
        assert dev == "cuda:1"
        with pytest.raises(RsmEvalError, match="stayed busy"):
            use("cuda:1", tmp_path, n_devices=2, timeout=0)
    with pytest.raises(RsmEvalError, match="only 2 visible"):
        use("cuda:2", tmp_path, n_devices=2)
    with pytest.raises(RsmEvalError, match="not one of"):
        use("gpu", tmp_path, n_devices=2)


def test_no_gpu_means_cpu(tmp_path):
    with gpus.claim_device("auto", lock_dir=tmp_path, n_devices=0) as dev:
        assert dev == "cpu"
    with gpus.claim_device("cpu", lock_dir=tmp_path, n_devices=4) as dev:
        assert dev == "cpu"
    with pytest.raises(RsmEvalError, match="no CUDA device"):
        use("cuda", tmp_path, n_devices=0)
    assert list(tmp_path.iterdir()) == []  # nothing locked, nothing created


def test_torch_count_used_lazily(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(gpus, "torch_device_count", lambda: calls.append(1) or 0)
    with gpus.claim_device("cpu", lock_dir=tmp_path) as dev:
        assert dev == "cpu" and calls == []
    with gpus.claim_device("auto", lock_dir=tmp_path) as dev:
        assert dev == "cpu" and calls == [1]


def test_slurm_job_uses_what_slurm_gave(tmp_path, monkeypatch):
    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")
    assert gpus.default_lock_dir().name.endswith("-slurm4242")
    with gpus.claim_device("auto", lock_dir=tmp_path, n_devices=1) as dev:
        assert dev == "cuda:0"
        line = gpus.describe(dev)
    assert "device cuda:0" in line and "CUDA_VISIBLE_DEVICES=0" in line
    assert "SLURM job 4242" in line
    # A SLURM job without CUDA_VISIBLE_DEVICES was allocated no GPU: never take the node's.
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    with gpus.claim_device("auto", lock_dir=tmp_path, n_devices=8) as dev:
        assert dev == "cpu"
    with pytest.raises(RsmEvalError, match="allocated none"):
        use("cuda", tmp_path, n_devices=8)


def test_lock_dir_from_environment(tmp_path, monkeypatch):
    monkeypatch.setenv(gpus.LOCK_DIR_ENV, str(tmp_path / "locks"))
    with gpus.claim_device("auto", n_devices=1) as dev:
        assert dev == "cuda:0"
        assert (tmp_path / "locks" / "gpu0.lock").exists()
    assert "CUDA_VISIBLE_DEVICES=<unset>" in gpus.describe("cpu")
