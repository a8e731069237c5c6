"""Tests for rsm_eval.sources against a real HTTP server on 127.0.0.1 (no other network)."""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import socket
import stat
import tarfile
import zipfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import yaml
from loopback import ServerState, serve
from rsm_eval import sources
from rsm_eval.errors import RsmEvalError
from rsm_eval.sources import (
    ChecksumMismatchError,
    DownloadError,
    LockFile,
    MissingSourcesError,
    Source,
    UnsafeArchiveError,
    VerificationError,
    check_available,
    download,
    materialize,
    safe_extract,
)

# --------------------------------------------------------------------------- HTTP fixture


@pytest.fixture(autouse=True)
def _no_proxy_no_sleep(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """Never route through a proxy, and record retry delays instead of sleeping."""
    for var in ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("no_proxy", "*")
    delays: list[float] = []
    monkeypatch.setattr(sources.http, "_sleep", delays.append)
    return delays


@pytest.fixture
def server() -> Iterator[ServerState]:
    with serve() as state:
        yield state


@pytest.fixture
def sleeps(_no_proxy_no_sleep: list[float]) -> list[float]:
    return _no_proxy_no_sleep


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _payload(n: int = 300_000, seed: int = 1) -> bytes:
    return b"".join(hashlib.sha256(f"{seed}:{i}".encode()).digest() for i in range(n // 32 + 1))[:n]


def _quiet(done: int, total: int | None) -> None:
    pass


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# --------------------------------------------------------------------------- Source


def test_from_config_accepts_and_normalises() -> None:
    sha = "AB" * 32
    src = Source.from_config(
        "datasets.x.images", {"url": "https://e.org/a.zip", "sha256": sha, "member": "./a/b/"}
    )
    assert src.sha256 == sha.lower()
    assert src.member == "a/b"
    assert src.origin == "https://e.org/a.zip"


@pytest.mark.parametrize(
    ("entry", "needle"),
    [
        ({"url": "https://e.org/a", "path": "a"}, "exactly one of 'url' or 'path'"),
        ({}, "exactly one of 'url' or 'path'"),
        ({"url": "ftp://e.org/a"}, "http(s) URL"),
        ({"url": "https://e.org/a", "sha256": "abc"}, "64 hexadecimal"),
        ({"path": "a", "size": -1}, "non-negative integer"),
        ({"path": "a", "member": "../x"}, "'..'"),
        ({"path": "a", "colour": "red"}, "unknown field(s) colour"),
        ("https://e.org/a", "expected a mapping"),
    ],
)
def test_from_config_rejects(entry: object, needle: str) -> None:
    with pytest.raises(RsmEvalError) as info:
        Source.from_config("models.m.checkpoint", entry)  # type: ignore[arg-type]
    assert "models.m.checkpoint" in str(info.value)
    assert needle in str(info.value)


# --------------------------------------------------------------------------- download


def test_clean_download(server: ServerState, tmp_path: Path) -> None:
    data = _payload()
    server.files["/m.bin"] = data
    seen: list[tuple[int, int | None]] = []
    dest = tmp_path / "sub" / "m.bin"
    digest = download(
        server.url("/m.bin"),
        dest,
        key="models.m",
        sha256=_sha(data),
        size=len(data),
        progress=lambda d, t: seen.append((d, t)),
    )
    assert digest == _sha(data)
    assert dest.read_bytes() == data
    assert not (tmp_path / "sub" / "m.bin.part").exists()
    assert seen[-1] == (len(data), len(data))


def test_default_progress_prints_lines_to_stderr(
    server: ServerState, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    server.files["/p.bin"] = _payload(3 << 20)
    download(server.url("/p.bin"), tmp_path / "p.bin", key="k.p")
    err = capsys.readouterr().err
    assert "k.p" in err and "100%" in err
    assert len(err.splitlines()) <= 11


def test_dropped_connection_resumes_with_range(server: ServerState, tmp_path: Path) -> None:
    data = _payload()
    server.files["/big.bin"] = data
    server.drop_after["/big.bin"] = len(data) // 2
    dest = tmp_path / "big.bin"
    download(server.url("/big.bin"), dest, key="k", sha256=_sha(data), progress=_quiet)
    assert dest.read_bytes() == data
    assert server.ranged("/big.bin") == [f"bytes={len(data) // 2}-"]
    # The resumed request is tied to the first answer's version of the file.
    resumed = [h for p, h in server.requests if "Range" in h][0]
    assert resumed.get("If-Range", "").startswith('"')
    assert not (tmp_path / "big.bin.part").exists()


def test_part_file_is_resumed_across_calls(server: ServerState, tmp_path: Path) -> None:
    data = _payload()
    server.files["/c.bin"] = data
    dest = tmp_path / "c.bin"
    (tmp_path / "c.bin.part").write_bytes(data[:1000])
    download(server.url("/c.bin"), dest, key="k", sha256=_sha(data), progress=_quiet)
    assert dest.read_bytes() == data
    assert server.ranged("/c.bin") == ["bytes=1000-"]


def test_complete_part_file_is_accepted_after_416(server: ServerState, tmp_path: Path) -> None:
    data = _payload(5000)
    server.files["/q.bin"] = data
    (tmp_path / "q.bin.part").write_bytes(data)
    download(server.url("/q.bin"), tmp_path / "q.bin", key="k", sha256=_sha(data), progress=_quiet)
    assert (tmp_path / "q.bin").read_bytes() == data
    assert server.ranged("/q.bin") == [f"bytes={len(data)}-"]


def test_stale_part_from_older_file_is_discarded(server: ServerState, tmp_path: Path) -> None:
    data = _payload()
    server.files["/s.bin"] = data
    (tmp_path / "s.bin.part").write_bytes(b"x" * 1000)  # not a prefix of the current file
    download(server.url("/s.bin"), tmp_path / "s.bin", key="k", sha256=_sha(data), progress=_quiet)
    assert (tmp_path / "s.bin").read_bytes() == data
    assert server.count("/s.bin") == 2  # resume, mismatch, one fresh download


def test_server_ignoring_range_restarts_from_zero(server: ServerState, tmp_path: Path) -> None:
    data = _payload()
    server.files["/r.bin"] = data
    server.ranges = False
    server.drop_after["/r.bin"] = 5000
    download(server.url("/r.bin"), tmp_path / "r.bin", key="k", sha256=_sha(data), progress=_quiet)
    assert (tmp_path / "r.bin").read_bytes() == data


def test_wrong_content_range_restarts_from_zero(server: ServerState, tmp_path: Path) -> None:
    data = _payload()
    server.files["/w.bin"] = data
    server.bad_range_start = True
    server.drop_after["/w.bin"] = 5000
    download(server.url("/w.bin"), tmp_path / "w.bin", key="k", sha256=_sha(data), progress=_quiet)
    assert (tmp_path / "w.bin").read_bytes() == data
    # drop, resume answered with a wrong range, then a clean request without Range
    assert server.count("/w.bin") == 3
    assert "Range" not in server.requests[-1][1]


def test_5xx_is_retried_with_backoff(
    server: ServerState, tmp_path: Path, sleeps: list[float]
) -> None:
    data = _payload(1000)
    server.files["/f.bin"] = data
    server.fail_with["/f.bin"] = [503, 503]
    download(server.url("/f.bin"), tmp_path / "f.bin", key="k", sha256=_sha(data), progress=_quiet)
    assert (tmp_path / "f.bin").read_bytes() == data
    assert server.count("/f.bin") == 3
    assert sleeps == [0.5, 1.0]


def test_5xx_gives_up_after_retries(server: ServerState, tmp_path: Path) -> None:
    server.files["/g.bin"] = b"x"
    server.fail_with["/g.bin"] = [500] * 10
    with pytest.raises(DownloadError, match="after 3 attempts") as info:
        download(server.url("/g.bin"), tmp_path / "g.bin", key="k.g", retries=2, progress=_quiet)
    assert "k.g" in str(info.value) and "/g.bin" in str(info.value)


def test_404_fails_at_once(server: ServerState, tmp_path: Path, sleeps: list[float]) -> None:
    url = server.url("/missing.bin")
    with pytest.raises(DownloadError) as info:
        download(url, tmp_path / "missing.bin", key="datasets.x.annotations", progress=_quiet)
    message = str(info.value)
    assert url in message and "datasets.x.annotations" in message and "404" in message
    assert server.count("/missing.bin") == 1 and sleeps == []
    assert list(tmp_path.iterdir()) == []


def test_403_fails_at_once_with_manual_hint(server: ServerState, tmp_path: Path) -> None:
    server.files["/a.bin"] = b"x"
    server.fail_with["/a.bin"] = [403]
    with pytest.raises(DownloadError, match="403.*path:"):
        download(server.url("/a.bin"), tmp_path / "a.bin", key="k", progress=_quiet)
    assert server.count("/a.bin") == 1


def test_wrong_checksum_deletes_everything(server: ServerState, tmp_path: Path) -> None:
    data = _payload(5000)
    server.files["/bad.bin"] = data
    expected = "0" * 64
    with pytest.raises(ChecksumMismatchError) as info:
        download(server.url("/bad.bin"), tmp_path / "bad.bin", key="k.bad", sha256=expected)
    message = str(info.value)
    assert expected in message and _sha(data) in message and "k.bad" in message
    assert list(tmp_path.iterdir()) == []


def test_size_mismatch_is_refused_before_download(server: ServerState, tmp_path: Path) -> None:
    server.files["/z.bin"] = b"abc"
    with pytest.raises(VerificationError, match="expected 4 bytes"):
        download(server.url("/z.bin"), tmp_path / "z.bin", key="k", size=4, progress=_quiet)
    assert list(tmp_path.iterdir()) == []


def test_html_page_instead_of_file_is_refused(server: ServerState, tmp_path: Path) -> None:
    server.files["/model.pt"] = b"<html>please log in</html>"
    server.content_type = "text/html; charset=utf-8"
    with pytest.raises(DownloadError, match="HTML page"):
        download(server.url("/model.pt"), tmp_path / "model.pt", key="k", progress=_quiet)
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------- lock file


def test_lock_records_verifies_and_refreshes(server: ServerState, tmp_path: Path) -> None:
    data = _payload(4000)
    server.files["/ckpt.pt"] = data
    url = server.url("/ckpt.pt")
    src = Source.from_config("models.rsm.checkpoint", {"url": url})
    lock = LockFile(tmp_path / "sources.lock.yaml")
    dest = tmp_path / "out" / "ckpt.pt"

    materialize(src, dest, lock=lock, progress=_quiet)
    assert lock.expected(src.key, url) == (_sha(data), len(data))
    assert lock.expected(src.key, url + "?v=2") == (None, None)  # url changed: unknown
    recorded = yaml.safe_load(lock.path.read_text())
    assert recorded == {src.key: {"url": url, "sha256": _sha(data), "size": len(data)}}

    # Second run: dest verifies against the lock and is reused without a request.
    materialize(src, dest, lock=lock, progress=_quiet)
    assert server.count("/ckpt.pt") == 1

    # Publisher silently changes the bytes: a fresh download must stop with both hashes.
    dest.unlink()
    tampered = _payload(4000, seed=2)
    server.files["/ckpt.pt"] = tampered
    with pytest.raises(ChecksumMismatchError) as info:
        materialize(src, dest, lock=lock, progress=_quiet)
    message = str(info.value)
    assert _sha(data) in message and _sha(tampered) in message and "refresh_lock" in message
    assert not dest.exists() and not (dest.parent / "ckpt.pt.part").exists()

    # Deliberate refresh re-records.
    materialize(src, dest, lock=lock, refresh_lock=True, progress=_quiet)
    assert dest.read_bytes() == tampered
    assert lock.expected(src.key, url) == (_sha(tampered), len(tampered))


def test_lock_is_safe_with_concurrent_writers(tmp_path: Path) -> None:
    lock = LockFile(tmp_path / "sources.lock.yaml")

    def write(i: int) -> None:
        lock.record(f"k{i:02d}", f"https://e.org/{i}", _sha(str(i).encode()), i)

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(write, range(40)))
    data = yaml.safe_load(lock.path.read_text())
    assert sorted(data) == [f"k{i:02d}" for i in range(40)]
    assert lock.path.read_text().startswith("#")


def test_lock_with_garbage_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "sources.lock.yaml"
    path.write_text("- just\n- a list\n")
    with pytest.raises(RsmEvalError, match=re.escape(str(path))):
        LockFile(path).expected("k", "https://e.org/x")


# --------------------------------------------------------------------------- safe_extract


def _zip(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(zipfile.ZipInfo(name), data, compress_type=zipfile.ZIP_DEFLATED)
    return path


def _tar(path: Path, members: list[tarfile.TarInfo | tuple[str, bytes]]) -> Path:
    with tarfile.open(path, "w:gz") as tf:
        for item in members:
            if isinstance(item, tarfile.TarInfo):
                tf.addfile(item)
            else:
                info = tarfile.TarInfo(item[0])
                info.size = len(item[1])
                tf.addfile(info, io.BytesIO(item[1]))
    return path


def _leftovers(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if ".extract-" in p.name)


def test_extract_zip_with_file_member(tmp_path: Path) -> None:
    archive = _zip(tmp_path / "d.zip", {"ds/ann/data.json": b'{"a": 1}', "ds/images/1.png": b"png"})
    got = safe_extract(archive, tmp_path / "out", key="k", member="ds/ann/data.json")
    assert got == tmp_path / "out" / "ds" / "ann" / "data.json"
    assert got.read_bytes() == b'{"a": 1}'
    assert not (tmp_path / "out" / "ds" / "images").exists()  # only the member is written
    assert _leftovers(tmp_path) == []


def test_extract_targz_with_directory_member(tmp_path: Path) -> None:
    archive = _tar(
        tmp_path / "d.tar.gz",
        [("./ds/images/a.jpg", b"a"), ("./ds/images/sub/b.jpg", b"b"), ("./ds/readme", b"r")],
    )
    got = safe_extract(archive, tmp_path / "out", key="k", member="ds/images")
    assert (got / "a.jpg").read_bytes() == b"a"
    assert (got / "sub" / "b.jpg").read_bytes() == b"b"
    assert not (tmp_path / "out" / "ds" / "readme").exists()


def test_extract_whole_archive_replaces_dest(tmp_path: Path) -> None:
    archive = _zip(tmp_path / "d.zip", {"x.txt": b"x"})
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "old.txt").write_text("old")
    got = safe_extract(archive, tmp_path / "out", key="k")
    assert got == tmp_path / "out"
    assert sorted(p.name for p in got.iterdir()) == ["x.txt"]


def test_missing_member_lists_names(tmp_path: Path) -> None:
    archive = _zip(tmp_path / "d.zip", {"ds/dataset_rsitmd.json": b"{}"})
    with pytest.raises(RsmEvalError) as info:
        safe_extract(archive, tmp_path / "out", key="datasets.r", member="ds/dataset_rsitmd.jsn")
    message = str(info.value)
    assert "datasets.r" in message and "ds/dataset_rsitmd.json" in message
    assert not (tmp_path / "out").exists() and _leftovers(tmp_path) == []


def _assert_refused(archive: Path, tmp_path: Path, needle: str, **kwargs: object) -> None:
    dest = tmp_path / "box" / "out"
    with pytest.raises(UnsafeArchiveError) as info:
        safe_extract(archive, dest, key="datasets.evil", **kwargs)  # type: ignore[arg-type]
    message = str(info.value)
    assert "datasets.evil" in message and str(archive) in message and needle in message
    assert not dest.exists()
    assert sorted(p.name for p in (tmp_path / "box").iterdir()) == []
    assert not (tmp_path / "evil").exists() and not (tmp_path / "box" / "evil").exists()


def test_zip_slip_is_refused(tmp_path: Path) -> None:
    archive = _zip(tmp_path / "e.zip", {"ok.txt": b"fine", "../evil": b"pwned"})
    _assert_refused(archive, tmp_path, "'../evil'")


def test_zip_absolute_path_is_refused(tmp_path: Path) -> None:
    target = tmp_path / "evil"
    archive = _zip(tmp_path / "e.zip", {str(target): b"pwned"})
    _assert_refused(archive, tmp_path, "absolute path")


def test_tar_absolute_path_is_refused(tmp_path: Path) -> None:
    archive = _tar(tmp_path / "e.tar.gz", [("ok", b"1"), (str(tmp_path / "evil"), b"pwned")])
    _assert_refused(archive, tmp_path, "absolute path")


def test_tar_symlink_outside_is_refused(tmp_path: Path) -> None:
    link = tarfile.TarInfo("data/link")
    link.type = tarfile.SYMTYPE
    link.linkname = "../../.."
    archive = _tar(tmp_path / "e.tar.gz", [("data/ok", b"1"), link, ("data/link/evil", b"x")])
    _assert_refused(archive, tmp_path, "symlink pointing outside")


def test_tar_symlink_chain_escape_is_refused(tmp_path: Path) -> None:
    # Each link looks harmless when created; together "b" resolves above dest.
    first = tarfile.TarInfo("b")
    first.type = tarfile.SYMTYPE
    first.linkname = "z/.."
    second = tarfile.TarInfo("z")
    second.type = tarfile.SYMTYPE
    second.linkname = "."
    archive = _tar(tmp_path / "e.tar.gz", [first, second, ("b/evil", b"x")])
    _assert_refused(archive, tmp_path, "outside")


def test_zip_symlink_outside_is_refused(tmp_path: Path) -> None:
    archive = tmp_path / "l.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        info = zipfile.ZipInfo("data/link")
        info.external_attr = (stat.S_IFLNK | 0o777) << 16
        zf.writestr(info, "../../outside")
    _assert_refused(archive, tmp_path, "symlink pointing outside")


def test_download_reports_disk_errors(server: ServerState, tmp_path: Path) -> None:
    server.files["/d.bin"] = b"data"
    (tmp_path / "d.bin").mkdir()  # the rename onto dest cannot succeed
    with pytest.raises(DownloadError, match=r"k\.d: cannot write"):
        download(server.url("/d.bin"), tmp_path / "d.bin", key="k.d", progress=_quiet)


def test_tar_hardlink_outside_and_devices_are_refused(tmp_path: Path) -> None:
    hard = tarfile.TarInfo("h")
    hard.type = tarfile.LNKTYPE
    hard.linkname = "../../etc/passwd"
    _assert_refused(_tar(tmp_path / "h.tar.gz", [hard]), tmp_path, "'..'")
    dev = tarfile.TarInfo("dev")
    dev.type = tarfile.CHRTYPE
    _assert_refused(_tar(tmp_path / "c.tar.gz", [dev]), tmp_path, "device")


def test_tar_internal_links_are_kept(tmp_path: Path) -> None:
    sym = tarfile.TarInfo("d/latest")
    sym.type = tarfile.SYMTYPE
    sym.linkname = "v1.txt"
    hard = tarfile.TarInfo("d/copy.txt")
    hard.type = tarfile.LNKTYPE
    hard.linkname = "d/v1.txt"
    archive = _tar(tmp_path / "ok.tar.gz", [("d/v1.txt", b"v1"), sym, hard])
    got = safe_extract(archive, tmp_path / "out", key="k")
    assert (got / "d" / "latest").read_bytes() == b"v1"
    assert (got / "d" / "copy.txt").read_bytes() == b"v1"


def test_zip_bomb_is_refused(tmp_path: Path) -> None:
    archive = _zip(tmp_path / "bomb.zip", {"zeros.bin": bytes(10 << 20)})
    assert archive.stat().st_size < 100_000
    _assert_refused(archive, tmp_path, "max_total_bytes", max_total_bytes=1 << 20)


def test_tar_bomb_and_member_count_are_refused(tmp_path: Path) -> None:
    archive = _tar(tmp_path / "bomb.tar.gz", [("zeros.bin", bytes(10 << 20))])
    _assert_refused(archive, tmp_path, "max_total_bytes", max_total_bytes=1 << 20)
    many = _tar(tmp_path / "many.tar.gz", [(f"f{i}", b"") for i in range(20)])
    _assert_refused(many, tmp_path, "max_members", max_members=10)


def test_extract_counts_written_bytes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Simulate a member whose declared size understates its content.
    archive = _zip(tmp_path / "lie.zip", {"a.bin": bytes(3 << 20)})
    real_declare = sources._Extractor.declare
    monkeypatch.setattr(
        sources._Extractor, "declare", lambda self, name, n: real_declare(self, name, 0)
    )
    _assert_refused(archive, tmp_path, "decompresses past", max_total_bytes=1 << 20)


def test_not_an_archive(tmp_path: Path) -> None:
    path = tmp_path / "plain.bin"
    path.write_bytes(b"not an archive at all")
    with pytest.raises(RsmEvalError, match="not a zip, tar or RAR archive"):
        safe_extract(path, tmp_path / "out", key="k")


# --------------------------------------------------------------------------- materialize


def test_materialize_archive_url_with_member(server: ServerState, tmp_path: Path) -> None:
    archive = _zip(
        tmp_path / "rsitmd.zip",
        {
            "RSITMD/dataset_RSITMD.json": b'{"images": []}',
            "RSITMD/images/a.tif": b"A",
            "RSITMD/images/b.tif": b"B",
        },
    )
    blob = archive.read_bytes()
    server.files["/rsitmd.zip"] = blob
    url = server.url("/rsitmd.zip")
    out = tmp_path / "resources" / "rsitmd"
    ann = Source.from_config(
        "datasets.rsitmd.annotations",
        {"url": url, "sha256": _sha(blob), "member": "RSITMD/dataset_RSITMD.json"},
    )
    imgs = Source.from_config("datasets.rsitmd.images", {"url": url, "member": "RSITMD/images"})
    lock = LockFile(tmp_path / "sources.lock.yaml")

    got = materialize(ann, out / "annotations.json", lock=lock, progress=_quiet)
    assert got == out / "annotations.json"
    assert got.read_bytes() == b'{"images": []}'
    got_imgs = materialize(imgs, out / "images", lock=lock, progress=_quiet)
    assert sorted(p.name for p in got_imgs.iterdir()) == ["a.tif", "b.tif"]
    assert server.count("/rsitmd.zip") == 1  # both members come from one cached download
    assert lock.expected(imgs.key, url) == (_sha(blob), len(blob))  # no sha in config: recorded
    assert lock.expected(ann.key, url) == (None, None)  # sha in config: not recorded

    # Idempotent, even offline and with the cached archive gone.
    for path in (out / ".downloads").iterdir():
        path.unlink()
    assert materialize(ann, out / "annotations.json", offline=True) == got
    assert materialize(imgs, out / "images", lock=lock, offline=True) == got_imgs
    assert server.count("/rsitmd.zip") == 1
    assert not [p for p in out.iterdir() if ".extract-" in p.name or ".member-" in p.name]


def test_materialize_manual_archive_path(tmp_path: Path) -> None:
    archive = _tar(tmp_path / "ucm.tar.gz", [("UCM/captions.json", b"[]")])
    src = Source.from_config(
        "datasets.ucm.annotations",
        {"path": str(archive), "sha256": _sha(archive.read_bytes()), "member": "UCM/captions.json"},
    )
    dest = tmp_path / "res" / "captions.json"
    assert materialize(src, dest).read_bytes() == b"[]"
    archive.unlink()  # the user may delete the big archive once it is extracted
    assert materialize(src, dest).read_bytes() == b"[]"
    check_available([(src, dest)])


def test_materialize_manual_file_is_verified_and_linked(tmp_path: Path) -> None:
    ckpt = tmp_path / "manual" / "model.pt"
    ckpt.parent.mkdir()
    ckpt.write_bytes(b"weights")
    good = Source.from_config(
        "models.m.checkpoint", {"path": str(ckpt), "sha256": _sha(b"weights")}
    )
    dest = tmp_path / "res" / "model.pt"
    assert materialize(good, dest).read_bytes() == b"weights"
    assert dest.is_symlink()
    bad = Source.from_config("models.m.checkpoint", {"path": str(ckpt), "sha256": "1" * 64})
    with pytest.raises(ChecksumMismatchError) as info:
        materialize(bad, dest)
    assert "1" * 64 in str(info.value) and _sha(b"weights") in str(info.value)
    assert str(ckpt) in str(info.value) and "models.m.checkpoint" in str(info.value)


def test_offline_missing_sources_are_all_listed(tmp_path: Path) -> None:
    manual_a = Source.from_config(
        "datasets.rsicd.images",
        {"path": "manual/rsicd.zip", "member": "RSICD/images", "instructions": "Baidu Netdisk"},
    )
    manual_b = Source.from_config("models.georsclip.checkpoint", {"path": "manual/geo.pt"})
    present = tmp_path / "here.json"
    present.write_text("{}")
    manual_ok = Source.from_config("datasets.x.annotations", {"path": str(present)})
    remote = Source.from_config("models.clip.checkpoint", {"url": "https://e.org/clip.pt"})
    pairs = [
        (manual_a, tmp_path / "r" / "images"),
        (manual_b, tmp_path / "r" / "geo.pt"),
        (manual_ok, tmp_path / "r" / "ann.json"),
        (remote, tmp_path / "r" / "clip.pt"),
    ]
    with pytest.raises(MissingSourcesError) as info:
        check_available(pairs)
    err = info.value
    assert [m.key for m in err.missing] == [manual_a.key, manual_b.key]
    message = str(err)
    assert str(Path("manual/rsicd.zip").absolute()) in message
    assert str(Path("manual/geo.pt").absolute()) in message
    assert "Baidu Netdisk" in message and "2 input sources are missing" in message

    with pytest.raises(MissingSourcesError) as info:
        materialize(remote, tmp_path / "r" / "clip.pt", offline=True)
    message = str(info.value)
    assert "https://e.org/clip.pt" in message and str(tmp_path / "r" / "clip.pt") in message


def test_unreachable_host_is_a_missing_source(tmp_path: Path, sleeps: list[float]) -> None:
    url = f"http://127.0.0.1:{_closed_port()}/model.pt"
    src = Source.from_config("models.x.checkpoint", {"url": url})
    with pytest.raises(MissingSourcesError) as info:
        materialize(src, tmp_path / "model.pt", progress=_quiet)
    assert sleeps == [0.5, 1.0, 2.0, 4.0, 8.0]  # retried with exponential backoff first
    assert url in str(info.value) and "models.x.checkpoint" in str(info.value)
    assert info.value.missing[0].put_at == tmp_path / "model.pt"


def test_offline_member_source_says_where_the_archive_goes(tmp_path: Path) -> None:
    src = Source.from_config(
        "datasets.r.images", {"url": "https://e.org/r.zip", "member": "r/images"}
    )
    with pytest.raises(MissingSourcesError) as info:
        materialize(src, tmp_path / "images", offline=True)
    put_at = info.value.missing[0].put_at
    assert put_at.parent == tmp_path / ".downloads" and put_at.name.endswith("r.zip")
    assert str(put_at) in str(info.value)


def test_stamp_records_origin(server: ServerState, tmp_path: Path) -> None:
    blob = _zip(tmp_path / "a.zip", {"a/x.json": b"1"}).read_bytes()
    server.files["/a.zip"] = blob
    src = Source.from_config("k", {"url": server.url("/a.zip"), "member": "a/x.json"})
    materialize(src, tmp_path / "x.json", progress=_quiet)
    stamp = json.loads((tmp_path / ".x.json.source.json").read_text())
    assert stamp["sha256"] == _sha(blob) and stamp["member"] == "a/x.json"
    assert stat.S_ISREG((tmp_path / "x.json").lstat().st_mode)
    assert os.listdir(tmp_path / ".downloads")
