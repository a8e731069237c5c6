"""Features of arbitrary texts and image files through the feature store (class prompts,
scene images, leakage candidates): what is cached is read, only the rest is computed."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .. import cas, models
from ..config import Model
from ..errors import RsmEvalError
from ..featstore import FeatureStore
from .batches import _ChunkWriter, _embed_images
from .text import _embed_texts, text_key


@dataclass(frozen=True)
class FeatureRun:
    """Where features are cached and how the missing ones are computed: the feature store's
    directory, the device ("auto", "cpu", "cuda[:i]"), the batch size and the image loader's
    workers (captions are tokenized in the main process here)."""

    cache_dir: Path
    device: str = "auto"
    batch_size: int = 64
    workers: int = 0


def _cached(
    model: Model, kind: str, keys: list[str], item_of: dict, run: FeatureRun, autocast: bool
) -> np.ndarray:
    """Rows of `keys` (in order) from the model's `kind` store, computing the missing ones
    first from `item_of[key]` (a path or a text); the model is built only if needed."""
    precision = "amp" if autocast else "fp32"
    store = FeatureStore(run.cache_dir, models.address(model, precision=precision), kind)
    unique = list(dict.fromkeys(keys))
    missing = store.missing(unique)
    if missing:
        used = models.choose_device(run.device)
        writer = _ChunkWriter(store, len(missing), 2048, kind + "s")
        embed, workers = (_embed_images, run.workers) if kind == "image" else (_embed_texts, 0)
        items = [item_of[k] for k in missing]
        loaded = models.build(model, used)
        embed(loaded, items, missing, writer, used, run.batch_size, workers, autocast)
    feats, bad = store.fetch(unique)
    if feats is None or bad:
        raise RsmEvalError(f"feature store {store.root}: {len(bad)} rows failed verification")
    pos = {k: i for i, k in enumerate(unique)}
    return feats[[pos[k] for k in keys]]


def embed_texts(
    model: Model, texts: list[str], *, autocast: bool = False, **run: Any
) -> np.ndarray:
    """L2-normalised features of arbitrary texts (class prompts, say), in order, through the
    same content-keyed text store as captions: a text embedded once is never embedded again.
    `run`: the fields of :class:`FeatureRun` (cache_dir, device, batch_size)."""
    keys = [text_key(t) for t in texts]
    text_of = dict(zip(keys, texts, strict=True))
    return _cached(model, "text", keys, text_of, FeatureRun(**run), autocast)


def embed_image_files(model: Model, paths: list[Path], **run: Any) -> np.ndarray:
    """L2-normalised features of image files, in order, through the model's image store
    (keyed by file sha256, as in embed_split): an image embedded once is never embedded again.
    `run`: the fields of :class:`FeatureRun` (cache_dir, device, batch_size, workers)."""
    keys = cas.memo().files(paths)
    path_of = dict(zip(keys, paths, strict=True))
    return _cached(model, "image", keys, path_of, FeatureRun(**run), False)
