"""Content addresses: hashing with a stat-keyed memo, canonical digests, atomic writes.

An *address* is a sha256 hex digest of the bytes something was made from: a source file's
content, or, for a product, the canonical JSON of the addresses of its inputs, the parameters
that change its result, and the version of the code that computes it. Names and paths never
enter an address, so renaming or moving a file changes nothing, and putting old bytes back
finds the old products again.

Hashing a 600 MB checkpoint on every `snakemake` start would be slow, so file digests are
memoised under (real path, size, mtime, inode, ctime): a file whose stat is unchanged is not
read again. Touching a file invalidates its memo entry; the digest is then recomputed and is,
of course, the same, so nothing downstream changes.
"""

from __future__ import annotations

import ast
import contextlib
import functools
import hashlib
import json
import os
import shutil
import sqlite3
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from .errors import RsmEvalError

CHUNK = 1 << 20
# mkstemp creates 0600 files; products get the permissions a plain open() would give, so a
# cache or report shared between users stays readable.
_UMASK = os.umask(0)
os.umask(_UMASK)
FILE_MODE = 0o666 & ~_UMASK
MEMO_ENV = "RSM_EVAL_HASH_MEMO"
DEFAULT_MEMO = Path("results/cache/hash-memo.sqlite")


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_text(text: str) -> str:
    return sha256_bytes(text.encode("utf-8"))


def canonical_json(obj: Any) -> str:
    """JSON with sorted keys and no whitespace: equal objects give equal bytes."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def digest(obj: Any) -> str:
    """Address of a JSON-able description (inputs' addresses, parameters, code version)."""
    return sha256_text(canonical_json(obj))


def hash_file(path: Path | str, algorithm: str = "sha256") -> tuple[str, int]:
    """(hex digest, size in bytes) of a file's content, read in 1 MiB blocks, no memo."""
    h = hashlib.new(algorithm)
    size = 0
    with open(path, "rb") as fh:
        while block := fh.read(CHUNK):
            h.update(block)
            size += len(block)
    return h.hexdigest(), size


def _hash_stream(path: Path) -> str:
    return hash_file(path)[0]


class HashMemo:
    """sha256 of files, memoised by stat in a small SQLite file.

    SQLite gives safe concurrent access for several jobs of one workflow; a memo that cannot
    be opened (read-only checkout, odd filesystem) degrades to hashing without memo.
    """

    def __init__(self, path: Path | str | None = None):
        path = Path(path or os.environ.get(MEMO_ENV) or DEFAULT_MEMO)
        self.path = path
        self._db: sqlite3.Connection | None = None
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(path, timeout=60, isolation_level=None)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute(
                "CREATE TABLE IF NOT EXISTS memo (path TEXT PRIMARY KEY, stat TEXT, sha256 TEXT)"
            )
            self._db = db
        except (sqlite3.Error, OSError):
            self._db = None

    @staticmethod
    def _stat_key(st: os.stat_result) -> str:
        return f"{st.st_size}:{st.st_mtime_ns}:{st.st_ino}:{st.st_ctime_ns}"

    def file(self, path: Path | str) -> str:
        """sha256 of one file's content."""
        return self.files([path])[0]

    def files(self, paths: Iterable[Path | str]) -> list[str]:
        """sha256 of many files, reading only those whose stat changed since last time."""
        resolved = []
        for p in paths:
            real = os.path.realpath(p)
            try:
                st = os.stat(real)
            except FileNotFoundError:
                raise RsmEvalError(f"{p}: file not found") from None
            if not os.path.isfile(real):
                raise RsmEvalError(f"{p}: expected a regular file")
            resolved.append((real, self._stat_key(st)))
        known: dict[str, tuple[str, str]] = {}
        if self._db is not None and resolved:
            for i in range(0, len(resolved), 500):
                batch = [r for r, _ in resolved[i : i + 500]]
                marks = ",".join("?" * len(batch))
                rows = self._db.execute(
                    f"SELECT path, stat, sha256 FROM memo WHERE path IN ({marks})", batch
                )
                known.update({r[0]: (r[1], r[2]) for r in rows})
        out, fresh = [], []
        for real, stat in resolved:
            hit = known.get(real)
            if hit and hit[0] == stat:
                out.append(hit[1])
            else:
                sha = _hash_stream(Path(real))
                out.append(sha)
                fresh.append((real, stat, sha))
        if self._db is not None and fresh:
            with contextlib.suppress(sqlite3.Error):
                self._db.executemany("INSERT OR REPLACE INTO memo VALUES (?, ?, ?)", fresh)
        return out

    def tree(self, root: Path | str) -> str:
        """Address of a directory: its relative file names and their contents.

        Names matter here: a dataset refers to its images by file name.
        """
        root = Path(root)
        if not root.is_dir():
            raise RsmEvalError(f"{root}: expected a directory")
        rels = sorted(
            str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() or p.is_symlink()
        )
        shas = self.files(root / r for r in rels)
        return digest([[r, s] for r, s in zip(rels, shas, strict=True)])


_MEMO: HashMemo | None = None


def memo() -> HashMemo:
    """The process-wide memo (opened lazily, path from $RSM_EVAL_HASH_MEMO or the default)."""
    global _MEMO
    if _MEMO is None:
        _MEMO = HashMemo()
    return _MEMO


def file_sha256(path: Path | str) -> str:
    return memo().file(path)


PACKAGE = __name__.rpartition(".")[0]  # "rsm_eval"
PACKAGE_DIR = Path(__file__).resolve().parent
# The command-line front end (a subpackage) imports every stage lazily inside its handlers; a
# stage's code is the front end's module-level imports plus the stage module's whole closure.
ENTRY = f"{PACKAGE}.cli"


def _module_file(name: str) -> Path | None:
    """Source file of a module of this package (a subpackage is its __init__), or None."""
    if name != PACKAGE and not name.startswith(PACKAGE + "."):
        return None
    if name == PACKAGE:
        return PACKAGE_DIR / "__init__.py"
    rel = Path(*name.split(".")[1:])
    for candidate in (PACKAGE_DIR / rel / "__init__.py", PACKAGE_DIR / rel.with_suffix(".py")):
        if candidate.is_file():
            return candidate
    return None


def _imports(name: str, top_level_only: bool = False) -> set[str]:
    """Modules of this package that module `name` imports (read with ast, nothing imported)."""
    path = _module_file(name)
    if path is None:
        raise RsmEvalError(f"module {name} not found in {PACKAGE_DIR}")
    st = path.stat()
    return set(_parsed_imports(name, path, top_level_only, st.st_mtime_ns, st.st_size))


def _statements(body: list[ast.stmt]) -> Iterator[ast.stmt]:
    """Every statement, nested ones included (an import is a statement: expressions, most of
    a module's nodes, need no visit)."""
    todo = list(body)
    while todo:
        node = todo.pop()
        yield node
        for field in ("body", "orelse", "finalbody", "handlers", "cases"):
            children = getattr(node, field, None)
            if isinstance(children, list):
                todo.extend(c for c in children if isinstance(c, ast.AST))


@functools.cache
def _parsed_imports(
    name: str, path: Path, top_level_only: bool, _mtime_ns: int, _size: int
) -> frozenset[str]:
    """_imports, parsed once per file version: every stage's closure shares the modules, and
    parsing them again for each of the rules' code versions made up most of a no-op run."""
    tree = ast.parse(path.read_bytes(), filename=str(path))
    is_pkg = path.name == "__init__.py"
    nodes = tree.body if top_level_only else _statements(tree.body)
    found: set[str] = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = name.split(".")
                base_parts = parts if is_pkg else parts[:-1]
                base_parts = base_parts[: len(base_parts) - (node.level - 1)]
                base = ".".join(base_parts + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            found.add(base)
            # `from . import x` and `from .pkg import sub` name modules, not only attributes.
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return frozenset(m for m in found if _module_file(m) is not None)


def import_closure(*modules: str, entry: str | None = ENTRY) -> list[str]:
    """The given modules and every module of this package they import, directly or not.

    Imports anywhere in a module count (the stages import torch-heavy modules lazily, inside
    functions). Of `entry` and the modules inside it (the front end, which dispatches to every
    stage), only the module-level imports count. Parent packages count too, since importing
    `a.b` runs `a/__init__.py`.
    """
    seen: set[str] = set()
    todo = list(modules) + ([entry] if entry is not None else [])
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        if _module_file(name) is None:
            raise RsmEvalError(f"module {name} not found in {PACKAGE_DIR}")
        seen.add(name)
        parts = name.split(".")
        todo += [".".join(parts[:i]) for i in range(1, len(parts))]
        front_end = entry is not None and (name == entry or name.startswith(entry + "."))
        todo += sorted(_imports(name, top_level_only=front_end) - seen)
    return sorted(seen)


def code_version(*modules: str, entry: str | None = ENTRY) -> str:
    """Address of the source of the given modules and of all they import from this package.

    Derived from the imports (never a hand-kept list), read with ast so that it is cheap at DAG
    time. A product records the version of the code that computed it, and a rule that passes
    this as a parameter reruns when that code, or anything it uses, changes.
    """
    parts = [
        [name, sha256_bytes(_module_file(name).read_bytes())]  # type: ignore[union-attr]
        for name in import_closure(*modules, entry=entry)
    ]
    return digest(parts)[:16]


def fsync_dir(path: Path | str) -> None:
    """Make a rename inside `path` durable (some filesystems refuse; that is harmless)."""
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def publish(tmp: Path | str, dest: Path | str, mode: int | None = FILE_MODE) -> None:
    """fsync a finished temporary file, rename it onto `dest` and make the rename durable."""
    with open(tmp, "rb+") as fh:
        os.fsync(fh.fileno())
    if mode is not None:
        os.chmod(tmp, mode)
    os.replace(tmp, dest)
    fsync_dir(Path(dest).parent)


@contextlib.contextmanager
def atomic_path(dest: Path | str, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path beside `dest`; on success fsync and rename it into place.

    A reader never sees a half-written file, and a failure leaves nothing at `dest`.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=suffix + ".tmp", dir=dest.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        publish(tmp_path, dest)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


def write_text_atomic(dest: Path | str, text: str) -> None:
    with atomic_path(dest) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json_atomic(dest: Path | str, obj: Any) -> None:
    write_text_atomic(dest, json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False) + "\n")


def replace_path(staged: Path | str, dest: Path | str) -> None:
    """Move `staged` (a finished file or directory tree) onto `dest`, replacing whatever `dest`
    was: nothing, a file, a link or a directory tree.

    A directory at `dest` is first renamed aside into a fresh hidden sibling and deleted only
    once `staged` stands in its place, so `dest` is at every moment the old tree or the new
    one, never a mix. Both must be on one filesystem (a rename).
    """
    staged, dest = Path(staged), Path(dest)
    if os.path.lexists(dest):
        if dest.is_dir() and not dest.is_symlink():
            trash = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}.old-"))
            os.replace(dest, trash / "old")
            os.replace(staged, dest)
            shutil.rmtree(trash, ignore_errors=True)
            fsync_dir(dest.parent)
            return
        if staged.is_dir() and not staged.is_symlink():
            dest.unlink()
    os.replace(staged, dest)
    fsync_dir(dest.parent)
