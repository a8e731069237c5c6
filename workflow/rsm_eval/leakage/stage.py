"""The leakage stage: hash tables of whole datasets (sharded or not), the audit of every
training source against every evaluated test split, and the test images it finds leaked."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow as pa

from .. import cas, schemas, shards
from ..errors import RsmEvalError
from .images import image_hashes
from .pairs import find_duplicates


def hash_dataset(
    images_manifest: Path,
    images_root: Path,
    out: Path,
    *,
    threads: int = 4,
    shard: tuple[int, int] | None = None,
) -> int:
    """Write the IMAGE_HASHES table of every image a manifest lists (all splits), or of the
    rows of one `shard` (i, n) of it (shards.take); gather_hashes joins the shards' tables."""
    table, meta = schemas.read_table(images_manifest, schemas.IMAGES)
    rows = shards.take(table.to_pylist(), shard)
    hashes = image_hashes([images_root / r["image_path"] for r in rows], threads=threads)
    out_table = pa.table(
        {
            "image_key": [r["image_key"] for r in rows],
            "split": [r["split"] for r in rows],
            "image_path": [r["image_path"] for r in rows],
            "image_sha256": [r["image_sha256"] for r in rows],
            "pixel_sha256": [h["pixel_sha256"] for h in hashes],
            "phash": pa.array([h["phash"] for h in hashes], pa.uint64()),
            "dhash": pa.array([h["dhash"] for h in hashes], pa.uint64()),
        },
        schema=schemas.IMAGE_HASHES,
    )
    schemas.write_table(
        out_table,
        out,
        schemas.IMAGE_HASHES,
        {
            "stage": "image_hashes",
            "manifest_address": meta.get("address"),
            "code": cas.code_version(__package__),  # the leakage stage: this package
        },
    )
    return len(rows)


def gather_hashes(parts: list[Path], out: Path) -> int:
    """Concatenate the shard tables of hash_dataset (in shard order) into the table the
    unsharded job writes: the same rows, columns and provenance."""
    tables, metas = zip(*(schemas.read_table(p, schemas.IMAGE_HASHES) for p in parts), strict=True)
    if len({json.dumps(m, sort_keys=True) for m in metas}) != 1:
        raise RsmEvalError(f"{parts[0].parent}: shard tables of different manifests or code")
    table = pa.concat_tables(tables)
    schemas.write_table(table, out, schemas.IMAGE_HASHES, metas[0])
    return table.num_rows


def _side(table: pa.Table, split: str | None, label: str) -> list[dict[str, Any]]:
    return [
        {
            "key": f"{label}:{r['image_key']}",
            "pixel_sha256": r["pixel_sha256"],
            "phash": int(r["phash"]),
            "dhash": int(r["dhash"]),
            "image_key": r["image_key"],
            "image_sha256": r["image_sha256"],
            "image_path": r["image_path"],
        }
        for r in table.to_pylist()
        if split is None or r["split"] == split
    ]


def audit_sources(
    tests: dict[str, tuple[Path, str]],
    trains: dict[str, tuple[Path, str | None]],
    *,
    max_hamming: int = 6,
) -> dict[str, Any]:
    """Duplicates between every training source and every evaluated test split, and between
    test splits of different benchmarks.

    `tests` maps a dataset name to (hash table, evaluated split); `trains` maps a source label
    (e.g. "demo:train") to (hash table, split or None for all rows).
    """

    def load(path: Path) -> pa.Table:
        return schemas.read_table(path, schemas.IMAGE_HASHES)[0]

    test_sides = {name: _side(load(p), split, name) for name, (p, split) in tests.items()}
    train_sides = {label: _side(load(p), split, label) for label, (p, split) in trains.items()}
    comparisons = [
        (t, label, items, False)
        for t in sorted(test_sides)
        for label, items in sorted(train_sides.items())
    ]
    names = sorted(test_sides)
    comparisons += [
        (a, f"{b}:{tests[b][1]}", test_sides[b], True)
        for i, a in enumerate(names)
        for b in names[i + 1 :]
    ]
    pairs, counts = [], []
    for test_name, source, items, between_tests in comparisons:
        test_items = test_sides[test_name]
        found = find_duplicates(
            [(t["key"], t["pixel_sha256"], t["phash"], t["dhash"]) for t in test_items],
            [(t["key"], t["pixel_sha256"], t["phash"], t["dhash"]) for t in items],
            max_hamming=max_hamming,
        )
        by_key = {t["key"]: t for t in test_items + items}
        for f in found:
            a, b = by_key[f["test_key"]], by_key[f["train_key"]]
            pairs.append(
                {
                    **f,
                    "test_dataset": test_name,
                    "source": source,
                    "between_tests": between_tests,
                    "test_image": a["image_key"],
                    "source_image": b["image_key"],
                    "test_path": a["image_path"],
                    "source_path": b["image_path"],
                    "test_pixel_sha256": a["pixel_sha256"],
                    "source_pixel_sha256": b["pixel_sha256"],
                    "test_phash": f"{a['phash']:016x}",
                    "source_phash": f"{b['phash']:016x}",
                    "test_image_sha256": a["image_sha256"],
                    "source_image_sha256": b["image_sha256"],
                }
            )
        counts.append(
            {
                "test": test_name,
                "source": source,
                "between_tests": between_tests,
                "n_test_images": len(test_items),
                "n_source_images": len(items),
                "exact": sum(f["kind"] == "exact" for f in found),
                "near": sum(f["kind"] == "near" for f in found),
            }
        )
    return {"pairs": pairs, "counts": counts, "max_hamming": max_hamming}


def leaked_images(audit: dict[str, Any], dataset: str) -> set[str]:
    """Test images of `dataset` with a confirmed duplicate in a training source."""
    return {
        p["test_image"]
        for p in audit["pairs"]
        if p["test_dataset"] == dataset and not p["between_tests"] and p.get("confirmed", True)
    }
