"""Subcommands that make the data: the offline demo, fetching sources, the manifests."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..config import FetchSpec
from .args import add_dataset_arg, add_stage, spec_arg


def cmd_demo(args: argparse.Namespace) -> None:
    from ..demo import generate_benchmark

    summary = generate_benchmark(
        Path(args.out),
        seed=args.seed,
        n_train=args.n_train,
        n_val=args.n_val,
        n_test=args.n_test,
        n_csv_images=args.n_csv_images,
    )
    print(json.dumps(summary.get("counts", {}), indent=1), file=sys.stderr)


def cmd_demo_scenes(args: argparse.Namespace) -> None:
    from ..scene_demo import generate_scenes

    counts = generate_scenes(Path(args.out), Path(args.karpathy), Path(args.images), seed=args.seed)
    print(json.dumps(counts, indent=1), file=sys.stderr)


def cmd_demo_scene(args: argparse.Namespace) -> None:
    from ..demo_scene import generate

    info = generate(Path(args.out), seed=args.seed, width=args.width, height=args.height)
    print(json.dumps(info), file=sys.stderr)


def cmd_fetch(args: argparse.Namespace) -> None:
    from .. import sources

    spec = args.spec
    dest = sources.materialize(
        sources.Source.from_config(spec.key, spec.entry),
        Path(args.dest),
        lock=sources.LockFile(Path(args.lock)),
        refresh_lock=args.refresh_lock,
        is_dir=spec.is_dir,
        layout=sources.Layout.from_json(spec.layout),
    )
    print(f"{spec.key}: ready at {dest}", file=sys.stderr)


def cmd_manifest(args: argparse.Namespace) -> None:
    from .. import manifests

    summary = manifests.write(
        args.dataset, Path(args.captions), Path(args.images), Path(args.summary), code=args.code
    )
    print(json.dumps(summary, indent=1), file=sys.stderr)


def cmd_scene_manifest(args: argparse.Namespace) -> None:
    from .. import scenes

    summary = scenes.write(args.dataset, Path(args.out), Path(args.summary), code=args.code)
    print(json.dumps(summary["counts"], indent=1), file=sys.stderr)


def register(sub) -> None:
    p = add_stage(sub, "demo", cmd_demo, "generate the bundled offline demo benchmark", "out")
    p.add_argument("--seed", type=int, default=0)
    for opt, n in (("n-train", 300), ("n-val", 50), ("n-test", 100), ("n-csv-images", 300)):
        p.add_argument(f"--{opt}", type=int, default=n)

    p = add_stage(
        sub, "demo-scenes", cmd_demo_scenes, "the demo's class-folder scene benchmark",
        "karpathy", "images", "out",
    )  # fmt: skip
    p.add_argument("--seed", type=int, default=0)

    p = add_stage(
        sub, "demo-scene", cmd_demo_scene, "the demo's semantic-localization scene", "out"
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--width", type=int, default=1536)
    p.add_argument("--height", type=int, default=1024)

    p = add_stage(sub, "fetch", cmd_fetch, "download / extract / verify one source", "dest")
    p.add_argument("--spec", type=spec_arg(FetchSpec), required=True, help="config.FetchSpec")
    p.add_argument("--lock", default="sources.lock.yaml")
    p.add_argument("--refresh-lock", action="store_true")

    p = add_stage(
        sub, "manifest", cmd_manifest, "annotations -> Parquet manifests",
        "captions", "images", "summary", code=True,
    )  # fmt: skip
    add_dataset_arg(p)

    p = add_stage(
        sub, "scene-manifest", cmd_scene_manifest, "class folders / label CSV -> scene manifest",
        "out", "summary", code=True,
    )  # fmt: skip
    add_dataset_arg(p)
