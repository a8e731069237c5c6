"""The fine-tuning subcommand: train a model with open_clip_train on caption manifests."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .. import cas
from ..specs import FinetuneSpec
from .args import add_device_args, add_stage, spec_arg


def cmd_finetune(args: argparse.Namespace) -> None:
    from .. import finetune, gpus

    spec = args.spec
    base = spec.base
    raw = dict(spec.params)
    if {"lr", "batch_size"} <= set(raw):
        params = finetune.FinetuneParams.from_dict(raw, "finetunes.params")
    else:
        params = finetune.paper_params(base.arch, **raw)
    sources = [
        finetune.TrainingManifest(
            captions=s.captions,
            images=s.images,
            splits=None if s.split is None else (s.split,),
            name=s.name,
        )
        for s in spec.training
    ]
    tests = [
        finetune.EvalSplit(name=t.name, captions=t.captions, split=t.split) for t in spec.tests
    ]
    with gpus.claim_device(args.device) as device:
        print(gpus.describe(device), file=sys.stderr)
        record = finetune.finetune(
            sources,
            base,
            params,
            Path(args.out),
            tests=tests,
            test_overlap=spec.test_overlap,
            record_out=Path(args.record),
            device=device,
            workers=args.workers,
            threads=args.threads,
            cache_dir=Path(args.cache_dir),
        )
    record["model_name"] = spec.name
    cas.write_json_atomic(args.record, record)
    print(f"fine-tuned: address {record.get('address')}", file=sys.stderr)


def register(sub) -> None:
    p = add_stage(
        sub, "finetune", cmd_finetune, "train a model with open_clip_train on caption manifests",
        "out", "record", "cache-dir",
    )  # fmt: skip
    p.add_argument("--spec", type=spec_arg(FinetuneSpec), required=True, help="FinetuneSpec")
    add_device_args(p)
    p.add_argument("--workers", type=int, default=0)
