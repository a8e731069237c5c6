"""Safe extraction of zip, tar(.gz/.bz2/.xz) and RAR archives.

zip and tar are read with the standard library; RAR (the UCM-Captions authors' ``imgs.rar``)
with libarchive (Debian's libarchive13 through the libarchive-c binding), the maintained
free reader of RAR 4 and 5. Every member of every kind goes through the same checks: nothing
outside the destination, no links out, no device files, a cap on the bytes written.
"""

from __future__ import annotations

import contextlib
import difflib
import os
import re
import shutil
import stat
import tarfile
import tempfile
import zipfile
import zlib
from collections.abc import Iterable
from pathlib import Path
from typing import NoReturn

from rsm_eval.cas import replace_path
from rsm_eval.errors import RsmEvalError

from .spec import UnsafeArchiveError, norm_member

CHUNK = 1 << 20
_TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz")
ARCHIVE_SUFFIXES = (".zip", ".rar", *_TAR_SUFFIXES)
_RAR_MAGIC = (b"Rar!\x1a\x07\x00", b"Rar!\x1a\x07\x01\x00")


def _inside(root: str, path: str) -> bool:
    real = os.path.realpath(path)
    return real == root or real.startswith(root + os.sep)


def escaping_links(root: Path) -> list[str]:
    """Relative paths of symlinks under root that resolve outside it."""
    real_root = os.path.realpath(root)
    bad = []
    for current, dirs, files in os.walk(root):
        for name in dirs + files:
            path = os.path.join(current, name)
            if os.path.islink(path) and not _inside(real_root, path):
                bad.append(os.path.relpath(path, root))
    return bad


def archive_kind(archive: Path) -> str | None:
    """'zip', 'tar' or 'rar' by name, else by content; None for anything else."""
    name = archive.name.lower()
    if name.endswith(".zip"):
        return "zip"
    if name.endswith(".rar"):
        return "rar"
    if name.endswith(_TAR_SUFFIXES):
        return "tar"
    with contextlib.suppress(OSError), open(archive, "rb") as fh:
        if fh.read(8).startswith(_RAR_MAGIC):
            return "rar"
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

    def write_file(
        self, name: str, parts: list[str], chunks: Iterable[bytes], executable: bool
    ) -> None:
        path = self.target(name, parts)
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
        fd = os.open(path, flags, 0o755 if executable else 0o644)
        with os.fdopen(fd, "wb") as out:
            for chunk in chunks:
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
                        blocks = iter(lambda s=stream: s.read(CHUNK), b"")
                        self.write_file(info.filename, parts, blocks, executable)

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
                    blocks = iter(lambda s=stream: s.read(CHUNK), b"")
                    self.write_file(m.name, parts, blocks, bool(m.mode & 0o111))
                elif m.issym():
                    self.make_symlink(m.name, parts, m.linkname)
                elif m.islnk():
                    self.make_hardlink(m.name, parts, m.linkname)
                else:
                    self.fail(m.name, "is a device file, FIFO or other special file")

    def run_rar(self) -> None:
        try:
            import libarchive  # libarchive-c, on Debian's libarchive13
        except (ImportError, OSError, AttributeError) as exc:
            raise RsmEvalError(
                f"{self.key}: {self.archive} is a RAR archive, which needs libarchive: "
                "`apt-get install libarchive13` and `pip install libarchive-c` (README, Setup); "
                f"{exc}"
            ) from exc

        with libarchive.file_reader(str(self.archive)) as reader:
            for entry in reader:
                name = entry.pathname or ""
                self.counted(name)
                # RAR 4 written on Windows separates with backslashes, like old zips.
                parts = self.parts(name, backslash=True)
                if not parts or not self.selected(parts):
                    continue
                if entry.isdir:
                    self.make_dir(name, parts)
                elif entry.isreg:
                    self.declare(name, entry.size or 0)
                    self.write_file(name, parts, entry.get_blocks(), bool(entry.mode & 0o111))
                elif entry.issym:
                    self.make_symlink(name, parts, entry.linkpath or "")
                elif entry.islnk:
                    self.make_hardlink(name, parts, entry.linkpath or "")
                else:
                    self.fail(name, "is a device file, FIFO or other special file")

    def missing_member(self) -> NoReturn:
        close = difflib.get_close_matches(self.member, self.names, n=5, cutoff=0.5)
        sample = close + [n for n in self.names[:10] if n not in close]
        found = ", ".join(sample[:10]) or "(no entries)"
        raise RsmEvalError(
            f"{self.key}: member {self.member!r} not found in archive {self.archive} "
            f"({self.count or len(self.names)} entries); it contains e.g.: {found}"
        )


def safe_extract(
    archive: Path,
    dest: Path,
    *,
    key: str,
    member: str | None = None,
    max_total_bytes: int = 20 << 30,
    max_members: int = 1_000_000,
) -> Path:
    """Extract a zip, tar(.gz/.bz2/.xz) or RAR archive into dest; return dest/member (or dest).

    Only ``member`` (a file, or a directory and everything under it) is written when given.
    Members with absolute paths, '..' components, links leading outside dest, or device files
    are refused, as are archives whose declared or actually written size exceeds
    ``max_total_bytes``. Work happens in a temporary sibling directory renamed onto dest at
    the end, so a refusal leaves neither dest nor anything else behind.
    """
    archive, dest = Path(archive), Path(dest)
    want = "" if member is None else norm_member(key, member)
    want = "" if want == "." else want
    if not archive.is_file():
        raise RsmEvalError(f"{key}: archive {archive} does not exist or is not a file")
    kind = archive_kind(archive)
    if kind is None:
        raise RsmEvalError(
            f"{key}: {archive} is not a zip, tar or RAR archive; expected one (.zip, .tar, "
            ".tar.gz, .rar)"
        )
    dest.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}.extract-"))
    extractor = _Extractor(
        archive, work, key=key, member=want, max_bytes=max_total_bytes, max_members=max_members
    )
    try:
        try:
            {"zip": extractor.run_zip, "tar": extractor.run_tar, "rar": extractor.run_rar}[kind]()
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
                "unencrypted zip, tar or RAR archive"
            ) from exc
        except Exception as exc:
            if type(exc).__module__.startswith("libarchive"):  # libarchive.ArchiveError
                raise RsmEvalError(
                    f"{key}: cannot extract {archive} into {dest}: libarchive: {exc}; expected "
                    "a readable, unencrypted RAR archive"
                ) from exc
            raise
        if not extractor.found:
            extractor.missing_member()
        # Links can be re-pointed by later members; check where they all end up.
        for rel in escaping_links(work):
            extractor.fail(rel, "is a symlink that resolves outside the destination")
        replace_path(work, dest)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return dest / want if want else dest
