"""Running batches through a model into the feature store: progress lines, the image
dataset for DataLoader workers, the chunked writer and the one-batch-late fetch loop."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from .. import models
from ..errors import RsmEvalError
from ..featstore import FeatureStore


class Progress:
    """One log line per ~10% (or per 30 s): readable in a log file, unlike a redrawn bar."""

    def __init__(self, what: str, total: int, stream=sys.stderr):
        self.what, self.total, self.stream = what, total, stream
        self.done = 0
        self.start = self.last = time.monotonic()
        self.next_pct = 10

    def update(self, n: int) -> None:
        self.done += n
        now = time.monotonic()
        pct = 100 * self.done / max(self.total, 1)
        if pct >= self.next_pct or now - self.last > 30 or self.done == self.total:
            rate = self.done / max(now - self.start, 1e-9)
            print(
                f"{self.what}: {self.done}/{self.total} ({pct:.0f}%, {rate:.1f}/s)",
                file=self.stream,
                flush=True,
            )
            self.last = now
            while self.next_pct <= pct:
                self.next_pct += 10


class _ImageFiles:
    """Map-style dataset: decode, convert to RGB as the evaluation does, preprocess."""

    def __init__(self, paths: list[Path], preprocess: Any):
        self.paths, self.preprocess = paths, preprocess

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        import torch
        from PIL import Image

        # One image's transforms are too small to split across threads: in the main process
        # (workers=0) a multi-threaded ToTensor/Normalize mostly waits on its own threads
        # (measured 1.5x slower stage on 2 cores). Loader workers already run one thread.
        threads = torch.get_num_threads()
        if threads > 1:
            torch.set_num_threads(1)
        try:
            with Image.open(self.paths[i]) as im:
                return self.preprocess(im.convert("RGB"))
        except Exception as exc:
            raise RsmEvalError(f"{self.paths[i]}: cannot decode image ({exc})") from None
        finally:
            if threads > 1:
                torch.set_num_threads(threads)


class _ChunkWriter:
    """Collects computed rows and commits them to the store every `chunk_rows` rows, so an
    interrupted job loses at most one chunk of work. Rows may arrive in any order (captions
    are reordered by length); each comes with its key."""

    def __init__(self, store: FeatureStore, total: int, chunk_rows: int, what: str):
        self.store, self.chunk_rows = store, chunk_rows
        self.progress = Progress(what, total)
        self.pending_keys: list[str] = []
        self.pending: list[np.ndarray] = []

    def add(self, keys: list[str], feats: np.ndarray) -> None:
        if len(keys) != len(feats):
            raise ValueError("keys and features disagree")
        self.pending_keys.extend(keys)
        self.pending.append(feats)
        self.progress.update(len(feats))
        if len(self.pending_keys) >= self.chunk_rows:
            self.flush()

    def flush(self) -> None:
        if self.pending_keys:
            self.store.commit(self.pending_keys, np.concatenate(self.pending))
            self.pending_keys, self.pending = [], []


def _autocast(device: str, enabled: bool):
    import torch

    return torch.autocast(device_type=device.split(":")[0], enabled=enabled)


def _run_batches(batches, encode, writer: _ChunkWriter, device: str, what: str, workers: int):
    """Encode (keys, host tensor) batches and hand normalised features to `writer`.

    `encode` moves its input to the device itself (non-blocking from pinned memory). Each
    batch's result is fetched only after the next batch has been queued, so on CUDA the device
    computes while the host copies, converts and commits the previous result. The time spent
    waiting for the loader is reported when it is a sizeable share of a GPU run.
    """
    import torch.nn.functional as F

    waited = 0.0
    start = time.monotonic()
    pending = None
    it = iter(batches)
    while True:
        t0 = time.monotonic()
        item = next(it, None)
        waited += time.monotonic() - t0
        if item is None:
            break
        keys, x = item
        feats = F.normalize(encode(x).float(), dim=-1)
        if pending is not None:
            writer.add(pending[0], pending[1].cpu().numpy())
        pending = (keys, feats)
    if pending is not None:
        writer.add(pending[0], pending[1].cpu().numpy())
    writer.flush()
    total = time.monotonic() - start
    if device.startswith("cuda") and total > 10 and waited > 0.1 * total:
        print(
            f"{what}: {100 * waited / total:.0f}% of {total:.0f} s spent waiting for input with "
            f"{workers} loader workers; raise embed.workers (one per free CPU core) to keep the "
            "GPU busy",
            file=sys.stderr,
        )


def _embed_images(
    loaded: models.Loaded,
    paths: list[Path],
    keys: list[str],
    writer: _ChunkWriter,
    device: str,
    batch_size: int,
    workers: int,
    autocast: bool,
) -> None:
    import torch

    loader = torch.utils.data.DataLoader(
        _ImageFiles(paths, loaded.preprocess),
        batch_size=batch_size,
        num_workers=workers,
        pin_memory=device.startswith("cuda"),
        shuffle=False,
    )
    batches = ((keys[i * batch_size : i * batch_size + len(x)], x) for i, x in enumerate(loader))

    def encode(x):
        return loaded.encode_image(x.to(device, non_blocking=True))

    with torch.inference_mode(), _autocast(device, autocast):
        _run_batches(batches, encode, writer, device, "images", workers)
