"""Content addresses: memoised file hashing, canonical digests, atomic writes."""

from __future__ import annotations

import hashlib
import os
import time

import pytest
from rsm_eval import cas
from rsm_eval.errors import RsmEvalError


def test_file_hash_is_content_and_memo_follows_stat(tmp_path):
    memo = cas.HashMemo(tmp_path / "memo.sqlite")
    f = tmp_path / "a.bin"
    f.write_bytes(b"hello")
    assert memo.file(f) == hashlib.sha256(b"hello").hexdigest()
    # A touch changes the stat: the file is read again and, of course, hashes the same.
    t = time.time() + 10
    os.utime(f, (t, t))
    assert memo.file(f) == hashlib.sha256(b"hello").hexdigest()
    f.write_bytes(b"world")
    assert memo.file(f) == hashlib.sha256(b"world").hexdigest()


def test_memo_avoids_rereading(tmp_path, monkeypatch):
    memo = cas.HashMemo(tmp_path / "memo.sqlite")
    f = tmp_path / "a.bin"
    f.write_bytes(b"x" * 1000)
    memo.file(f)
    calls = []
    monkeypatch.setattr(cas, "_hash_stream", lambda p: calls.append(p) or "never")
    assert memo.file(f) == hashlib.sha256(b"x" * 1000).hexdigest()
    assert calls == []
    # A fresh memo object on the same database also remembers.
    assert cas.HashMemo(tmp_path / "memo.sqlite").file(f) != "never"


def test_tree_address_ignores_mtime_and_location(tmp_path):
    memo = cas.HashMemo(tmp_path / "memo.sqlite")
    for root in (tmp_path / "one", tmp_path / "two"):
        (root / "sub").mkdir(parents=True)
        (root / "a.tif").write_bytes(b"A")
        (root / "sub" / "b.jpg").write_bytes(b"B")
    assert memo.tree(tmp_path / "one") == memo.tree(tmp_path / "two")
    (tmp_path / "two" / "a.tif").write_bytes(b"changed")
    assert memo.tree(tmp_path / "one") != memo.tree(tmp_path / "two")


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(RsmEvalError, match="not found"):
        cas.HashMemo(tmp_path / "m.sqlite").file(tmp_path / "nope.pt")


def test_digest_is_canonical():
    assert cas.digest({"b": 1, "a": [1, 2]}) == cas.digest({"a": [1, 2], "b": 1})
    assert cas.digest({"a": 1}) != cas.digest({"a": 2})


def test_atomic_write_leaves_nothing_on_failure(tmp_path):
    dest = tmp_path / "out.json"
    with pytest.raises(RuntimeError), cas.atomic_path(dest) as tmp:
        tmp.write_text("half")
        raise RuntimeError("boom")
    assert not dest.exists()
    assert list(tmp_path.iterdir()) == []
    cas.write_json_atomic(dest, {"x": 1})
    assert dest.read_text().strip() == '{\n  "x": 1\n}'


def test_code_version_tracks_source():
    v = cas.code_version("rsm_eval.metrics")
    assert v == cas.code_version("rsm_eval.metrics")
    assert v != cas.code_version("rsm_eval.report")
