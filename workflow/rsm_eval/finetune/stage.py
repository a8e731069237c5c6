"""The fine-tuning stage as named steps: select, reuse or train, convert, record, publish."""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

from .. import cas
from ..config import Model
from ..errors import RsmEvalError
from . import trainer
from .checkpoint import Cache, check_loads, save_state_dict
from .overlap import EvalSplit, select
from .pairs import TrainingManifest
from .params import FinetuneParams
from .record import address_of, training_record


def _check_resources(workers: Any, threads: Any) -> None:
    if not isinstance(workers, int) or workers < 0:
        raise RsmEvalError(f"finetune.workers: expected an integer >= 0, got {workers!r}")
    if threads is not None and (not isinstance(threads, int) or threads < 1):
        raise RsmEvalError(f"finetune.threads: expected an integer >= 1, got {threads!r}")


def _publish(staged: Path, out: Path, record: dict[str, Any], record_out: Path) -> None:
    with cas.atomic_path(out, suffix=".pt") as final:
        os.replace(staged, final)
    cas.write_json_atomic(record_out, record)


def finetune(
    sources: Sequence[TrainingManifest],
    base: Model,
    params: FinetuneParams,
    out: Path | str,
    *,
    tests: Sequence[EvalSplit] = (),
    test_overlap: str = "refuse",
    record_out: Path | str | None = None,
    device: str = "auto",
    workers: int = 0,
    threads: int | None = None,
    cache_dir: Path | str | None = None,
    logs_out: Path | str | None = None,
    stream: IO[str] | None = sys.stderr,
) -> dict[str, Any]:
    """Fine-tune `base` on the pairs of `sources` with open_clip_train; write the state dict.

    `out` receives a plain state dict (fp32, no 'module.' prefix) that loads into `base`'s
    architecture; the training record (returned) is written to `record_out` (default: `out`
    with suffix .json). `tests`: evaluated splits checked for shared images under
    `test_overlap` ('refuse', 'exclude', 'allow'). `device`: 'auto', 'cuda' or 'cpu';
    `workers`: data-loader workers; `threads`: torch CPU threads of the trainer (give the
    job's core count: more threads than free cores makes CPU training many times slower, as
    every operator waits for the descheduled thread; None: torch's default). With
    `cache_dir`, a fine-tune whose address was trained before is copied from
    `<cache_dir>/finetune/<address>.pt` instead of retrained, and a new one is stored there.
    `logs_out`: a directory to keep open_clip_train's out.log, params.txt and results.jsonl
    in. `stream`: where the trainer's output is echoed.
    """
    t0 = time.monotonic()
    out = Path(out)
    record_out = Path(record_out) if record_out is not None else out.with_suffix(".json")
    _check_resources(workers, threads)
    ts = select(sources, tests, test_overlap)
    address = address_of(ts, base, params)
    cache = Cache(Path(cache_dir), address) if cache_dir is not None else None
    if cache is not None and (cached := cache.reuse(out, record_out, stream)) is not None:
        return cached

    plan = trainer.schedule(ts, params, device)
    out.parent.mkdir(parents=True, exist_ok=True)
    # Beside the output, not in /tmp: a ViT-L training checkpoint with optimizer state is GBs.
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".finetune", dir=out.parent))
    try:
        run = trainer.train(
            plan,
            base,
            params,
            tmp,
            workers=workers,
            threads=threads,
            stream=stream,
            label=f"finetune {address}",
        )
        if logs_out is not None:
            trainer.keep_logs(run, Path(logs_out))
        staged = tmp / "model.pt"
        sha = save_state_dict(run.checkpoint, staged)
        check_loads(staged, base)
        record = training_record(
            address=address,
            base=base,
            params=params,
            ts=ts,
            tests=tests,
            schedule=plan,
            run=run,
            workers=workers,
            threads=threads,
            checkpoint={"sha256": sha, "bytes": staged.stat().st_size},
        )
        record["wall_seconds"] = round(time.monotonic() - t0, 3)
        if cache is not None:
            cache.store(staged, record)
        _publish(staged, out, record, record_out)
        return record
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
