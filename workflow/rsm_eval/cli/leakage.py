"""Subcommands of the leakage audit: hash images (sharded), gather, audit."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .. import cas
from ..specs import LeakageSpec
from .args import add_device_args, add_stage, cpu_plan, spec_arg


def cmd_image_hashes(args: argparse.Namespace) -> None:
    from .. import gpus, leakage, shards

    threads = gpus.plan_cpu("cpu", args.threads, 0).budget
    shard = shards.parse(args.shard) if args.shard else None
    n = leakage.hash_dataset(
        Path(args.images_manifest),
        Path(args.images_root),
        Path(args.out),
        threads=threads,
        shard=shard,
    )
    print(f"hashed {n} images on {threads} threads", file=sys.stderr)


def cmd_gather_hashes(args: argparse.Namespace) -> None:
    from .. import leakage

    n = leakage.gather_hashes([Path(p) for p in args.parts], Path(args.out))
    print(f"gathered {n} image hashes from {len(args.parts)} shards", file=sys.stderr)


def cmd_leakage(args: argparse.Namespace) -> None:
    from .. import leakage

    spec = args.spec
    tests = {k: (Path(t.hashes), t.split) for k, t in spec.tests.items()}
    trains = {k: (Path(t.hashes), t.split) for k, t in spec.trains.items()}
    audit = leakage.audit_sources(tests, trains, max_hamming=spec.max_hamming)
    if spec.confirm_with is not None:
        from .. import gpus

        with gpus.claim_device(args.device) as device:
            cpu_plan(device, args.threads)
            audit = leakage.confirm_with_model(
                audit,
                spec.confirm_with,
                spec.image_roots,
                threshold=spec.cosine_threshold,
                cache_dir=Path(args.cache_dir),
                device=device,
            )
    cas.write_json_atomic(args.out, audit)
    for c in audit["counts"]:
        print(
            f"{c['test']} vs {c['source']}: {c['exact']} exact, {c['near']} near", file=sys.stderr
        )


def register(sub) -> None:
    p = add_stage(
        sub, "image-hashes", cmd_image_hashes,
        "decoded-pixel and perceptual hashes of a dataset", "images-manifest", "images-root", "out",
    )  # fmt: skip
    p.add_argument("--threads", type=int, default=None, help="decoding threads (default: all)")
    p.add_argument("--shard", default=None, help="<i>-of-<n>: hash only that shard's images")

    p = add_stage(sub, "gather-hashes", cmd_gather_hashes, "concatenate sharded hash tables", "out")
    p.add_argument("--parts", nargs="+", required=True, help="shard tables, in shard order")

    p = add_stage(
        sub, "leakage", cmd_leakage, "duplicates between training sources and test splits", "out"
    )
    p.add_argument("--spec", type=spec_arg(LeakageSpec), required=True, help="specs.LeakageSpec")
    p.add_argument("--cache-dir", default="results/cache")
    add_device_args(p)
