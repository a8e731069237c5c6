"""Semantic-localization stage: similarity maps of AIR-SLT captions over their scenes, and the
Rsu / Ras / Rda / Rmi metrics per query and overall, with bootstrap intervals over queries.

Every crop is embedded once per model, through the content-keyed feature store: its key is
the digest of the scene's sha256, its window and the crop recipe (`selo_maps.crop_key`), so a
second caption on a scene, a rerun or a new metric costs no image forward pass, and a caption
already embedded (by this stage or any other) costs no text forward pass. Crops exist only in
memory, one batch at a time; one scene is decoded at a time.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from . import airslt, cas, embeddings, models, selo_maps, selo_metrics
from .config import Model
from .errors import RsmEvalError
from .featstore import FeatureStore

METRICS = ("rsu", "ras", "rda", "rmi")
DEFAULT_PARAMS = {
    "windows": list(selo_maps.WINDOWS),
    "crop_size": selo_maps.CROP_SIZE,
    "crop_jpeg_quality": selo_maps.JPEG_QUALITY,
    "median_blur": selo_maps.MEDIAN_BLUR,
    "probmap_jpeg_quality": selo_maps.JPEG_QUALITY,
}


def bootstrap(values: list[float], n_resamples: int, seed: int, level: float) -> dict[str, Any]:
    """Mean and percentile bootstrap interval over queries (scipy.stats.bootstrap)."""
    from scipy import stats

    arr = np.asarray(values, dtype=np.float64)
    out: dict[str, Any] = {"mean": float(arr.mean()), "ci_low": None, "ci_high": None}
    if len(arr) >= 2 and np.ptp(arr) > 0:
        res = stats.bootstrap(
            (arr,),
            np.mean,
            n_resamples=n_resamples,
            confidence_level=level,
            method="percentile",
            rng=np.random.default_rng(seed),
        )
        out["ci_low"] = float(res.confidence_interval.low)
        out["ci_high"] = float(res.confidence_interval.high)
    elif len(arr) >= 2:
        out["ci_low"] = out["ci_high"] = out["mean"]
    return out


class _Embedder:
    """The model, built on first need, and its image and text stores."""

    def __init__(self, model: Model, cache_dir: Path, device: str, batch_size: int):
        self.model, self.device_pref, self.batch_size = model, device, batch_size
        self.address = models.address(model)
        self.images = FeatureStore(cache_dir, self.address, "image")
        self.texts = FeatureStore(cache_dir, self.address, "text")
        self.loaded: models.Loaded | None = None
        self.device = "none (all rows cached)"
        self.computed = {"crops": 0, "texts": 0}

    def net(self) -> models.Loaded:
        if self.loaded is None:
            self.device = models.choose_device(self.device_pref)
            print(
                f"model {self.model.name}: address {self.address}, device {self.device}",
                file=sys.stderr,
            )
            self.loaded = models.build(self.model, self.device)
        return self.loaded

    def _fetch(self, store: FeatureStore, keys: list[str], compute) -> np.ndarray:
        missing = store.missing(keys)
        if missing:
            compute(missing)
        feats, bad = store.fetch(keys)
        if bad:  # a chunk failed its checksum: recompute its rows once
            compute(bad)
            feats, bad = store.fetch(keys)
        if feats is None or bad:
            raise RsmEvalError(f"feature store {store.root}: rows still missing after recompute")
        return feats

    def crops(self, scene: Path, boxes: list, keys: list[str], spec: dict) -> np.ndarray:
        def compute(missing: list[str]) -> None:
            import torch

            self.computed["crops"] += len(missing)
            net = self.net()
            box_of = dict(zip(keys, boxes, strict=True))
            bgr = selo_maps.read_scene(scene)
            writer = embeddings._ChunkWriter(self.images, len(missing), 2048, "crops")
            batches = selo_maps.crop_batches(
                bgr, [box_of[k] for k in missing], missing, net.preprocess, spec, self.batch_size
            )

            def encode(x):
                return net.model.encode_image(x.to(self.device, non_blocking=True))

            with torch.inference_mode():
                embeddings._run_batches(batches, encode, writer, self.device, "crops", 0)

        return self._fetch(self.images, keys, compute)

    def captions(self, texts: list[str]) -> np.ndarray:
        keys = [embeddings.text_key(t) for t in texts]
        text_of = dict(zip(keys, texts, strict=True))

        def compute(missing: list[str]) -> None:
            self.computed["texts"] += len(missing)
            writer = embeddings._ChunkWriter(self.texts, len(missing), 2048, "captions")
            embeddings._embed_texts(
                self.net(),
                [text_of[k] for k in missing],
                missing,
                writer,
                self.device,
                self.batch_size,
                0,
                False,
            )

        unique = list(dict.fromkeys(keys))
        feats = self._fetch(self.texts, unique, compute)
        pos = {k: i for i, k in enumerate(unique)}
        return feats[[pos[k] for k in keys]]


def query_record(
    layout: selo_maps.Layout, scores: np.ndarray, query: airslt.Query, params: dict
) -> tuple[dict[str, Any], np.ndarray]:
    """Metrics of one query from its crop scores (cosine per window), and its uint8 map."""
    gray, flat = selo_maps.probability_map(
        layout, scores, median=params["median_blur"], jpeg_quality=params["probmap_jpeg_quality"]
    )
    record = {
        "query": query.index,
        "caption": query.caption,
        "image": query.image,
        "n_regions": len(query.polygons),
        "flat_map": flat,
        **selo_metrics.evaluate(gray, query.polygons),
    }
    return record, gray


def figure(
    scene_bgr: np.ndarray,
    gray: np.ndarray,
    record: dict,
    polygons: list,
    dest: Path,
    max_side: int = 900,
) -> None:
    """The heat map over its scene (the reference's JET overlay, 0.7 / 0.3), the annotated
    polygons (green), the regions' circles (yellow) and the predicted centres (white)."""
    import cv2

    h, w = gray.shape
    scale = min(1.0, max_side / max(h, w))
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    small = cv2.resize(scene_bgr, size, interpolation=cv2.INTER_AREA)
    heat = cv2.applyColorMap(cv2.resize(gray, size, interpolation=cv2.INTER_AREA), cv2.COLORMAP_JET)
    img = cv2.addWeighted(small, 0.7, heat, 0.3, 0)
    pts = [np.round(np.array(p, dtype=np.float64) * scale).astype(np.int32) for p in polygons]
    cv2.polylines(img, pts, isClosed=True, color=(0, 255, 0), thickness=2)
    for x, y, r in record["circles"]:
        cv2.circle(
            img, (round(x * scale), round(y * scale)), max(1, round(r * scale)), (0, 255, 255), 1
        )
    for x, y in record["centres"]:
        cv2.drawMarker(
            img, (round(x * scale), round(y * scale)), (255, 255, 255), cv2.MARKER_CROSS, 14, 2
        )
    ok, buf = cv2.imencode(".png", img)
    if not ok:
        raise RsmEvalError(f"{dest}: cannot encode the figure")
    with cas.atomic_path(dest, suffix=".png") as tmp:
        tmp.write_bytes(buf.tobytes())


def run(
    model: Model,
    annotations: Path,
    images_dir: Path,
    out: Path,
    figures_dir: Path,
    *,
    dataset: str,
    params: dict[str, Any] | None = None,
    expected: dict[str, int] | None = None,
    n_figures: int = 3,
    n_resamples: int = 1000,
    seed: int = 0,
    level: float = 0.95,
    threads: int | None = None,
    code: str = "",
    published: str = "",
    **run: Any,
) -> dict[str, Any]:
    """Localize every query of the dataset with one model; write the record and figures.
    `run`: the fields of :class:`rsm_eval.embeddings.FeatureRun` (cache_dir, device,
    batch_size)."""
    if threads:
        import cv2
        import torch

        torch.set_num_threads(threads)
        cv2.setNumThreads(threads)
    t0 = time.monotonic()
    params = {**DEFAULT_PARAMS, **(params or {})}
    queries = airslt.load_queries(annotations)
    info = airslt.validate(queries, images_dir, expected, min_size=max(params["windows"]))
    spec = selo_maps.crop_spec(params["crop_size"], params["crop_jpeg_quality"])
    opts = embeddings.FeatureRun(**run)
    emb = _Embedder(model, Path(opts.cache_dir), opts.device, opts.batch_size)
    text_feats = emb.captions([q.caption for q in queries])
    t_text = time.monotonic()

    by_image: dict[str, list[airslt.Query]] = {}
    for q in queries:
        by_image.setdefault(q.image, []).append(q)
    figures_dir.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []
    scenes, figures = [], []
    t_crops = t_maps = 0.0
    for name, qs in by_image.items():
        scene = Path(images_dir) / name
        w, h = info["sizes"][name]
        layout = selo_maps.Layout.of(h, w, params["windows"])
        sha = cas.memo().file(scene)
        keys = [selo_maps.crop_key(sha, b, spec) for b in layout.boxes.tolist()]
        ts = time.monotonic()
        feats = emb.crops(scene, layout.boxes.tolist(), keys, spec)
        t_crops += time.monotonic() - ts
        scenes.append(
            {
                "image": name,
                "sha256": sha,
                "width": w,
                "height": h,
                "windows": len(keys),
                "cells": int(layout.counts.size),
            }
        )
        bgr = None
        for q in qs:
            ts = time.monotonic()
            record, gray = query_record(layout, feats @ text_feats[q.index], q, params)
            t_maps += time.monotonic() - ts
            rows.append(record)
            if q.index < n_figures:
                bgr = selo_maps.read_scene(scene) if bgr is None else bgr
                dest = figures_dir / f"query-{q.index:03d}.png"
                figure(bgr, gray, record, q.polygons, dest)
                figures.append({"query": q.index, "file": dest.name})
            print(
                f"query {q.index} ({name}): " + ", ".join(f"{m} {record[m]:.4f}" for m in METRICS),
                file=sys.stderr,
            )
        del bgr
    rows.sort(key=lambda r: r["query"])
    overall = {m: bootstrap([r[m] for r in rows], n_resamples, seed, level) for m in METRICS}
    record = {
        "stage": "localize",
        "code": code,
        "model": model.name,
        "model_label": model.label or model.name,
        "model_published": model.published,
        "model_address": emb.address,
        "dataset": dataset,
        "dataset_published": published or dataset,
        "device": emb.device,
        "params": params,
        "crop_spec": spec,
        "counts": info["counts"],
        "windows": sum(s["windows"] for s in scenes),
        "crops_computed": emb.computed["crops"],
        "texts_computed": emb.computed["texts"],
        "seconds": {
            "texts": round(t_text - t0, 3),
            "crops": round(t_crops, 3),
            "maps_and_metrics": round(t_maps, 3),
            "total": round(time.monotonic() - t0, 3),
        },
        "bootstrap": {"n_resamples": n_resamples, "seed": seed, "level": level},
        "metrics": overall,
        "scenes": scenes,
        "queries": rows,
        "figures": figures,
        "figures_dir": str(figures_dir),
    }
    cas.write_json_atomic(out, record)
    return record
