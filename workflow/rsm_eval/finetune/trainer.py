"""The training run: plan open_clip_train's schedule, write its inputs, run it, check it.

RSM-CLIP's recipe runs on openCLIP's own trainer (`open_clip_train.main`), not a hand-written
loop. `schedule` fixes what the run will do (validation split, steps, device, precision) and
refuses one that would take no step; `train` writes the CSV files the trainer reads (absolute
image paths, in the training set's canonical order), runs it through `launcher` in a working
directory and returns its last checkpoint and logs.
"""

from __future__ import annotations

import csv
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from .. import models
from ..config import Model
from ..errors import RsmEvalError
from . import launcher
from .pairs import Pair, TrainingSet, split_train_val
from .params import FinetuneParams


@dataclass(frozen=True)
class Schedule:
    """What open_clip_train will do: the pairs on each side, its steps, device and precision."""

    train: list[Pair]
    val: list[Pair]
    epochs: int
    steps_per_epoch: int
    total_steps: int
    device: str
    precision: str
    log_every: int


@dataclass(frozen=True)
class TrainerRun:
    """A finished open_clip_train run: its last checkpoint, logs and training time."""

    run_dir: Path
    checkpoint: Path
    console: Path
    logs: dict[str, Any]  # launcher.parse_logs
    seconds: float


def schedule(ts: TrainingSet, params: FinetuneParams, device: str) -> Schedule:
    """Split off the validation images and check that the schedule takes steps."""
    train, val = split_train_val(ts.pairs, params.val_fraction, params.seed)
    steps_per_epoch = len(train) // params.batch_size
    if steps_per_epoch == 0:
        raise RsmEvalError(
            f"finetune: {len(train)} training pairs are fewer than batch_size="
            f"{params.batch_size} (open_clip_train drops the last partial batch, so no step "
            "would be taken); lower batch_size or add data"
        )
    total_steps = steps_per_epoch * params.epochs
    if params.warmup >= total_steps:
        raise RsmEvalError(
            f"finetune.warmup: {params.warmup} warmup steps but only {total_steps} steps in "
            f"total ({steps_per_epoch} per epoch x {params.epochs} epochs)"
        )
    used_device = models.choose_device(device)
    precision = params.precision
    if precision == "auto":
        precision = "amp" if used_device == "cuda" else "fp32"
    return Schedule(
        train=train,
        val=val,
        epochs=params.epochs,
        steps_per_epoch=steps_per_epoch,
        total_steps=total_steps,
        device=used_device,
        precision=precision,
        log_every=max(1, steps_per_epoch // 50),
    )


def write_csv(path: Path, pairs: Sequence[Pair]) -> None:
    with open(path, "w", encoding="utf-8", newline="") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(["filepath", "title"])
        for p in pairs:
            w.writerow([p.path, p.caption])


def train(
    plan: Schedule,
    base: Model,
    params: FinetuneParams,
    tmp: Path,
    *,
    workers: int,
    threads: int | None,
    stream: IO[str] | None,
    label: str,
) -> TrainerRun:
    """Write the CSVs, run open_clip_train in `tmp` and return its last checkpoint.

    A failed run (non-zero exit or no checkpoint) is an error quoting the trainer's output.
    """
    train_csv = tmp / "train.csv"
    write_csv(train_csv, plan.train)
    val_csv = None
    if plan.val:
        val_csv = tmp / "val.csv"
        write_csv(val_csv, plan.val)
    pretrained = launcher.base_weights(base, tmp)
    arch_config = str(Path(base.arch).resolve()) if models.is_config_path(base.arch) else None
    argv = launcher.open_clip_argv(
        model_name=launcher.model_name(base),
        pretrained=pretrained,
        base=base,
        params=params,
        train_csv=train_csv,
        val_csv=val_csv,
        logs=tmp / "logs",
        device=plan.device,
        precision=plan.precision,
        workers=workers,
        log_every=plan.log_every,
    )
    if stream is not None:
        print(
            f"{label}: {len(plan.train)} train / {len(plan.val)} val pairs, "
            f"{plan.epochs} epochs x {plan.steps_per_epoch} steps, device {plan.device}, "
            f"precision {plan.precision}",
            file=stream,
            flush=True,
        )
    t0 = time.monotonic()
    console = tmp / "console.log"
    rc = launcher.run_trainer(argv, arch_config, console, stream, threads)
    seconds = time.monotonic() - t0
    run_dir = tmp / "logs" / "run"
    checkpoint = run_dir / "checkpoints" / f"epoch_{plan.epochs}.pt"
    if rc != 0 or not checkpoint.is_file():
        raise RsmEvalError(
            f"finetune: open_clip_train failed (exit status {rc}"
            + ("" if checkpoint.is_file() else f", no checkpoint {checkpoint.name}")
            + f"); last lines of its output:\n{launcher.tail(console)}"
        )
    return TrainerRun(run_dir, checkpoint, console, launcher.parse_logs(run_dir), seconds)


def keep_logs(run: TrainerRun, dest: Path) -> None:
    """Copy open_clip_train's out.log, params.txt, results.jsonl and its console into `dest`."""
    dest.mkdir(parents=True, exist_ok=True)
    for src in (
        run.run_dir / "out.log",
        run.run_dir / "params.txt",
        run.console,
        run.run_dir / "checkpoints" / "results.jsonl",
    ):
        if src.is_file():
            shutil.copyfile(src, dest / src.name)
