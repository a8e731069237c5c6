"""Fetch and verify the workflow's inputs: datasets and model checkpoints.

A source comes from the config either as ``{url, sha256?, size?, member?}`` (downloaded over
HTTP) or as ``{path, sha256?, size?, member?, instructions?}`` (a manual download the user puts
in place by hand). ``member`` names a file or directory inside a zip/tar archive.

``materialize`` makes one source available at a destination path, verified against the
configured sha256 or, when the publisher gives none, against a lock file that records the
checksum of the first verified download. ``check_available`` lists every manual source that is
still missing, all at once, with the exact path where each one belongs.

Files written next to a destination ``D`` (all safe to delete, all re-creatable):
``D.part`` (an interrupted download, resumed on the next call), ``.D.source.json`` (what an
extracted archive member came from), ``.downloads/`` (archives whose member is extracted;
kept so a re-extraction needs no network) and ``*.lock`` files used with ``fcntl`` locks.
"""

from __future__ import annotations

import contextlib
import difflib
import fcntl
import hashlib
import http.client
import json
import os
import re
import shutil
import ssl
import stat
import sys
import tarfile
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import zipfile
import zlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO, NoReturn

import yaml

from rsm_eval.errors import RsmEvalError

__all__ = [
    "ChecksumMismatchError",
    "DownloadError",
    "LockFile",
    "MissingSource",
    "MissingSourcesError",
    "Source",
    "SourceUnreachableError",
    "UnsafeArchiveError",
    "VerificationError",
    "check_available",
    "download",
    "materialize",
    "safe_extract",
]

CHUNK = 1 << 20
_SHA256_RE = re.compile(r"[0-9a-f]{64}")
_USER_AGENT = "rsm-eval (python urllib)"
_MAX_DELAY = 60.0
_ARCHIVE_SUFFIXES = (".zip", ".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz")
_LOCK_HEADER = (
    "# RSM-Eval source lock: sha256 and size of inputs whose publisher gives no checksum.\n"
    "# Recorded on the first verified download; keep this file under version control.\n"
)

# Indirection so tests can run the retry loop without waiting.
_sleep = time.sleep

Progress = Callable[[int, "int | None"], None]


# --------------------------------------------------------------------------- errors


class DownloadError(RsmEvalError):
    """An HTTP download failed for good: a 4xx answer, a bad answer, or retries exhausted."""


class SourceUnreachableError(DownloadError):
    """The host could not be reached at all (DNS, refused connection, timeouts) after retries."""


class VerificationError(RsmEvalError):
    """A file's size or sha256 differs from what the config or the lock file expects."""


class ChecksumMismatchError(VerificationError):
    """A file's sha256 differs from the expected one; ``expected`` and ``actual`` hold both."""

    def __init__(self, message: str, *, expected: str, actual: str) -> None:
        super().__init__(message)
        self.expected = expected
        self.actual = actual


class UnsafeArchiveError(RsmEvalError):
    """An archive member would escape its destination, is special, or the archive is a bomb."""


@dataclass(frozen=True)
class MissingSource:
    """One missing input: its config key, where it comes from, and where to put it by hand."""

    key: str
    origin: str
    put_at: Path
    instructions: str | None = None
    reason: str | None = None


class MissingSourcesError(RsmEvalError):
    """Lists every missing source: key, origin (url or instructions) and the path to fill."""

    def __init__(self, missing: list[MissingSource]) -> None:
        self.missing = list(missing)
        super().__init__(self._format())

    def _format(self) -> str:
        n = len(self.missing)
        lines = [
            f"{n} input source{'s are' if n != 1 else ' is'} missing. "
            "Fetch each one, put it at the path shown, and re-run:"
        ]
        for item in self.missing:
            lines.append(f"  - {item.key}")
            lines.append(f"      from:    {item.origin}")
            if item.instructions:
                lines.append(f"      how:     {item.instructions}")
            lines.append(f"      put at:  {item.put_at}")
            if item.reason:
                lines.append(f"      because: {item.reason}")
        return "\n".join(lines)


# --------------------------------------------------------------------------- Source


_SOURCE_FIELDS = ("url", "path", "sha256", "size", "member", "instructions")


def _check_sha256(key: str, value: object) -> str:
    if not isinstance(value, str) or not _SHA256_RE.fullmatch(value.strip().lower()):
        raise RsmEvalError(f"{key}: sha256 must be 64 hexadecimal characters, got {value!r}")
    return value.strip().lower()


def _check_size(key: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise RsmEvalError(f"{key}: size must be a non-negative integer (bytes), got {value!r}")
    return value


def _norm_member(key: str, member: object) -> str:
    """Normalise a member path: '/'-separated, relative, no '..'; '.' means the whole archive."""
    if not isinstance(member, str) or not member.strip():
        raise RsmEvalError(f"{key}: member must be a non-empty path inside the archive")
    text = member.strip()
    if text.startswith("/") or "\\" in text:
        raise RsmEvalError(
            f"{key}: member {member!r} must be a relative '/'-separated path inside the archive"
        )
    parts = [p for p in text.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise RsmEvalError(f"{key}: member {member!r} must not contain '..'")
    return "/".join(parts) or "."


@dataclass(frozen=True)
class Source:
    """One input of the workflow, as configured under ``key``."""

    key: str
    url: str | None = None
    path: str | None = None
    sha256: str | None = None
    size: int | None = None
    member: str | None = None
    instructions: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.key, str) or not self.key:
            raise RsmEvalError(f"source key must be a non-empty string, got {self.key!r}")
        key = self.key
        if (self.url is None) == (self.path is None):
            got = "both" if self.url is not None else "neither"
            raise RsmEvalError(f"{key}: expected exactly one of 'url' or 'path', got {got}")
        if self.url is not None:
            parsed = urllib.parse.urlsplit(self.url) if isinstance(self.url, str) else None
            if parsed is None or parsed.scheme not in ("http", "https") or not parsed.netloc:
                raise RsmEvalError(f"{key}: url must be an http(s) URL, got {self.url!r}")
        if self.path is not None and (not isinstance(self.path, str) or not self.path.strip()):
            raise RsmEvalError(f"{key}: path must be a non-empty string, got {self.path!r}")
        if self.sha256 is not None:
            object.__setattr__(self, "sha256", _check_sha256(key, self.sha256))
        if self.size is not None:
            _check_size(key, self.size)
        if self.member is not None:
            object.__setattr__(self, "member", _norm_member(key, self.member))
        if self.instructions is not None and not isinstance(self.instructions, str):
            raise RsmEvalError(f"{key}: instructions must be a string")

    @property
    def origin(self) -> str:
        """The url, or the configured path for a manual source."""
        return self.url if self.url is not None else str(self.path)

    @classmethod
    def from_config(cls, key: str, entry: dict) -> Source:
        """Build a Source from a config mapping, rejecting unknown keys and bad values."""
        if not isinstance(entry, Mapping):
            raise RsmEvalError(
                f"{key}: expected a mapping with 'url' or 'path' (and optional sha256, size, "
                f"member, instructions), got {type(entry).__name__}"
            )
        unknown = sorted(str(k) for k in entry if k not in _SOURCE_FIELDS)
        if unknown:
            raise RsmEvalError(
                f"{key}: unknown field(s) {', '.join(unknown)}; expected only "
                f"{', '.join(_SOURCE_FIELDS)}"
            )
        values = {k: entry[k] for k in _SOURCE_FIELDS if entry.get(k) is not None}
        for field in ("url", "path", "sha256", "member", "instructions"):
            if field in values and not isinstance(values[field], str):
                raise RsmEvalError(
                    f"{key}.{field}: expected a string, got {type(values[field]).__name__}"
                )
        return cls(key=key, **values)


# --------------------------------------------------------------------------- small helpers


def _sha256_file(path: Path) -> tuple[str, int]:
    """Return (sha256 hex, size) of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb") as fh:
        while chunk := fh.read(CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


def _fsync_dir(path: Path) -> None:
    # Makes a rename durable; some filesystems refuse fsync on directories, which is harmless.
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _atomic_write_text(path: Path, text: str) -> None:
    """Write text to path via a temporary sibling, fsync, and os.replace."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)


@contextlib.contextmanager
def _flock(path: Path) -> Iterator[None]:
    """Hold an exclusive fcntl lock on path (created if needed) for the block."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock


def _part_path(dest: Path) -> Path:
    return dest.with_name(dest.name + ".part")


def _mib(n: int) -> str:
    return f"{n / (1 << 20):.1f}"


class _StderrProgress:
    """Default progress: one line on stderr per 10% (per 100 MiB when the size is unknown)."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.last = -1

    def __call__(self, done: int, total: int | None) -> None:
        if total:
            step = min(10, done * 10 // total)
            if step > self.last:
                self.last = step
                print(
                    f"{self.label}: {step * 10}% ({_mib(done)} of {_mib(total)} MiB)",
                    file=sys.stderr,
                    flush=True,
                )
        else:
            step = done // (100 << 20)
            if step > self.last:
                self.last = step
                print(f"{self.label}: {_mib(done)} MiB", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- download


class _Retry(Exception):
    """A transient failure of one attempt; the download loop decides whether to try again."""

    def __init__(
        self,
        reason: str,
        *,
        progressed: bool = False,
        unreachable: bool = False,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(reason)
        self.progressed = progressed
        self.unreachable = unreachable
        self.retry_after = retry_after


def _reason(exc: BaseException) -> str:
    reason = getattr(exc, "reason", None)
    text = str(reason if reason is not None else exc)
    return text or type(exc).__name__


def _parse_content_range(value: str | None) -> tuple[int, int, int | None] | None:
    match = re.fullmatch(r"\s*bytes\s+(\d+)-(\d+)/(\d+|\*)\s*", value or "")
    if not match:
        return None
    total = None if match.group(3) == "*" else int(match.group(3))
    return int(match.group(1)), int(match.group(2)), total


def _retry_after(headers: Mapping[str, str] | None) -> float | None:
    value = (headers or {}).get("Retry-After", "")
    return float(value) if value and value.strip().isdigit() else None


@dataclass
class _Transfer:
    """State shared by the attempts of one download() call."""

    url: str
    part: Path
    key: str
    size: int | None
    timeout: float
    report: Progress
    validator: str | None = None  # ETag/Last-Modified of the first answer, sent as If-Range
    leftover_kept: bool = False  # the .part holds bytes from an earlier call
    best: int = 0  # most bytes held so far; only growth beyond it counts as progress

    def restart(self) -> None:
        self.part.unlink(missing_ok=True)
        self.leftover_kept = False

    def _progressed(self, held: int) -> bool:
        # A server that ignores Range and drops every time must not loop forever.
        grew = held > self.best
        self.best = max(self.best, held)
        return grew

    def fail(self, message: str) -> NoReturn:
        self.part.unlink(missing_ok=True)
        raise DownloadError(f"{self.key}: {message}")

    def attempt(self) -> None:
        """Fetch the rest of the file into .part; raise _Retry on a transient failure."""
        offset = self.part.stat().st_size if self.part.exists() else 0
        if self.size is not None and offset > self.size:
            self.restart()
            offset = 0
        if self.size is not None and offset == self.size and offset:
            return  # complete already; verified by the caller
        headers = {"User-Agent": _USER_AGENT, "Accept-Encoding": "identity"}
        if offset:
            headers["Range"] = f"bytes={offset}-"
            if self.validator:
                headers["If-Range"] = self.validator
        request = urllib.request.Request(self.url, headers=headers)
        try:
            response = urllib.request.urlopen(request, timeout=self.timeout)
        except urllib.error.HTTPError as exc:
            with contextlib.closing(exc):
                self._http_error(exc, offset)
            return
        except (OSError, http.client.HTTPException) as exc:
            if isinstance(getattr(exc, "reason", exc), ssl.SSLCertVerificationError):
                self.fail(f"TLS certificate of {self.url} did not verify: {_reason(exc)}")
            raise _Retry(f"cannot connect: {_reason(exc)}", unreachable=True) from exc
        except ValueError as exc:
            self.fail(f"cannot request {self.url}: {exc}; expected an http(s) URL")
        with response:
            self._receive(response, offset)

    def _http_error(self, exc: urllib.error.HTTPError, offset: int) -> None:
        code = exc.code
        if code == 416 and offset:
            match = re.fullmatch(r"\s*bytes\s+\*/(\d+)\s*", exc.headers.get("Content-Range", ""))
            if match and int(match.group(1)) == offset:
                return  # the .part already holds the whole file
            self.restart()
            raise _Retry(f"server refused to resume at byte {offset} (HTTP 416); restarting")
        if code >= 500 or code in (408, 425, 429):
            raise _Retry(f"HTTP {code} {exc.reason}", retry_after=_retry_after(exc.headers))
        if code in (401, 403):
            hint = (
                "the file needs a login or is not public; download it by hand and configure "
                f"'path:' instead of 'url:' under {self.key}"
            )
        elif code == 404:
            hint = f"the file is gone or the URL is wrong; fix 'url' under {self.key}"
        else:
            hint = f"check 'url' under {self.key}"
        self.fail(
            f"HTTP {code} {exc.reason} for {self.url}; expected 200 OK with the file ({hint})"
        )

    def _receive(self, response: http.client.HTTPResponse, offset: int) -> None:
        status = response.status
        mode = "ab"
        if offset and status == 206:
            header = response.headers.get("Content-Range")
            parsed = _parse_content_range(header)
            if parsed is None or parsed[0] != offset:
                self.restart()
                raise _Retry(
                    f"server answered Content-Range {header!r}, expected bytes {offset}-; "
                    "restarting from 0"
                )
            total = parsed[2]
        elif status == 200:
            # No Range sent, or the server ignored it / the file changed (If-Range): start over.
            if offset:
                self.restart()
                offset = 0
            mode = "wb"
            length = (response.headers.get("Content-Length") or "").strip()
            total = int(length) if length.isdigit() else None
        else:
            self.fail(
                f"unexpected HTTP {status} for {self.url}; expected 200, or 206 for a resumed "
                "download"
            )
        if total is not None and self.size is not None and total != self.size:
            self.part.unlink(missing_ok=True)
            raise VerificationError(
                f"{self.key}: {self.url} is {total} bytes according to the server, expected "
                f"{self.size} bytes (size from the config or lock file)"
            )
        ctype = (response.headers.get("Content-Type") or "").lower()
        url_path = urllib.parse.urlsplit(self.url).path.lower()
        if ctype.startswith("text/html") and not url_path.endswith((".html", ".htm")):
            # Typical of login, quota or "confirm download" pages served with status 200.
            self.fail(
                f"{self.url} returned an HTML page instead of the file (a login, quota or "
                "confirmation page?); expected the file itself. Download it by hand and "
                f"configure 'path:' under {self.key}"
            )
        if status == 200:
            etag = response.headers.get("ETag")
            strong = etag if etag and not etag.startswith("W/") else None
            self.validator = strong or response.headers.get("Last-Modified")
        self.report(offset, total)
        written = offset
        with open(self.part, mode) as out:
            while True:
                try:
                    chunk = response.read(CHUNK)
                except (OSError, http.client.HTTPException) as exc:
                    raise _Retry(
                        f"connection lost after {written} bytes: {_reason(exc)}",
                        progressed=self._progressed(written),
                    ) from exc
                if not chunk:
                    break
                out.write(chunk)
                written += len(chunk)
                self.report(written, total)
        if total is not None and written < total:
            raise _Retry(
                f"connection closed after {written} of {total} bytes",
                progressed=self._progressed(written),
            )


def download(
    url: str,
    dest: Path,
    *,
    key: str,
    sha256: str | None = None,
    size: int | None = None,
    retries: int = 5,
    backoff: float = 0.5,
    timeout: float = 60.0,
    progress: Callable[[int, int | None], None] | None = None,
) -> str:
    """Download url to dest through '<dest>.part', resuming and retrying; return the sha256.

    A dropped connection or short read resumes with an HTTP Range request (the .part file is
    kept between attempts and between calls); an answer other than 206 with the matching
    Content-Range restarts from byte 0. 5xx answers, timeouts and connection errors are
    retried ``retries`` times with exponential backoff (an attempt that made progress resets
    the count); other 4xx fail at once. Size and sha256 are checked before the atomic rename.
    """
    dest = Path(dest)
    if sha256 is not None:
        sha256 = _check_sha256(key, sha256)
    try:
        return _download(url, dest, key, sha256, size, retries, backoff, timeout, progress)
    except OSError as exc:  # network errors are handled inside; these are local disk errors
        raise DownloadError(
            f"{key}: cannot write the download of {url} to {dest}: {exc}; expected a writable "
            "directory with enough free space"
        ) from exc


def _download(
    url: str,
    dest: Path,
    key: str,
    sha256: str | None,
    size: int | None,
    retries: int,
    backoff: float,
    timeout: float,
    progress: Progress | None,
) -> str:
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = _part_path(dest)
    transfer = _Transfer(
        url=url,
        part=part,
        key=key,
        size=size,
        timeout=timeout,
        report=progress if progress is not None else _StderrProgress(f"{key}: {url}"),
        leftover_kept=part.exists() and part.stat().st_size > 0,
    )
    transfer.best = part.stat().st_size if transfer.leftover_kept else 0
    failures = 0
    while True:
        try:
            transfer.attempt()
        except _Retry as exc:
            if exc.progressed:
                failures = 0
                continue
            failures += 1
            if failures > retries:
                kind = SourceUnreachableError if exc.unreachable else DownloadError
                raise kind(
                    f"{key}: could not download {url} after {failures} attempts: {exc}; "
                    "expected HTTP 200 with the file"
                ) from exc
            delay = (
                exc.retry_after if exc.retry_after is not None else backoff * 2 ** (failures - 1)
            )
            _sleep(min(delay, _MAX_DELAY))
            continue

        got_size = part.stat().st_size
        problem: VerificationError | None = None
        digest = ""
        if size is not None and got_size != size:
            problem = VerificationError(
                f"{key}: {url} gave {got_size} bytes, expected {size} bytes; the download was "
                "deleted"
            )
        else:
            digest, _ = _sha256_file(part)
            if sha256 is not None and digest != sha256:
                problem = ChecksumMismatchError(
                    f"{key}: sha256 mismatch for {url}: expected {sha256}, got {digest} "
                    f"({got_size} bytes); the download was deleted",
                    expected=sha256,
                    actual=digest,
                )
        if problem is not None:
            part.unlink(missing_ok=True)
            if transfer.leftover_kept:
                # The .part left by an earlier call may belong to an older version of the file.
                transfer.leftover_kept = False
                transfer.best = failures = 0
                continue
            raise problem
        _fsync_file(part)
        os.replace(part, dest)
        _fsync_dir(dest.parent)
        return digest


# --------------------------------------------------------------------------- lock file


class LockFile:
    """YAML record of sha256 and size for sources whose publisher gives no checksum.

    One entry per source key (url, sha256, size), sorted, meant for version control. Writers
    take an fcntl lock on '<path>.lock' and replace the file atomically.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def _load(self) -> dict:
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return {}
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise RsmEvalError(
                f"lock file {self.path}: not valid YAML ({exc}); expected a mapping of source "
                "keys to url/sha256/size"
            ) from exc
        if data is None:
            return {}
        if not isinstance(data, dict):
            raise RsmEvalError(
                f"lock file {self.path}: expected a mapping of source keys to url/sha256/size, "
                f"got {type(data).__name__}"
            )
        return data

    def expected(self, key: str, url: str) -> tuple[str | None, int | None]:
        """Recorded (sha256, size) for key, or (None, None) when unknown or the url changed."""
        entry = self._load().get(key)
        if entry is None:
            return None, None
        where = f"{key} in lock file {self.path}"
        if not isinstance(entry, dict) or not {"url", "sha256", "size"} <= set(entry):
            raise RsmEvalError(f"{where}: expected a mapping with url, sha256 and size")
        if entry["url"] != url:
            return None, None
        return _check_sha256(where, entry["sha256"]), _check_size(where, entry["size"])

    def record(self, key: str, url: str, sha256: str, size: int) -> None:
        """Record (or re-record) the checksum and size of key's file from url."""
        where = f"{key} (lock file {self.path})"
        entry = {"sha256": _check_sha256(where, sha256), "size": _check_size(where, size)}
        entry["url"] = url
        try:
            with _flock(self.path.with_name(self.path.name + ".lock")):
                data = self._load()  # re-read under the lock: another writer may have added keys
                if data.get(key) == entry:
                    return
                data[key] = entry
                body = yaml.safe_dump(
                    data, sort_keys=True, default_flow_style=False, allow_unicode=True
                )
                _atomic_write_text(self.path, _LOCK_HEADER + body)
        except OSError as exc:
            raise RsmEvalError(
                f"{key}: cannot record its checksum in lock file {self.path}: {exc}; expected a "
                "writable file"
            ) from exc


# --------------------------------------------------------------------------- archives


def _inside(root: str, path: str) -> bool:
    real = os.path.realpath(path)
    return real == root or real.startswith(root + os.sep)


def _escaping_links(root: Path) -> list[str]:
    """Relative paths of symlinks under root that resolve outside it."""
    real_root = os.path.realpath(root)
    bad = []
    for current, dirs, files in os.walk(root):
        for name in dirs + files:
            path = os.path.join(current, name)
            if os.path.islink(path) and not _inside(real_root, path):
                bad.append(os.path.relpath(path, root))
    return bad


def _archive_kind(archive: Path) -> str | None:
    name = archive.name.lower()
    if name.endswith(".zip"):
        return "zip"
    if name.endswith(_ARCHIVE_SUFFIXES):
        return "tar"
    if zipfile.is_zipfile(archive):
        return "zip"
    with contextlib.suppress(OSError, tarfile.TarError, EOFError, zlib.error):
        if tarfile.is_tarfile(archive):
            return "tar"
    return None


class _Extractor:
    """Writes selected members under root, refusing anything that could escape it."""

    def __init__(
        self, archive: Path, root: Path, *, key: str, member: str, max_bytes: int, max_members: int
    ) -> None:
        self.archive = archive
        self.root = str(root)
        self.real_root = os.path.realpath(root)
        self.key = key
        self.member = member  # "" selects everything
        self.max_bytes = max_bytes
        self.max_members = max_members
        self.declared = 0
        self.written = 0
        self.count = 0
        self.found = not member
        self.names: list[str] = []

    def fail(self, name: str, why: str) -> NoReturn:
        raise UnsafeArchiveError(
            f"{self.key}: refusing to extract {self.archive}: member {name!r} {why}"
        )

    def parts(self, name: str, *, backslash: bool) -> list[str]:
        # Zip files written on Windows may use backslashes as separators.
        text = name.replace("\\", "/") if backslash else name
        if text.startswith("/") or (backslash and re.match(r"[A-Za-z]:", text)):
            self.fail(name, "has an absolute path; expected paths relative to the archive root")
        if "\x00" in text:
            self.fail(name, "contains a NUL byte")
        parts = [p for p in text.split("/") if p not in ("", ".")]
        if ".." in parts:
            self.fail(name, "contains a '..' component (path traversal); expected it inside")
        return parts

    def counted(self, name: str) -> None:
        self.count += 1
        if self.count > self.max_members:
            self.fail(name, f"is past max_members={self.max_members}: too many entries")

    def selected(self, parts: list[str]) -> bool:
        rel = "/".join(parts)
        if len(self.names) < 5000:
            self.names.append(rel)
        if not self.member:
            return True
        if rel == self.member or rel.startswith(self.member + "/"):
            self.found = True
            return True
        return False

    def declare(self, name: str, nbytes: int) -> None:
        self.declared += nbytes
        if self.declared > self.max_bytes:
            self.fail(
                name,
                f"brings the declared uncompressed size to {self.declared} bytes, over "
                f"max_total_bytes={self.max_bytes} (decompression bomb?)",
            )

    def parent(self, name: str, parts: list[str]) -> str:
        """Create the parent directories of a member, never through an escaping symlink."""
        current = self.root
        for part in parts[:-1]:
            current = os.path.join(current, part)
            if not _inside(self.real_root, current):
                self.fail(name, "would be written through a symlink leading outside the dest")
            if os.path.isdir(current):
                continue
            if os.path.lexists(current):
                self.fail(name, f"has a parent {part!r} that is not a directory")
            os.mkdir(current)
        return current

    def target(self, name: str, parts: list[str]) -> str:
        path = os.path.join(self.parent(name, parts), parts[-1])
        if os.path.lexists(path):
            if os.path.isdir(path) and not os.path.islink(path):
                self.fail(name, "conflicts with a directory of the same name")
            os.unlink(path)  # a later duplicate replaces the file, never writes through it
        return path

    def make_dir(self, name: str, parts: list[str]) -> None:
        path = os.path.join(self.parent(name, parts), parts[-1])
        if not _inside(self.real_root, path):
            self.fail(name, "is a directory reached through a symlink leading outside the dest")
        if os.path.isdir(path):
            return
        if os.path.lexists(path):
            self.fail(name, "conflicts with a file of the same name")
        os.mkdir(path)

    def write_file(self, name: str, parts: list[str], stream: IO[bytes], executable: bool) -> None:
        path = self.target(name, parts)
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
        fd = os.open(path, flags, 0o755 if executable else 0o644)
        with os.fdopen(fd, "wb") as out:
            while chunk := stream.read(CHUNK):
                # Declared sizes can lie; the bytes actually written are what fill the disk.
                self.written += len(chunk)
                if self.written > self.max_bytes:
                    self.fail(
                        name,
                        f"decompresses past max_total_bytes={self.max_bytes} (decompression bomb?)",
                    )
                out.write(chunk)

    def make_symlink(self, name: str, parts: list[str], link: str) -> None:
        if not link or link.startswith("/") or "\x00" in link:
            self.fail(name, f"is a symlink to an absolute path ({link!r}); expected a relative one")
        path = self.target(name, parts)
        if not _inside(self.real_root, os.path.join(os.path.dirname(path), link)):
            self.fail(name, f"is a symlink pointing outside the destination (-> {link})")
        os.symlink(link, path)

    def make_hardlink(self, name: str, parts: list[str], link: str) -> None:
        link_parts = self.parts(link, backslash=False)
        source = os.path.join(self.root, *link_parts)
        if not link_parts or not _inside(self.real_root, source):
            self.fail(name, f"is a hard link pointing outside the destination (-> {link})")
        real = os.path.realpath(source)
        if not os.path.isfile(real):
            self.fail(
                name,
                f"is a hard link to {link!r}, which is not an extracted regular file "
                "(outside the selected member?)",
            )
        os.link(real, self.target(name, parts))

    def run_zip(self) -> None:
        with zipfile.ZipFile(self.archive) as zf:
            infos = zf.infolist()
            self.count = len(infos)
            if len(infos) > self.max_members:
                self.fail(
                    infos[self.max_members].filename, f"is past max_members={self.max_members}"
                )
            plan = []
            # The central directory lists every member up front: check it all before writing.
            for info in infos:
                parts = self.parts(info.filename, backslash=True)
                if not parts or not self.selected(parts):
                    continue
                kind = stat.S_IFMT(info.external_attr >> 16)
                if info.is_dir() or kind == stat.S_IFDIR:
                    plan.append(("dir", info, parts))
                elif kind == stat.S_IFLNK:
                    if info.file_size > 4096:
                        self.fail(info.filename, "is a symlink with an implausibly long target")
                    plan.append(("link", info, parts))
                elif kind in (0, stat.S_IFREG):
                    self.declare(info.filename, info.file_size)
                    plan.append(("file", info, parts))
                else:
                    self.fail(info.filename, "is a device file, FIFO or socket")
            for what, info, parts in plan:
                if what == "dir":
                    self.make_dir(info.filename, parts)
                elif what == "link":
                    target = zf.read(info).decode("utf-8", "surrogateescape")
                    self.make_symlink(info.filename, parts, target)
                else:
                    with zf.open(info) as stream:
                        executable = bool((info.external_attr >> 16) & 0o111)
                        self.write_file(info.filename, parts, stream, executable)

    def run_tar(self) -> None:
        # Stream mode reads a .tar.gz once, front to back, instead of seeking per member.
        with tarfile.open(self.archive, mode="r|*") as tf:
            for m in tf:
                self.counted(m.name)
                parts = self.parts(m.name, backslash=False)
                if not parts or not self.selected(parts):
                    continue
                if m.isdir():
                    self.make_dir(m.name, parts)
                elif m.isreg():
                    self.declare(m.name, m.size)
                    stream = tf.extractfile(m)
                    assert stream is not None
                    self.write_file(m.name, parts, stream, bool(m.mode & 0o111))
                elif m.issym():
                    self.make_symlink(m.name, parts, m.linkname)
                elif m.islnk():
                    self.make_hardlink(m.name, parts, m.linkname)
                else:
                    self.fail(m.name, "is a device file, FIFO or other special file")

    def missing_member(self) -> NoReturn:
        close = difflib.get_close_matches(self.member, self.names, n=5, cutoff=0.5)
        sample = close + [n for n in self.names[:10] if n not in close]
        found = ", ".join(sample[:10]) or "(no entries)"
        raise RsmEvalError(
            f"{self.key}: member {self.member!r} not found in archive {self.archive} "
            f"({self.count or len(self.names)} entries); it contains e.g.: {found}"
        )


def _replace_path(src: Path, dest: Path) -> None:
    """Move src to dest, replacing whatever dest was (file, link or directory tree)."""
    if os.path.lexists(dest):
        if dest.is_dir() and not dest.is_symlink():
            trash = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}.old-"))
            os.replace(dest, trash / "old")
            os.replace(src, dest)
            shutil.rmtree(trash, ignore_errors=True)
            return
        if src.is_dir() and not src.is_symlink():
            dest.unlink()
    os.replace(src, dest)


def safe_extract(
    archive: Path,
    dest: Path,
    *,
    key: str,
    member: str | None = None,
    max_total_bytes: int = 20 << 30,
    max_members: int = 1_000_000,
) -> Path:
    """Extract a zip or tar(.gz/.bz2/.xz) archive into dest; return dest/member (or dest).

    Only ``member`` (a file, or a directory and everything under it) is written when given.
    Members with absolute paths, '..' components, links leading outside dest, or device files
    are refused, as are archives whose declared or actually written size exceeds
    ``max_total_bytes``. Work happens in a temporary sibling directory renamed onto dest at
    the end, so a refusal leaves neither dest nor anything else behind.
    """
    archive, dest = Path(archive), Path(dest)
    want = "" if member is None else _norm_member(key, member)
    want = "" if want == "." else want
    if not archive.is_file():
        raise RsmEvalError(f"{key}: archive {archive} does not exist or is not a file")
    kind = _archive_kind(archive)
    if kind is None:
        raise RsmEvalError(
            f"{key}: {archive} is not a zip or tar archive; expected one (.zip, .tar, .tar.gz)"
        )
    dest.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}.extract-"))
    extractor = _Extractor(
        archive, work, key=key, member=want, max_bytes=max_total_bytes, max_members=max_members
    )
    try:
        try:
            if kind == "zip":
                extractor.run_zip()
            else:
                extractor.run_tar()
        except RsmEvalError:
            raise
        except (
            zipfile.BadZipFile,
            tarfile.TarError,
            zlib.error,
            EOFError,
            OSError,
            RuntimeError,
            NotImplementedError,
            ValueError,
        ) as exc:
            raise RsmEvalError(
                f"{key}: cannot extract {archive} into {dest}: {exc}; expected a readable, "
                "unencrypted zip or tar archive"
            ) from exc
        if not extractor.found:
            extractor.missing_member()
        # Links can be re-pointed by later members; check where they all end up.
        for rel in _escaping_links(work):
            extractor.fail(rel, "is a symlink that resolves outside the destination")
        _replace_path(work, dest)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return dest / want if want else dest


# --------------------------------------------------------------------------- materialize


def _stamp_path(dest: Path) -> Path:
    return dest.with_name(f".{dest.name}.source.json")


def _read_stamp(dest: Path) -> dict | None:
    try:
        data = json.loads(_stamp_path(dest).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _reusable_stamp(source: Source, dest: Path, sha: str | None) -> dict | None:
    """The stamp of a previous extraction of the same origin and member, if dest still exists."""
    stamp = _read_stamp(dest)
    if stamp is None or not os.path.lexists(dest):
        return None
    if stamp.get("origin") != source.origin or stamp.get("member") != source.member:
        return None
    if sha is not None and stamp.get("sha256") != sha:
        return None
    if not isinstance(stamp.get("sha256"), str) or not isinstance(stamp.get("size"), int):
        return None
    return stamp


def _archive_cache_path(dest: Path, url: str) -> Path:
    name = urllib.parse.unquote(PurePosixPath(urllib.parse.urlsplit(url).path).name)
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", name)[-100:] or "archive"
    tag = hashlib.sha256(url.encode()).hexdigest()[:10]
    return dest.parent / ".downloads" / f"{tag}-{name}"


def _missing(source: Source, put_at: Path, reason: str | None) -> MissingSource:
    origin = source.url if source.url is not None else "manual download (no URL)"
    return MissingSource(
        key=source.key,
        origin=origin,
        put_at=Path(put_at).absolute(),
        instructions=source.instructions,
        reason=reason,
    )


@dataclass(frozen=True)
class _Expect:
    sha256: str | None
    size: int | None
    record: bool  # record the checksum in the lock once known
    lock: LockFile | None  # set when sha256 comes from the lock (for the error hint)


def _expectation(source: Source, lock: LockFile | None, refresh: bool) -> _Expect:
    if source.sha256 is not None:
        return _Expect(source.sha256, source.size, False, None)
    if lock is None:
        return _Expect(None, source.size, False, None)
    if refresh:
        return _Expect(None, source.size, True, None)
    sha, size = lock.expected(source.key, source.origin)
    if sha is None:
        return _Expect(None, source.size, True, None)
    if source.size is not None and size != source.size:
        raise VerificationError(
            f"{source.key}: lock file {lock.path} records size {size} for {source.origin}, but "
            f"the config says {source.size}; fix one of them or refresh the lock"
        )
    return _Expect(sha, size, False, lock)


def _lock_hint(expect: _Expect) -> str:
    if expect.lock is None:
        return ""
    return (
        f" The expected sha256 comes from the lock file {expect.lock.path}; if the publisher "
        "changed the file on purpose, re-record it with refresh_lock=True."
    )


def _verify(path: Path, source: Source, expect: _Expect, need_digest: bool) -> tuple[str, int]:
    """Check path against the expected size and sha256; return (sha256 or '', size)."""
    size = path.stat().st_size
    if expect.size is not None and size != expect.size:
        raise VerificationError(
            f"{source.key}: {path} (from {source.origin}) has {size} bytes, expected "
            f"{expect.size}.{_lock_hint(expect)}"
        )
    if expect.sha256 is None and not need_digest:
        return "", size
    digest, size = _sha256_file(path)
    if expect.sha256 is not None and digest != expect.sha256:
        raise ChecksumMismatchError(
            f"{source.key}: sha256 mismatch for {path} (from {source.origin}): expected "
            f"{expect.sha256}, got {digest}.{_lock_hint(expect)}",
            expected=expect.sha256,
            actual=digest,
        )
    return digest, size


def _fetch(
    source: Source, dest: Path, expect: _Expect, offline: bool, progress: Progress | None
) -> str:
    assert source.url is not None
    if offline:
        raise MissingSourcesError([_missing(source, dest, "offline: downloads are disabled")])
    try:
        return download(
            source.url,
            dest,
            key=source.key,
            sha256=expect.sha256,
            size=expect.size,
            progress=progress,
        )
    except SourceUnreachableError as exc:
        raise MissingSourcesError([_missing(source, dest, str(exc))]) from exc
    except ChecksumMismatchError as exc:
        if expect.lock is None:
            raise
        raise ChecksumMismatchError(
            f"{exc}{_lock_hint(expect)}", expected=exc.expected, actual=exc.actual
        ) from exc


def _extract_into(archive: Path, dest: Path, source: Source, stamp: dict) -> None:
    """Extract source.member of archive onto dest and write the stamp that marks it done."""
    assert source.member is not None
    work = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}.member-"))
    try:
        got = safe_extract(archive, work / "tree", key=source.key, member=source.member)
        if got.is_symlink():
            raise RsmEvalError(
                f"{source.key}: member {source.member!r} of {archive} is a symlink; configure "
                "the path it points to instead"
            )
        if got.is_dir():
            # The member moves out of its archive tree, so links must stay inside it.
            outside = _escaping_links(got)
            if outside:
                raise UnsafeArchiveError(
                    f"{source.key}: member {source.member!r} of {archive} has symlinks "
                    f"pointing outside it: {', '.join(outside[:5])}; expected self-contained"
                )
        _stamp_path(dest).unlink(missing_ok=True)
        _replace_path(got, dest)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    _atomic_write_text(_stamp_path(dest), json.dumps(stamp, sort_keys=True, indent=1) + "\n")


def _link(src: Path, dest: Path, key: str) -> Path:
    """Make dest a symlink to src (nothing to do when dest already is src)."""
    if os.path.lexists(dest):
        with contextlib.suppress(OSError):
            if os.path.samefile(dest, src):
                return dest
        if not dest.is_symlink():
            raise RsmEvalError(
                f"{key}: {dest} already exists and is not a link to {src}; expected to create "
                "a link there. Remove it, or set the source's path to it"
            )
    tmp = dest.with_name(f".{dest.name}.link-{os.getpid()}")
    tmp.unlink(missing_ok=True)
    os.symlink(src.resolve(), tmp)
    os.replace(tmp, dest)
    return dest


def _materialize_url(
    source: Source,
    dest: Path,
    lock: LockFile | None,
    refresh: bool,
    offline: bool,
    progress: Progress | None,
) -> Path:
    assert source.url is not None
    expect = _expectation(source, lock, refresh)
    if not refresh and dest.is_file():
        try:
            digest, size = _verify(dest, source, expect, need_digest=expect.record)
        except VerificationError:
            if offline:
                raise
        else:
            if expect.record and lock is not None:
                lock.record(source.key, source.url, digest, size)
            return dest
    digest = _fetch(source, dest, expect, offline, progress)
    if expect.record and lock is not None:
        lock.record(source.key, source.url, digest, dest.stat().st_size)
    return dest


def _materialize_url_member(
    source: Source,
    dest: Path,
    lock: LockFile | None,
    refresh: bool,
    offline: bool,
    progress: Progress | None,
) -> Path:
    assert source.url is not None
    expect = _expectation(source, lock, refresh)
    stamp = None if refresh else _reusable_stamp(source, dest, expect.sha256)
    if stamp is not None:
        if expect.record and lock is not None:
            lock.record(source.key, source.url, stamp["sha256"], stamp["size"])
        return dest
    archive = _archive_cache_path(dest, source.url)
    # Sources sharing one archive share the download; the lock keeps them off each other.
    with _flock(archive.with_name(archive.name + ".lock")):
        digest = ""
        if not refresh and archive.is_file():
            try:
                digest, _ = _verify(archive, source, expect, need_digest=True)
            except VerificationError:
                if offline:
                    raise
                digest = ""
        if not digest:
            digest = _fetch(source, archive, expect, offline, progress)
        size = archive.stat().st_size
        if expect.record and lock is not None:
            lock.record(source.key, source.url, digest, size)
        stamp = {"origin": source.url, "member": source.member, "sha256": digest, "size": size}
        _extract_into(archive, dest, source, stamp)
    return dest


def _materialize_path(source: Source, dest: Path, lock: LockFile | None, refresh: bool) -> Path:
    assert source.path is not None
    src = Path(source.path).expanduser()
    expect = _expectation(source, lock, refresh)
    if source.member is None:
        if not src.exists():
            raise MissingSourcesError([_missing(source, src, "not found")])
        if src.is_dir():
            if source.sha256 is not None or source.size is not None:
                raise RsmEvalError(
                    f"{source.key}: {src} is a directory; sha256 and size can only be checked "
                    "for a file (or an archive with 'member')"
                )
        elif expect.sha256 is not None or expect.size is not None or expect.record:
            digest, size = _verify(src, source, expect, need_digest=expect.record)
            if expect.record and lock is not None:
                lock.record(source.key, source.path, digest, size)
        return _link(src, dest, source.key)

    stamp = None if refresh else _reusable_stamp(source, dest, expect.sha256)
    if stamp is not None and not src.exists():
        return dest  # extracted earlier; the user may delete the big archive afterwards
    if not src.exists():
        raise MissingSourcesError([_missing(source, src, "not found")])
    st = src.stat()
    # An unchanged archive (same size and mtime) needs no rehash to reuse its extraction.
    if stamp is not None and (stamp.get("mtime_ns"), stamp["size"]) == (st.st_mtime_ns, st.st_size):
        if expect.record and lock is not None:
            lock.record(source.key, source.path, stamp["sha256"], stamp["size"])
        return dest
    digest, size = _verify(src, source, expect, need_digest=True)
    if expect.record and lock is not None:
        lock.record(source.key, source.path, digest, size)
    stamp = {
        "origin": source.path,
        "member": source.member,
        "sha256": digest,
        "size": size,
        "mtime_ns": st.st_mtime_ns,
    }
    _extract_into(src, dest, source, stamp)
    return dest


def materialize(
    source: Source,
    dest: Path,
    *,
    lock: LockFile | None = None,
    refresh_lock: bool = False,
    offline: bool = False,
    progress: Callable[[int, int | None], None] | None = None,
) -> Path:
    """Make source available, verified, at dest (a file or directory) and return dest.

    Idempotent: a dest that exists and verifies is reused. A url source is downloaded and
    checked against source.sha256, else the lock, else its checksum is recorded in the lock
    (``refresh_lock`` downloads again and re-records). With ``member`` the archive is kept
    under '<dest.parent>/.downloads/' and only the member is extracted onto dest. A path
    source is verified in place and linked from dest, or, with ``member``, extracted.
    ``offline`` or an unreachable host raises MissingSourcesError naming where to put the file.
    """
    dest = Path(dest)
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        if source.path is not None:
            return _materialize_path(source, dest, lock, refresh_lock)
        if source.member is None:
            return _materialize_url(source, dest, lock, refresh_lock, offline, progress)
        return _materialize_url_member(source, dest, lock, refresh_lock, offline, progress)
    except OSError as exc:
        raise RsmEvalError(
            f"{source.key}: cannot make {source.origin} available at {dest}: {exc}; expected "
            "readable inputs and a writable destination"
        ) from exc


def check_available(sources: list[tuple[Source, Path]]) -> None:
    """Raise MissingSourcesError listing every manual (path) source that is missing.

    A manual archive already extracted onto its dest (by materialize) counts as available.
    url sources are not checked: they are downloaded on demand.
    """
    missing = []
    for source, dest in sources:
        if source.path is None:
            continue
        src = Path(source.path).expanduser()
        if src.exists():
            continue
        if source.member is not None and _reusable_stamp(source, Path(dest), source.sha256):
            continue
        missing.append(_missing(source, src, "not found"))
    if missing:
        raise MissingSourcesError(missing)
