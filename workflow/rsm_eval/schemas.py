"""The data contracts between stages: every Parquet table's schema, in one place.

A stage reads another stage's output only through these tables. Each file also carries a
JSON `rsm_eval` entry in its Parquet metadata: the address of the product and of what it
was made from, so any number can be traced back to bytes.

Tables
------
captions  (manifests -> embeddings, metrics): one row per caption, all splits.
images    (manifests -> embeddings, metrics, report): one row per image, all splits.
image_features / text_features (embeddings -> metrics): one row per distinct image content
          / distinct caption text of the evaluated split, L2-normalised float32.
ranks     (metrics -> report, statistics): per-query rank of the best positive.
image_hashes (leakage): decoded-pixel and perceptual hashes of every image of a dataset.

Metrics record
--------------
The evaluate stage's JSON (one model x dataset x split x protocol variant; evaluate ->
report, statistics) holds ``model``, ``dataset``, ``split``, ``protocol``, ``autocast``,
``variant``, ``n_images``, ``n_captions``, ``n_distinct_captions``, ``n_queries``,
``inputs`` (addresses and sha256 of what it was computed from), ``code``, ``address``,
``excluded_images``, for remoteclip rows ``ci``/``ci_level``/``n_resamples``/``seed``/
``ceilings``, and:

metrics        {metric: percent}: ``metrics.METRIC_COLUMNS`` (skyscript adds ``i2t_mean``,
               ``t2i_mean``), ranks by the tie rule in ``ties``.
ties           the deterministic tie rule behind ``metrics`` (a sentence).
tie_interval   {metric: [low, high]} for every key of ``metrics``: the lowest and highest
               value over all orders of exactly tied scores (identical captions or
               images); ``low <= metrics[m] <= high``, equal when nothing ties.
n_tied_queries {"i2t": n, "t2i": n}: queries whose rank an order of ties can change.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from .cas import atomic_path
from .errors import RsmEvalError

META_KEY = b"rsm_eval"

CAPTIONS = pa.schema(
    [
        pa.field("dataset", pa.string(), nullable=False),
        pa.field("split", pa.string(), nullable=False),
        # image_key: the file name as the annotations spell it; unique within a dataset.
        pa.field("image_key", pa.string(), nullable=False),
        # image_path: relative to the dataset's image root (equals image_key for Karpathy JSON).
        pa.field("image_path", pa.string(), nullable=False),
        pa.field("image_sha256", pa.string(), nullable=False),
        # caption_index: position of the caption within its image, in file order.
        pa.field("caption_index", pa.int32(), nullable=False),
        pa.field("caption", pa.string(), nullable=False),
        pa.field("caption_sha256", pa.string(), nullable=False),
        pa.field("sentid", pa.int64(), nullable=True),
    ]
)

IMAGES = pa.schema(
    [
        pa.field("dataset", pa.string(), nullable=False),
        pa.field("split", pa.string(), nullable=False),
        pa.field("image_key", pa.string(), nullable=False),
        pa.field("image_path", pa.string(), nullable=False),
        pa.field("image_sha256", pa.string(), nullable=False),
        pa.field("width", pa.int32(), nullable=False),
        pa.field("height", pa.int32(), nullable=False),
        pa.field("n_captions", pa.int32(), nullable=False),
        pa.field("n_distinct_captions", pa.int32(), nullable=False),
    ]
)


def features_schema(dim: int) -> pa.Schema:
    """Features keyed by content: `key` is an image_sha256 or caption_sha256."""
    return pa.schema(
        [
            pa.field("key", pa.string(), nullable=False),
            pa.field("embedding", pa.list_(pa.float32(), dim), nullable=False),
        ]
    )


IMAGE_HASHES = pa.schema(
    [
        pa.field("image_key", pa.string(), nullable=False),
        pa.field("split", pa.string(), nullable=False),
        pa.field("image_path", pa.string(), nullable=False),
        pa.field("image_sha256", pa.string(), nullable=False),
        # sha256 of the decoded RGB pixels: equal pictures in different files or formats.
        pa.field("pixel_sha256", pa.string(), nullable=False),
        # 64-bit perceptual hashes, unsigned (int64 would overflow).
        pa.field("phash", pa.uint64(), nullable=False),
        pa.field("dhash", pa.uint64(), nullable=False),
    ]
)

RANKS = pa.schema(
    [
        pa.field("direction", pa.string(), nullable=False),  # "i2t" or "t2i"
        pa.field("query", pa.int64(), nullable=False),  # query index in evaluation order
        pa.field("group", pa.int64(), nullable=False),  # image index the query belongs to
        pa.field("rank", pa.int64(), nullable=False),  # 0-based rank of the best positive
    ]
)


def check_schema(table: pa.Table, schema: pa.Schema, where: str) -> None:
    """Raise RsmEvalError naming `where` unless `table` has exactly `schema`'s columns and types."""
    got = {f.name: f.type for f in table.schema}
    want = {f.name: f.type for f in schema}
    if list(got) != list(want) or any(got[n] != t for n, t in want.items()):
        raise RsmEvalError(
            f"{where}: expected columns {[f'{n}:{t}' for n, t in want.items()]}, "
            f"found {[f'{n}:{t}' for n, t in got.items()]}"
        )
    for f in schema:
        if not f.nullable and table.column(f.name).null_count:
            raise RsmEvalError(f"{where}: column {f.name!r} has null values")


def write_table(table: pa.Table, path: Path | str, schema: pa.Schema, meta: dict[str, Any]) -> None:
    """Validate against `schema`, attach provenance metadata, and write atomically."""
    table = table.cast(schema) if table.schema != schema else table
    check_schema(table, schema, str(path))
    table = table.replace_schema_metadata({META_KEY: json.dumps(meta, sort_keys=True)})
    with atomic_path(path, suffix=".parquet") as tmp:
        pq.write_table(table, tmp, compression="zstd")


def read_table(path: Path | str, schema: pa.Schema | None = None) -> tuple[pa.Table, dict]:
    """Read a table written by `write_table`; return it and its provenance metadata."""
    try:
        table = pq.read_table(path)
    except (OSError, pa.ArrowInvalid) as exc:
        raise RsmEvalError(f"{path}: not a readable Parquet table ({exc})") from None
    if schema is not None:
        check_schema(table.replace_schema_metadata(None), schema, str(path))
    raw = (table.schema.metadata or {}).get(META_KEY)
    meta = json.loads(raw) if raw else {}
    return table.replace_schema_metadata(None), meta


def read_meta(path: Path | str) -> dict:
    """Provenance metadata of a table without reading its data."""
    raw = (pq.read_schema(path).metadata or {}).get(META_KEY)
    return json.loads(raw) if raw else {}


# scenes (scene manifests -> scene features, zero-shot, linear probe): one row per image of a
# class-folder or label-CSV dataset. class_id: the folder path (relative to the root) or the
# CSV label; class_name: its readable form (words), which prompts use by default.
SCENES = pa.schema(
    [
        pa.field("dataset", pa.string(), nullable=False),
        pa.field("split", pa.string(), nullable=False),
        pa.field("image_key", pa.string(), nullable=False),
        pa.field("image_path", pa.string(), nullable=False),
        pa.field("image_sha256", pa.string(), nullable=False),
        pa.field("class_id", pa.string(), nullable=False),
        pa.field("class_name", pa.string(), nullable=False),
        pa.field("width", pa.int32(), nullable=False),
        pa.field("height", pa.int32(), nullable=False),
    ]
)
