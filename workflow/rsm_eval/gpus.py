"""Which device an embedding (or fine-tuning) job runs on, and one job per GPU.

Snakemake counts GPUs (`resources: gpu=1` on the rule, `--resources gpu=N` on the command
line) but never says *which* GPU a job should use, so two local jobs would both pick
`cuda:0`. `claim_device()` closes that gap:

* Under SLURM the scheduler has already chosen: a job that asked for a GPU (`gpu=1` or
  `gres="gpu:1"`) sees exactly its devices in CUDA_VISIBLE_DEVICES, and its lock directory is
  private to the SLURM job, so there is never contention. A SLURM job without
  CUDA_VISIBLE_DEVICES was given no GPU and runs on the CPU ("auto") even when the node has
  GPUs, so that it never uses a device allocated to someone else.
* Locally each visible device `i` has a lock file `<lock_dir>/gpu<id>.lock` (`id` is the
  entry of CUDA_VISIBLE_DEVICES, or `i` when it is unset). A job takes the first free one
  with a non-blocking `fcntl.flock` and holds it for its lifetime; the kernel releases it
  when the process ends, crashed or not.
* Policy when every visible GPU is busy: wait (polling every `poll` seconds, saying so once
  on stderr) until one is free, or until `timeout` seconds have passed, then raise. Use
  `--resources gpu=N` with N = the number of GPUs so that Snakemake never starts more
  embedding jobs than there are devices and nobody waits.
* No GPU (none visible, or torch without CUDA): "auto" gives "cpu"; "cuda" is an error.
  "cpu" never looks at GPUs.

No torch import here: the device count is asked of torch lazily, only when needed, and
tests inject it with `n_devices`.
"""

from __future__ import annotations

import fcntl
import os
import re
import socket
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from .errors import RsmEvalError

LOCK_DIR_ENV = "RSM_EVAL_GPU_LOCK_DIR"
PREFERENCES = ("auto", "cpu", "cuda")


def torch_device_count() -> int:
    """CUDA devices torch can use; 0 without torch or without CUDA."""
    try:
        import torch
    except ImportError:
        return 0
    try:
        return int(torch.cuda.device_count()) if torch.cuda.is_available() else 0
    except Exception:  # a broken driver is no GPU
        return 0


def visible_ids(n_devices: int | None = None) -> list[str]:
    """Identifiers of the devices this process may use, in CUDA order (cuda:0 first).

    CUDA_VISIBLE_DEVICES, when set, lists them (indices or UUIDs; CUDA stops at the first
    invalid entry such as -1); otherwise they are 0..n-1. Under SLURM without
    CUDA_VISIBLE_DEVICES the job was allocated no GPU: none are visible.
    """
    cvd = os.environ.get("CUDA_VISIBLE_DEVICES")
    if cvd is None and os.environ.get("SLURM_JOB_ID"):
        return []
    count = torch_device_count() if n_devices is None else n_devices
    if cvd is None:
        return [str(i) for i in range(count)]
    ids = []
    for token in cvd.split(","):
        token = token.strip()
        if not token or token == "-1" or token.lower().startswith("nodevfiles"):
            break
        ids.append(token)
    return ids[:count]


def default_lock_dir() -> Path:
    """Per user; inside a SLURM job, private to that job (its devices are its own)."""
    if os.environ.get(LOCK_DIR_ENV):
        return Path(os.environ[LOCK_DIR_ENV])
    name = f"rsm-eval-gpus-{os.getuid()}"
    job = os.environ.get("SLURM_JOB_ID")
    if job:
        name += f"-slurm{job}"
    return Path(tempfile.gettempdir()) / name


def _lock_name(device_id: str) -> str:
    return "gpu" + re.sub(r"[^A-Za-z0-9_.-]", "_", device_id) + ".lock"


def _try_lock(path: Path) -> IO[str] | None:
    handle = open(path, "a+")  # noqa: SIM115 - held open for the claim's lifetime
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        return None
    handle.seek(0)
    handle.truncate()
    handle.write(f"pid {os.getpid()} on {socket.gethostname()}\n")
    handle.flush()
    return handle


def _parse(preference: str) -> tuple[str, int | None]:
    if preference in PREFERENCES:
        return preference, None
    match = re.fullmatch(r"cuda:(\d+)", preference)
    if match:
        return "cuda", int(match.group(1))
    raise RsmEvalError(
        f"device: {preference!r} is not one of {', '.join(PREFERENCES)} or cuda:<index>"
    )


@contextmanager
def claim_device(
    preference: str = "auto",
    lock_dir: Path | None = None,
    n_devices: int | None = None,
    *,
    timeout: float | None = None,
    poll: float = 1.0,
    log: Callable[[str], None] | None = None,
) -> Iterator[str]:
    """Yield "cpu" or "cuda:<i>" and hold that GPU's lock until the block ends.

    `preference`: "auto" (a free GPU, else the CPU when there is none), "cuda" (a free GPU;
    error without one), "cuda:<i>" (exactly visible device i, waiting for it) or "cpu".
    `n_devices` replaces torch's device count (tests). See the module doc for the policy.
    """
    kind, index = _parse(preference)
    if kind == "cpu":
        yield "cpu"
        return
    ids = visible_ids(n_devices)
    if not ids:
        if kind == "auto":
            yield "cpu"
            return
        where = " (this SLURM job was allocated none)" if os.environ.get("SLURM_JOB_ID") else ""
        raise RsmEvalError(f"device: {preference!r} requested but no CUDA device is visible{where}")
    if index is not None and index >= len(ids):
        raise RsmEvalError(f"device: {preference!r} requested but only {len(ids)} visible")
    candidates = [index] if index is not None else list(range(len(ids)))
    directory = Path(lock_dir) if lock_dir is not None else default_lock_dir()
    directory.mkdir(parents=True, exist_ok=True)
    say = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
    deadline = None if timeout is None else time.monotonic() + timeout
    said = False
    while True:
        for i in candidates:
            handle = _try_lock(directory / _lock_name(ids[i]))
            if handle is not None:
                try:
                    yield f"cuda:{i}"
                finally:
                    handle.close()  # releases the flock
                return
        if deadline is not None and time.monotonic() >= deadline:
            raise RsmEvalError(
                f"device: every GPU ({', '.join(ids[i] for i in candidates)}) stayed busy for "
                f"{timeout:g} s (locks in {directory}); run with --resources gpu=N, "
                "N = number of GPUs"
            )
        if not said:
            say(
                f"waiting for a free GPU: {len(candidates)} busy (locks in {directory}); "
                "use --resources gpu=N to start at most N embedding jobs"
            )
            said = True
        time.sleep(poll)


def describe(device: str) -> str:
    """One line for the job log: the device and where it came from."""
    parts = [
        f"device {device}",
        f"CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES', '<unset>')}",
        f"host {socket.gethostname()}",
    ]
    job = os.environ.get("SLURM_JOB_ID")
    if job:
        parts.append(f"SLURM job {job}")
    return ", ".join(parts)


# ------------------------------------------------------------------ CPU threads and workers
#
# Snakemake exports OMP_NUM_THREADS (and MKL_..., OPENBLAS_...) = the rule's `threads` to each
# job, 1 for a rule that declares none: a torch job on the CPU then runs on one core whatever
# the machine has. The model rules declare their threads (embed.threads, else all of --cores),
# pass them as --threads, and the stage divides them between torch and the data loader here.


def slurm_cpus(env: dict[str, str] | None = None) -> int | None:
    """CPUs SLURM allocated to this job on this node, or None outside a SLURM job.

    SLURM_CPUS_PER_TASK (`--cpus-per-task`), else SLURM_CPUS_PER_GPU x the GPUs of the job
    (`--cpus-per-gpu`), else SLURM_JOB_CPUS_PER_NODE (like `4` or `4(x2)`), else
    SLURM_CPUS_ON_NODE.
    """
    env = os.environ if env is None else env
    if not env.get("SLURM_JOB_ID"):
        return None

    def number(text: str | None) -> int | None:
        match = re.match(r"\s*(\d+)", text or "")
        return int(match.group(1)) if match else None

    per_task = number(env.get("SLURM_CPUS_PER_TASK"))
    if per_task:
        return per_task
    per_gpu = number(env.get("SLURM_CPUS_PER_GPU"))
    if per_gpu:
        gpus = env.get("SLURM_GPUS_ON_NODE") or env.get("SLURM_GPUS") or ""
        visible = [d for d in env.get("CUDA_VISIBLE_DEVICES", "").split(",") if d.strip()]
        count = number(gpus.split(":")[-1]) or len(visible) or 1
        return per_gpu * count
    # SLURM_CPUS_ON_NODE: what slurmd allocated here; the only one left in a job step whose
    # launcher cleared the job's SLURM_* variables (the executor plugin's inner srun does).
    return number(env.get("SLURM_JOB_CPUS_PER_NODE")) or number(env.get("SLURM_CPUS_ON_NODE"))


def usable_cpus() -> int:
    """CPUs this process may run on (its affinity mask; os.cpu_count() where there is none)."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


@dataclass(frozen=True)
class CpuPlan:
    """How a model job uses its CPUs: torch intra-op threads and data-loader processes."""

    budget: int  # CPUs of the job
    source: str  # where `budget` comes from
    torch_threads: int
    workers: int

    def describe(self) -> str:
        return (
            f"CPUs {self.budget} ({self.source}): {self.torch_threads} torch threads, "
            f"{self.workers} loader workers"
        )


def plan_cpu(
    device: str,
    threads: int | None,
    workers: int | None,
    *,
    env: dict[str, str] | None = None,
    usable: int | None = None,
) -> CpuPlan:
    """Divide a job's CPUs between torch and the image/caption loader, never oversubscribing.

    Budget: the job's `threads` (Snakemake's, capped to --cores), bounded by what the process
    may use: its affinity mask, and in a SLURM job the CPUs SLURM allocated.

    * CPU device: the forward pass is the work; torch gets every CPU of the budget. Decoding a
      224 px image costs ~3% of its ViT-B-32 forward pass on one core, so one loader worker
      (when the budget has 2 CPUs or more) overlaps it; `workers` asks for more, up to
      budget - 1.
    * CUDA: the GPU computes; decoding is the host's work. The loader gets budget - 1 workers
      (`workers` caps it), the main process one torch thread to feed the device.
    """
    avail = usable_cpus() if usable is None else usable
    slurm = slurm_cpus(env)
    parts = [f"usable {avail}"]
    budget = avail
    if slurm:
        parts.append(f"SLURM allocation {slurm}")
        budget = min(budget, slurm)
    if threads is not None:
        if threads < 1:
            raise RsmEvalError(f"threads: expected an integer >= 1, got {threads}")
        parts.insert(0, f"job threads {threads}")
        budget = min(budget, threads)
    source = ", ".join(parts)
    spare = max(0, budget - 1)
    if device.startswith("cuda"):
        n_workers = spare if workers is None else min(workers, spare)
        return CpuPlan(budget, source, 1, n_workers)
    wanted = min(1, spare) if workers is None else workers
    return CpuPlan(budget, source, budget, min(wanted, spare))


def apply_cpu_plan(plan: CpuPlan) -> None:
    """Set torch's intra-op threads (the job's OMP_NUM_THREADS only sets the default)."""
    import torch

    torch.set_num_threads(plan.torch_threads)
