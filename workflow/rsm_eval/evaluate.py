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

from . import cas, metrics, schemas, stats
from .embeddings import read_features, text_key
from .errors import RsmEvalError
from .manifests import evaluation_order
from .protocols import parse_variant


def _gather(keys: list[str], table_keys: list[str], feats: np.ndarray, path: Path) -> np.ndarray:
    pos = {k: i for i, k in enumerate(table_keys)}
    missing = [k for k in keys if k not in pos]
    if missing:
        raise RsmEvalError(
            f"{path}: {len(missing)} rows of the manifest have no feature "
            f"(first key {missing[0]}); the features are stale, rerun embed"
        )
    return feats[[pos[k] for k in keys]]


TIE_RULE = "equal scores rank the item earlier in protocol order first (stable sort)"


def tie_fields(result: metrics.RetrievalResult) -> dict[str, Any]:
    """The record's tie entries (see schemas, "Metrics record"): the rule behind the values,
    each metric's interval over all orders of exactly tied scores, and how many queries
    have a tie that can move their rank."""
    return {
        "ties": TIE_RULE,
        "tie_interval": {k: [float(lo), float(hi)] for k, (lo, hi) in result.tie_interval.items()},
        "n_tied_queries": {
            "i2t": int(np.count_nonzero(result.i2t_rank_low != result.i2t_rank_high)),
            "t2i": int(np.count_nonzero(result.t2i_rank_low != result.t2i_rank_high)),
        },
    }


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
    n_resamples: int = 1000,
    seed: int = 0,
    level: float = 0.95,
    exclude_images: set[str] | None = None,
) -> tuple[dict[str, Any], pa.Table]:
    """Metrics record and per-query ranks table; `protocol` is a variant such as
    'remoteclip' or 'skyscript-autocast'."""
    proto, autocast = parse_variant(protocol)
    captions, manifest_meta = schemas.read_table(captions_path, schemas.CAPTIONS)
    if exclude_images:
        # Leakage-cleaned metrics: the test split without images found in training data.
        keep = [k not in exclude_images for k in captions.column("image_key").to_pylist()]
        captions = captions.filter(pa.array(keep))
    image_keys, image_shas, text_shas, text_image = evaluation_order(captions, split)
    img_keys, img_feats, img_meta = read_features(image_features)
    txt_keys, txt_feats, txt_meta = read_features(text_features)
    if img_meta.get("model_address") != txt_meta.get("model_address"):
        raise RsmEvalError(f"{image_features} and {text_features} come from different models")
    if txt_meta.get("text_prefix", "") != proto.text_prefix:
        raise RsmEvalError(
            f"{text_features} was embedded with prefix {txt_meta.get('text_prefix')!r}, "
            f"protocol {proto.name} needs {proto.text_prefix!r}"
        )
    images = _gather(image_shas, img_keys, img_feats, image_features)
    split_rows = sorted(
        (r for r in captions.to_pylist() if r["split"] == split),
        key=lambda r: (r["image_key"], r["caption_index"]),
    )
    query_texts = [text_key(r["caption"], proto.text_prefix) for r in split_rows]
    owner = np.asarray(text_image, dtype=np.int64)
    if proto.dedup_captions:
        # One query per distinct string, positive for every image that carries it.
        unique = list(dict.fromkeys(query_texts))
        index = {k: i for i, k in enumerate(unique)}
        pairs = sorted({(index[k], int(i)) for k, i in zip(query_texts, owner, strict=True)})
        texts = _gather(unique, txt_keys, txt_feats, text_features)
        result = metrics.skyscript_retrieval(
            images, texts, np.array([p[0] for p in pairs]), np.array([p[1] for p in pairs])
        )
        first_owner = {}
        for k, i in zip(query_texts, owner, strict=True):
            first_owner.setdefault(k, int(i))
        text_group = np.array([first_owner[k] for k in unique], dtype=np.int64)
    else:
        texts = _gather(query_texts, txt_keys, txt_feats, text_features)
        result = metrics.remoteclip_retrieval(images, texts, owner)
        text_group = owner
    uncertainty: dict[str, Any] = {}
    if not proto.dedup_captions:
        # Images resampled with their captions; the published protocol's queries only.
        ci = stats.bootstrap_ci(
            result.i2t_ranks,
            result.t2i_ranks,
            owner,
            n_resamples=n_resamples,
            seed=seed,
            level=level,
        )
        uncertainty = {
            "ci": {k: [float(lo), float(hi)] for k, (lo, hi) in ci.items()},
            "ci_level": level,
            "n_resamples": n_resamples,
            "seed": seed,
            "ceilings": {
                k: float(v)
                for k, v in stats.retrieval_ceilings(
                    [r["caption"] for r in split_rows], owner, image_content=image_shas
                ).items()
            },
        }
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
        "protocol": proto.name,
        "autocast": autocast,
        "variant": protocol,
        "n_images": len(image_keys),
        "n_captions": len(text_shas),
        "n_distinct_captions": len(set(text_shas)),
        "metrics": {k: float(v) for k, v in result.metrics.items()},
        **tie_fields(result),
        "inputs": inputs,
        "code": code,
        "n_queries": {"i2t": len(result.i2t_ranks), "t2i": len(result.t2i_ranks)},
        **uncertainty,
        "excluded_images": sorted(exclude_images or []),
    }
    # The row's address: what it was computed from (the feature files' bytes also carry
    # run-specific metadata, so their sha256 is provenance, not part of the address).
    record["address"] = cas.digest(
        {
            "model_address": inputs["model_address"],
            "manifest_address": inputs["manifest_address"],
            "text_prefix": proto.text_prefix,
            "protocol": protocol,
            "split": split,
            "code": code,
            "bootstrap": [n_resamples, seed, level],
            "excluded": sorted(exclude_images or []),
        }
    )
    n_img, n_txt = len(result.i2t_ranks), len(result.t2i_ranks)
    ranks = pa.table(
        {
            "direction": ["i2t"] * n_img + ["t2i"] * n_txt,
            "query": np.concatenate([np.arange(n_img), np.arange(n_txt)]).astype(np.int64),
            "group": np.concatenate([np.arange(n_img), text_group]).astype(np.int64),
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
