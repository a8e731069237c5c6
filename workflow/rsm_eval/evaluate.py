"""Evaluate stage: manifest + cached features -> retrieval metrics of one model on one split.

The features are joined to the protocol's order here (images by file name, captions grouped
per image in file order); the arithmetic is in `metrics`. The result records the address of
everything it was computed from, and its own address is a digest of those.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from . import cas, metrics, schemas
from .embeddings import read_features
from .errors import RsmEvalError
from .manifests import evaluation_order


def _gather(keys: list[str], table_keys: list[str], feats: np.ndarray, path: Path) -> np.ndarray:
    pos = {k: i for i, k in enumerate(table_keys)}
    missing = [k for k in keys if k not in pos]
    if missing:
        raise RsmEvalError(
            f"{path}: {len(missing)} rows of the manifest have no feature "
            f"(first key {missing[0]}); the features are stale, rerun embed"
        )
    return feats[[pos[k] for k in keys]]


def evaluate(
    captions_path: Path,
    image_features: Path,
    text_features: Path,
    *,
    model: str,
    dataset: str,
    split: str,
    protocol: str,
    code: str,
) -> tuple[dict[str, Any], pa.Table]:
    """Metrics record and per-query ranks table."""
    captions, manifest_meta = schemas.read_table(captions_path, schemas.CAPTIONS)
    image_keys, image_shas, text_shas, text_image = evaluation_order(captions, split)
    img_keys, img_feats, img_meta = read_features(image_features)
    txt_keys, txt_feats, txt_meta = read_features(text_features)
    if img_meta.get("model_address") != txt_meta.get("model_address"):
        raise RsmEvalError(f"{image_features} and {text_features} come from different models")
    images = _gather(image_shas, img_keys, img_feats, image_features)
    texts = _gather(text_shas, txt_keys, txt_feats, text_features)
    if protocol != "remoteclip":
        raise RsmEvalError(f"protocol {protocol!r} is not supported (expected 'remoteclip')")
    result = metrics.remoteclip_retrieval(images, texts, np.asarray(text_image, dtype=np.int64))
    inputs = {
        "model_address": img_meta["model_address"],
        "model_spec": img_meta.get("model_spec"),
        "manifest_address": manifest_meta.get("address"),
        "manifest_sha256": cas.file_sha256(captions_path),
        "image_features_sha256": cas.file_sha256(image_features),
        "text_features_sha256": cas.file_sha256(text_features),
    }
    record = {
        "model": model,
        "dataset": dataset,
        "split": split,
        "protocol": protocol,
        "n_images": len(image_keys),
        "n_captions": len(text_shas),
        "n_distinct_captions": len(set(text_shas)),
        "metrics": {k: float(v) for k, v in result.metrics.items()},
        "inputs": inputs,
        "code": code,
        "ties": "equal scores rank the item earlier in protocol order first (stable sort)",
    }
    record["address"] = cas.digest(
        {"inputs": inputs, "protocol": protocol, "split": split, "code": code}
    )
    n_img, n_txt = len(result.i2t_ranks), len(result.t2i_ranks)
    ranks = pa.table(
        {
            "direction": ["i2t"] * n_img + ["t2i"] * n_txt,
            "query": np.concatenate([np.arange(n_img), np.arange(n_txt)]).astype(np.int64),
            "group": np.concatenate([np.arange(n_img), np.asarray(text_image)]).astype(np.int64),
            "rank": np.concatenate([result.i2t_ranks, result.t2i_ranks]).astype(np.int64),
        },
        schema=schemas.RANKS,
    )
    return record, ranks


def write(
    captions_path: Path,
    image_features: Path,
    text_features: Path,
    out_json: Path,
    out_ranks: Path,
    **kwargs: Any,
) -> dict[str, Any]:
    record, ranks = evaluate(captions_path, image_features, text_features, **kwargs)
    schemas.write_table(
        ranks, out_ranks, schemas.RANKS, {"stage": "evaluate", "address": record["address"]}
    )
    cas.write_json_atomic(out_json, record)
    return record
