"""Shared pieces of the benchmarks: machine description, timing, synthetic data, models.

Nothing here is timed itself. Data are generated deterministically (numpy seeds), so two runs
on one machine measure the same work.
"""

from __future__ import annotations

import json
import os
import platform
import socket
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT / "workflow") not in sys.path:
    sys.path.insert(0, str(ROOT / "workflow"))


# ----------------------------------------------------------------------------- results


@dataclass
class Row:
    """One figure of a benchmark: what, value, unit, and a note on how it was measured."""

    bench: str
    what: str
    value: Any
    unit: str = ""
    note: str = ""


@dataclass
class Verdict:
    """A target, the measured figure it is judged on, and whether it is met."""

    target: str
    goal: str
    measured: str
    met: bool | None  # None: not measured in this run
    why: str = ""


@dataclass
class Report:
    rows: list[Row] = field(default_factory=list)
    verdicts: list[Verdict] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add(self, bench: str, what: str, value: Any, unit: str = "", note: str = "") -> None:
        self.rows.append(Row(bench, what, value, unit, note))
        print(f"  {what}: {fmt(value)} {unit}  {note}".rstrip(), flush=True)


def fmt(value: Any) -> str:
    if isinstance(value, float):
        if value == 0:
            return "0"
        if abs(value) >= 100:
            return f"{value:,.0f}"
        if abs(value) >= 1:
            return f"{value:.2f}"
        return f"{value:.3g}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


# ----------------------------------------------------------------------------- machine


def _cpu_model() -> str:
    """'AMD EPYC (family 25, model 17; avx2; virtualised)' from /proc/cpuinfo."""
    fields: dict[str, str] = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            fields.setdefault(key.strip(), value.strip())
    except OSError:
        return platform.processor() or platform.machine()
    flags = set(fields.get("flags", "").split())
    simd = [f for f in ("avx512f", "avx2") if f in flags][:1]
    extra = [f"family {fields['cpu family']}, model {fields['model']}"] if "model" in fields else []
    extra += simd + (["virtualised"] if "hypervisor" in flags else [])
    name = fields.get("model name") or platform.machine()
    return f"{name} ({'; '.join(extra)})" if extra else name


def _mem_total_gib() -> float:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / 2**20
    except OSError:
        pass
    return float("nan")


def _version(dist: str) -> str:
    from importlib import metadata

    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "absent"


def machine() -> dict[str, Any]:
    import torch

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        usable = os.cpu_count()
    return {
        "date": datetime.now().astimezone().isoformat(timespec="seconds"),
        "host": socket.gethostname(),
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "usable cores": usable,
        "torch threads": torch.get_num_threads(),
        "memory (GiB)": round(_mem_total_gib(), 1),
        "gpu": gpu,
        "os": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "open_clip": _version("open_clip_torch"),
        "snakemake": _version("snakemake"),
        "pillow": _version("pillow"),
    }


def load_average() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "n/a"


# ----------------------------------------------------------------------------- timing


class Timer:
    def __enter__(self) -> Timer:
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        self.seconds = time.perf_counter() - self.start


# ----------------------------------------------------------------------------- models


def clip_config(layers: int, image_size: int = 224) -> dict[str, Any]:
    """ViT-B-32's open_clip config (widths, heads, patch, context, QuickGELU) with `layers`
    transformer blocks in each tower instead of 12."""
    return {
        "embed_dim": 512,
        "quick_gelu": True,
        "vision_cfg": {
            "image_size": image_size,
            "layers": layers,
            "width": 768,
            "patch_size": 32,
        },
        "text_cfg": {
            "context_length": 77,
            "vocab_size": 49408,
            "width": 512,
            "heads": 8,
            "layers": layers,
        },
    }


def write_model_config(path: Path, layers: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(clip_config(layers), indent=1))
    return path


def model_label(layers: int) -> str:
    if layers == 12:
        return "ViT-B-32 (QuickGELU, random init)"
    return f"ViT-B-32-like, {layers} layer(s) per tower (random init)"


# ----------------------------------------------------------------------------- data

_WORDS = {
    "count": ["many", "some", "several", "a few", "two", "three", "four", "lots of", "a lot of"],
    "adj": [
        "green",
        "dense",
        "white",
        "grey",
        "large",
        "small",
        "red",
        "tall",
        "square",
        "curved",
        "dark",
        "bare",
        "yellow",
        "blue",
        "old",
        "new",
    ],
    "noun": [
        "buildings",
        "trees",
        "houses",
        "cars",
        "roads",
        "ponds",
        "storage tanks",
        "planes",
        "boats",
        "fields",
        "factories",
        "bridges",
        "paths",
        "lawns",
        "rooftops",
        "containers",
        "ships",
        "courts",
        "runways",
    ],
    "prep": ["near", "beside", "around", "in", "on both sides of", "next to", "along", "across"],
    "place": [
        "a playground",
        "a river",
        "the farmland",
        "an airport",
        "a parking lot",
        "a dense residential area",
        "a baseball field",
        "the beach",
        "a railway station",
        "a church",
        "the desert",
        "a harbor",
        "a square",
        "a stadium",
        "an industrial area",
        "the mountain",
        "a viaduct",
        "a school",
        "a commercial area",
        "a forest",
    ],
}


def _clause(rng: np.random.Generator) -> str:
    w = _WORDS
    parts = [str(rng.choice(w["count"]))]
    if rng.random() < 0.7:
        parts.append(str(rng.choice(w["adj"])))
    parts.append(str(rng.choice(w["noun"])))
    parts += ["are", str(rng.choice(w["prep"])), str(rng.choice(w["place"]))]
    return " ".join(parts)


def caption(rng: np.random.Generator) -> str:
    """An RSICD-like caption: 1-3 clauses, ~8-35 words, like 'many green trees are around a
    playground and some cars are parked near it .'"""
    n = int(rng.choice([1, 1, 1, 2, 2, 3]))
    text = " and ".join(_clause(rng) for _ in range(n))
    return text + " ."


def distinct_counts(rng: np.random.Generator, n_images: int, n_distinct: int) -> list[int]:
    """Distinct captions per image (1..5) summing to `n_distinct`; RSICD pads the rest of each
    image's five captions with copies."""
    if not n_images <= n_distinct <= 5 * n_images:
        raise ValueError("need n_images <= n_distinct <= 5 * n_images")
    counts = rng.choice([1, 2, 3, 4, 5], size=n_images, p=[0.3, 0.1, 0.15, 0.1, 0.35])
    while counts.sum() != n_distinct:
        i = int(rng.integers(n_images))
        if counts.sum() > n_distinct and counts[i] > 1:
            counts[i] -= 1
        elif counts.sum() < n_distinct and counts[i] < 5:
            counts[i] += 1
    return [int(c) for c in counts]


def aerial_image(rng: np.random.Generator, size: int = 224) -> Any:
    """A 224x224 RGB image with smooth structure and fine texture (JPEG ~15-30 KB at q=90,
    like RSICD's photos)."""
    from PIL import Image

    low = rng.integers(0, 256, size=(8, 8, 3), dtype=np.uint8)
    img = Image.fromarray(low).resize((size, size), Image.BICUBIC)
    arr = np.asarray(img, dtype=np.int16)
    arr = arr + rng.normal(0, 10, size=arr.shape).astype(np.int16)
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))


@dataclass
class Benchmark:
    """A generated Karpathy-style benchmark: annotations, image folder and its counts."""

    root: Path
    annotations: Path
    images: Path
    n_images: int
    n_captions: int
    n_distinct: int


def make_benchmark(
    out: Path,
    *,
    n_images: int,
    n_distinct: int,
    seed: int = 0,
    name: str = "bench",
    start: int = 0,
) -> Benchmark:
    """RSICD-shaped test split: `n_images` JPEGs, five captions each, `n_distinct` distinct
    caption strings (padding copies within an image). Image i is `{name}_{start+i:05d}.jpg`."""
    images = out / "images"
    images.mkdir(parents=True, exist_ok=True)
    crng = np.random.default_rng([seed, 1])
    counts = distinct_counts(crng, n_images, n_distinct)
    entries = []
    seen: set[str] = set()
    for i, d in enumerate(counts):
        idx = start + i
        fname = f"{name}_{idx:05d}.jpg"
        path = images / fname
        if not path.exists():
            aerial_image(np.random.default_rng([seed, 2, idx])).save(path, quality=90)
        rng = np.random.default_rng([seed, 3, idx])
        caps: list[str] = []
        while len(caps) < d:
            c = caption(rng)
            if c not in seen:
                seen.add(c)
                caps.append(c)
        caps += [caps[j % d] for j in range(5 - d)]
        entries.append(
            {
                "filename": fname,
                "imgid": idx,
                "split": "test",
                "sentences": [{"raw": c, "sentid": 5 * idx + j} for j, c in enumerate(caps)],
            }
        )
    ann = out / f"dataset_{name}.json"
    ann.write_text(json.dumps({"dataset": name, "images": entries}))
    return Benchmark(out, ann, images, n_images, 5 * n_images, len(seen))


def dataset(bench: Benchmark, name: str = "bench") -> Any:
    from rsm_eval.config import Dataset

    return Dataset(
        name=name,
        format="karpathy-json",
        annotations=str(bench.annotations),
        images=str(bench.images),
        split="test",
    )


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1
