"""`rsm-eval`: the plain command-line entry point; each workflow rule calls one subcommand.

Rules pass datasets and models as JSON (shell-quoted by Snakemake), so the same commands
work outside Snakemake and nothing from config or data reaches a shell unquoted.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from . import cas
from .config import Dataset, FetchSpec, LinearProbe, Model
from .errors import RsmEvalError
from .specs import FinetuneSpec, LeakageSpec, LocalizationSpec

DEVICES = ("auto", "cpu", "cuda")


def _json_arg(text: str) -> dict:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"not JSON: {exc}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("expected a JSON object")
    return value


def _spec_arg(cls):
    """argparse type reading a spec with its own class's from_json (rsm_eval.jsonspec)."""

    def parse(text: str):
        try:
            return cls.from_json(text)
        except RsmEvalError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    parse.__name__ = cls.__name__
    return parse


def cmd_demo(args: argparse.Namespace) -> None:
    from .demo import generate_benchmark

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
    from .scene_demo import generate_scenes

    counts = generate_scenes(Path(args.out), Path(args.karpathy), Path(args.images), seed=args.seed)
    print(json.dumps(counts, indent=1), file=sys.stderr)


def cmd_fetch(args: argparse.Namespace) -> None:
    from . import sources

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
    from . import manifests

    summary = manifests.write(
        args.dataset, Path(args.captions), Path(args.images), Path(args.summary), code=args.code
    )
    print(json.dumps(summary, indent=1), file=sys.stderr)


def cmd_embed(args: argparse.Namespace) -> None:
    from . import gpus, shards
    from .embeddings import embed_split

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


def _cpu_plan(device: str, threads: int | None, workers: int | None = 0):
    """Set torch's threads for a model job (gpus.plan_cpu) and log them."""
    from . import gpus

    plan = gpus.plan_cpu(device, threads, workers)
    gpus.apply_cpu_plan(plan)
    print(plan.describe(), file=sys.stderr, flush=True)
    return plan


def cmd_evaluate(args: argparse.Namespace) -> None:
    from . import evaluate, leakage

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
        n_resamples=args.n_resamples,
        seed=args.seed,
        level=args.level,
        exclude_images=exclude,
    )
    print(json.dumps(record["metrics"], indent=1), file=sys.stderr)


def cmd_image_hashes(args: argparse.Namespace) -> None:
    from . import gpus, leakage, shards

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
    from . import leakage

    n = leakage.gather_hashes([Path(p) for p in args.parts], Path(args.out))
    print(f"gathered {n} image hashes from {len(args.parts)} shards", file=sys.stderr)


def cmd_leakage(args: argparse.Namespace) -> None:
    from . import leakage

    spec = args.spec
    tests = {k: (Path(t.hashes), t.split) for k, t in spec.tests.items()}
    trains = {k: (Path(t.hashes), t.split) for k, t in spec.trains.items()}
    audit = leakage.audit_sources(tests, trains, max_hamming=spec.max_hamming)
    if spec.confirm_with is not None:
        from . import gpus

        with gpus.claim_device(args.device) as device:
            _cpu_plan(device, args.threads)
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


def cmd_classify(args: argparse.Namespace) -> None:
    from . import classify, gpus

    with gpus.claim_device(args.device) as device:
        _cpu_plan(device, args.threads)
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


def cmd_localize(args: argparse.Namespace) -> None:
    from . import gpus, localize

    spec = args.dataset
    with gpus.claim_device(args.device) as device:
        record = localize.run(
            args.model,
            Path(spec.annotations),
            Path(spec.images),
            Path(args.out),
            Path(args.figures),
            dataset=spec.name,
            cache_dir=Path(args.cache_dir),
            device=device,
            batch_size=args.batch_size,
            params=spec.params,
            expected=spec.expected,
            n_figures=spec.figures,
            n_resamples=args.n_resamples,
            seed=args.seed,
            level=args.level,
            threads=args.threads,
            code=args.code,
            published=spec.published,
        )
    print(
        ", ".join(f"{m} {record['metrics'][m]['mean']:.4f}" for m in localize.METRICS),
        file=sys.stderr,
    )


def cmd_demo_scene(args: argparse.Namespace) -> None:
    from .demo_scene import generate

    info = generate(Path(args.out), seed=args.seed, width=args.width, height=args.height)
    print(json.dumps(info), file=sys.stderr)


def cmd_scene_manifest(args: argparse.Namespace) -> None:
    from . import scenes

    summary = scenes.write(args.dataset, Path(args.out), Path(args.summary), code=args.code)
    print(json.dumps(summary["counts"], indent=1), file=sys.stderr)


def cmd_scene_features(args: argparse.Namespace) -> None:
    from . import gpus, scene_eval

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
    from . import gpus, scene_eval

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
            n_resamples=args.n_resamples,
            seed=args.seed,
            level=args.level,
            code=args.code,
        )
    cas.write_json_atomic(args.out, record)
    print(f"{args.templates}: top1 {record['top1']:.2f} top5 {record['top5']:.2f}", file=sys.stderr)


def cmd_probe(args: argparse.Namespace) -> None:
    from . import probe

    record = probe.probe_dataset(
        args.dataset, args.model, args.split, Path(args.manifest), Path(args.features),
        args.settings.to_dict(), code=args.code,
    )  # fmt: skip
    cas.write_json_atomic(args.out, record)
    for label, r in record["results"].items():
        print(f"{label}: top1 {r['top1_mean']:.2f} +- {r['top1_std']:.2f}", file=sys.stderr)


def cmd_finetune(args: argparse.Namespace) -> None:
    from . import finetune, gpus

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


def cmd_compare(args: argparse.Namespace) -> None:
    from . import stats

    records = [json.loads(Path(p).read_text(encoding="utf-8")) for p in args.metrics]
    ranks = [Path(p).with_suffix("").with_suffix(".ranks.parquet") for p in args.metrics]
    pairs = stats.compare_models(
        records, ranks, n_resamples=args.n_resamples, seed=args.seed, level=args.level
    )
    cas.write_json_atomic(args.out, {"paired": pairs})
    print(f"{len(pairs)} paired comparisons", file=sys.stderr)


def cmd_report(args: argparse.Namespace) -> None:
    from . import report

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
    from . import retrieve

    retrieve.run(args)


def _add_bootstrap_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--n-resamples", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--level", type=float, default=0.95)


def _add_model_job_args(
    p: argparse.ArgumentParser, batch: bool = True, threads: bool = True
) -> None:
    """What every job that runs a model takes: the model, the feature store, the device."""
    p.add_argument("--model", type=_spec_arg(Model), required=True, help="model entry as JSON")
    p.add_argument("--cache-dir", required=True)
    p.add_argument("--device", choices=DEVICES, default="auto")
    if batch:
        p.add_argument("--batch-size", type=int, default=64)
    if threads:
        p.add_argument("--threads", type=int, default=None, help="CPUs of the job (default: all)")


def _add_dataset_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--dataset", type=_spec_arg(Dataset), required=True, help="dataset entry as JSON"
    )


def _add_stage(sub, name: str, func, help: str, *required: str, code: bool = False):
    """A subcommand with its required path options (`--out`, ...) and optional --code."""
    p = sub.add_parser(name, help=help)
    for opt in required:
        p.add_argument(f"--{opt}", required=True)
    if code:
        p.add_argument("--code", default="")
    p.set_defaults(func=func)
    return p


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rsm-eval", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = _add_stage(sub, "demo", cmd_demo, "generate the bundled offline demo benchmark", "out")
    p.add_argument("--seed", type=int, default=0)
    for opt, n in (("n-train", 300), ("n-val", 50), ("n-test", 100), ("n-csv-images", 300)):
        p.add_argument(f"--{opt}", type=int, default=n)

    p = _add_stage(sub, "fetch", cmd_fetch, "download / extract / verify one source", "dest")
    p.add_argument("--spec", type=_spec_arg(FetchSpec), required=True, help="config.FetchSpec")
    p.add_argument("--lock", default="sources.lock.yaml")
    p.add_argument("--refresh-lock", action="store_true")

    p = _add_stage(
        sub, "manifest", cmd_manifest, "annotations -> Parquet manifests",
        "captions", "images", "summary", code=True,
    )  # fmt: skip
    _add_dataset_arg(p)

    p = _add_stage(sub, "embed", cmd_embed, "features of one split, cached by content")
    _add_model_job_args(p)
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

    p = _add_stage(
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
    _add_bootstrap_args(p)
    p.add_argument(
        "--exclude-leaked",
        default=None,
        metavar="AUDIT.json",
        help="leave out test images the leakage audit found in training sources",
    )

    p = _add_stage(
        sub, "image-hashes", cmd_image_hashes,
        "decoded-pixel and perceptual hashes of a dataset", "images-manifest", "images-root", "out",
    )  # fmt: skip
    p.add_argument("--threads", type=int, default=None, help="decoding threads (default: all)")
    p.add_argument("--shard", default=None, help="<i>-of-<n>: hash only that shard's images")

    p = _add_stage(
        sub, "gather-hashes", cmd_gather_hashes, "concatenate sharded hash tables", "out"
    )
    p.add_argument("--parts", nargs="+", required=True, help="shard tables, in shard order")

    p = _add_stage(
        sub, "leakage", cmd_leakage, "duplicates between training sources and test splits", "out"
    )
    p.add_argument("--spec", type=_spec_arg(LeakageSpec), required=True, help="specs.LeakageSpec")
    p.add_argument("--cache-dir", default="results/cache")
    p.add_argument("--device", choices=DEVICES, default="auto")
    p.add_argument("--threads", type=int, default=None, help="CPUs of the job (default: all)")

    p = _add_stage(
        sub, "classify", cmd_classify, "zero-shot scene classification from cached features",
        "dataset", "captions", "image-features", "out",
    )  # fmt: skip
    _add_model_job_args(p)
    p.add_argument("--split", default="test")
    p.add_argument("--templates", nargs="*", default=None)
    p.add_argument("--labels", choices=("file-names", "ucm-numbering"), default="file-names")

    p = _add_stage(
        sub, "demo-scenes", cmd_demo_scenes, "the demo's class-folder scene benchmark",
        "karpathy", "images", "out",
    )  # fmt: skip
    p.add_argument("--seed", type=int, default=0)

    p = _add_stage(
        sub, "scene-manifest", cmd_scene_manifest, "class folders / label CSV -> scene manifest",
        "out", "summary", code=True,
    )  # fmt: skip
    _add_dataset_arg(p)

    p = _add_stage(
        sub, "scene-features", cmd_scene_features, "image features of a scene dataset (cached)",
        "manifest", "images-root", "out",
    )  # fmt: skip
    _add_model_job_args(p, threads=False)
    p.add_argument("--workers", type=int, default=0)

    p = _add_stage(
        sub, "zeroshot", cmd_zeroshot, "zero-shot scene classification from cached features",
        "manifest", "features", "out", code=True,
    )  # fmt: skip
    _add_model_job_args(p, threads=False)
    _add_dataset_arg(p)
    p.add_argument("--templates", required=True, help="template set name")
    _add_bootstrap_args(p)

    p = _add_stage(
        sub, "probe", cmd_probe, "few-shot linear probes on cached scene features",
        "model", "dataset", "split", "manifest", "features", "out", code=True,
    )  # fmt: skip
    p.add_argument("--settings", type=_spec_arg(LinearProbe), required=True)

    p = _add_stage(
        sub, "finetune", cmd_finetune, "train a model with open_clip_train on caption manifests",
        "out", "record", "cache-dir",
    )  # fmt: skip
    p.add_argument("--spec", type=_spec_arg(FinetuneSpec), required=True, help="FinetuneSpec")
    p.add_argument("--device", choices=DEVICES, default="auto")
    p.add_argument("--workers", type=int, default=0)
    p.add_argument("--threads", type=int, default=None)

    p = _add_stage(
        sub, "localize", cmd_localize, "semantic localization (AIR-SLT) of one model",
        "out", "figures", code=True,
    )  # fmt: skip
    _add_model_job_args(p)
    p.add_argument("--dataset", type=_spec_arg(LocalizationSpec), required=True)
    _add_bootstrap_args(p)

    p = _add_stage(
        sub, "demo-scene", cmd_demo_scene, "the demo's semantic-localization scene", "out"
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--width", type=int, default=1536)
    p.add_argument("--height", type=int, default=1024)

    p = _add_stage(sub, "compare", cmd_compare, "paired bootstrap between models", "out")
    p.add_argument("--metrics", nargs="+", required=True, help="evaluate stage records")
    _add_bootstrap_args(p)

    from . import retrieve  # here, not at the top: a stage's code is the CLI's top imports

    retrieve.add_arguments(
        sub.add_parser(
            "retrieve",
            help="the seed's RET3_RetrieveTest.py command line, on the workflow's code",
            description=retrieve.__doc__,
        )
    )
    sub.choices["retrieve"].set_defaults(func=cmd_retrieve)

    p = sub.add_parser("report", help="CSV, Markdown and HTML report")
    p.add_argument("--metrics", nargs="+", required=True)
    p.add_argument("--summaries", nargs="*", default=[])
    p.add_argument("--out-dir", required=True)
    p.add_argument("--workflow-root", default=".")
    p.add_argument(
        "--published-keys",
        type=_json_arg,
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
    p.add_argument("--image-roots", type=_json_arg, default={}, help="{dataset: image dir}")
    p.set_defaults(func=cmd_report)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except RsmEvalError as exc:
        print(f"rsm-eval {args.command}: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
