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


def cmd_demo_scenes(args: argparse.Namespace) -> None:
    from .scene_demo import generate_scenes

    counts = generate_scenes(Path(args.out), Path(args.karpathy), Path(args.images), seed=args.seed)
    print(json.dumps(counts, indent=1), file=sys.stderr)


def cmd_fetch(args: argparse.Namespace) -> None:
    from . import sources

    entry = dict(args.source)
    key = entry.pop("key", args.dest)
    is_dir = bool(entry.pop("dir", False))
    layout = sources.Layout.from_json(entry.pop("layout", None))
    source = sources.Source.from_config(key, entry)
    lock = sources.LockFile(Path(args.lock))
    dest = sources.materialize(
        source,
        Path(args.dest),
        lock=lock,
        refresh_lock=args.refresh_lock,
        is_dir=is_dir,
        layout=layout,
    )
    print(f"{key}: ready at {dest}", file=sys.stderr)


def cmd_manifest(args: argparse.Namespace) -> None:
    from . import manifests

    dataset = Dataset(**args.dataset)
    summary = manifests.write(
        dataset, Path(args.captions), Path(args.images), Path(args.summary), code=args.code
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
            Model(**args.model),
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
        protocol=args.protocol,
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

    tests = {k: (Path(v[0]), v[1]) for k, v in args.spec["tests"].items()}
    trains = {k: (Path(v[0]), v[1]) for k, v in args.spec["trains"].items()}
    audit = leakage.audit_sources(tests, trains, max_hamming=args.max_hamming)
    if args.confirm_model:
        from . import gpus

        with gpus.claim_device(args.device) as device:
            _cpu_plan(device, args.threads)
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
        _cpu_plan(device, args.threads)
        record = classify.classify_split(
            Model(**args.model),
            Path(args.captions),
            Path(args.image_features),
            split=args.split,
            templates=args.templates or classify.DEFAULT_TEMPLATES,
            labels=args.labels,
            cache_dir=Path(args.cache_dir),
            device=device,
            batch_size=args.batch_size,
        )
    record.update(model=args.model["name"], dataset=args.dataset)
    cas.write_json_atomic(args.out, record)
    print(f"top1 {record.get('top1')} top5 {record.get('top5')}", file=sys.stderr)


def cmd_localize(args: argparse.Namespace) -> None:
    from . import gpus, localize

    spec = args.dataset
    with gpus.claim_device(args.device) as device:
        record = localize.run(
            Model(**args.model),
            Path(spec["annotations"]),
            Path(spec["images"]),
            Path(args.out),
            Path(args.figures),
            dataset=spec["name"],
            cache_dir=Path(args.cache_dir),
            device=device,
            batch_size=args.batch_size,
            params=spec.get("params"),
            expected=spec.get("expected"),
            n_figures=spec.get("figures", 3),
            n_resamples=args.n_resamples,
            seed=args.seed,
            level=args.level,
            threads=args.threads,
            code=args.code,
            published=spec.get("published", ""),
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

    summary = scenes.write(
        Dataset(**args.dataset), Path(args.out), Path(args.summary), code=args.code
    )
    print(json.dumps(summary["counts"], indent=1), file=sys.stderr)


def cmd_scene_features(args: argparse.Namespace) -> None:
    from . import gpus, scene_eval

    cas.memo()
    with gpus.claim_device(args.device) as device:
        print(gpus.describe(device), file=sys.stderr)
        scene_eval.scene_features(
            Model(**args.model),
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
            Model(**args.model),
            Dataset(**args.dataset),
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
        args.settings, code=args.code,
    )  # fmt: skip
    cas.write_json_atomic(args.out, record)
    for label, r in record["results"].items():
        print(f"{label}: top1 {r['top1_mean']:.2f} +- {r['top1_std']:.2f}", file=sys.stderr)


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
        finetune.TrainingManifest(
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
        localization=args.localization,
        scenes=args.scenes,
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
    if args.backend == "transformers":  # a save_pretrained directory; arch is the family
        model = Model(name="retrieve", arch=args.model_name, backend="transformers", **weights)
    else:
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
    for key, name in SEED_METRIC_NAMES.items():  # stdout keeps the seed's seven lines
        low, high = record["tie_interval"][key]
        if round(high - low, 2) > 0.01:
            print(f"{name}: {low:.2f}-{high:.2f} over all orders of tied scores", file=sys.stderr)


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
    p.add_argument("--out-images", default=None)
    p.add_argument("--out-texts", default=None)
    p.add_argument("--cache-dir", required=True)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--workers", type=int, default=None, help="loader workers (default: auto)")
    p.add_argument("--threads", type=int, default=None, help="CPUs of the job (default: all)")
    p.add_argument("--shard", default=None, help="<i>-of-<n>: compute only that shard's rows")
    p.add_argument("--shard-record", default=None, help="JSON written by a --shard run")
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
    p.add_argument("--threads", type=int, default=None, help="decoding threads (default: all)")
    p.add_argument("--shard", default=None, help="<i>-of-<n>: hash only that shard's images")
    p.set_defaults(func=cmd_image_hashes)

    p = sub.add_parser("gather-hashes", help="concatenate sharded image-hash tables")
    p.add_argument("--parts", nargs="+", required=True, help="shard tables, in shard order")
    p.add_argument("--out", required=True)
    p.set_defaults(func=cmd_gather_hashes)

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
    p.add_argument("--threads", type=int, default=None, help="CPUs of the job (default: all)")
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
    p.add_argument("--threads", type=int, default=None, help="CPUs of the job (default: all)")
    p.add_argument("--labels", choices=("file-names", "ucm-numbering"), default="file-names")
    p.add_argument("--out", required=True)
    p.set_defaults(func=cmd_classify)

    p = sub.add_parser("demo-scenes", help="the demo's class-folder scene benchmark")
    p.add_argument("--karpathy", required=True, help="the demo's Karpathy JSON")
    p.add_argument("--images", required=True, help="its image directory")
    p.add_argument("--out", required=True)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_demo_scenes)

    p = sub.add_parser("scene-manifest", help="class folders / label CSV -> scene manifest")
    p.add_argument("--dataset", type=_json_arg, required=True, help="dataset entry as JSON")
    p.add_argument("--out", required=True)
    p.add_argument("--summary", required=True)
    p.add_argument("--code", default="")
    p.set_defaults(func=cmd_scene_manifest)

    p = sub.add_parser("scene-features", help="image features of a scene dataset (cached)")
    p.add_argument("--model", type=_json_arg, required=True, help="model entry as JSON")
    p.add_argument("--manifest", required=True)
    p.add_argument("--images-root", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--cache-dir", required=True)
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--workers", type=int, default=0)
    p.set_defaults(func=cmd_scene_features)

    p = sub.add_parser("zeroshot", help="zero-shot scene classification from cached features")
    p.add_argument("--model", type=_json_arg, required=True, help="model entry as JSON")
    p.add_argument("--dataset", type=_json_arg, required=True, help="dataset entry as JSON")
    p.add_argument("--manifest", required=True)
    p.add_argument("--features", required=True)
    p.add_argument("--templates", required=True, help="template set name")
    p.add_argument("--cache-dir", required=True)
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--code", default="")
    p.add_argument("--out", required=True)
    _add_bootstrap_args(p)
    p.set_defaults(func=cmd_zeroshot)

    p = sub.add_parser("probe", help="few-shot linear probes on cached scene features")
    p.add_argument("--model", required=True, help="model name")
    p.add_argument("--dataset", required=True, help="dataset name")
    p.add_argument("--split", required=True, help="the evaluated (test) split")
    p.add_argument("--manifest", required=True)
    p.add_argument("--features", required=True)
    p.add_argument("--settings", type=_json_arg, required=True, help="classification.linear_probe")
    p.add_argument("--code", default="")
    p.add_argument("--out", required=True)
    p.set_defaults(func=cmd_probe)

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

    p = sub.add_parser("localize", help="semantic localization (AIR-SLT) of one model")
    p.add_argument("--model", type=_json_arg, required=True, help="model entry as JSON")
    p.add_argument(
        "--dataset",
        type=_json_arg,
        required=True,
        help='{"name", "annotations", "images", "expected", "params", "figures"}',
    )
    p.add_argument("--out", required=True, help="record (JSON) to write")
    p.add_argument("--figures", required=True, help="directory for the heat-map PNGs")
    p.add_argument("--cache-dir", required=True)
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--code", default="")
    _add_bootstrap_args(p)
    p.set_defaults(func=cmd_localize)

    p = sub.add_parser("demo-scene", help="generate the demo's semantic-localization scene")
    p.add_argument("--out", required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--width", type=int, default=1536)
    p.add_argument("--height", type=int, default=1024)
    p.set_defaults(func=cmd_demo_scene)

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
    p.add_argument(
        "--backend",
        choices=("open_clip", "transformers"),
        default="open_clip",
        help="transformers: --RSM_CLIP_path is a save_pretrained directory and --model-name "
        "its family (clip or siglip)",
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
