"""A fine-tune's content address and its training record.

The address is a digest of the selected pairs' contents (image sha256, caption sha256; never
paths), the hyper-parameters (seed included), the base model's address, the code version of
this subpackage (cas.code_version, over its import closure) and the openCLIP / torch /
torchvision versions. The record written beside the weights says what was trained on, how, and
what came out; it is also what a later run with an equal address reuses from the cache.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .. import cas, models
from ..config import Model
from .overlap import EvalSplit, select
from .pairs import TrainingManifest, TrainingSet
from .params import FinetuneParams
from .trainer import Schedule, TrainerRun

STAGE = "finetune"


def versions() -> dict[str, str]:
    return {
        "open_clip": models._version("open_clip_torch"),
        "torch": models._version("torch"),
        "torchvision": models._version("torchvision"),
    }


def code() -> str:
    return cas.code_version("rsm_eval.finetune")


def address_of(ts: TrainingSet, base: Model, params: FinetuneParams) -> str:
    data = cas.digest([[p.image_sha256, p.caption_sha256] for p in ts.pairs])
    return cas.digest(
        {
            "stage": STAGE,
            "code": code(),
            "versions": versions(),
            "base_model": models.address(base),
            "params": params.to_dict(),
            "data": data,
        }
    )


def finetune_address(
    sources: Sequence[TrainingManifest],
    base: Model,
    params: FinetuneParams,
    *,
    tests: Sequence[EvalSplit] = (),
    test_overlap: str = "refuse",
) -> str:
    """Content address of a fine-tune (what `finetune` would record), without training.

    Under the 'refuse' policy an overlap is not an error here (it is when training).
    """
    policy = "allow" if test_overlap == "refuse" else test_overlap
    ts = select(sources, tests, policy, verify_images=False)
    return address_of(ts, base, params)


def _base_model(base: Model) -> dict[str, Any]:
    return {
        "name": base.name,
        "address": models.address(base),
        "arch": base.arch,
        "weights_kind": base.weights_kind,
        "pretrained": base.pretrained,
        "random": base.random,
        "force_quick_gelu": base.force_quick_gelu,
    }


def _data(ts: TrainingSet, tests: Sequence[EvalSplit], schedule: Schedule) -> dict[str, Any]:
    train, val = schedule.train, schedule.val
    return {
        "sources": ts.sources,
        "dropped": ts.dropped,
        "test_overlap": {
            "policy": ts.test_overlap,
            "checked": [t.name for t in tests],
            "overlaps": ts.overlaps,
        },
        "n_pairs": len(ts.pairs),
        "n_train_pairs": len(train),
        "n_val_pairs": len(val),
        "n_train_images": len({p.image_sha256 for p in train}),
        "n_val_images": len({p.image_sha256 for p in val}),
    }


def _training(
    schedule: Schedule, run: TrainerRun, workers: int, threads: int | None
) -> dict[str, Any]:
    return {
        "trainer": "open_clip_train.main",
        "device": schedule.device,
        "precision": schedule.precision,
        "workers": workers,
        "threads": threads,
        "steps_per_epoch": schedule.steps_per_epoch,
        "total_steps": schedule.total_steps,
        **run.logs,
        "train_seconds": round(run.seconds, 3),
    }


def training_record(
    *,
    address: str,
    base: Model,
    params: FinetuneParams,
    ts: TrainingSet,
    tests: Sequence[EvalSplit],
    schedule: Schedule,
    run: TrainerRun,
    workers: int,
    threads: int | None,
    checkpoint: dict[str, Any],
) -> dict[str, Any]:
    """The record of a finished training run (`checkpoint`: sha256 and bytes of the weights);
    the caller adds wall_seconds."""
    return {
        "stage": STAGE,
        "address": address,
        "code": code(),
        "versions": versions(),
        "base_model": _base_model(base),
        "params": params.to_dict(),
        "data": _data(ts, tests, schedule),
        "training": _training(schedule, run, workers, threads),
        "checkpoint": checkpoint,
        "reused": False,
    }
