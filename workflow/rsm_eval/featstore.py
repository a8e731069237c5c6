"""Content-keyed feature store: embeddings reused per row, across runs, models and workflows.

Layout under the cache directory::

    features/<model address>/<kind>/<sha256 of the chunk file>.parquet

`kind` is "image" (rows keyed by the image file's sha256) or "text" (keyed by the caption's
sha256). A chunk is written to a temporary file and renamed into place, so a reader sees it
whole or not at all; its file name is its own checksum, verified on every read, so a
corrupted chunk is set aside and its rows recomputed instead of used. Two jobs that compute
the same rows at once both commit chunks; duplicates are harmless because equal keys under one
model address mean equal inputs.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from . import cas, schemas
from .errors import RsmEvalError

SUFFIX = ".parquet"


class FeatureStore:
    def __init__(self, cache_dir: Path | str, model_address: str, kind: str):
        if kind not in ("image", "text"):
            raise ValueError(kind)
        self.root = Path(cache_dir) / "features" / model_address / kind
        self.kind = kind
        self._index: dict[str, tuple[Path, int]] | None = None

    def chunks(self) -> list[Path]:
        if not self.root.is_dir():
            return []
        return sorted(
            p for p in self.root.iterdir() if p.name.endswith(SUFFIX) and not p.name.startswith(".")
        )

    def _quarantine(self, path: Path, why: str) -> None:
        # Keep the bad bytes for inspection but out of the store's sight.
        print(
            f"feature store: chunk {path} {why}; set aside, its rows will be recomputed",
            file=sys.stderr,
        )
        with contextlib.suppress(FileNotFoundError):
            os.replace(path, path.with_name(path.name + ".corrupt"))

    def index(self, refresh: bool = False) -> dict[str, tuple[Path, int]]:
        """key -> (chunk, row) for every committed row (keys only are read)."""
        if self._index is not None and not refresh:
            return self._index
        idx: dict[str, tuple[Path, int]] = {}
        for chunk in self.chunks():
            if not os.access(chunk, os.R_OK):
                # Another user's chunk, not a corrupt one: never set it aside.
                raise RsmEvalError(
                    f"feature store chunk {chunk} is not readable by this user; fix the "
                    "permissions of the shared cache_dir"
                )
            try:
                keys = pq.read_table(chunk, columns=["key"]).column("key").to_pylist()
            except (OSError, pa.ArrowInvalid):
                self._quarantine(chunk, "is unreadable")
                continue
            for row, key in enumerate(keys):
                idx.setdefault(key, (chunk, row))
        self._index = idx
        return idx

    def missing(self, keys: list[str]) -> list[str]:
        idx = self.index()
        return [k for k in dict.fromkeys(keys) if k not in idx]

    def commit(self, keys: list[str], embeddings: np.ndarray) -> Path:
        """Write one chunk atomically; its name is the sha256 of its bytes."""
        embeddings = np.ascontiguousarray(embeddings, dtype=np.float32)
        if embeddings.ndim != 2 or len(keys) != embeddings.shape[0]:
            raise ValueError("keys and embeddings disagree")
        dim = embeddings.shape[1]
        table = pa.table(
            {
                "key": pa.array(keys, pa.string()),
                "embedding": pa.FixedSizeListArray.from_arrays(
                    pa.array(embeddings.reshape(-1)), dim
                ),
            },
            schema=schemas.features_schema(dim),
        )
        self.root.mkdir(parents=True, exist_ok=True)
        # Each writer has its own temporary name; the final name is known only after writing.
        fd, tmp_name = tempfile.mkstemp(prefix=".chunk-", suffix=".tmp", dir=self.root)
        os.close(fd)
        tmp = Path(tmp_name)
        try:
            pq.write_table(table, tmp, compression="none")
            with open(tmp, "rb+") as fh:
                os.fsync(fh.fileno())
            os.chmod(tmp, cas.FILE_MODE)
            final = self.root / f"{cas.hash_file(tmp)[0]}{SUFFIX}"
            os.replace(tmp, final)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        if self._index is not None:
            for row, key in enumerate(keys):
                self._index.setdefault(key, (final, row))
        return final

    def fetch(self, keys: list[str]) -> tuple[np.ndarray | None, list[str]]:
        """Embeddings for `keys` in order, reading and verifying only the chunks involved.

        Returns (array, []) when all rows are present and verified, or (None, missing keys)
        when a chunk failed verification: the caller recomputes those and fetches again.
        """
        idx = self.index()
        absent = [k for k in keys if k not in idx]
        if absent:
            return None, absent
        by_chunk: dict[Path, list[int]] = {}
        for i, k in enumerate(keys):
            by_chunk.setdefault(idx[k][0], []).append(i)
        out: np.ndarray | None = None
        bad: list[str] = []
        for chunk, positions in by_chunk.items():
            data = _read_verified(chunk)
            if data is None:
                self._quarantine(chunk, "failed its checksum")
                bad.extend(keys[i] for i in positions)
                continue
            if out is None:
                out = np.empty((len(keys), data.shape[1]), dtype=np.float32)
            rows = [idx[keys[i]][1] for i in positions]
            out[positions] = data[rows]
        if bad:
            self.index(refresh=True)
            return None, list(dict.fromkeys(bad))
        return out, []


def _read_verified(chunk: Path) -> np.ndarray | None:
    try:
        raw = chunk.read_bytes()
    except OSError:
        return None
    if cas.sha256_bytes(raw) != chunk.name[: -len(SUFFIX)]:
        return None
    try:
        table = pq.read_table(pa.BufferReader(raw))
        col = table.column("embedding").combine_chunks()
        dim = col.type.list_size
        return col.flatten().to_numpy(zero_copy_only=False).reshape(-1, dim)
    except (OSError, pa.ArrowInvalid, KeyError):
        return None
