"""Confirmation of near pairs by image embeddings: a pair stays when the two images'
features agree (cosine similarity >= a threshold)."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import RsmEvalError
from .images import image_hashes
from .pairs import find_duplicates


def _vector(features: Mapping[str, Any], key: str, side: str) -> np.ndarray | None:
    if key not in features:
        return None
    v = np.asarray(features[key], dtype=np.float64)
    if v.ndim != 1 or v.size == 0:
        raise RsmEvalError(f"{side} features {key!r}: expected a 1-D vector, got shape {v.shape}")
    norm = float(np.linalg.norm(v))
    if not math.isfinite(norm) or norm == 0.0:
        raise RsmEvalError(f"{side} features {key!r}: expected a finite, non-zero vector")
    return v / norm


def confirm(
    pairs: Iterable[Mapping[str, Any]],
    test_features: Mapping[str, Any] | None,
    train_features: Mapping[str, Any] | None,
    threshold: float = 0.9,
    *,
    drop_unconfirmed: bool = True,
) -> list[dict[str, Any]]:
    """Add ``cosine`` and ``confirmed`` to each pair using image embeddings.

    Features map the pairs' keys to embedding vectors (any dimension, normalised here).
    When both images of a pair have features, ``cosine`` is their cosine similarity and
    a near pair is ``confirmed`` when it is >= ``threshold``; otherwise both are ``None``.
    Exact pairs are always confirmed (identical pixels are proof enough). With
    ``drop_unconfirmed`` (the default), near pairs whose embeddings disagree are dropped;
    pairs that could not be checked are kept.
    """
    if isinstance(threshold, bool) or not isinstance(threshold, int | float):
        raise RsmEvalError(f"threshold: expected a number in [-1, 1], got {threshold!r}")
    if not -1.0 <= threshold <= 1.0:
        raise RsmEvalError(f"threshold: expected a number in [-1, 1], got {threshold!r}")
    test_features = test_features or {}
    train_features = train_features or {}
    out = []
    dim: int | None = None
    for pair in pairs:
        try:
            t_key, r_key, kind = pair["test_key"], pair["train_key"], pair["kind"]
        except (KeyError, TypeError):
            raise RsmEvalError(
                f"confirm: expected pairs from find_duplicates, got {pair!r}"
            ) from None
        new = dict(pair)
        u = _vector(test_features, t_key, "test")
        v = _vector(train_features, r_key, "train")
        cosine = None
        if u is not None and v is not None:
            if u.size != v.size or (dim is not None and u.size != dim):
                raise RsmEvalError(
                    f"features of test {t_key!r} ({u.size}) and train {r_key!r} ({v.size}) "
                    "have different dimensions"
                )
            dim = u.size
            cosine = float(np.clip(u @ v, -1.0, 1.0))
        new["cosine"] = cosine
        if kind == "exact":
            new["confirmed"] = True
        else:
            new["confirmed"] = None if cosine is None else cosine >= threshold
        if drop_unconfirmed and new["confirmed"] is False:
            continue
        out.append(new)
    return out


def audit(
    test: Mapping[str, Path | str],
    train: Mapping[str, Path | str],
    *,
    threads: int = 4,
    max_hamming: int = 6,
    test_features: Mapping[str, Any] | None = None,
    train_features: Mapping[str, Any] | None = None,
    threshold: float = 0.9,
) -> list[dict[str, Any]]:
    """Hash both image sets (key -> path), find duplicates and confirm them with features.

    A convenience for small sets; at scale, hash once, cache by file content and call
    :func:`find_duplicates` and :func:`confirm` directly.
    """
    sides = []
    for mapping in (test, train):
        keys = list(mapping)
        hashes = image_hashes([mapping[k] for k in keys], threads=threads)
        sides.append(
            [(k, h["pixel_sha256"], h["phash"]) for k, h in zip(keys, hashes, strict=True)]
        )
    pairs = find_duplicates(sides[0], sides[1], max_hamming=max_hamming)
    return confirm(pairs, test_features, train_features, threshold)


def confirm_with_model(
    audit: dict[str, Any],
    model: Any,
    image_roots: Mapping[str, str],
    *,
    threshold: float,
    cache_dir: Path,
    device: str = "auto",
) -> dict[str, Any]:
    """Keep a near pair only when the two images' embeddings agree (cosine >= threshold).

    Only the images of candidate pairs are embedded (through the feature store), never a
    whole training source: the perceptual hash has already narrowed 210k x 1.8k to a few.
    """
    from ..embeddings import embed_image_files

    near = [p for p in audit["pairs"] if p["kind"] == "near"]
    if not near:
        return {**audit, "confirmed_with": {"threshold": threshold, "checked": 0}}
    paths: dict[str, Path] = {}
    for p in near:
        paths[p["test_key"]] = Path(image_roots[p["test_dataset"]]) / p["test_path"]
        paths[p["train_key"]] = Path(image_roots[p["source"].split(":", 1)[0]]) / p["source_path"]
    keys = list(paths)
    feats = embed_image_files(model, [paths[k] for k in keys], cache_dir=cache_dir, device=device)
    vectors = dict(zip(keys, feats, strict=True))
    kept = confirm(audit["pairs"], vectors, vectors, threshold)
    dropped = len(audit["pairs"]) - len(kept)
    for c in audit["counts"]:
        c["near"] = sum(
            p["kind"] == "near" and p["test_dataset"] == c["test"] and p["source"] == c["source"]
            for p in kept
        )
    return {
        **audit,
        "pairs": kept,
        "confirmed_with": {
            "model": getattr(model, "name", ""),
            "threshold": threshold,
            "checked": len(near),
            "rejected": dropped,
        },
    }
