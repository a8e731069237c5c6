"""Scene classification stage: image features of a scene dataset, and zero-shot accuracy.

Image features come through the content-keyed feature store, keyed by each file's sha256
under the model's address, exactly as the retrieval embedding keys them: an image that any
dataset has already embedded (UCM-Captions' test images are UC Merced Land Use images
renamed, same bytes) is read, not computed, and the log says how many were reused.

Zero-shot: one prompt per class and template of the chosen template set (the set's class-name
rule picks the names), the class-major prompt features embedded through the text store,
CLIP's prompt ensembling (:func:`rsm_eval.classify.classifier`), cosine scores summed in one
fixed order, ties to the lower class index. :func:`classification_metrics` gives top-1, top-5,
mean per-class accuracy, per-class accuracy and the confusion matrix, with percentile
bootstrap intervals over resampled test images.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from . import cas, classify, scenes, schemas
from .config import Dataset, Model
from .errors import RsmEvalError

TOP_K = 5


# ------------------------------------------------------------------------------ metrics


def classification_metrics(
    scores: np.ndarray,
    y: np.ndarray,
    class_names: list[str],
    *,
    n_resamples: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> dict[str, Any]:
    """Accuracy metrics (percent) of (n, C) class scores against true class indices ``y``.

    The predicted class is the highest score, ties to the lower class index; an image's top-5
    hit counts its class among the first ``min(5, C)``. ``mean_per_class`` is the unweighted
    mean of the per-class top-1 over classes with test images (balanced accuracy). The
    confusion matrix has true classes as rows and predicted ones as columns. Intervals: the
    ``(1 - level) / 2`` and ``(1 + level) / 2`` quantiles over ``n_resamples`` resamples of
    the test images with replacement (classes absent from a resample are left out of its
    mean per-class accuracy).
    """
    scores = np.asarray(scores, dtype=np.float64)
    y = np.asarray(y)
    n, n_classes = scores.shape
    if y.shape != (n,) or n == 0 or y.min() < 0 or y.max() >= n_classes:
        raise RsmEvalError(f"labels: expected {n} class indices in [0, {n_classes}), got {y[:5]}")
    if len(class_names) != n_classes:
        raise RsmEvalError(f"class_names: expected {n_classes}, got {len(class_names)}")
    true = scores[np.arange(n), y]
    order = np.arange(n_classes)
    rank = np.count_nonzero(scores > true[:, None], axis=1) + np.count_nonzero(
        (scores == true[:, None]) & (order[None, :] < y[:, None]), axis=1
    )
    hit1 = (rank == 0).astype(np.float64)
    hitk = (rank < min(TOP_K, n_classes)).astype(np.float64)
    pred = scores.argmax(axis=1)  # first maximum: the lower class index wins a tie
    confusion = np.bincount(y * n_classes + pred, minlength=n_classes**2).reshape(
        n_classes, n_classes
    )
    counts = np.bincount(y, minlength=n_classes)
    present = counts > 0
    per_class_top1 = np.bincount(y, weights=hit1, minlength=n_classes)
    per_class_topk = np.bincount(y, weights=hitk, minlength=n_classes)
    point = {
        "top1": 100.0 * hit1.mean(),
        "top5": 100.0 * hitk.mean(),
        "mean_per_class": 100.0 * float(np.mean(per_class_top1[present] / counts[present])),
    }
    ci = _bootstrap(hit1, hitk, y, n_classes, n_resamples, seed, level) if n_resamples else None
    return {
        **point,
        "ci": ci,
        "n": int(n),
        "n_classes": int(n_classes),
        "per_class": {
            class_names[c]: {
                "n": int(counts[c]),
                "top1": 100.0 * per_class_top1[c] / counts[c],
                "top5": 100.0 * per_class_topk[c] / counts[c],
            }
            for c in np.flatnonzero(present).tolist()
        },
        "confusion": confusion.tolist(),
    }


def _bootstrap(
    hit1: np.ndarray,
    hitk: np.ndarray,
    y: np.ndarray,
    n_classes: int,
    n_resamples: int,
    seed: int,
    level: float,
    block_elements: int = 1 << 22,
) -> dict[str, list[float]]:
    """Percentile intervals of top1, top5 and mean_per_class, in blocks of resamples."""
    n = hit1.shape[0]
    rng = np.random.default_rng(seed)
    out = np.empty((n_resamples, 3))
    rows = max(1, block_elements // n)
    for start in range(0, n_resamples, rows):
        b = min(rows, n_resamples - start)
        idx = rng.integers(0, n, size=(b, n))
        out[start : start + b, 0] = hit1[idx].mean(axis=1)
        out[start : start + b, 1] = hitk[idx].mean(axis=1)
        flat = (np.arange(b)[:, None] * n_classes + y[idx]).ravel()
        cnt = np.bincount(flat, minlength=b * n_classes).reshape(b, n_classes)
        hits = np.bincount(flat, weights=hit1[idx].ravel(), minlength=b * n_classes)
        with np.errstate(invalid="ignore", divide="ignore"):
            out[start : start + b, 2] = np.nanmean(hits.reshape(b, n_classes) / cnt, axis=1)
    alpha = (1.0 - level) / 2.0
    low, high = np.quantile(100.0 * out, [alpha, 1.0 - alpha], axis=0)
    return {m: [float(low[j]), float(high[j])] for j, m in enumerate(TOP_METRICS)}


TOP_METRICS = ("top1", "top5", "mean_per_class")


# ----------------------------------------------------------------------------- features


def scene_features(
    model: Model, manifest: Path, images_root: Path, out: Path, **run: Any
) -> dict[str, Any]:
    """Feature table (key = image sha256) of every image of a scene manifest; `run`: the
    fields of :class:`rsm_eval.embeddings.FeatureRun` (cache_dir, device, batch_size,
    workers)."""
    from . import embeddings, models
    from .featstore import FeatureStore

    cache_dir = embeddings.FeatureRun(**run).cache_dir

    t0 = time.monotonic()
    rows, manifest_meta = scenes.read(manifest)
    keys = list(dict.fromkeys(r["image_sha256"] for r in rows))
    path_of = {r["image_sha256"]: images_root / r["image_path"] for r in rows}
    address = models.address(model)
    missing = FeatureStore(cache_dir, address, "image").missing(keys)
    print(
        f"model {model.name}: {len(keys)} distinct images, {len(keys) - len(missing)} already "
        f"in the feature store {cache_dir} (reused), {len(missing)} to embed",
        file=sys.stderr,
        flush=True,
    )
    feats = embeddings.embed_image_files(model, [path_of[k] for k in keys], **run)
    seconds = time.monotonic() - t0
    record = {
        "stage": "scene_features",
        "model": model.name,
        "model_address": address,
        "manifest_address": manifest_meta.get("address"),
        "images": len(keys),
        "images_computed": len(missing),
        "images_reused": len(keys) - len(missing),
        "seconds": round(seconds, 3),
        "images_per_second": round(len(missing) / seconds, 2) if missing else None,
    }
    table = pa.table(
        {
            "key": pa.array(keys, pa.string()),
            "embedding": pa.FixedSizeListArray.from_arrays(
                pa.array(feats.reshape(-1)), feats.shape[1]
            ),
        }
    )
    schemas.write_table(table, out, schemas.features_schema(feats.shape[1]), record)
    rate = f", {record['images_per_second']} images/s" if missing else ""
    print(
        f"embedded {len(missing)} images, reused {len(keys) - len(missing)} "
        f"({seconds:.1f} s{rate})",
        file=sys.stderr,
    )
    return record


def load_split(
    manifest: Path, features: Path, split: str | None
) -> tuple[list[dict[str, Any]], np.ndarray, list[str], np.ndarray, dict]:
    """(rows, features in row order, sorted class ids, class index per row, feature meta) of
    one split (every row when ``split`` is None)."""
    from .embeddings import read_features

    rows, _ = scenes.read(manifest, split)
    keys, feats, meta = read_features(features)
    pos = {k: i for i, k in enumerate(keys)}
    missing = [r["image_key"] for r in rows if r["image_sha256"] not in pos]
    if missing:
        raise RsmEvalError(f"{features}: no features for {len(missing)} images ({missing[:3]})")
    class_ids = sorted({r["class_id"] for r in rows})
    index = {c: i for i, c in enumerate(class_ids)}
    y = np.array([index[r["class_id"]] for r in rows], dtype=np.int64)
    return rows, feats[[pos[r["image_sha256"]] for r in rows]], class_ids, y, meta


# ---------------------------------------------------------------------------- zero-shot


def zero_shot(
    model: Model,
    dataset: Dataset,
    manifest: Path,
    features: Path,
    template_set: str,
    *,
    n_resamples: int = 1000,
    seed: int = 0,
    level: float = 0.95,
    code: str = "",
    **run: Any,
) -> dict[str, Any]:
    """Zero-shot record of one model on one scene dataset's evaluated split; `run`: how the
    prompts are embedded (the fields of :class:`rsm_eval.embeddings.FeatureRun`)."""
    from .embeddings import embed_texts

    rows, img, class_ids, y, feat_meta = load_split(manifest, features, dataset.split)
    tset = scenes.template_set(template_set)
    templates = list(tset["templates"])
    names = scenes.prompt_names(class_ids, tset.get("classnames", "words"), dataset.classnames)
    texts = [t.replace("{}", name) for name in names for t in templates]
    prompt_feats = embed_texts(model, texts, **run)
    weights = classify.classifier(prompt_feats, len(class_ids))
    scores = classify.class_scores(img, weights)
    metrics = classification_metrics(
        scores, y, class_ids, n_resamples=n_resamples, seed=seed, level=level
    )
    address = cas.digest(
        {
            "stage": "zeroshot",
            "code": code,
            "model": feat_meta.get("model_address"),
            "images": [r["image_sha256"] for r in rows],
            "labels": class_ids,
            "y": y.tolist(),
            "prompts": texts,
            "bootstrap": [n_resamples, seed, level],
        }
    )
    return {
        "stage": "zeroshot",
        "model": model.name,
        "dataset": dataset.name,
        "published": dataset.published,
        "split": dataset.split,
        "template_set": template_set,
        "template_source": tset.get("source", ""),
        "n_templates": len(templates),
        "class_ids": class_ids,
        "class_names": names,
        "address": address,
        "model_address": feat_meta.get("model_address"),
        "bootstrap": {"n_resamples": n_resamples, "seed": seed, "level": level},
        **metrics,
    }
