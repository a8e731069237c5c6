"""Embedding stage: image and caption features of one split, computed once, cached by content.

Only rows the feature store lacks are computed: an image is keyed by its file's sha256, a
caption by the sha256 of its text, both under the model's address, so identical captions
are embedded once, renamed images are not embedded again, and a new checkpoint with old bytes
finds its old features. Results are committed in chunks as they are computed, so an
interrupted job resumes where it stopped. The forward pass is fp32 without autocast, as the
published protocol is.

Speed. Images are decoded and preprocessed by DataLoader workers (`workers`), pinned and
copied asynchronously when the device is CUDA, and results are fetched one batch late so the
device does not wait for the host. Captions are tokenized by window (in workers as well),
sorted by token length within a window, and run through `encode_text_trimmed`, which cuts each
batch to its longest caption instead of CLIP's full 77-token context: the same embeddings, at a
fraction of the cost for remote-sensing captions (typically 10-30 tokens).
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from . import cas, gpus, models, schemas, shards
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


# ------------------------------------------------------------------ text context trimming
#
# CLIP's text tower is causal and, in open_clip's CLIP with `text_pool_type == "argmax"`,
# pools the output at the end-of-text token (the largest token id). Under a causal mask a
# position never attends to a later one, so the tokens after the end-of-text token of the
# longest caption in a batch cannot change any pooled output: cutting the batch to that length
# computes the same function. Only the floating-point summation order changes (matrix shapes
# differ), by ~1e-7; tests/test_text_trim.py checks trimmed == full within 1e-6 on the demo
# model and on ViT-B-32's text tower. This is why trimming does NOT bump
# models.FEATURE_VERSION: the features are the same function of the caption, and features
# cached before trimming remain valid.


def can_trim_text(model: Any) -> bool:
    """Whether `encode_text_trimmed` may cut the context of `model`'s text tower.

    True only for a plain `open_clip.model.CLIP` (not a subclass, not CustomTextCLIP or CoCa)
    with argmax pooling, an open_clip `Transformer` text tower and a 2-D causal mask covering
    the positional embedding; everything else uses the model's own `encode_text`.
    """
    import torch
    from open_clip.model import CLIP
    from open_clip.transformer import Transformer

    if type(model) is not CLIP or getattr(model, "text_pool_type", None) != "argmax":
        return False
    if not isinstance(model.transformer, Transformer):
        return False
    mask = getattr(model, "attn_mask", None)
    pos = getattr(model, "positional_embedding", None)
    if not isinstance(mask, torch.Tensor) or not isinstance(pos, torch.Tensor) or pos.ndim != 2:
        return False
    n = pos.shape[0]
    if mask.ndim != 2 or tuple(mask.shape) != (n, n):
        return False
    causal = torch.full((n, n), float("-inf"), dtype=mask.dtype, device=mask.device).triu_(1)
    return bool(torch.equal(mask, causal))


def trimmed_length(tokens: Any) -> int:
    """1 + the largest end-of-text (argmax) position in a (batch, context) token batch."""
    if tokens.shape[0] == 0:
        return int(tokens.shape[1])
    return int(tokens.argmax(dim=-1).max()) + 1


def _encode_text_cut(model: Any, text: Any) -> Any:
    """open_clip 3.3.0's `CLIP.encode_text`, step by step, on a batch whose width may be less
    than the context (at least `trimmed_length(text)`; `can_trim_text(model)` must hold)."""
    from open_clip.transformer import text_global_pool
    from torch import nn

    length = text.shape[1]
    cast_dtype = model.transformer.get_cast_dtype()
    x = model.token_embedding(text).to(cast_dtype)  # [batch, length, width]
    x = x + model.positional_embedding[:length].to(cast_dtype)
    # The transformer transposes for batch_first=False itself; a 2-D (L, L) mask serves both.
    x = model.transformer(x, attn_mask=model.attn_mask[:length, :length].contiguous())
    x = model.ln_final(x)  # [batch, length, width]
    x = text_global_pool(x, text, model.text_pool_type, eos_token_id=model.text_eos_id)
    if model.text_projection is not None:
        if isinstance(model.text_projection, nn.Linear):
            x = model.text_projection(x)
        else:
            x = x @ model.text_projection
    return x


def encode_text_trimmed(model: Any, tokens: Any, *, trim: bool | None = None) -> Any:
    """`model.encode_text(tokens)`, computed on the batch cut to its longest caption.

    Reproduces open_clip 3.3.0's `CLIP.encode_text` (token embedding, positional embedding,
    transformer with the causal mask, ln_final, argmax pooling, text projection) on the first
    `trimmed_length(tokens)` positions. `tokens` may already be cut to any width that keeps
    every end-of-text token. `trim` is `can_trim_text(model)` (computed when None); when it
    is False, or the tokens are not a (batch, width <= context) matrix, this is exactly
    `model.encode_text(tokens)`.
    """
    if trim is None:
        trim = can_trim_text(model)
    if not trim or tokens.ndim != 2 or tokens.shape[1] > model.positional_embedding.shape[0]:
        return model.encode_text(tokens)
    return _encode_text_cut(model, tokens[:, : trimmed_length(tokens)])


class _TokenWindows:
    """Map-style dataset: window i -> token ids (LongTensor) of texts[i*size:(i+1)*size].

    Tokenizing is pure Python (~0.1 ms a caption); served by DataLoader workers it overlaps
    with the forward pass instead of preceding it."""

    def __init__(self, texts: list[str], tokenizer: Any, size: int):
        self.texts, self.tokenizer, self.size = texts, tokenizer, size

    def __len__(self) -> int:
        return -(-len(self.texts) // self.size)

    def __getitem__(self, i: int):
        return self.tokenizer(self.texts[i * self.size : (i + 1) * self.size])


def _text_batches(windows, keys: list[str], window: int, batch_size: int, trim: bool):
    """(keys, tokens) batches in window order; with `trim`, each window is sorted by token
    length (stable) so that batches are homogeneous, and each batch is cut to its longest
    caption here, on the host, before it is copied to the device."""
    import torch

    for w, tokens in enumerate(windows):
        wkeys = keys[w * window : w * window + len(tokens)]
        if trim:
            order = torch.argsort(tokens.argmax(dim=-1), stable=True)
            tokens = tokens[order]
            wkeys = [wkeys[i] for i in order.tolist()]
        for s in range(0, len(wkeys), batch_size):
            batch = tokens[s : s + batch_size]
            if trim:
                batch = batch[:, : trimmed_length(batch)]
            yield wkeys[s : s + batch_size], batch


def _embed_texts(
    loaded: models.Loaded,
    texts: list[str],
    keys: list[str],
    writer: _ChunkWriter,
    device: str,
    batch_size: int,
    workers: int,
    autocast: bool,
    window: int | None = None,
) -> None:
    import torch

    model = loaded.model
    trim = can_trim_text(model)
    window = max(window or text_window(batch_size), batch_size)
    windows = torch.utils.data.DataLoader(
        _TokenWindows(texts, loaded.tokenizer, window),
        batch_size=None,
        num_workers=min(workers, -(-len(texts) // window)),
    )

    def encode(tokens):
        tokens = tokens.to(device, non_blocking=True)
        return _encode_text_cut(model, tokens) if trim else loaded.encode_text(tokens)

    with torch.inference_mode(), _autocast(device, autocast):
        batches = _text_batches(windows, keys, window, batch_size, trim)
        _run_batches(batches, encode, writer, device, "captions", workers)


TEXT_WINDOW_BATCHES = 32


def text_window(batch_size: int) -> int:
    """Captions tokenized, sorted by length and batched together: 32 batches. A shard of a
    split takes whole windows (shards.take), so its batches are the unsharded job's."""
    return TEXT_WINDOW_BATCHES * batch_size


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


def _cached(
    model: Model, store: FeatureStore, keys: list[str], embed_missing, device: str
) -> np.ndarray:
    """Rows of `keys` (in order) from `store`, computing the missing ones first with
    `embed_missing(loaded, missing, writer, device)`; the model is built only if needed."""
    unique = list(dict.fromkeys(keys))
    missing = store.missing(unique)
    if missing:
        used = models.choose_device(device)
        writer = _ChunkWriter(store, len(missing), 2048, store.kind + "s")
        embed_missing(models.build(model, used), missing, writer, used)
    feats, bad = store.fetch(unique)
    if feats is None or bad:
        raise RsmEvalError(f"feature store {store.root}: {len(bad)} rows failed verification")
    pos = {k: i for i, k in enumerate(unique)}
    return feats[[pos[k] for k in keys]]


def embed_texts(
    model: Model,
    texts: list[str],
    *,
    cache_dir: Path,
    device: str = "auto",
    batch_size: int = 64,
    autocast: bool = False,
) -> np.ndarray:
    """L2-normalised features of arbitrary texts (class prompts, say), in order, through the
    same content-keyed text store as captions: a text embedded once is never embedded again."""
    precision = "amp" if autocast else "fp32"
    store = FeatureStore(cache_dir, models.address(model, precision=precision), "text")
    keys = [text_key(t) for t in texts]
    text_of = dict(zip(keys, texts, strict=True))

    def embed_missing(loaded, missing, writer, used):
        _embed_texts(
            loaded, [text_of[k] for k in missing], missing, writer, used, batch_size, 0, autocast
        )

    return _cached(model, store, keys, embed_missing, device)


def embed_image_files(
    model: Model,
    paths: list[Path],
    *,
    cache_dir: Path,
    device: str = "auto",
    batch_size: int = 64,
    workers: int = 0,
) -> np.ndarray:
    """L2-normalised features of image files, in order, through the model's image store
    (keyed by file sha256, as in embed_split): an image embedded once is never embedded again."""
    from . import cas

    store = FeatureStore(cache_dir, models.address(model), "image")
    keys = cas.memo().files(paths)
    path_of = dict(zip(keys, paths, strict=True))

    def embed_missing(loaded, missing, writer, used):
        _embed_images(
            loaded, [path_of[k] for k in missing], missing, writer, used, batch_size, workers, False
        )

    return _cached(model, store, keys, embed_missing, device)
