"""Cost of the semantic-localization stage, measured on a generated scene and extrapolated to
AIR-SLT (22 scenes of 3k x 2k to 10k x 10k px, 59 captions).

    python benchmarks/bench_localize.py                       # 3000 x 2000 scene, ViT-B-32
    python benchmarks/bench_localize.py --map-size 10000x10000  # one full-size map as well
    python benchmarks/bench_localize.py --anno anno.json --images imgs/  # real scene sizes

Per scene the stage decodes the scene, cuts, resizes, JPEG-round-trips and preprocesses every
window (crop preparation) and runs the image tower on it (forward): both once per model, as
the crops are then in the feature store. Per caption it builds the map, blurs it and computes
the metrics (map + metrics), which scales with the scene's pixels. Windows are counted exactly
with the stage's own `selo_maps.windows` for each scene size; the per-crop and per-pixel
rates come from this run. Peak memory of the map + metrics step is measured in a child process.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import common  # noqa: E402

SMALLEST, LARGEST = (3000, 2000), (10000, 10000)  # AIR-SLT's range (width x height)
N_SCENES, N_QUERIES = 22, 59


def _size(text: str) -> tuple[int, int]:
    w, h = text.lower().split("x")
    return int(w), int(h)


def map_child(width: int, height: int) -> dict:
    """One caption's map + metrics on a width x height scene, in this (fresh) process."""
    import numpy as np
    from bench_score import peak_rss_mib
    from rsm_eval import demo_scene, selo_maps, selo_metrics

    layout = selo_maps.Layout.of(height, width)
    polys = demo_scene.scene_objects(width, height)["roofs"]
    rng = np.random.default_rng(0)
    scores = rng.normal(0.2, 0.02, len(layout.boxes))
    t0 = time.perf_counter()
    gray, _ = selo_maps.probability_map(layout, scores)
    t1 = time.perf_counter()
    selo_metrics.evaluate(gray, polys)
    t2 = time.perf_counter()
    return {
        "windows": len(layout.boxes),
        "cells": int(layout.counts.size),
        "map_s": t1 - t0,
        "metrics_s": t2 - t1,
        "peak_rss_mib": peak_rss_mib(),
    }


def _run_child(width: int, height: int) -> dict:
    out = subprocess.run(
        [sys.executable, __file__, "child", str(width), str(height)],
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def crop_rates(width: int, height: int, layers: int, batch: int, device: str) -> dict:
    """Crop preparation and forward rates over every window of one generated scene."""
    import torch
    from rsm_eval import demo_scene, models, selo_maps
    from rsm_eval.config import Model

    tmp = Path(tempfile.mkdtemp(prefix="bench-localize-"))
    demo_scene.generate(tmp, width=width, height=height)
    scene = tmp / "imgs" / "0.jpg"
    arch = common.write_model_config(tmp / "vit.json", layers)
    loaded = models.build(Model(name="bench", arch=str(arch), random=0), device)
    spec = selo_maps.crop_spec()
    with common.Timer() as t_dec:
        bgr = selo_maps.read_scene(scene)
    boxes = selo_maps.windows(*bgr.shape[:2])
    keys = [str(i) for i in range(len(boxes))]
    prep = fwd = 0.0
    batches = selo_maps.crop_batches(bgr, boxes, keys, loaded.preprocess, spec, batch)
    with torch.inference_mode():
        while True:
            t0 = time.perf_counter()
            item = next(batches, None)
            prep += time.perf_counter() - t0
            if item is None:
                break
            t0 = time.perf_counter()
            feats = loaded.model.encode_image(item[1].to(device))
            feats.cpu()
            fwd += time.perf_counter() - t0
    del bgr
    return {
        "crops": len(boxes),
        "decode_s": t_dec.seconds,
        "prep_per_crop_s": prep / len(boxes),
        "fwd_per_crop_s": fwd / len(boxes),
        "label": common.model_label(layers),
    }


def real_sizes(anno: Path | None, images: Path | None):
    """(scene sizes, each query's scene size) of a real anno.json, from the image headers."""
    if anno is None or images is None:
        return None
    from rsm_eval import airslt

    queries = airslt.load_queries(anno)
    size = {n: airslt.image_size(images / n) for n in sorted({q.image for q in queries})}
    return list(size.values()), [size[q.image] for q in queries]


def main(argv: list[str] | None = None) -> int:
    if argv is None and len(sys.argv) > 1 and sys.argv[1] == "child":
        print(json.dumps(map_child(int(sys.argv[2]), int(sys.argv[3]))))
        return 0
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--scene", type=_size, default=SMALLEST, help="generated scene, WxH")
    p.add_argument("--map-size", type=_size, default=None, help="also time one map at WxH")
    p.add_argument("--layers", type=int, default=12, help="ViT-B-32 layers (12 = ViT-B-32)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--anno", type=Path, default=None, help="a real anno.json, for its sizes")
    p.add_argument("--images", type=Path, default=None)
    p.add_argument("--json", type=Path, default=None, help="write the figures here")
    args = p.parse_args(argv)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    from rsm_eval import selo_maps

    w, h = args.scene
    print(f"machine: {json.dumps(common.machine())}", flush=True)
    rates = crop_rates(w, h, args.layers, args.batch_size, args.device)
    small = _run_child(w, h)
    maps = {(w, h): small}
    if args.map_size:
        maps[args.map_size] = _run_child(*args.map_size)
    per_px = max((m["map_s"] + m["metrics_s"]) / (sz[0] * sz[1]) for sz, m in maps.items())
    per_crop = rates["prep_per_crop_s"] + rates["fwd_per_crop_s"]

    def scene_cost(sw: int, sh: int, queries: float) -> tuple[int, float, float]:
        n = len(selo_maps.windows(sh, sw))
        return n, n * per_crop, queries * per_px * sw * sh

    out = {
        "scene": [w, h],
        "device": args.device,
        "rates": rates,
        "maps": {f"{a}x{b}": m for (a, b), m in maps.items()},
    }
    print(
        f"\n{rates['label']} on {args.device}, scene {w} x {h}: {rates['crops']} windows, "
        f"decode {rates['decode_s']:.2f} s, crop preparation {1e3 * rates['prep_per_crop_s']:.1f}"
        f" ms/crop, forward {1e3 * rates['fwd_per_crop_s']:.1f} ms/crop"
    )
    for (a, b), m in maps.items():
        print(
            f"map + metrics at {a} x {b}: {m['map_s']:.2f} + {m['metrics_s']:.2f} s per caption, "
            f"peak RSS {m['peak_rss_mib']:.0f} MiB, {m['windows']} windows, {m['cells']} cells"
        )
    per_q = N_QUERIES / N_SCENES
    rows = []
    for label, (sw, sh) in (("smallest", SMALLEST), ("largest", LARGEST)):
        n, crops_s, maps_s = scene_cost(sw, sh, per_q)
        rows.append((label, sw, sh, n, crops_s, maps_s))
        print(
            f"one {label} AIR-SLT scene ({sw} x {sh}): {n} windows -> crops {crops_s:.0f} s "
            f"once per model, maps {maps_s / per_q:.1f} s per caption"
        )
    lo = N_SCENES * (rows[0][4] + rows[0][5])
    hi = N_SCENES * (rows[1][4] + rows[1][5])
    out["extrapolated_bounds_s"] = [lo, hi]
    print(
        f"AIR-SLT, all 22 scenes at the smallest / largest size ({per_q:.2f} captions each): "
        f"{lo / 60:.0f} - {hi / 60:.0f} min per model on this machine (first run; a rerun "
        f"with every crop cached costs the maps only: "
        f"{N_SCENES * rows[0][5] / 60:.1f} - {N_SCENES * rows[1][5] / 60:.1f} min)"
    )
    real = real_sizes(args.anno, args.images)
    if real:
        scenes, per_query = real
        total_windows = sum(len(selo_maps.windows(sh, sw)) for sw, sh in scenes)
        est = total_windows * per_crop + sum(per_px * sw * sh for sw, sh in per_query)
        out["real"] = {"scenes": len(scenes), "windows": total_windows, "estimate_s": est}
        print(f"real AIR-SLT sizes: {total_windows} windows in all, about {est / 60:.0f} min")
    if args.json:
        args.json.write_text(json.dumps(out, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
