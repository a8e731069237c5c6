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
from .config import Dataset, Model
from .errors import RsmEvalError


def _json_arg(text: str) -> dict:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"not JSON: {exc}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("expected a JSON object")
    return value


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


def cmd_fetch(args: argparse.Namespace) -> None:
    from . import sources

    entry = dict(args.source)
    key = entry.pop("key", args.dest)
    source = sources.Source.from_config(key, entry)
    lock = sources.LockFile(Path(args.lock))
    dest = sources.materialize(source, Path(args.dest), lock=lock, refresh_lock=args.refresh_lock)
    print(f"{key}: ready at {dest}", file=sys.stderr)


def cmd_manifest(args: argparse.Namespace) -> None:
    from . import manifests

    dataset = Dataset(**args.dataset)
    summary = manifests.write(
        dataset, Path(args.captions), Path(args.images), Path(args.summary), code=args.code
    )
    print(json.dumps(summary, indent=1), file=sys.stderr)


def cmd_embed(args: argparse.Namespace) -> None:
    from . import gpus
    from .embeddings import embed_split

    cas.memo()  # opened early so a broken cache directory fails before the model loads
    # Snakemake never assigns GPU ids: concurrent jobs claim distinct devices by lock file.
    with gpus.claim_device(args.device) as device:
        print(gpus.describe(device), file=sys.stderr)
        embed_split(
            Model(**args.model),
            Path(args.captions),
            Path(args.images_root),
            args.split,
            Path(args.out_images),
            Path(args.out_texts),
            cache_dir=Path(args.cache_dir),
            batch_size=args.batch_size,
            workers=args.workers,
            device=device,
            chunk_rows=args.chunk_rows,
            text_prefix=args.text_prefix,
            autocast=args.autocast,
        )


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
        protocol=args.protocol,
        code=args.code,
        n_resamples=args.n_resamples,
        seed=args.seed,
        level=args.level,
        exclude_images=exclude,
    )
    print(json.dumps(record["metrics"], indent=1), file=sys.stderr)


def cmd_image_hashes(args: argparse.Namespace) -> None:
    from . import leakage

    n = leakage.hash_dataset(Path(args.images_manifest), Path(args.images_root), Path(args.out))
    print(f"hashed {n} images", file=sys.stderr)


def cmd_leakage(args: argparse.Namespace) -> None:
    from . import leakage

    tests = {k: (Path(v[0]), v[1]) for k, v in args.spec["tests"].items()}
    trains = {k: (Path(v[0]), v[1]) for k, v in args.spec["trains"].items()}
    audit = leakage.audit_sources(tests, trains, max_hamming=args.max_hamming)
    if args.confirm_model:
        from . import gpus

        with gpus.claim_device(args.device) as device:
            audit = leakage.confirm_with_model(
                audit,
                Model(**args.confirm_model),
                args.image_roots,
                threshold=args.threshold,
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
        record = classify.classify_split(
            Model(**args.model),
            Path(args.captions),
            Path(args.image_features),
            split=args.split,
            templates=args.templates or classify.DEFAULT_TEMPLATES,
            cache_dir=Path(args.cache_dir),
            device=device,
            batch_size=args.batch_size,
        )
    record.update(model=args.model["name"], dataset=args.dataset)
    cas.write_json_atomic(args.out, record)
    print(f"top1 {record.get('top1')} top5 {record.get('top5')}", file=sys.stderr)


def cmd_finetune(args: argparse.Namespace) -> None:
    from . import finetune, gpus

    spec = args.spec
    base = Model(**spec["base"])
    raw = dict(spec.get("params") or {})
    if {"lr", "batch_size"} <= set(raw):
        params = finetune.FinetuneParams.from_dict(raw, "finetunes.params")
    else:
        params = finetune.paper_params(base.arch, **raw)
    sources = [
        finetune.Source(
            captions=s["captions"],
            images=s["images"],
            splits=None if s.get("split") is None else (s["split"],),
            name=s["name"],
        )
        for s in spec["sources"]
    ]
    tests = [
        finetune.EvalSplit(name=t["name"], captions=t["captions"], split=t["split"])
        for t in spec.get("tests", [])
    ]
    with gpus.claim_device(args.device) as device:
        print(gpus.describe(device), file=sys.stderr)
        record = finetune.finetune(
            sources,
            base,
            params,
            Path(args.out),
            tests=tests,
            test_overlap=spec.get("test_overlap", "refuse"),
            record_out=Path(args.record),
            device=device,
            workers=args.workers,
            threads=args.threads,
            cache_dir=Path(args.cache_dir),
        )
    record["model_name"] = spec.get("name", Path(args.out).parent.name)
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


def _add_bootstrap_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--n-resamples", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--level", type=float, default=0.95)


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
    )
    print(f"report: {paths['html']}", file=sys.stderr)


SEED_METRIC_NAMES = {
    "i2t_r1": "retrieval-image2text-R@1",
    "i2t_r5": "retrieval-image2text-R@5",
    "i2t_r10": "retrieval-image2text-R@10",
    "t2i_r1": "retrieval-text2image-R@1",
    "t2i_r5": "retrieval-text2image-R@5",
    "t2i_r10": "retrieval-text2image-R@10",
    "mean_recall": "retrieval-mean-recall",
}


def _karpathy_json(path: Path) -> Path:
    """The seed's --retrieval-json-dir names the JSON file; accept its directory too."""
    if path.is_dir():
        found = sorted(path.glob("dataset*.json")) or sorted(path.glob("*.json"))
        if len(found) != 1:
            raise RsmEvalError(
                f"{path}: expected one Karpathy JSON in the directory, found "
                f"{[p.name for p in found]}"
            )
        return found[0]
    return path


def cmd_retrieve(args: argparse.Namespace) -> None:
    """The seed script's command line (RET3_RetrieveTest.py), on the workflow's own code."""
    import tempfile

    import numpy as np

    from . import evaluate, manifests, schemas
    from .embeddings import embed_split, read_features

    if args.RSM_CLIP_path:
        weights = {"weights": args.RSM_CLIP_path}
    elif args.pretrained:
        weights = {"pretrained": args.pretrained}
    else:
        raise RsmEvalError("give --RSM_CLIP_path (a checkpoint) or --pretrained (a tag)")
    model = Model(
        name="retrieve", arch=args.model_name, force_quick_gelu=args.quick_gelu, **weights
    )
    images_root = Path(args.retrieval_images_dir)
    dataset = Dataset(
        name="retrieval",
        format="karpathy-json",
        annotations=str(_karpathy_json(Path(args.retrieval_json_dir))),
        images=str(images_root),
        split=args.split,
    )
    with tempfile.TemporaryDirectory(prefix="rsm-eval-retrieve-") as tmp:
        t = Path(tmp)
        manifests.write(
            dataset,
            t / "captions.parquet",
            t / "images.parquet",
            t / "summary.json",
            code=cas.code_version("rsm_eval.manifests"),
        )
        embed_split(
            model,
            t / "captions.parquet",
            images_root,
            args.split,
            t / "img.parquet",
            t / "txt.parquet",
            cache_dir=Path(args.cache_dir),
            batch_size=args.batch_size,
            workers=args.workers,
            device=args.device,
        )
        record, _ = evaluate.evaluate(
            t / "captions.parquet",
            t / "img.parquet",
            t / "txt.parquet",
            model="retrieve",
            dataset="retrieval",
            split=args.split,
            protocol="remoteclip",
            code="",
        )
        if args.save_embeddings:
            captions, _ = schemas.read_table(t / "captions.parquet")
            _, image_shas, text_shas, _ = manifests.evaluation_order(captions, args.split)
            out = {}
            for name, path, keys in (
                ("image", t / "img.parquet", image_shas),
                ("text", t / "txt.parquet", text_shas),
            ):
                table_keys, feats, _ = read_features(path)
                pos = {k: i for i, k in enumerate(table_keys)}
                out[name] = feats[[pos[k] for k in keys]].astype(np.float32)
            with (
                cas.atomic_path(args.save_embeddings, suffix=".npz") as tmp_npz,
                open(tmp_npz, "wb") as fh,
            ):
                np.savez(fh, **out)
    for key, name in SEED_METRIC_NAMES.items():
        print(f"{name}: {record['metrics'][key]:.2f}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rsm-eval", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("demo", help="generate the bundled offline demo benchmark")
    p.add_argument("--out", required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--n-train", type=int, default=300)
    p.add_argument("--n-val", type=int, default=50)
    p.add_argument("--n-test", type=int, default=100)
    p.add_argument("--n-csv-images", type=int, default=300)
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("fetch", help="download / extract / verify one source")
    p.add_argument("--source", type=_json_arg, required=True, help="source entry (+ key) as JSON")
    p.add_argument("--dest", required=True)
    p.add_argument("--lock", default="sources.lock.yaml")
    p.add_argument("--refresh-lock", action="store_true")
    p.set_defaults(func=cmd_fetch)

    p = sub.add_parser("manifest", help="annotations -> Parquet manifests")
    p.add_argument("--dataset", type=_json_arg, required=True, help="dataset entry as JSON")
    p.add_argument("--captions", required=True)
    p.add_argument("--images", required=True)
    p.add_argument("--summary", required=True)
    p.add_argument("--code", default="")
    p.set_defaults(func=cmd_manifest)

    p = sub.add_parser("embed", help="features of one split, cached by content")
    p.add_argument("--model", type=_json_arg, required=True, help="model entry as JSON")
    p.add_argument("--captions", required=True, help="captions manifest")
    p.add_argument("--images-root", required=True)
    p.add_argument("--split", default="test")
    p.add_argument("--out-images", required=True)
    p.add_argument("--out-texts", required=True)
    p.add_argument("--cache-dir", required=True)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument("--chunk-rows", type=int, default=2048)
    p.add_argument("--text-prefix", default="", help="prepended to every caption (skyscript)")
    p.add_argument("--autocast", action="store_true", help="mixed precision (not published)")
    p.set_defaults(func=cmd_embed)

    p = sub.add_parser("evaluate", help="retrieval metrics from cached features")
    p.add_argument("--captions", required=True)
    p.add_argument("--image-features", required=True)
    p.add_argument("--text-features", required=True)
    p.add_argument("--model", required=True)
    p.add_argument("--dataset", required=True)
    p.add_argument("--split", default="test")
    p.add_argument("--protocol", default="remoteclip")
    p.add_argument("--out-json", required=True)
    p.add_argument("--out-ranks", required=True)
    p.add_argument("--code", default="")
    _add_bootstrap_args(p)
    p.add_argument(
        "--exclude-leaked",
        default=None,
        metavar="AUDIT.json",
        help="leave out test images the leakage audit found in training sources",
    )
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("image-hashes", help="decoded-pixel and perceptual hashes of a dataset")
    p.add_argument("--images-manifest", required=True)
    p.add_argument("--images-root", required=True)
    p.add_argument("--out", required=True)
    p.set_defaults(func=cmd_image_hashes)

    p = sub.add_parser("leakage", help="duplicates between training sources and test splits")
    p.add_argument(
        "--spec",
        type=_json_arg,
        required=True,
        help='{"tests": {name: [hashes, split]}, "trains": {label: [hashes, split]}}',
    )
    p.add_argument("--max-hamming", type=int, default=6)
    p.add_argument(
        "--confirm-model",
        type=_json_arg,
        default=None,
        help="model entry as JSON: near pairs need image-embedding cosine >= threshold",
    )
    p.add_argument("--threshold", type=float, default=0.9)
    p.add_argument("--image-roots", type=_json_arg, default={}, help="{dataset: image dir}")
    p.add_argument("--cache-dir", default="results/cache")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument("--out", required=True)
    p.set_defaults(func=cmd_leakage)

    p = sub.add_parser("classify", help="zero-shot scene classification from cached features")
    p.add_argument("--model", type=_json_arg, required=True, help="model entry as JSON")
    p.add_argument("--dataset", required=True)
    p.add_argument("--captions", required=True)
    p.add_argument("--image-features", required=True)
    p.add_argument("--split", default="test")
    p.add_argument("--templates", nargs="*", default=None)
    p.add_argument("--cache-dir", required=True)
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--out", required=True)
    p.set_defaults(func=cmd_classify)

    p = sub.add_parser("finetune", help="train a model with open_clip_train on caption manifests")
    p.add_argument(
        "--spec",
        type=_json_arg,
        required=True,
        help='{"base": model, "sources": [...], "tests": [...], "params": {...}}',
    )
    p.add_argument("--out", required=True, help="state dict to write")
    p.add_argument("--record", required=True, help="training record (JSON) to write")
    p.add_argument("--cache-dir", required=True)
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument("--workers", type=int, default=0)
    p.add_argument("--threads", type=int, default=None)
    p.set_defaults(func=cmd_finetune)

    p = sub.add_parser("compare", help="paired bootstrap between models on the same split")
    p.add_argument("--metrics", nargs="+", required=True, help="evaluate stage records")
    p.add_argument("--out", required=True)
    _add_bootstrap_args(p)
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser(
        "retrieve",
        help="the seed's RET3_RetrieveTest.py command line, on the workflow's code",
        description="Accepts the flags of RSM-CLIP's RET3_RetrieveTest.py and prints the same "
        "metric names. Models are built with QuickGELU by default (what the released "
        "checkpoints were trained with); CPU or GPU.",
    )
    p.add_argument(
        "--model-name", default="ViT-B-32", help="open_clip architecture name or model-config .json"
    )
    p.add_argument("--retrieval-images-dir", required=True)
    p.add_argument(
        "--retrieval-json-dir", required=True, help="Karpathy JSON (or a directory holding one)"
    )
    p.add_argument("--RSM_CLIP_path", default=None, help="checkpoint to evaluate")
    p.add_argument("--pretrained", default=None, help="open_clip pretrained tag instead")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument(
        "--quick-gelu",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="QuickGELU activation (default on: the checkpoints were trained with it)",
    )
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument("--split", default="test")
    p.add_argument("--cache-dir", default="results/cache")
    p.add_argument(
        "--save-embeddings",
        default=None,
        metavar="FILE.npz",
        help="write L2-normalised float32 'image' and 'text' arrays in evaluation order",
    )
    p.set_defaults(func=cmd_retrieve)

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
    p.add_argument("--finetunes", nargs="*", default=[], help="finetune stage records")
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
