"""A small generated semantic-localization set in AIR-SLT's layout, for the demo and tests.

`<out>/annotations/anno.json` and `<out>/imgs/<n>.jpg`: each scene is a field texture with
planted objects of distinct colours (a lake, red-roofed building blocks, a runway), and one
caption per object kind whose polygons are the planted shapes' outlines, so a query can have
one region or several. Deterministic for a seed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import cv2
import numpy as np

from . import cas

# (caption, BGR colour) of each planted object kind.
KINDS = {
    "lake": ("a dark blue lake surrounded by green farmland", (140, 60, 20)),
    "roofs": ("two blocks of buildings with red roofs", (40, 40, 200)),
    "runway": ("a long bright runway of an airport", (235, 235, 235)),
}


def _ellipse(cx: float, cy: float, ax: float, ay: float, n: int = 24) -> list[list[float]]:
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    return [[float(cx + ax * np.cos(a)), float(cy + ay * np.sin(a))] for a in t]


def _rect(x0: float, y0: float, x1: float, y1: float) -> list[list[float]]:
    return [[x0, y0], [x1, y0], [x1, y1], [x0, y1]]


def scene_objects(width: int, height: int) -> dict[str, list[list[list[float]]]]:
    """The planted polygons per kind, placed by fractions of the scene size."""
    w, h = float(width), float(height)
    return {
        "lake": [_ellipse(0.25 * w, 0.3 * h, 0.12 * w, 0.16 * h)],
        "roofs": [
            _rect(0.62 * w, 0.12 * h, 0.80 * w, 0.34 * h),
            _rect(0.60 * w, 0.66 * h, 0.78 * w, 0.88 * h),
        ],
        "runway": [_rect(0.08 * w, 0.74 * h, 0.46 * w, 0.82 * h)],
    }


def render_scene(width: int, height: int, seed: int) -> tuple[np.ndarray, dict]:
    rng = np.random.default_rng(seed)
    base = np.array([60, 130, 80], dtype=np.float32)  # green fields (BGR)
    small = rng.normal(0, 18, size=(height // 16 + 1, width // 16 + 1, 3)).astype(np.float32)
    texture = cv2.resize(small, (width, height), interpolation=cv2.INTER_CUBIC)
    noise = rng.normal(0, 6, size=(height, width, 3)).astype(np.float32)
    img = np.clip(base + texture + noise, 0, 255).astype(np.uint8)
    objects = scene_objects(width, height)
    for kind, polys in objects.items():
        colour = KINDS[kind][1]
        cv2.fillPoly(img, [np.array(p, np.int32) for p in polys], colour)
    # Texture on top of the planted objects too, so no crop is perfectly flat.
    grain = rng.integers(-8, 9, size=img.shape, dtype=np.int16)
    img = np.clip(img.astype(np.int16) + grain, 0, 255).astype(np.uint8)
    return img, objects


def generate(
    out: Path | str, *, seed: int = 0, n_scenes: int = 1, width: int = 1536, height: int = 1024
) -> dict[str, Any]:
    """Write the scenes and anno.json; returns the annotation list."""
    out = Path(out)
    (out / "imgs").mkdir(parents=True, exist_ok=True)
    anno = []
    for n in range(n_scenes):
        img, objects = render_scene(width, height, seed + n)
        ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 92])
        assert ok
        with cas.atomic_path(out / "imgs" / f"{n}.jpg", suffix=".jpg") as tmp:
            tmp.write_bytes(buf.tobytes())
        for kind, polys in objects.items():
            anno.append({"caption": KINDS[kind][0], "jpg_name": f"{n}.jpg", "points": polys})
    cas.write_json_atomic(out / "annotations" / "anno.json", anno)
    return {"scenes": n_scenes, "queries": len(anno), "width": width, "height": height}
