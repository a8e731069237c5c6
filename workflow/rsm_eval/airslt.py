"""AIR-SLT, the semantic-localization test set: `anno.json` and its scenes, validated.

`anno.json` is a list of `{"caption": str, "jpg_name": "<n>.jpg", "points": [polygon, ...]}`,
each polygon a list of `[x, y]` pixel coordinates (floats) in the scene `imgs/<jpg_name>`
(ANCHORS.md, "Semantic localization": 22 scenes, 59 captions, 104 polygons). Every problem
is reported with the query's index and key; sizes are read from the image headers, so
validation does not decode a 10k x 10k scene.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import RsmEvalError

PUBLISHED_COUNTS = {"images": 22, "queries": 59, "polygons": 104}


@dataclass(frozen=True)
class Query:
    index: int
    caption: str
    image: str
    polygons: list[list[list[float]]]


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def load_queries(path: Path | str) -> list[Query]:
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RsmEvalError(f"{path}: cannot read the AIR-SLT annotations ({exc})") from None
    if not isinstance(data, list) or not data:
        raise RsmEvalError(f"{path}: expected a non-empty JSON list of queries")
    queries = []
    for i, item in enumerate(data):
        where = f"{path}: query {i}"
        if not isinstance(item, dict):
            raise RsmEvalError(f"{where}: expected an object, got {type(item).__name__}")
        for key, kind in (("caption", str), ("jpg_name", str), ("points", list)):
            if not isinstance(item.get(key), kind):
                raise RsmEvalError(f"{where}: '{key}' missing or not a {kind.__name__}")
        if not item["caption"].strip():
            raise RsmEvalError(f"{where}: empty 'caption'")
        name = item["jpg_name"]
        if Path(name).name != name or name in ("", ".", ".."):
            raise RsmEvalError(f"{where}: 'jpg_name' {name!r} must be a plain file name")
        polygons = item["points"]
        if not polygons:
            raise RsmEvalError(f"{where}: 'points' has no polygon")
        for j, poly in enumerate(polygons):
            ok = isinstance(poly, list) and len(poly) >= 3
            ok = ok and all(
                isinstance(p, list) and len(p) == 2 and all(_number(v) for v in p) for p in poly
            )
            if not ok:
                raise RsmEvalError(
                    f"{where}: points[{j}] must be a polygon of at least 3 [x, y] number pairs"
                )
        queries.append(Query(i, item["caption"], name, polygons))
    return queries


def image_size(path: Path) -> tuple[int, int]:
    """(width, height) from the header."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            return im.size
    except (OSError, Image.DecompressionBombError) as exc:
        raise RsmEvalError(f"{path}: cannot read the scene image ({exc})") from None


def validate(
    queries: list[Query],
    images_dir: Path | str,
    expected: dict[str, int] | None = None,
    min_size: int = 768,
) -> dict[str, Any]:
    """Check scenes exist, are large enough, and hold every polygon; compare counts."""
    from PIL import Image

    from .selo_metrics import region_circle

    images_dir = Path(images_dir)
    sizes: dict[str, tuple[int, int]] = {}
    previous = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None  # AIR-SLT's scenes reach 10k x 10k; sizes are checked here
    try:
        for q in queries:
            if q.image not in sizes:
                p = images_dir / q.image
                if not p.is_file():
                    raise RsmEvalError(f"query {q.index} ({q.caption!r}): scene {p} not found")
                sizes[q.image] = image_size(p)
    finally:
        Image.MAX_IMAGE_PIXELS = previous
    for q in queries:
        w, h = sizes[q.image]
        where = f"query {q.index} ({q.image}, {q.caption!r})"
        if min(w, h) < min_size:
            raise RsmEvalError(f"{where}: scene is {w} x {h}, smaller than {min_size} px")
        for j, poly in enumerate(q.polygons):
            for x, y in poly:
                if not (0 <= x <= w and 0 <= y <= h):
                    raise RsmEvalError(
                        f"{where}: points[{j}] vertex ({x}, {y}) is outside the {w} x {h} scene"
                    )
            if region_circle(poly).r < 1:
                raise RsmEvalError(f"{where}: points[{j}] is degenerate (radius < 1 px)")
    counts = {
        "images": len(sizes),
        "queries": len(queries),
        "polygons": sum(len(q.polygons) for q in queries),
    }
    for key, want in (expected or {}).items():
        if counts.get(key) != want:
            raise RsmEvalError(
                f"AIR-SLT: expected {want} {key}, found {counts.get(key)} "
                f"(counts: {counts}; published: {PUBLISHED_COUNTS})"
            )
    return {"counts": counts, "sizes": {k: list(v) for k, v in sorted(sizes.items())}}
