"""The sources lock file: sha256 and size of inputs whose publisher gives no checksum."""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

import yaml

from rsm_eval import cas
from rsm_eval.errors import RsmEvalError

from .spec import check_sha256, check_size

_LOCK_HEADER = (
    "# RSM-Eval source lock: sha256 and size of inputs whose publisher gives no checksum.\n"
    "# Recorded on the first verified download; keep this file under version control.\n"
)


@contextlib.contextmanager
def flock(path: Path) -> Iterator[None]:
    """Hold an exclusive fcntl lock on path (created if needed) for the block."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock


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
        return check_sha256(where, entry["sha256"]), check_size(where, entry["size"])

    def record(self, key: str, url: str, sha256: str, size: int) -> None:
        """Record (or re-record) the checksum and size of key's file from url."""
        where = f"{key} (lock file {self.path})"
        entry = {"sha256": check_sha256(where, sha256), "size": check_size(where, size)}
        entry["url"] = url
        try:
            with flock(self.path.with_name(self.path.name + ".lock")):
                data = self._load()  # re-read under the lock: another writer may have added keys
                if data.get(key) == entry:
                    return
                data[key] = entry
                body = yaml.safe_dump(
                    data, sort_keys=True, default_flow_style=False, allow_unicode=True
                )
                cas.write_text_atomic(self.path, _LOCK_HEADER + body)
        except OSError as exc:
            raise RsmEvalError(
                f"{key}: cannot record its checksum in lock file {self.path}: {exc}; expected a "
                "writable file"
            ) from exc
