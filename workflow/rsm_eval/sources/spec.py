"""What a source is (config entry -> Source), and the errors the sources package raises.

A config entry is ``{url, mirrors?, sha256?, size?, md5?, member?, recipe?}`` (downloaded over
HTTP, trying ``url`` and then each mirror in order) or ``{path, sha256?, size?, md5?, member?,
recipe?, instructions?}`` (a manual download put in place by hand). A mirror is a URL string
(the same file: the entry's checksums apply) or a mapping ``{url, sha256?, size?, md5?,
member?}`` (another file that holds the same data: its own checksums, or a lock entry).
"""

from __future__ import annotations

import dataclasses
import re
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from rsm_eval.errors import RsmEvalError

_SHA256_RE = re.compile(r"[0-9a-f]{64}")
_MD5_RE = re.compile(r"[0-9a-f]{32}")
# A recipe turns what was extracted into the dataset's own layout (see sources.recipes).
RECIPES = ("ucm-captions",)


class DownloadError(RsmEvalError):
    """An HTTP download failed for good: a 4xx answer, a bad answer, or retries exhausted."""


class SourceUnreachableError(DownloadError):
    """The host could not be reached at all (DNS, refused connection, timeouts) after retries."""


class VerificationError(RsmEvalError):
    """A file's size or checksum differs from what the config or the lock file expects."""


class ChecksumMismatchError(VerificationError):
    """A file's checksum differs from the expected one; ``expected`` and ``actual`` hold both."""

    def __init__(self, message: str, *, expected: str, actual: str) -> None:
        super().__init__(message)
        self.expected = expected
        self.actual = actual


class UnsafeArchiveError(RsmEvalError):
    """An archive member would escape its destination, is special, or the archive is a bomb."""


class LayoutError(RsmEvalError):
    """An extracted archive holds no annotation file or image folder that fits the dataset."""


class MirrorsFailedError(DownloadError):
    """Every URL of a source failed; ``errors`` holds (url, exception) for each, in order."""

    def __init__(self, key: str, errors: list[tuple[str, Exception]]) -> None:
        self.errors = list(errors)
        lines = [f"{key}: all {len(errors)} URLs failed, in order:"]
        lines += [f"  - {url}\n      {exc}" for url, exc in errors]
        lines.append(
            "  Point 'url' (or the first mirror) at a working copy, or download the file by "
            f"hand and configure 'path:' under {key} (README: Data and checkpoints)."
        )
        super().__init__("\n".join(lines))


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


def check_sha256(key: str, value: object) -> str:
    if not isinstance(value, str) or not _SHA256_RE.fullmatch(value.strip().lower()):
        raise RsmEvalError(f"{key}: sha256 must be 64 hexadecimal characters, got {value!r}")
    return value.strip().lower()


def check_md5(key: str, value: object) -> str:
    if not isinstance(value, str) or not _MD5_RE.fullmatch(value.strip().lower()):
        raise RsmEvalError(f"{key}: md5 must be 32 hexadecimal characters, got {value!r}")
    return value.strip().lower()


def check_size(key: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise RsmEvalError(f"{key}: size must be a non-negative integer (bytes), got {value!r}")
    return value


def norm_member(key: str, member: object) -> str:
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


def _check_url(key: str, url: object) -> str:
    parsed = urllib.parse.urlsplit(url) if isinstance(url, str) else None
    if parsed is None or parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise RsmEvalError(f"{key}: url must be an http(s) URL, got {url!r}")
    return url  # type: ignore[return-value]


@dataclass(frozen=True, kw_only=True)
class _Checked:
    """What a source's bytes are checked against, and the archive member it names."""

    sha256: str | None = None
    size: int | None = None
    md5: str | None = None
    member: str | None = None


@dataclass(frozen=True)
class Candidate(_Checked):
    """One place to get a source from: a URL (or path) with the checksums that apply to it."""

    origin: str
    lock_key: str = ""  # the lock-file entry of a URL whose publisher gives no checksum


_MIRROR_FIELDS = ("url", "sha256", "size", "md5", "member")
_SOURCE_FIELDS = ("url", "mirrors", "path", "sha256", "size", "md5", "member", "recipe")
_SOURCE_FIELDS += ("instructions",)


def _mirror(key: str, i: int, entry: object) -> Candidate:
    where = f"{key}.mirrors[{i}]"
    if isinstance(entry, str):
        raise AssertionError("string mirrors are expanded by Source")  # pragma: no cover
    if not isinstance(entry, Mapping) or "url" not in entry:
        raise RsmEvalError(f"{where}: expected a URL or a mapping with 'url', got {entry!r}")
    unknown = sorted(str(k) for k in entry if k not in _MIRROR_FIELDS)
    if unknown:
        raise RsmEvalError(
            f"{where}: unknown field(s) {', '.join(unknown)}; expected only "
            f"{', '.join(_MIRROR_FIELDS)}"
        )
    url = _check_url(where, entry["url"])
    return Candidate(
        origin=url,
        sha256=check_sha256(where, entry["sha256"]) if entry.get("sha256") else None,
        size=check_size(where, entry["size"]) if entry.get("size") is not None else None,
        md5=check_md5(where, entry["md5"]) if entry.get("md5") else None,
        member=norm_member(where, entry["member"]) if entry.get("member") else None,
        lock_key=f"{key} (mirror {url})",
    )


@dataclass(frozen=True)
class Source(_Checked):
    """One input of the workflow, as configured under ``key``."""

    key: str
    url: str | None = None
    path: str | None = None
    recipe: str | None = None
    instructions: str | None = None
    mirrors: tuple = ()

    def __post_init__(self) -> None:
        if not isinstance(self.key, str) or not self.key:
            raise RsmEvalError(f"source key must be a non-empty string, got {self.key!r}")
        key = self.key
        if (self.url is None) == (self.path is None):
            got = "both" if self.url is not None else "neither"
            raise RsmEvalError(f"{key}: expected exactly one of 'url' or 'path', got {got}")
        if self.url is not None:
            _check_url(key, self.url)
        if self.path is not None and (not isinstance(self.path, str) or not self.path.strip()):
            raise RsmEvalError(f"{key}: path must be a non-empty string, got {self.path!r}")
        if self.mirrors and self.url is None:
            raise RsmEvalError(f"{key}: 'mirrors' needs a 'url' (they are tried after it)")
        if self.sha256 is not None:
            object.__setattr__(self, "sha256", check_sha256(key, self.sha256))
        if self.md5 is not None:
            object.__setattr__(self, "md5", check_md5(key, self.md5))
        if self.size is not None:
            check_size(key, self.size)
        if self.member is not None:
            object.__setattr__(self, "member", norm_member(key, self.member))
        if self.recipe is not None and self.recipe not in RECIPES:
            raise RsmEvalError(
                f"{key}: unknown recipe {self.recipe!r}; expected one of {', '.join(RECIPES)}"
            )
        if self.instructions is not None and not isinstance(self.instructions, str):
            raise RsmEvalError(f"{key}: instructions must be a string")
        if not isinstance(self.mirrors, (list, tuple)):
            raise RsmEvalError(f"{key}: mirrors must be a list of URLs or mappings")
        object.__setattr__(self, "mirrors", tuple(self.mirrors))
        self.candidates()  # validates the mirrors

    @property
    def origin(self) -> str:
        """The url, or the configured path for a manual source."""
        return self.url if self.url is not None else str(self.path)

    def candidates(self) -> list[Candidate]:
        """Where to get it, in order: the url (or path), then every mirror."""
        first = Candidate(
            origin=self.origin,
            sha256=self.sha256,
            size=self.size,
            md5=self.md5,
            member=self.member,
            lock_key=self.key,
        )
        out = [first]
        for i, mirror in enumerate(self.mirrors):
            if isinstance(mirror, str):
                url = _check_url(f"{self.key}.mirrors[{i}]", mirror)
                # The same file elsewhere: the entry's checksums (or its lock entry) apply.
                same = first.sha256 is not None or first.md5 is not None
                lock_key = self.key if same else f"{self.key} (mirror {url})"
                out.append(dataclasses.replace(first, origin=url, lock_key=lock_key))
            else:
                c = _mirror(self.key, i, mirror)
                out.append(c if c.member else dataclasses.replace(c, member=self.member))
        return out

    @property
    def origins(self) -> list[str]:
        return [c.origin for c in self.candidates()]

    @classmethod
    def from_config(cls, key: str, entry: dict) -> Source:
        """Build a Source from a config mapping, rejecting unknown keys and bad values."""
        if not isinstance(entry, Mapping):
            raise RsmEvalError(
                f"{key}: expected a mapping with 'url' or 'path' (and optional mirrors, sha256, "
                f"size, md5, member, recipe, instructions), got {type(entry).__name__}"
            )
        unknown = sorted(str(k) for k in entry if k not in _SOURCE_FIELDS)
        if unknown:
            raise RsmEvalError(
                f"{key}: unknown field(s) {', '.join(unknown)}; expected only "
                f"{', '.join(_SOURCE_FIELDS)}"
            )
        values = {k: entry[k] for k in _SOURCE_FIELDS if entry.get(k) is not None}
        for field in ("url", "path", "sha256", "md5", "member", "recipe", "instructions"):
            if field in values and not isinstance(values[field], str):
                raise RsmEvalError(
                    f"{key}.{field}: expected a string, got {type(values[field]).__name__}"
                )
        return cls(key=key, **values)
