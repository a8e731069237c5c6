"""HTTP downloads: resumable (Range), retried with backoff, verified before the rename.

Why not pooch or huggingface_hub (README, "Data and checkpoints"): pooch downloads in one
go (no Range resume of a 485 MB archive after a dropped connection, no If-Range, no
Retry-After) and verifies only after the whole transfer; huggingface_hub resumes, but only
for the Hub and into its own cache outside the workflow's products. Hub ``resolve/`` URLs
redirect to plain HTTPS storage, which this module follows and resumes like any other.
"""

from __future__ import annotations

import contextlib
import http.client
import re
import ssl
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

from rsm_eval import cas

from .spec import (
    ChecksumMismatchError,
    DownloadError,
    SourceUnreachableError,
    VerificationError,
    check_md5,
    check_sha256,
)

CHUNK = 1 << 20
_USER_AGENT = "rsm-eval (python urllib)"
_MAX_DELAY = 60.0

# Indirection so tests can run the retry loop without waiting.
_sleep = time.sleep

Progress = Callable[[int, "int | None"], None]


def part_path(dest: Path) -> Path:
    return dest.with_name(dest.name + ".part")


def _mib(n: float) -> str:
    return f"{n / (1 << 20):.1f}"


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    if seconds >= 60:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds}s"


class StderrProgress:
    """Progress lines on stderr: bytes, rate and time left, every ``interval`` s and at 100%.

    Lines rather than a redrawn bar: the fetch job's stderr is its log file as well as the
    terminal (cli tees it), and a log should read as a history.
    """

    def __init__(self, label: str, interval: float = 5.0, clock=time.monotonic) -> None:
        self.label = label
        self.interval = interval
        self.clock = clock
        self.start: float | None = None
        self.first = 0
        self.last_print = -1e18
        self.done = False

    def __call__(self, done: int, total: int | None) -> None:
        now = self.clock()
        if self.start is None:
            self.start, self.first = now, done
            self.last_print = now
            size = f"{_mib(total)} MiB" if total else "size unknown"
            resumed = f", resuming at {_mib(done)} MiB" if done else ""
            print(f"{self.label}: starting ({size}{resumed})", file=sys.stderr, flush=True)
            return
        finished = total is not None and done >= total
        if self.done or (not finished and now - self.last_print < self.interval):
            return
        self.done = finished
        self.last_print = now
        elapsed = max(now - self.start, 1e-6)
        rate = (done - self.first) / elapsed
        text = f"{self.label}: {_mib(done)}"
        if total:
            text += f" of {_mib(total)} MiB ({100 * done / total:.0f}%)"
        else:
            text += " MiB"
        text += f", {_mib(rate)} MiB/s"
        if finished:
            text += f", done in {_duration(elapsed)}"
        elif total and rate > 0:
            text += f", {_duration((total - done) / rate)} left"
        print(text, file=sys.stderr, flush=True)


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
    md5: str | None = None,
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
    the count); other 4xx fail at once. Redirects (GitHub LFS, Hugging Face) are followed.
    Size, sha256 and md5 are checked before the atomic rename.
    """
    dest = Path(dest)
    if sha256 is not None:
        sha256 = check_sha256(key, sha256)
    if md5 is not None:
        md5 = check_md5(key, md5)
    try:
        return _download(url, dest, key, (sha256, md5), size, retries, backoff, timeout, progress)
    except OSError as exc:  # network errors are handled inside; these are local disk errors
        raise DownloadError(
            f"{key}: cannot write the download of {url} to {dest}: {exc}; expected a writable "
            "directory with enough free space"
        ) from exc


def check_file(path: Path, *, key: str, origin: str, sha256: str | None, md5: str | None) -> str:
    """sha256 of path, checked against sha256 and md5 when given (both hashes on a mismatch)."""
    digest, _ = cas.hash_file(path)
    checks = [("sha256", sha256, digest)]
    if md5 is not None:
        checks.append(("md5", md5, cas.hash_file(path, "md5")[0]))
    for name, want, got in checks:
        if want is not None and got != want:
            raise ChecksumMismatchError(
                f"{key}: {name} mismatch for {origin}: expected {want}, got {got} "
                f"({path.stat().st_size} bytes)",
                expected=want,
                actual=got,
            )
    return digest


def _download(
    url: str,
    dest: Path,
    key: str,
    hashes: tuple[str | None, str | None],
    size: int | None,
    retries: int,
    backoff: float,
    timeout: float,
    progress: Progress | None,
) -> str:
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = part_path(dest)
    transfer = _Transfer(
        url=url,
        part=part,
        key=key,
        size=size,
        timeout=timeout,
        report=progress if progress is not None else StderrProgress(f"{key}: {url}"),
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
            try:
                digest = check_file(part, key=key, origin=url, sha256=hashes[0], md5=hashes[1])
            except ChecksumMismatchError as exc:
                problem = ChecksumMismatchError(
                    f"{exc}; the download was deleted", expected=exc.expected, actual=exc.actual
                )
        if problem is not None:
            part.unlink(missing_ok=True)
            if transfer.leftover_kept:
                # The .part left by an earlier call may belong to an older version of the file.
                transfer.leftover_kept = False
                transfer.best = failures = 0
                continue
            raise problem
        cas.publish(part, dest, mode=None)
        return digest
