"""Subcommands of scene classification: zero-shot on caption datasets (classify) and on scene
datasets (scene-features, zeroshot), and few-shot linear probes."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .. import cas
from ..config import LinearProbe
from .args import (
    add_bootstrap_args,
    add_dataset_arg,
    add_model_job_args,
    add_stage,
    bootstrap_kwargs,
    cpu_plan,
    spec_arg,
)


def cmd_classify(args: argparse.Namespace) -> None:
    from .. import classify, gpus

    with gpus.claim_device(args.device) as device:
        cpu_plan(device, args.threads)
        record = classify.classify_split(
            args.model,
            Path(args.captions),
            Path(args.image_features),
            split=args.split,
            templates=args.templates or classify.DEFAULT_TEMPLATES,
            labels=args.labels,
            cache_dir=Path(args.cache_dir),
            device=device,
            batch_size=args.batch_size,
        )
    record.update(model=args.model.name, dataset=args.dataset)
    cas.write_json_atomic(args.out, record)
    print(f"top1 {record.get('top1')} top5 {record.get('top5')}", file=sys.stderr)


def cmd_scene_features(args: argparse.Namespace) -> None:
    from .. import gpus, scene_eval

    cas.memo()
    with gpus.claim_device(args.device) as device:
        print(gpus.describe(device), file=sys.stderr)
        scene_eval.scene_features(
            args.model,
            Path(args.manifest),
            Path(args.images_root),
            Path(args.out),
            cache_dir=Path(args.cache_dir),
            device=device,
            batch_size=args.batch_size,
            workers=args.workers,
        )


def cmd_zeroshot(args: argparse.Namespace) -> None:
    from .. import gpus, scene_eval

    with gpus.claim_device(args.device) as device:
        record = scene_eval.zero_shot(
            args.model,
            args.dataset,
            Path(args.manifest),
            Path(args.features),
            args.templates,
            cache_dir=Path(args.cache_dir),
            device=device,
            batch_size=args.batch_size,
            code=args.code,
            **bootstrap_kwargs(args),
        )
    cas.write_json_atomic(args.out, record)
    print(f"{args.templates}: top1 {record['top1']:.2f} top5 {record['top5']:.2f}", file=sys.stderr)


def cmd_probe(args: argparse.Namespace) -> None:
    from .. import probe

    record = probe.probe_dataset(
        args.dataset, args.model, args.split, Path(args.manifest), Path(args.features),
        args.settings.to_dict(), code=args.code,
    )  # fmt: skip
    cas.write_json_atomic(args.out, record)
    for label, r in record["results"].items():
        print(f"{label}: top1 {r['top1_mean']:.2f} +- {r['top1_std']:.2f}", file=sys.stderr)


def register(sub) -> None:
    p = add_stage(
        sub, "classify", cmd_classify, "zero-shot classes of a caption dataset's test images",
        "dataset", "captions", "image-features", "out",
    )  # fmt: skip
    add_model_job_args(p)
    p.add_argument("--split", default="test")
    p.add_argument("--templates", nargs="*", default=None)
    p.add_argument("--labels", choices=("file-names", "ucm-numbering"), default="file-names")

    p = add_stage(
        sub, "scene-features", cmd_scene_features, "image features of a scene dataset (cached)",
        "manifest", "images-root", "out",
    )  # fmt: skip
    add_model_job_args(p, threads=False)
    p.add_argument("--workers", type=int, default=0)

    p = add_stage(
        sub, "zeroshot", cmd_zeroshot, "zero-shot scene classification from cached features",
        "manifest", "features", "out", code=True,
    )  # fmt: skip
    add_model_job_args(p, threads=False)
    add_dataset_arg(p)
    p.add_argument("--templates", required=True, help="template set name")
    add_bootstrap_args(p)

    p = add_stage(
        sub, "probe", cmd_probe, "few-shot linear probes on cached scene features",
        "model", "dataset", "split", "manifest", "features", "out", code=True,
    )  # fmt: skip
    p.add_argument("--settings", type=spec_arg(LinearProbe), required=True)
