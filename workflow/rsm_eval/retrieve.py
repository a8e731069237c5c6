"""`rsm-eval retrieve`: RSM-CLIP's RET3_RetrieveTest.py command line on the workflow's stages.

The seed script evaluates one checkpoint on one Karpathy JSON; this runs the workflow's own
manifest, embedding (through the feature store) and evaluation on it, outside Snakemake.
It accepts the seed's flags and prints the same metric names. Models are built with
QuickGELU by default (what the released checkpoints were trained with); CPU or GPU.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from . import cas
from .config import Dataset, Model
from .errors import RsmEvalError

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


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The seed script's flags."""
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


def run(args: argparse.Namespace) -> None:
    """The seed script's command line (RET3_RetrieveTest.py), on the workflow's own code:
    manifest, embed and evaluate one Karpathy JSON in a temporary folder, print the seed's
    seven metric lines (stdout) and the tie intervals (stderr)."""
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
