"""Feature store: committed chunks, per-row reuse, checksums verified on read."""

from __future__ import annotations

import numpy as np
from rsm_eval.featstore import FeatureStore


def rows(n, d=8, seed=0):
    rng = np.random.default_rng(seed)
    return [f"k{i}" for i in range(n)], rng.standard_normal((n, d)).astype(np.float32)


def test_commit_fetch_roundtrip_across_chunks(tmp_path):
    store = FeatureStore(tmp_path, "addr", "image")
    keys, feats = rows(10)
    store.commit(keys[:4], feats[:4])
    store.commit(keys[4:], feats[4:])
    assert store.missing(keys + ["new"]) == ["new"]
    fresh = FeatureStore(tmp_path, "addr", "image")  # another process: reads the index anew
    got, bad = fresh.fetch(["k7", "k0", "k7"])
    assert bad == []
    np.testing.assert_array_equal(got, feats[[7, 0, 7]])


def test_models_and_kinds_are_separate(tmp_path):
    keys, feats = rows(3)
    FeatureStore(tmp_path, "addr", "image").commit(keys, feats)
    assert FeatureStore(tmp_path, "other", "image").missing(keys) == keys
    assert FeatureStore(tmp_path, "addr", "text").missing(keys) == keys


def test_corrupted_chunk_is_set_aside_and_reported_missing(tmp_path):
    store = FeatureStore(tmp_path, "addr", "text")
    keys, feats = rows(6)
    good = store.commit(keys[:3], feats[:3])
    bad = store.commit(keys[3:], feats[3:])
    data = bytearray(bad.read_bytes())
    data[len(data) // 2] ^= 0xFF
    bad.write_bytes(bytes(data))
    got, missing = store.fetch(keys)
    assert got is None and missing == keys[3:]
    assert not bad.exists() and bad.with_name(bad.name + ".corrupt").exists()
    assert good.exists()
    store.commit(keys[3:], feats[3:])
    got, missing = store.fetch(keys)
    assert missing == []
    np.testing.assert_array_equal(got, feats)


def test_unreadable_chunk_is_ignored_by_the_index(tmp_path):
    store = FeatureStore(tmp_path, "addr", "image")
    store.root.mkdir(parents=True)
    (store.root / ("0" * 64 + ".parquet")).write_bytes(b"garbage")
    assert store.missing(["a"]) == ["a"]
    assert (store.root / ("0" * 64 + ".parquet.corrupt")).exists()


def test_no_temporary_files_left(tmp_path):
    store = FeatureStore(tmp_path, "addr", "image")
    keys, feats = rows(5)
    path = store.commit(keys, feats)
    assert [p.name for p in store.root.iterdir()] == [path.name]
