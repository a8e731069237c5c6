"""Scene classification through the workflow at PatternNet's shape (38 classes x 800 images).

Generates a class-folder dataset of 256-px JPEGs, then runs Snakemake on it stage by stage
(manifest, image features, zero-shot with the 105 GeoRSCLIP templates, linear probes) with a
ViT-B-32-like model of one layer per tower, and reports images/s of each stage and the peak
resident memory of the largest process (ru_maxrss of the waited-for children: Snakemake or
one of its jobs). `--quick` uses 38 x 20 images.

    python benchmarks/bench_scenes.py [--quick]
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

import common  # noqa: E402
from common import Report  # noqa: E402

N_CLASSES = 38


def _dataset(root: Path, per_class: int) -> int:
    rng = np.random.default_rng(0)
    for c in range(N_CLASSES):
        folder = root / f"class_{c:02d}"
        folder.mkdir(parents=True)
        for i in range(per_class):
            common.aerial_image(rng, 256).save(folder / f"{i:04d}.jpg", quality=90)
    return N_CLASSES * per_class


def _snakemake(work: Path, target: str) -> float:
    cmd = [sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"), "--directory",
           str(work), "--configfile", str(work / "config.yaml"), "--cores", "2",
           "--until", target]  # fmt: skip
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=common_env())
    if proc.returncode != 0:
        raise SystemExit(proc.stdout[-3000:] + proc.stderr[-3000:])
    return time.perf_counter() - t0


def common_env() -> dict[str, str]:
    import os

    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return env


def run(report: Report, tmp: Path, *, quick: bool) -> dict:
    per_class = 20 if quick else 800
    t0 = time.perf_counter()
    n = _dataset(tmp / "scenes", per_class)
    report.add("scenes", "generated images", n, "", f"{N_CLASSES} classes, 256 px JPEG")
    report.add("scenes", "generation", round(time.perf_counter() - t0, 1), "s")
    arch = common.write_model_config(tmp / "model.json", layers=1)
    config = {
        "cache_dir": str(tmp / "cache"),
        "datasets": {
            "bench": {
                "format": "class-folders",
                "images": str(tmp / "scenes"),
                "expected": {"all": {"classes": N_CLASSES, "images": n, "per_class": per_class}},
                "templates": ["georsclip"],
            }
        },
        "models": {"m": {"arch": str(arch), "random": 0}},
        "classification": {"linear_probe": {"shots": [1, 2, 4, 8, 16], "seeds": 3}},
        "embed": {"batch_size": 64, "workers": 1, "device": "auto"},
    }
    (tmp / "config.yaml").write_text(json.dumps(config))
    out = {}
    for stage, target in (("manifest", "scene_manifest"), ("features", "scene_features"),
                          ("zero-shot", "zeroshot"), ("linear probe", "linear_probe")):  # fmt: skip
        seconds = _snakemake(tmp, target)
        out[stage] = seconds
        report.add("scenes", f"{stage} (Snakemake job incl. start-up)", round(seconds, 1), "s",
                   f"{n / seconds:.1f} images/s")  # fmt: skip
    meta = json.loads(
        __import__("pyarrow.parquet", fromlist=["x"])
        .read_schema(tmp / "results/scenes/bench/features/m.parquet")
        .metadata[b"rsm_eval"]
    )
    report.add("scenes", "image features, embedding only", meta["images_per_second"], "images/s",
               f"{meta['images_computed']} images, {common.model_label(1)}")  # fmt: skip
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    report.add("scenes", "peak RSS of the largest process", round(peak), "MiB")
    out["peak_rss_mib"] = peak
    return out


if __name__ == "__main__":
    rep = Report()
    with tempfile.TemporaryDirectory() as d:
        run(rep, Path(d), quick="--quick" in sys.argv)
