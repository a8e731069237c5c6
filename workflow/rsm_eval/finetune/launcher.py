"""open_clip_train's side: its entry point, command line, environment, subprocess and logs.

The trainer runs in a subprocess, as one process (the variables that would start
torch.distributed are removed), with this checkout's package on its path; its output goes to
a log file (and is echoed), and its train loss and validation metrics are read back from its
logs.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

from .. import cas, models
from ..config import Model
from ..errors import RsmEvalError
from .params import FinetuneParams

# Environment variables that make open_clip_train start torch.distributed (a Snakemake job
# under SLURM, or launched from torchrun, must still train as one process).
_DISTRIBUTED_ENV = (
    "WORLD_SIZE",
    "RANK",
    "LOCAL_RANK",
    "SLURM_NTASKS",
    "SLURM_PROCID",
    "SLURM_LOCALID",
    "OMPI_COMM_WORLD_RANK",
    "OMPI_COMM_WORLD_SIZE",
    "OMPI_COMM_WORLD_LOCAL_RANK",
    "PMI_RANK",
    "PMI_SIZE",
    "MPI_LOCALRANKID",
)
THREADS_ENV = "RSM_EVAL_TORCH_THREADS"
_TRAIN_LINE = re.compile(r"Train Epoch: (\d+) \[.*\bLoss: (\S+) \((\S+)\)")
# The trainer subprocess imports this package from where this checkout has it.
PACKAGE_ROOT = cas.PACKAGE_DIR.parent


def run_open_clip_train(argv: Sequence[str], arch_config: str | None = None) -> int:
    """Entry point of the training subprocess: register a model-config JSON, then train.

    The JSON is registered under the same content-derived name rsm_eval.models uses, which
    `argv` must name with --model.
    """
    argv = list(argv)
    if arch_config:
        name = models._arch_name(Model(name="finetune", arch=arch_config))
        if "--model" not in argv or argv[argv.index("--model") + 1] != name:
            raise RsmEvalError(f"run_open_clip_train: --model must be {name} for {arch_config}")
    threads = os.environ.get(THREADS_ENV)
    if threads:
        import torch

        torch.set_num_threads(int(threads))
    from open_clip_train.main import main

    rc = main(argv)
    return 0 if rc in (None, 0) else 1


def model_name(base: Model) -> str:
    if models.is_config_path(base.arch):
        # Same content-derived name as models._arch_name, without importing open_clip here.
        return f"rsm-eval-{cas.sha256_bytes(Path(base.arch).read_bytes())[:12]}"
    return base.arch


def base_weights(base: Model, tmp: Path) -> str:
    """What --pretrained gets: a tag as is; otherwise a plain state dict file.

    Weights files are read safely (rsm_eval.models.read_state_dict, any supported format) and
    checked against the architecture; a random init is built exactly as rsm_eval.models builds
    the evaluated random model, so fine-tuning starts from that model and the training seed
    stays independent of the initialisation seed.
    """
    if base.pretrained is not None:
        return base.pretrained
    import torch

    loaded = models.build(base, "cpu")
    path = tmp / "base.pt"
    torch.save(loaded.model.state_dict(), path)
    return str(path)


def open_clip_argv(
    *,
    model_name: str,
    pretrained: str,
    base: Model,
    params: FinetuneParams,
    train_csv: Path,
    val_csv: Path | None,
    logs: Path,
    device: str,
    precision: str,
    workers: int,
    log_every: int,
) -> list[str]:
    argv = [
        "--model", model_name,
        "--pretrained", pretrained,
        "--train-data", str(train_csv),
        "--dataset-type", "csv",
        "--csv-img-key", "filepath",
        "--csv-caption-key", "title",
        "--csv-separator", ",",
        "--logs", str(logs),
        "--name", "run",
        "--save-frequency", "0",  # only the last epoch's checkpoint
        "--report-to", "none",
        "--workers", str(workers),
        "--device", device,
        "--precision", precision,
        "--epochs", str(params.epochs),
        "--batch-size", str(params.batch_size),
        "--lr", repr(float(params.lr)),
        "--wd", repr(float(params.weight_decay)),
        "--warmup", str(params.warmup),
        "--lr-scheduler", params.lr_scheduler,
        "--beta1", repr(float(params.beta1)),
        "--beta2", repr(float(params.beta2)),
        "--eps", repr(float(params.eps)),
        "--seed", str(params.seed),
        "--log-every-n-steps", str(log_every),
        "--zeroshot-frequency", "0",
    ]  # fmt: skip
    if val_csv is not None:
        argv += ["--val-data", str(val_csv), "--val-frequency", "1"]
    if params.grad_clip_norm is not None:
        argv += ["--grad-clip-norm", repr(float(params.grad_clip_norm))]
    if base.force_quick_gelu:
        argv += ["--force-quick-gelu"]
    return argv


def _environment(threads: int | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _DISTRIBUTED_ENV}
    if threads is not None:
        env[THREADS_ENV] = env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(threads)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(PACKAGE_ROOT)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])
    )
    env["PYTHONUNBUFFERED"] = "1"
    return env


def run_trainer(
    argv: list[str],
    arch_config: str | None,
    log_path: Path,
    stream: IO[str] | None,
    threads: int | None,
) -> int:
    """Run the trainer subprocess, its output into `log_path` (and echoed to `stream`)."""
    code_line = (
        "import sys; from rsm_eval.finetune.launcher import run_open_clip_train as run; "
        "sys.exit(run(sys.argv[2:], sys.argv[1] or None))"
    )
    cmd = [sys.executable, "-c", code_line, arch_config or "", *argv]
    with open(log_path, "w", encoding="utf-8") as log:
        proc = subprocess.Popen(
            cmd,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            encoding="utf-8",
            errors="replace",
            env=_environment(threads),
        )
        assert proc.stdout is not None
        try:
            for line in proc.stdout:
                log.write(line)
                if stream is not None:
                    stream.write(line)
                    stream.flush()
        except BaseException:
            proc.kill()
            proc.wait()
            raise
        return proc.wait()


def tail(path: Path, n: int = 40) -> str:
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return ""
    return "\n".join(lines[-n:])


def parse_logs(run_dir: Path) -> dict[str, Any]:
    """Train loss per epoch (mean of the logged steps) from out.log; val metrics per epoch
    from checkpoints/results.jsonl."""
    losses: dict[int, float] = {}
    log = run_dir / "out.log"
    if log.is_file():
        for line in log.read_text(encoding="utf-8", errors="replace").splitlines():
            m = _TRAIN_LINE.search(line)
            if m:
                losses[int(m.group(1))] = float(m.group(3))
    val: list[dict[str, Any]] = []
    results = run_dir / "checkpoints" / "results.jsonl"
    if results.is_file():
        for line in results.read_text(encoding="utf-8").splitlines():
            if line.strip():
                entry = json.loads(line)
                val.append(
                    {k: float(v) if isinstance(v, int | float) else v for k, v in entry.items()}
                )
    per_epoch = [losses[e] for e in sorted(losses)]
    return {
        "train_loss": per_epoch[-1] if per_epoch else None,
        "train_loss_per_epoch": per_epoch,
        "val_metrics": val[-1] if val else None,
        "val_metrics_per_epoch": val,
    }
