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


def text_rates(report: Report, loaded, texts: list[str], batch_size: int) -> dict[str, float]:
    """Text tower: every batch at 77 tokens vs the stage's way (sorted by length, trimmed)."""
    from rsm_eval import embeddings

    bench = "1 embed"
    tokens = loaded.tokenizer(texts)
    order = torch.argsort(tokens.argmax(dim=-1), stable=True)
    with torch.inference_mode():
        loaded.model.encode_text(tokens[:2])  # warm-up
        with Timer() as full_t:
            full = torch.cat(
                [
                    loaded.model.encode_text(tokens[s : s + batch_size])
                    for s in range(0, len(texts), batch_size)
                ]
            )
        with Timer() as trim_t:
            trimmed = torch.empty_like(full)
            for s in range(0, len(texts), batch_size):
                rows = order[s : s + batch_size]
                trimmed[rows] = embeddings.encode_text_trimmed(loaded.model, tokens[rows])
    norm = torch.nn.functional.normalize
    diff = float((norm(full, dim=-1) - norm(trimmed, dim=-1)).abs().max())
    cos = float((1 - (norm(full, dim=-1) * norm(trimmed, dim=-1)).sum(-1)).max())
    n = len(texts)
    rates = {"full": n / full_t.seconds, "trimmed": n / trim_t.seconds}
    report.add(bench, "text rate, 77 tokens", rates["full"], "captions/s", f"{n} captions")
    report.add(
        bench,
        "text rate, sorted + trimmed",
        rates["trimmed"],
        "captions/s",
        f"{rates['trimmed'] / rates['full']:.1f}x; max |diff| {diff:.1e}, max 1-cos {cos:.1e}",
    )
    return rates


def run(
    report: Report,
    *,
    images: list[Path],
    texts: list[str],
    layers: int,
    batch_size: int,
    workers_options: tuple[int, ...],
    tmp: Path,
) -> dict:
    """Returns the figures [2] and the extrapolations use: the fastest workers setting, image
    rates (bare, stage) and text rates (full, trimmed)."""
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
    rates = text_rates(report, loaded, texts, 64)
    return {
        "workers": best,
        "bare_rate": bare_rate,
        "stage_rate": n / stage[best],
        "text_full": rates["full"],
        "text_trimmed": rates["trimmed"],
        "label": common.model_label(layers),
    }
