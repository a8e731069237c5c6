"""Target 1: the embedding stage runs at >= 90% of the bare model's forward rate.

Bare: `model.encode_image` on batches already decoded, preprocessed and stacked in memory.
Stage: the embedding stage's image path (`embeddings._embed_images`: DataLoader decoding
JPEGs with `workers` processes, preprocessing, forward, normalisation, conversion and commits
to a fresh feature store). Same model, batch size and images; measured in one process,
interleaved (bare, stage w=0, w=1, w=2, ..., bare again), the faster bare run is the reference.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import common
import torch
from common import Report, Timer, Verdict
from PIL import Image

GOAL = 0.90


def _bare(model, batches) -> float:
    with Timer() as t, torch.inference_mode():
        for x in batches:
            model.encode_image(x)
    return t.seconds


def _stage(loaded, paths, workers: int, batch_size: int, tmp: Path) -> float:
    from rsm_eval import embeddings
    from rsm_eval.featstore import FeatureStore

    store = FeatureStore(Path(tempfile.mkdtemp(dir=tmp)), "bench", "image")
    keys = [f"{i:064x}" for i in range(len(paths))]
    writer = embeddings._ChunkWriter(store, len(keys), chunk_rows=2048, what="images")
    with Timer() as t:
        embeddings._embed_images(loaded, paths, keys, writer, "cpu", batch_size, workers, False)
    assert len(store.index(refresh=True)) == len(keys)
    return t.seconds


def run(
    report: Report,
    *,
    images: list[Path],
    layers: int,
    batch_size: int,
    workers_options: tuple[int, ...],
    tmp: Path,
) -> int:
    """Returns the number of loader workers that gave the fastest stage on this machine."""
    from rsm_eval import models
    from rsm_eval.config import Model

    bench = "1 embed"
    cfg = common.write_model_config(tmp / f"clip-{layers}l.json", layers)
    loaded = models.build(Model(name="bench", arch=str(cfg), random=0), "cpu")
    n = len(images)
    report.add(bench, "model", common.model_label(layers))
    report.add(bench, "images, batch size", f"{n} JPEG 224x224, batch {batch_size}")
    decoded = [loaded.preprocess(Image.open(p).convert("RGB")) for p in images]
    batches = [torch.stack(decoded[s : s + batch_size]) for s in range(0, n, batch_size)]
    with torch.inference_mode():  # warm-up: first-call allocations and kernel selection
        loaded.model.encode_image(batches[0][:2])

    bare = [_bare(loaded.model, batches)]
    stage: dict[int, float] = {}
    for w in workers_options:
        stage[w] = _stage(loaded, images, w, batch_size, tmp)
    bare.append(_bare(loaded.model, batches))
    bare_rate = n / min(bare)
    report.add(
        bench,
        "bare forward rate",
        bare_rate,
        "img/s",
        f"best of 2 runs ({n / max(bare):.2f} and {bare_rate:.2f} img/s)",
    )
    for w, s in stage.items():
        report.add(bench, f"stage rate, workers={w}", n / s, "img/s", f"{n / s / bare_rate:.1%}")
    best = min(stage, key=stage.get)
    ratio = n / stage[best] / bare_rate
    report.add(bench, "best stage / bare", ratio, "", f"workers={best}")
    report.verdicts.append(
        Verdict(
            "1 embedding stage >= 90% of bare forward",
            f">= {GOAL:.0%}",
            f"{ratio:.1%} (workers={best}); "
            + ", ".join(f"w={w}: {n / s / bare_rate:.1%}" for w, s in stage.items()),
            ratio >= GOAL,
            f"on {torch.get_num_threads()} torch threads, {n} images, batch {batch_size}",
        )
    )
    return best
