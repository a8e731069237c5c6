"""Make one source available, verified, at a destination; list the manual ones missing.

Files written next to a destination ``D`` (all safe to delete, all re-creatable):
``D.part`` (an interrupted download, resumed on the next call), ``.D.source.json`` (what an
extracted archive member came from), ``.downloads/`` (archives whose member is extracted;
kept so a re-extraction needs no network) and ``*.lock`` files used with ``fcntl`` locks.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import sys
import tempfile
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from rsm_eval import cas
from rsm_eval.errors import RsmEvalError

from . import layout as layout_mod
from . import recipes, spec
from .archives import ARCHIVE_SUFFIXES, escaping_links, replace_path, safe_extract
from .http import check_file, download
from .lock import LockFile, flock
from .spec import (
    Candidate,
    ChecksumMismatchError,
    MissingSource,
    MissingSourcesError,
    Source,
    VerificationError,
)

Progress = Callable[[int, "int | None"], None]


def _stamp_path(dest: Path) -> Path:
    return dest.with_name(f".{dest.name}.source.json")


def _stamp(
    origin: str | None,
    member: str | None,
    recipe: str | None,
    sha256: str,
    size: int,
    mtime_ns: int | None = None,
) -> dict:
    """What an extraction came from (written beside it): an archive's origin, member, recipe
    and checksum, and for a local archive its mtime (an unchanged one needs no rehash)."""
    stamp = {"origin": origin, "member": member, "recipe": recipe, "sha256": sha256, "size": size}
    return stamp if mtime_ns is None else {**stamp, "mtime_ns": mtime_ns}


def _read_stamp(dest: Path) -> dict | None:
    try:
        data = json.loads(_stamp_path(dest).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _reusable_stamp(source: Source, dest: Path, sha: str | None = None) -> dict | None:
    """The stamp of a previous extraction from one of source's origins, if dest still exists."""
    stamp = _read_stamp(dest)
    if stamp is None or not os.path.lexists(dest):
        return None
    cands = {c.origin: c for c in source.candidates()}
    cand = cands.get(stamp.get("origin"))
    if cand is None or stamp.get("member") != cand.member:
        return None
    if stamp.get("recipe") != source.recipe:
        return None
    if (sha or cand.sha256) is not None and stamp.get("sha256") != (sha or cand.sha256):
        return None
    if not isinstance(stamp.get("sha256"), str) or not isinstance(stamp.get("size"), int):
        return None
    return stamp


def _archive_cache_path(dest: Path, url: str) -> Path:
    name = urllib.parse.unquote(PurePosixPath(urllib.parse.urlsplit(url).path).name)
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", name)[-100:] or "archive"
    tag = cas.sha256_text(url)[:10]
    return dest.parent / ".downloads" / f"{tag}-{name}"


def _missing(source: Source, put_at: Path, reason: str | None) -> MissingSource:
    origin = " or ".join(source.origins) if source.url is not None else "manual download"
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
    md5: str | None
    size: int | None
    record: bool  # record the sha256 in the lock once known (none published, or md5 only)
    lock: LockFile | None  # set when sha256 comes from the lock (for the error hint)


def _expectation(cand: Candidate, lock: LockFile | None, refresh: bool) -> _Expect:
    if cand.sha256 is not None:
        return _Expect(cand.sha256, cand.md5, cand.size, False, None)
    if lock is None:
        return _Expect(None, cand.md5, cand.size, False, None)
    if refresh:
        return _Expect(None, cand.md5, cand.size, True, None)
    sha, size = lock.expected(cand.lock_key, cand.origin)
    if sha is None:
        return _Expect(None, cand.md5, cand.size, True, None)
    if cand.size is not None and size != cand.size:
        raise VerificationError(
            f"{cand.lock_key}: lock file {lock.path} records size {size} for {cand.origin}, "
            f"but the config says {cand.size}; fix one of them or refresh the lock"
        )
    return _Expect(sha, cand.md5, size, False, lock)


def _lock_hint(expect: _Expect) -> str:
    if expect.lock is None:
        return ""
    return (
        f" The expected sha256 comes from the lock file {expect.lock.path}; if the publisher "
        "changed the file on purpose, re-record it with refresh_lock=True."
    )


def _verify(path: Path, key: str, cand: Candidate, expect: _Expect, need: bool) -> tuple[str, int]:
    """Check path against the expected size and checksums; return (sha256 or '', size)."""
    size = path.stat().st_size
    if expect.size is not None and size != expect.size:
        raise VerificationError(
            f"{key}: {path} (from {cand.origin}) has {size} bytes, expected "
            f"{expect.size}.{_lock_hint(expect)}"
        )
    if expect.sha256 is None and expect.md5 is None and not need:
        return "", size
    try:
        digest = check_file(path, key=key, origin=cand.origin, sha256=expect.sha256, md5=expect.md5)
    except ChecksumMismatchError as exc:
        msg = f"{exc} (file {path}).{_lock_hint(expect)}"
        raise ChecksumMismatchError(msg, expected=exc.expected, actual=exc.actual) from None
    return digest, size


def _fetch(key: str, cand: Candidate, dest: Path, expect: _Expect, progress: Progress | None):
    try:
        return download(
            cand.origin,
            dest,
            key=key,
            sha256=expect.sha256,
            md5=expect.md5,
            size=expect.size,
            progress=progress,
        )
    except ChecksumMismatchError as exc:
        if expect.lock is None:
            raise
        raise ChecksumMismatchError(
            f"{exc}{_lock_hint(expect)}", expected=exc.expected, actual=exc.actual
        ) from exc


@dataclass(frozen=True)
class _Want:
    """What the caller needs from an archive: a directory or a file, and how to find it."""

    is_dir: bool
    layout: layout_mod.Layout | None
    recipe: str | None


def _select(tree: Path, key: str, cand: Candidate, want: _Want) -> Path:
    """The path inside the extracted tree that becomes the destination."""
    if want.recipe is not None:
        hint = (
            layout_mod.resolve_member(tree, cand.member, key, want_dir=True)
            if cand.member
            else None
        )
        if hint is not None and hint.is_dir():
            return hint  # the recipe checks every file it takes from there
        names = recipes.source_names(want.recipe)
        try:
            return layout_mod.find_images(tree, names, key, hint)
        except spec.LayoutError:
            # Some files missing or extra copies: the recipe names each missing one.
            found = layout_mod.fullest_folder(tree, names)
            if found is None:
                raise
            return found
    return layout_mod.locate(tree, cand.member, want.layout, key, want.is_dir)


def _fast_member(archive: Path, work: Path, key: str, cand: Candidate, want: _Want) -> Path | None:
    """Extract only the configured member when it is there and fits; None otherwise."""
    if not cand.member or want.recipe is not None:
        return None
    parts = cand.member.split("/")
    if any(p.lower().endswith(ARCHIVE_SUFFIXES) for p in parts[:-1]):
        return None  # goes through a nested archive
    if want.is_dir and parts[-1].lower().endswith(ARCHIVE_SUFFIXES):
        return None  # an archive to unpack
    try:
        got = safe_extract(archive, work / "member", key=key, member=cand.member)
    except spec.UnsafeArchiveError:
        raise
    except RsmEvalError:
        return None  # not found: search the whole archive
    if got.is_dir() != want.is_dir:
        return None
    lay = want.layout
    if lay is not None and lay.role == "images" and lay.annotations is not None:
        names = layout_mod.read_names(Path(lay.annotations), lay)
        if layout_mod.image_roots(got, names) != [""]:
            return None
    return got


def _extract_into(archive: Path, dest: Path, key: str, cand: Candidate, want: _Want, stamp: dict):
    """Extract what the source needs from archive onto dest and write the stamp marking it."""
    work = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}.member-"))
    try:
        got = _fast_member(archive, work, key, cand, want)
        if got is None:
            shutil.rmtree(work / "member", ignore_errors=True)
            tree = safe_extract(archive, work / "tree", key=key)
            got = _select(tree, key, cand, want)
        if got.is_symlink():
            raise RsmEvalError(
                f"{key}: member {cand.member!r} of {archive} is a symlink; configure the path it "
                "points to instead"
            )
        if got.is_dir():
            # The member moves out of its archive tree, so links must stay inside it.
            outside = escaping_links(got)
            if outside:
                raise spec.UnsafeArchiveError(
                    f"{key}: member {cand.member!r} of {archive} has symlinks pointing outside "
                    f"it: {', '.join(outside[:5])}; expected self-contained"
                )
        if want.recipe is not None:
            got = recipes.apply(want.recipe, got, work / "recipe", key)
        elif want.is_dir and not got.is_dir():
            raise spec.LayoutError(
                f"{key}: {cand.member or archive.name} is a file, expected a folder"
            )
        _stamp_path(dest).unlink(missing_ok=True)
        replace_path(got, dest)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    cas.write_text_atomic(_stamp_path(dest), json.dumps(stamp, sort_keys=True, indent=1) + "\n")


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


def _record(lock: LockFile | None, expect: _Expect, cand: Candidate, sha: str, size: int) -> None:
    if expect.record and lock is not None:
        lock.record(cand.lock_key, cand.origin, sha, size)


def _needs_archive(source: Source, cand: Candidate, want: _Want) -> bool:
    if cand.member or source.recipe or want.is_dir:
        return True
    path = urllib.parse.urlsplit(cand.origin).path.lower()
    return want.layout is not None and path.endswith(ARCHIVE_SUFFIXES)


def _url_file(source, cand, dest, lock, refresh, progress) -> Path:
    expect = _expectation(cand, lock, refresh)
    if not refresh and dest.is_file():
        with contextlib.suppress(VerificationError):
            digest, size = _verify(dest, source.key, cand, expect, need=expect.record)
            _record(lock, expect, cand, digest, size)
            return dest
    digest = _fetch(source.key, cand, dest, expect, progress)
    _record(lock, expect, cand, digest, dest.stat().st_size)
    return dest


def _url_archive(source, cand, dest, lock, refresh, progress, want) -> Path:
    expect = _expectation(cand, lock, refresh)
    archive = _archive_cache_path(dest, cand.origin)
    # Sources sharing one archive share the download; the lock keeps them off each other.
    with flock(archive.with_name(archive.name + ".lock")):
        digest = ""
        if not refresh and archive.is_file():
            with contextlib.suppress(VerificationError):
                digest, _ = _verify(archive, source.key, cand, expect, need=True)
        if not digest:
            digest = _fetch(source.key, cand, archive, expect, progress)
        size = archive.stat().st_size
        _record(lock, expect, cand, digest, size)
        stamp = _stamp(cand.origin, cand.member, source.recipe, digest, size)
        _extract_into(archive, dest, source.key, cand, want, stamp)
    return dest


def _path_source(source: Source, dest: Path, lock, refresh: bool, want: _Want) -> Path:
    assert source.path is not None
    src = Path(source.path).expanduser()
    cand = source.candidates()[0]
    expect = _expectation(cand, lock, refresh)
    archive = cand.member or source.recipe or (src.is_file() and want.is_dir)
    if not archive:
        if not src.exists():
            raise MissingSourcesError([_missing(source, src, "not found")])
        if src.is_dir():
            if source.sha256 is not None or source.size is not None or source.md5 is not None:
                raise RsmEvalError(
                    f"{source.key}: {src} is a directory; sha256 and size can only be checked "
                    "for a file (or an archive with 'member')"
                )
        elif expect.sha256 is not None or expect.size is not None or expect.record or expect.md5:
            digest, size = _verify(src, source.key, cand, expect, need=expect.record)
            _record(lock, expect, cand, digest, size)
        return _link(src, dest, source.key)

    stamp = None if refresh else _reusable_stamp(source, dest, expect.sha256)
    if stamp is not None and not src.exists():
        return dest  # extracted earlier; the user may delete the big archive afterwards
    if not src.exists():
        raise MissingSourcesError([_missing(source, src, "not found")])
    st = src.stat()
    # An unchanged archive (same size and mtime) needs no rehash to reuse its extraction.
    if stamp is not None and (stamp.get("mtime_ns"), stamp["size"]) == (st.st_mtime_ns, st.st_size):
        _record(lock, expect, cand, stamp["sha256"], stamp["size"])
        return dest
    digest, size = _verify(src, source.key, cand, expect, need=True)
    _record(lock, expect, cand, digest, size)
    stamp = _stamp(source.path, source.member, source.recipe, digest, size, st.st_mtime_ns)
    _extract_into(src, dest, source.key, cand, want, stamp)
    return dest


def _first_line(exc: BaseException) -> str:
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


def materialize(
    source: Source,
    dest: Path,
    *,
    lock: LockFile | None = None,
    refresh_lock: bool = False,
    offline: bool = False,
    progress: Callable[[int, int | None], None] | None = None,
    is_dir: bool = False,
    layout: layout_mod.Layout | None = None,
) -> Path:
    """Make source available, verified, at dest (a file or directory) and return dest.

    Idempotent: a dest that exists and verifies is reused. A url source is downloaded from
    its url, else from each mirror in turn, and checked against the published sha256 (or
    md5), else the lock, else its sha256 is recorded in the lock (``refresh_lock`` downloads
    again and re-records). An archive (``member``, a directory dest, a ``recipe``) is kept
    under '<dest.parent>/.downloads/' and what the source needs is extracted onto dest,
    found by ``member`` or, with ``layout``, by content (sources.layout). A path source is
    verified in place and linked from dest, or, as an archive, extracted.
    ``offline`` or an unreachable host raises MissingSourcesError naming where to put it.
    """
    dest = Path(dest)
    want = _Want(is_dir=is_dir, layout=layout, recipe=source.recipe)
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        if source.path is not None:
            return _path_source(source, dest, lock, refresh_lock, want)
        return _from_urls(source, dest, lock, refresh_lock, offline, progress, want)
    except OSError as exc:
        raise RsmEvalError(
            f"{source.key}: cannot make {source.origin} available at {dest}: {exc}; expected "
            "readable inputs and a writable destination"
        ) from exc


def _from_urls(source, dest, lock, refresh, offline, progress, want) -> Path:
    cands = source.candidates()
    stamp = None if refresh else _reusable_stamp(source, dest)
    if stamp is not None:  # extracted earlier, from the url or a mirror
        cand = next(c for c in cands if c.origin == stamp["origin"])
        expect = _expectation(cand, lock, refresh)
        if expect.sha256 in (None, stamp["sha256"]):
            _record(lock, expect, cand, stamp["sha256"], stamp["size"])
            return dest
    if offline:
        if not _needs_archive(source, cands[0], want) and dest.is_file():
            expect = _expectation(cands[0], lock, refresh)
            _verify(dest, source.key, cands[0], expect, need=False)
            return dest
        # An archive goes where the next online run would keep it.
        put_at = (
            _archive_cache_path(dest, cands[0].origin)
            if _needs_archive(source, cands[0], want)
            else dest
        )
        raise MissingSourcesError([_missing(source, put_at, "offline: downloads are disabled")])
    errors: list[tuple[str, Exception]] = []
    for i, cand in enumerate(cands):
        try:
            if _needs_archive(source, cand, want):
                return _url_archive(source, cand, dest, lock, refresh, progress, want)
            return _url_file(source, cand, dest, lock, refresh, progress)
        except MissingSourcesError:
            raise
        except RsmEvalError as exc:
            errors.append((cand.origin, exc))
            if i + 1 < len(cands):
                print(
                    f"{source.key}: {cand.origin} failed ({_first_line(exc)}); trying the next "
                    f"mirror, {cands[i + 1].origin}",
                    file=sys.stderr,
                    flush=True,
                )
    if all(isinstance(e, spec.SourceUnreachableError) for _, e in errors):
        reason = "; ".join(str(e) for _, e in errors)
        raise MissingSourcesError([_missing(source, dest, reason)]) from errors[-1][1]
    if len(errors) == 1:
        raise errors[0][1]
    raise spec.MirrorsFailedError(source.key, errors)


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
        if (source.member or source.recipe) and _reusable_stamp(source, Path(dest)):
            continue
        missing.append(_missing(source, src, "not found"))
    if missing:
        raise MissingSourcesError(missing)
