"""Test-set leakage audit: which test images also occur, exactly or nearly, in training data.

Three signals, from strict to loose:

* **Exact**: the same decoded picture. ``pixel_sha256`` is the sha256 of the image's shape
  and its decoded 8-bit RGB pixels (``PIL.Image.convert("RGB")``, first frame), not of the
  file bytes: two TIFFs that differ only in metadata or compression are exact duplicates,
  while a picture re-encoded as JPEG is not (its pixels changed).
* **Near**: a perceptual hash within ``max_hamming`` bits. ``phash`` is a 64-bit DCT hash:
  greyscale (ITU-R 601 luma, float), resized to 32x32 (Lanczos, antialiased), 2-D DCT-II,
  the 8x8 lowest frequencies compared with their median, bit 63 = coefficient (0, 0),
  row-major. It survives brightness shifts, re-encoding and mild resampling, not rotation
  or cropping. ``dhash`` (64-bit gradient hash on a 9x8 resize) is a second, independent
  opinion available through ``max_dhash``.
* **Confirmed**: near pairs whose image embeddings (supplied by the caller) have cosine
  similarity >= ``threshold``. Flat, featureless images (sea, desert) have unstable hashes
  and can collide; the embedding check removes such false alarms.

Scale: comparing hashes is a blocked brute force, XOR plus popcount over the full
(n_test x n_train) grid in tiles of at most ``_TILE`` pairs, so time is O(n_test * n_train)
word operations and memory O(tile): 2k x 200k takes about 0.7 s of XOR/popcount plus
0.5-1 s of input validation on one CPU core, with ~70 MB peak. Multi-index hashing would
only pay off at tens of millions of training images. Decoding the images dominates
(~2 ms per 256 px TIFF); callers should cache hashes by file sha256.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import math
import warnings
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
from PIL import Image

from rsm_eval.errors import RsmEvalError

__all__ = [
    "audit",
    "confirm",
    "dhash",
    "find_duplicates",
    "image_hash",
    "image_hashes",
    "phash",
    "pixel_sha256",
    "thumbnail_data_uri",
]

_PHASH_SIZE = 32  # resize edge before the DCT
_PHASH_LOW = 8  # low-frequency block edge: 64 bits
_TILE = 1 << 22  # hash pairs compared per tile (32 MB of uint64 XORs)
_U64 = 1 << 64


def _dct_matrix(n: int, rows: int) -> np.ndarray:
    """First ``rows`` rows of the orthonormal DCT-II matrix of size n (float64)."""
    k = np.arange(rows)[:, None]
    i = np.arange(n)[None, :]
    m = np.cos(np.pi * (2 * i + 1) * k / (2 * n)) * math.sqrt(2.0 / n)
    m[0] /= math.sqrt(2.0)
    return m


_DCT = _dct_matrix(_PHASH_SIZE, _PHASH_LOW)
_BIT_WEIGHTS = [1 << (63 - j) for j in range(64)]


# ---------------------------------------------------------------------------- hashing


def _load_rgb(path: Path) -> np.ndarray:
    """Decoded 8-bit RGB pixels (h, w, 3) of an image file; RsmEvalError naming it if bad."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                return np.asarray(im.convert("RGB"))
    except FileNotFoundError:
        raise RsmEvalError(f"{path}: image file does not exist") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise RsmEvalError(f"{path}: image exceeds the decompression-bomb limit") from None
    except Exception as exc:  # PIL raises many types for corrupt files
        raise RsmEvalError(f"{path}: image cannot be decoded ({exc})") from None


def pixel_sha256(rgb: np.ndarray) -> str:
    """sha256 of an (h, w, 3) uint8 array: ``b"rgb8:{h}x{w}\\n"`` then the row-major bytes."""
    arr = np.ascontiguousarray(rgb, dtype=np.uint8)
    if arr.ndim != 3 or arr.shape[2] != 3:
        raise RsmEvalError(f"pixel_sha256: expected an (h, w, 3) RGB array, got {arr.shape}")
    h = hashlib.sha256(f"rgb8:{arr.shape[0]}x{arr.shape[1]}\n".encode())
    h.update(arr.data)
    return h.hexdigest()


def _grey(rgb: np.ndarray) -> Image.Image:
    """Float greyscale ("F") image, so that resizing does not round to 8 bits first."""
    luma = rgb.astype(np.float32) @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    return Image.fromarray(np.ascontiguousarray(luma))


def _bits_to_int(bits: np.ndarray) -> int:
    """64 booleans (first = most significant) as an int in [0, 2**64)."""
    return sum(w for w, b in zip(_BIT_WEIGHTS, bits.ravel().tolist(), strict=True) if b)


def _resize(grey: Image.Image, size: tuple[int, int]) -> np.ndarray:
    # reducing_gap: box-reduce by an integer factor first, then Lanczos; ~4x faster than a
    # full Lanczos from 256 px and still antialiased.
    return np.asarray(grey.resize(size, Image.Resampling.LANCZOS, reducing_gap=2.0), np.float64)


def _phash_grey(grey: Image.Image) -> int:
    low = _DCT @ _resize(grey, (_PHASH_SIZE, _PHASH_SIZE)) @ _DCT.T
    return _bits_to_int(low > np.median(low))


def _dhash_grey(grey: Image.Image) -> int:
    small = _resize(grey, (9, 8))
    return _bits_to_int(small[:, 1:] > small[:, :-1])


def phash(rgb: np.ndarray) -> int:
    """64-bit DCT perceptual hash of an (h, w, 3) uint8 image (module docstring)."""
    return _phash_grey(_grey(rgb))


def dhash(rgb: np.ndarray) -> int:
    """64-bit difference hash: is each pixel of a 9x8 greyscale resize darker than its right
    neighbour (row-major, first = most significant bit)."""
    return _dhash_grey(_grey(rgb))


def image_hash(path: Path | str) -> dict[str, Any]:
    """``path``, ``pixel_sha256``, ``phash``, ``dhash``, ``width``, ``height`` of one image."""
    path = Path(path)
    rgb = _load_rgb(path)
    if rgb.shape[0] == 0 or rgb.shape[1] == 0:
        raise RsmEvalError(f"{path}: image has no pixels ({rgb.shape[1]}x{rgb.shape[0]})")
    grey = _grey(rgb)
    return {
        "path": str(path),
        "pixel_sha256": pixel_sha256(rgb),
        "phash": _phash_grey(grey),
        "dhash": _dhash_grey(grey),
        "width": int(rgb.shape[1]),
        "height": int(rgb.shape[0]),
    }


def image_hashes(paths: Iterable[Path | str], *, threads: int = 4) -> list[dict[str, Any]]:
    """:func:`image_hash` of each path, in input order; decoding runs on ``threads`` threads."""
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise RsmEvalError(f"threads: expected a positive int, got {threads!r}")
    paths = list(paths)
    if threads == 1 or len(paths) < 2:
        return [image_hash(p) for p in paths]
    with ThreadPoolExecutor(max_workers=threads) as pool:
        return list(pool.map(image_hash, paths))


# ------------------------------------------------------------------------- duplicates


def _items(items: Iterable[Any], side: str, need_dhash: bool) -> tuple[list, list, np.ndarray, Any]:
    """Keys, pixel sha256s, phash array and dhash array (or None) of one side."""
    keys: list[str] = []
    shas: list[str] = []
    ph: list[int] = []
    dh: list[int] = []
    seen: set[str] = set()
    for row, item in enumerate(items):
        if isinstance(item, Mapping):
            fields = (item.get("key"), item.get("pixel_sha256"), item.get("phash"))
            d = item.get("dhash")
        elif isinstance(item, Sequence) and len(item) in (3, 4):
            fields, d = tuple(item[:3]), (item[3] if len(item) == 4 else None)
        else:
            raise RsmEvalError(
                f"{side}[{row}]: expected (key, pixel_sha256, phash[, dhash]) or a mapping with "
                f"those keys, got {type(item).__name__}"
            )
        key, sha, p = fields
        if not isinstance(key, str) or not key:
            raise RsmEvalError(f"{side}[{row}]: key must be a non-empty str, got {key!r}")
        if key in seen:
            raise RsmEvalError(f"{side}[{row}]: key {key!r} occurs twice")
        seen.add(key)
        if not isinstance(sha, str) or len(sha) != 64:
            raise RsmEvalError(f"{side} {key!r}: pixel_sha256 must be 64 hex digits, got {sha!r}")
        for name, value in (("phash", p), ("dhash", d)):
            if value is None and name == "dhash" and not need_dhash:
                continue
            if isinstance(value, bool) or not isinstance(value, int | np.integer):
                raise RsmEvalError(f"{side} {key!r}: {name} must be an int, got {value!r}")
            if not 0 <= int(value) < _U64:
                raise RsmEvalError(f"{side} {key!r}: {name} {int(value)} is not a 64-bit hash")
        keys.append(key)
        shas.append(sha)
        ph.append(int(p))
        if need_dhash:
            dh.append(int(d))
    phs = np.array(ph, dtype=np.uint64)
    return keys, shas, phs, (np.array(dh, dtype=np.uint64) if need_dhash else None)


def _close_pairs(a: np.ndarray, b: np.ndarray, max_dist: int) -> tuple[np.ndarray, ...]:
    """All (i, j, distance) with popcount(a[i] ^ b[j]) <= max_dist; blocked brute force."""
    out_i, out_j, out_d = [], [], []
    if a.size == 0 or b.size == 0:
        return np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0, np.int64)
    cols = min(b.size, _TILE)
    rows = max(1, _TILE // cols)
    xor = np.empty(rows * cols, dtype=np.uint64)
    count = np.empty(rows * cols, dtype=np.uint8)
    for i0 in range(0, a.size, rows):
        ab = a[i0 : i0 + rows]
        for j0 in range(0, b.size, cols):
            bb = b[j0 : j0 + cols]
            x = xor[: ab.size * bb.size].reshape(ab.size, bb.size)
            np.bitwise_xor(ab[:, None], bb[None, :], out=x)
            c = count[: x.size].reshape(x.shape)
            np.bitwise_count(x, out=c)
            # 1-D flatnonzero on a contiguous block is much faster than 2-D nonzero.
            flat = np.flatnonzero(c.reshape(-1) <= max_dist)
            if flat.size:
                r, q = np.divmod(flat, bb.size)
                out_i.append(r + i0)
                out_j.append(q + j0)
                out_d.append(c.reshape(-1)[flat].astype(np.int64))
    if not out_i:
        return np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0, np.int64)
    return np.concatenate(out_i), np.concatenate(out_j), np.concatenate(out_d)


def _check_distance(value: object, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or not 0 <= value < 64:
        raise RsmEvalError(f"{name}: expected an int in [0, 64), got {value!r}")
    return int(value)


def find_duplicates(
    test: Iterable[Any],
    train: Iterable[Any],
    *,
    max_hamming: int = 6,
    max_dhash: int | None = None,
) -> list[dict[str, Any]]:
    """Exact and near duplicates between test and training images.

    ``test`` and ``train`` hold ``(key, pixel_sha256, phash)`` tuples (a 4th element, or a
    mapping with keys ``key``, ``pixel_sha256``, ``phash``, ``dhash``, adds the dHash).
    Keys must be unique per side. A pair is ``exact`` when the pixel hashes are equal and
    ``near`` when they differ but the pHashes are within ``max_hamming`` bits (and, with
    ``max_dhash``, the dHashes within that many bits too).

    Returns dicts ``test_key``, ``train_key``, ``kind`` ("exact" | "near"), ``hamming``
    (pHash bits) and, with ``max_dhash``, ``dhash_hamming``; sorted by test key, exact
    first, then distance and train key.
    """
    max_hamming = _check_distance(max_hamming, "max_hamming")
    need_dhash = max_dhash is not None
    if need_dhash:
        max_dhash = _check_distance(max_dhash, "max_dhash")
    t_keys, t_sha, t_ph, t_dh = _items(test, "test", need_dhash)
    r_keys, r_sha, r_ph, r_dh = _items(train, "train", need_dhash)

    pairs: list[dict[str, Any]] = []
    by_sha: dict[str, list[int]] = defaultdict(list)
    for j, sha in enumerate(r_sha):
        by_sha[sha].append(j)
    for i, sha in enumerate(t_sha):
        for j in by_sha.get(sha, ()):
            pair = {"test_key": t_keys[i], "train_key": r_keys[j], "kind": "exact"}
            pair["hamming"] = int(t_ph[i] ^ r_ph[j]).bit_count()
            if need_dhash:
                pair["dhash_hamming"] = int(t_dh[i] ^ r_dh[j]).bit_count()
            pairs.append(pair)

    ii, jj, dist = _close_pairs(t_ph, r_ph, max_hamming)
    for i, j, d in zip(ii.tolist(), jj.tolist(), dist.tolist(), strict=True):
        if t_sha[i] == r_sha[j]:
            continue  # already reported as exact
        pair = {"test_key": t_keys[i], "train_key": r_keys[j], "kind": "near", "hamming": d}
        if need_dhash:
            dd = int(t_dh[i] ^ r_dh[j]).bit_count()
            if dd > max_dhash:
                continue
            pair["dhash_hamming"] = dd
        pairs.append(pair)
    pairs.sort(key=lambda p: (p["test_key"], p["kind"] != "exact", p["hamming"], p["train_key"]))
    return pairs


# ----------------------------------------------------------------------- confirmation


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


# -------------------------------------------------------------------------- reporting


def thumbnail_data_uri(path: Path | str, size: int = 64) -> str:
    """A PNG ``data:`` URI of the image shrunk to fit ``size`` x ``size`` (aspect kept)."""
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise RsmEvalError(f"size: expected a positive int, got {size!r}")
    img = Image.fromarray(_load_rgb(Path(path)))
    img.thumbnail((size, size), Image.Resampling.LANCZOS)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


# --------------------------------------------------------------------------- the stage


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
    from . import cas, schemas, shards

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
            "code": cas.code_version("rsm_eval.leakage"),
        },
    )
    return len(rows)


def gather_hashes(parts: list[Path], out: Path) -> int:
    """Concatenate the shard tables of hash_dataset (in shard order) into the table the
    unsharded job writes: the same rows, columns and provenance."""
    from . import schemas

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
    from . import schemas

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
    from .embeddings import embed_image_files

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


def leaked_images(audit: dict[str, Any], dataset: str) -> set[str]:
    """Test images of `dataset` with a confirmed duplicate in a training source."""
    return {
        p["test_image"]
        for p in audit["pairs"]
        if p["test_dataset"] == dataset and not p["between_tests"] and p.get("confirmed", True)
    }
