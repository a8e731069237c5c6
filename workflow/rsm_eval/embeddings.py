"""Embedding stage: image and caption features of one split, computed once, cached by content.

Only rows the feature store lacks are computed: an image is keyed by its file's sha256, a
caption by the sha256 of its text, both under the model's address, so identical captions
are embedded once, renamed images are not embedded again, and a new checkpoint with old bytes
finds its old features. Results are committed in chunks as they are computed, so an
interrupted job resumes where it stopped. The forward pass is fp32 without autocast, as the
published protocol is.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from . import cas, models, schemas
from .config import Model
from .errors import RsmEvalError
from .featstore import FeatureStore
from .manifests import evaluation_order


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
        from PIL import Image

        try:
            with Image.open(self.paths[i]) as im:
                return self.preprocess(im.convert("RGB"))
        except Exception as exc:
            raise RsmEvalError(f"{self.paths[i]}: cannot decode image ({exc})") from None


class _ChunkWriter:
    """Collects computed rows and commits them to the store every `chunk_rows` rows, so an
    interrupted job loses at most one chunk of work."""

    def __init__(self, store: FeatureStore, keys: list[str], chunk_rows: int, what: str):
        self.store, self.keys, self.chunk_rows = store, keys, chunk_rows
        self.progress = Progress(what, len(keys))
        self.done = 0
        self.pending: list[np.ndarray] = []
        self.pending_rows = 0

    def add(self, feats: np.ndarray) -> None:
        self.pending.append(feats)
        self.pending_rows += len(feats)
        self.progress.update(len(feats))
        if self.pending_rows >= self.chunk_rows:
            self.flush()

    def flush(self) -> None:
        if self.pending_rows:
            rows = self.keys[self.done : self.done + self.pending_rows]
            self.store.commit(rows, np.concatenate(self.pending))
            self.done += self.pending_rows
            self.pending, self.pending_rows = [], 0


def _autocast(device: str, enabled: bool):
    import torch

    return torch.autocast(device_type=device.split(":")[0], enabled=enabled)


def _embed_images(
    loaded: models.Loaded,
    paths: list[Path],
    writer: _ChunkWriter,
    device: str,
    batch_size: int,
    workers: int,
    autocast: bool,
) -> None:
    import torch
    import torch.nn.functional as F

    loader = torch.utils.data.DataLoader(
        _ImageFiles(paths, loaded.preprocess),
        batch_size=batch_size,
        num_workers=workers,
        pin_memory=device.startswith("cuda"),
        shuffle=False,
    )
    with torch.inference_mode(), _autocast(device, autocast):
        for batch in loader:
            x = batch.to(device, non_blocking=True)
            writer.add(F.normalize(loaded.model.encode_image(x).float(), dim=-1).cpu().numpy())
    writer.flush()


def _embed_texts(
    loaded: models.Loaded,
    texts: list[str],
    writer: _ChunkWriter,
    device: str,
    batch_size: int,
    autocast: bool,
) -> None:
    import torch
    import torch.nn.functional as F

    with torch.inference_mode(), _autocast(device, autocast):
        for start in range(0, len(texts), batch_size):
            tokens = loaded.tokenizer(texts[start : start + batch_size]).to(device)
            writer.add(F.normalize(loaded.model.encode_text(tokens).float(), dim=-1).cpu().numpy())
    writer.flush()


def text_key(caption: str, prefix: str = "") -> str:
    """Feature-store key of a caption as embedded (with the protocol's prefix, if any)."""
    return cas.sha256_text(prefix + caption)


@dataclass
class EmbedResult:
    model_address: str
    device: str
    images_computed: int
    images_reused: int
    texts_computed: int
    texts_reused: int
    seconds: float


def embed_split(
    model: Model,
    captions_path: Path,
    images_root: Path,
    split: str,
    out_images: Path,
    out_texts: Path,
    *,
    cache_dir: Path,
    batch_size: int = 64,
    workers: int = 2,
    device: str = "auto",
    chunk_rows: int = 2048,
    text_prefix: str = "",
    autocast: bool = False,
) -> EmbedResult:
    """Write the image and text feature tables of one split, computing only what is missing.

    Texts are keyed by the sha256 of what is embedded (`text_prefix` + caption).
    """
    t0 = time.monotonic()
    captions, manifest_meta = schemas.read_table(captions_path, schemas.CAPTIONS)
    _, image_shas, _, _ = evaluation_order(captions, split)
    rows = [r for r in captions.to_pylist() if r["split"] == split]
    path_of = {r["image_sha256"]: images_root / r["image_path"] for r in rows}
    text_of = {text_key(r["caption"], text_prefix): text_prefix + r["caption"] for r in rows}
    image_keys = list(dict.fromkeys(image_shas))
    text_keys = list(text_of)

    precision = "amp" if autocast else "fp32"
    spec = models.address_spec(model, precision=precision)
    address = models.address(model, precision=precision)
    image_store = FeatureStore(cache_dir, address, "image")
    text_store = FeatureStore(cache_dir, address, "text")
    loaded: models.Loaded | None = None
    used_device = "none (all rows cached)"
    computed = {"image": 0, "text": 0}

    def ensure_model() -> models.Loaded:
        nonlocal loaded, used_device
        if loaded is None:
            used_device = models.choose_device(device)
            print(f"model {model.name}: address {address}, device {used_device}", file=sys.stderr)
            loaded = models.build(model, used_device)
        return loaded

    def compute(kind: str, keys: list[str]) -> None:
        computed[kind] += len(keys)
        net = ensure_model()
        if kind == "image":
            writer = _ChunkWriter(image_store, keys, chunk_rows, "images")
            _embed_images(
                net, [path_of[k] for k in keys], writer, used_device, batch_size, workers, autocast
            )
        else:
            writer = _ChunkWriter(text_store, keys, chunk_rows, "captions")
            _embed_texts(net, [text_of[k] for k in keys], writer, used_device, batch_size, autocast)

    out = {}
    for kind, store, keys in (("image", image_store, image_keys), ("text", text_store, text_keys)):
        missing = store.missing(keys)
        if missing:
            compute(kind, missing)
        feats, bad = store.fetch(keys)
        if bad:  # a chunk failed its checksum: recompute its rows once
            compute(kind, bad)
            feats, bad = store.fetch(keys)
        if feats is None or bad:
            raise RsmEvalError(f"feature store {store.root}: rows still missing after recompute")
        out[kind] = feats

    result = EmbedResult(
        model_address=address,
        device=used_device,
        images_computed=computed["image"],
        images_reused=len(image_keys) - computed["image"],
        texts_computed=computed["text"],
        texts_reused=len(text_keys) - computed["text"],
        seconds=round(time.monotonic() - t0, 3),
    )
    meta = {
        "stage": "embed",
        "model": model.name,
        "model_address": address,
        "model_spec": spec,
        "manifest_address": manifest_meta.get("address"),
        "split": split,
        "text_prefix": text_prefix,
        **{k: v for k, v in result.__dict__.items() if k != "model_address"},
    }
    for kind, keys, path in (("image", image_keys, out_images), ("text", text_keys, out_texts)):
        feats = out[kind]
        table = pa.table(
            {
                "key": pa.array(keys, pa.string()),
                "embedding": pa.FixedSizeListArray.from_arrays(
                    pa.array(feats.reshape(-1)), feats.shape[1]
                ),
            }
        )
        schemas.write_table(
            table, path, schemas.features_schema(feats.shape[1]), {**meta, "kind": kind}
        )
    print(
        f"embedded {result.images_computed} images and {result.texts_computed} captions; reused "
        f"{result.images_reused} images and {result.texts_reused} captions from {cache_dir}",
        file=sys.stderr,
    )
    return result


def read_features(path: Path | str) -> tuple[list[str], np.ndarray, dict]:
    """Keys, (n, d) float32 matrix and provenance of a feature table."""
    table, meta = schemas.read_table(path)
    col = table.column("embedding").combine_chunks()
    dim = col.type.list_size
    feats = col.flatten().to_numpy(zero_copy_only=False).reshape(-1, dim).astype(np.float32)
    return table.column("key").to_pylist(), feats, meta
