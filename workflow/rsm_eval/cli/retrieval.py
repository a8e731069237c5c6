"""Subcommands of cross-modal retrieval: embed, evaluate, compare, report, and the seed's
`retrieve` command line."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .. import cas
from ..errors import RsmEvalError
from .args import (
    add_bootstrap_args,
    add_model_job_args,
    add_stage,
    bootstrap_kwargs,
    json_arg,
)


def cmd_embed(args: argparse.Namespace) -> None:
    from .. import gpus, shards
    from ..embeddings import embed_split

    shard = shards.parse(args.shard) if args.shard else None
    if shard is None and not (args.out_images and args.out_texts):
        raise RsmEvalError("embed: give --out-images and --out-texts (or --shard)")
    if shard is not None and not args.shard_record:
        raise RsmEvalError("embed: --shard needs --shard-record")
    cas.memo()  # opened early so a broken cache directory fails before the model loads
    # Snakemake never assigns GPU ids: concurrent jobs claim distinct devices by lock file.
    with gpus.claim_device(args.device) as device:
        print(gpus.describe(device), file=sys.stderr)
        embed_split(
            args.model,
            Path(args.captions),
            Path(args.images_root),
            args.split,
            Path(args.out_images or "-"),
            Path(args.out_texts or "-"),
            cache_dir=Path(args.cache_dir),
            batch_size=args.batch_size,
            workers=args.workers,
            device=device,
            chunk_rows=args.chunk_rows,
            text_prefix=args.text_prefix,
            autocast=args.autocast,
            threads=args.threads,
            shard=shard,
            shard_record=Path(args.shard_record) if args.shard_record else None,
        )


def cmd_evaluate(args: argparse.Namespace) -> None:
    from .. import evaluate, leakage

    exclude = None
    if args.exclude_leaked:
        audit = json.loads(Path(args.exclude_leaked).read_text(encoding="utf-8"))
        exclude = leakage.leaked_images(audit, args.dataset)
    record = evaluate.write(
        Path(args.captions),
        Path(args.image_features),
        Path(args.text_features),
        Path(args.out_json),
        Path(args.out_ranks),
        model=args.model,
        dataset=args.dataset,
        split=args.split,
        protocol=args.variant,
        code=args.code,
        exclude_images=exclude,
        **bootstrap_kwargs(args),
    )
    print(json.dumps(record["metrics"], indent=1), file=sys.stderr)


def cmd_compare(args: argparse.Namespace) -> None:
    from .. import stats

    records = [json.loads(Path(p).read_text(encoding="utf-8")) for p in args.metrics]
    ranks = [Path(p).with_suffix("").with_suffix(".ranks.parquet") for p in args.metrics]
    pairs = stats.compare_models(records, ranks, **bootstrap_kwargs(args))
    cas.write_json_atomic(args.out, {"paired": pairs})
    print(f"{len(pairs)} paired comparisons", file=sys.stderr)


def cmd_report(args: argparse.Namespace) -> None:
    from .. import report

    paths = report.render_paths(
        Path(args.out_dir),
        metrics=args.metrics,
        summaries=args.summaries,
        workflow_root=args.workflow_root,
        published_keys=args.published_keys,
        tolerance=args.tolerance,
        paired=args.paired,
        audit=args.audit,
        clean_metrics=args.clean_metrics,
        classification=args.classification,
        finetunes=args.finetunes,
        image_roots=args.image_roots,
        localization=args.localization,
        scenes=args.scenes,
    )
    print(f"report: {paths['html']}", file=sys.stderr)


def cmd_retrieve(args: argparse.Namespace) -> None:
    from .. import retrieve

    retrieve.run(args)


def register(sub) -> None:
    p = add_stage(sub, "embed", cmd_embed, "features of one split, cached by content")
    add_model_job_args(p)
    p.add_argument("--captions", required=True, help="captions manifest")
    p.add_argument("--images-root", required=True)
    p.add_argument("--split", default="test")
    p.add_argument("--out-images", default=None)
    p.add_argument("--out-texts", default=None)
    p.add_argument("--workers", type=int, default=None, help="loader workers (default: auto)")
    p.add_argument("--shard", default=None, help="<i>-of-<n>: compute only that shard's rows")
    p.add_argument("--shard-record", default=None, help="JSON written by a --shard run")
    p.add_argument("--chunk-rows", type=int, default=2048)
    p.add_argument("--text-prefix", default="", help="prepended to every caption (skyscript)")
    p.add_argument("--autocast", action="store_true", help="mixed precision (not published)")

    p = add_stage(
        sub, "evaluate", cmd_evaluate, "retrieval metrics from cached features",
        "captions", "image-features", "text-features", "model", "dataset", "out-json",
        "out-ranks", code=True,
    )  # fmt: skip
    p.add_argument("--split", default="test")
    p.add_argument(
        "--variant",
        "--protocol",
        dest="variant",
        default="remoteclip",
        help="protocol, optionally with -autocast (protocols.parse_variant)",
    )
    add_bootstrap_args(p)
    p.add_argument(
        "--exclude-leaked",
        default=None,
        metavar="AUDIT.json",
        help="leave out test images the leakage audit found in training sources",
    )

    p = add_stage(sub, "compare", cmd_compare, "paired bootstrap between models", "out")
    p.add_argument("--metrics", nargs="+", required=True, help="evaluate stage records")
    add_bootstrap_args(p)

    from .. import retrieve  # the seed's own command line; no workflow stage runs it

    p = sub.add_parser(
        "retrieve",
        help="the seed's RET3_RetrieveTest.py command line, on the workflow's code",
        description=retrieve.__doc__,
    )
    retrieve.add_arguments(p)
    p.set_defaults(func=cmd_retrieve)

    p = sub.add_parser("report", help="CSV, Markdown and HTML report")
    p.add_argument("--metrics", nargs="+", required=True)
    p.add_argument("--summaries", nargs="*", default=[])
    p.add_argument("--out-dir", required=True)
    p.add_argument("--workflow-root", default=".")
    p.add_argument(
        "--published-keys",
        type=json_arg,
        default={},
        help='{"models": {name: {model, backbone, regime}}, "datasets": {name: key}}',
    )
    p.add_argument("--tolerance", type=float, default=1.0)
    p.add_argument("--paired", default=None, help="compare stage output")
    p.add_argument("--audit", default=None, help="leakage audit output")
    p.add_argument("--clean-metrics", nargs="*", default=[], help="leakage-cleaned records")
    p.add_argument("--classification", nargs="*", default=[], help="classify stage records")
    p.add_argument(
        "--scenes", nargs="*", default=[], help="zeroshot / probe / scene manifest summaries"
    )
    p.add_argument("--finetunes", nargs="*", default=[], help="finetune stage records")
    p.add_argument("--localization", nargs="*", default=[], help="localize stage records")
    p.add_argument("--image-roots", type=json_arg, default={}, help="{dataset: image dir}")
    p.set_defaults(func=cmd_report)
