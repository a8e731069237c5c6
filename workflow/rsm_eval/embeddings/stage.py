"""The embed stage: the image and caption feature tables of one split (sharded or not)."""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from .. import cas, gpus, models, schemas, shards
from ..config import Model
from ..errors import RsmEvalError
from ..featstore import FeatureStore
from ..manifests import evaluation_order
from .batches import _ChunkWriter, _embed_images
from .text import _embed_texts, text_key, text_window


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
    workers: int | None = None,
    device: str = "auto",
    chunk_rows: int = 2048,
    text_prefix: str = "",
    autocast: bool = False,
    threads: int | None = None,
    shard: tuple[int, int] | None = None,
    shard_record: Path | None = None,
) -> EmbedResult:
    """Write the image and text feature tables of one split, computing only what is missing.

    Texts are keyed by the sha256 of what is embedded (`text_prefix` + caption).
    `threads` and `workers` are divided between torch and the loader by gpus.plan_cpu
    (None: the CPUs this job may use; `workers` None: chosen for the device).
    With `shard` (i, n), only the rows of that shard (shards.take over the split's distinct
    images in batches, captions in windows) are computed into the store, and `shard_record`
    (JSON) is written instead of the tables; the unsharded call then gathers them.
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
    rates: dict[str, float] = {}
    plan: gpus.CpuPlan | None = None

    def ensure_model() -> models.Loaded:
        nonlocal loaded, used_device, plan
        if loaded is None:
            used_device = models.choose_device(device)
            plan = gpus.plan_cpu(used_device, threads, workers)
            gpus.apply_cpu_plan(plan)
            print(f"model {model.name}: address {address}, device {used_device}", file=sys.stderr)
            print(plan.describe(), file=sys.stderr, flush=True)
            loaded = models.build(model, used_device)
        return loaded

    def compute(kind: str, keys: list[str]) -> None:
        computed[kind] += len(keys)
        net = ensure_model()
        n_workers = plan.workers
        t = time.monotonic()
        if kind == "image":
            writer = _ChunkWriter(image_store, len(keys), chunk_rows, "images")
            paths = [path_of[k] for k in keys]
            _embed_images(net, paths, keys, writer, used_device, batch_size, n_workers, autocast)
        else:
            writer = _ChunkWriter(text_store, len(keys), chunk_rows, "captions")
            texts = [text_of[k] for k in keys]
            _embed_texts(net, texts, keys, writer, used_device, batch_size, n_workers, autocast)
        seconds = time.monotonic() - t
        rates[kind] = round(len(keys) / max(seconds, 1e-9), 3)
        print(
            f"{kind} rate: {rates[kind]:.2f} {kind}s/s ({len(keys)} in {seconds:.1f} s; "
            f"{plan.torch_threads} torch threads, {n_workers} loader workers, device "
            f"{used_device})",
            file=sys.stderr,
            flush=True,
        )

    out = {}
    for kind, store, keys in (("image", image_store, image_keys), ("text", text_store, text_keys)):
        if shard is not None:
            # Cut the whole split (not its missing rows, which change as the other shards
            # commit), so that the shards of one run never overlap or leave a gap.
            unit = batch_size if kind == "image" else text_window(batch_size)
            keys = shards.take(keys, shard, unit)
        missing = store.missing(keys)
        if missing:
            compute(kind, missing)
        if shard is not None:
            continue
        feats, bad = store.fetch(keys)
        if bad:  # a chunk failed its checksum: recompute its rows once
            compute(kind, bad)
            feats, bad = store.fetch(keys)
        if feats is None or bad:
            raise RsmEvalError(f"feature store {store.root}: rows still missing after recompute")
        out[kind] = feats

    if shard is not None:
        record = {
            "stage": "embed_shard",
            "shard": f"{shard[0]}-of-{shard[1]}",
            "model": model.name,
            "model_address": address,
            "split": split,
            "device": used_device,
            "cpu": None if plan is None else plan.__dict__,
            "images_computed": computed["image"],
            "texts_computed": computed["text"],
            "rates_per_s": rates,
            "seconds": round(time.monotonic() - t0, 3),
        }
        if shard_record is not None:
            cas.write_json_atomic(shard_record, record)
        print(
            f"shard {record['shard']}: embedded {computed['image']} images and "
            f"{computed['text']} captions into {cache_dir}",
            file=sys.stderr,
        )
        return EmbedResult(address, used_device, computed["image"], 0, computed["text"], 0, 0.0)

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
