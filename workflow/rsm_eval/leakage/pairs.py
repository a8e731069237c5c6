"""Exact and near duplicates between two sides of hashed images: equal pixel digests, and
pHashes within a Hamming distance found by a blocked XOR/popcount brute force."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from ..errors import RsmEvalError

_TILE = 1 << 22  # hash pairs compared per tile (32 MB of uint64 XORs)
_U64 = 1 << 64


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
