"""Similarity maps over large scenes, as SemanticLocalizationMetrics `predict/generate_selo.py`
(and GeoRSCLIP's copy of it) makes them, without writing a crop to disk.

Windows: for each size s (256, 512, 768) two grids, with stride s from offset 0 and from
offset s/2; a window that would cross the right or bottom border is moved back inside
(`[dim - s, dim)`). The reference names each crop file by its box, so two grids that give the
same box produce one file: windows are deduplicated here for the same reason.

Crops: `cv2.imread` (BGR), the box cut, `cv2.resize` to 256 x 256 with INTER_CUBIC, written as
JPEG by `cv2.imwrite` (quality 95) and read back with PIL for the model's preprocessing. Here
the JPEG is encoded and decoded in memory (same bytes, same decoder), unless
`crop_jpeg_quality` is None.

Map: each pixel is the mean score of the windows that cover it, min-max normalised,
`np.uint8(255 * p)` (truncating), `cv2.medianBlur(., 251)`; the reference then writes the map
as a JPEG and the metrics read it back, so the same round trip is made in memory
(`probmap_jpeg_quality`, None to skip). The mean map is constant on the cells cut by the
window edges, so it is computed on that small grid (a few thousand cells for a 10k x 10k
scene) and only the uint8 map is expanded to full size: no H x W float64 array is made.
"""

from __future__ import annotations

import io
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from . import cas
from .errors import RsmEvalError

WINDOWS = (256, 512, 768)
CROP_SIZE = 256
JPEG_QUALITY = 95  # cv2.imwrite's default, what the reference's crop and map files get
MEDIAN_BLUR = 251

Box = tuple[int, int, int, int]  # row start, row end, column start, column end


def windows(height: int, width: int, sizes: Sequence[int] = WINDOWS) -> list[Box]:
    """The distinct windows of the reference's grids, in the order it generates them."""
    if min(height, width) < max(sizes):
        raise RsmEvalError(
            f"scene of {width} x {height} px is smaller than the largest window "
            f"({max(sizes)} px); the reference grid needs every window inside the scene"
        )
    out: dict[Box, None] = {}
    for step in sizes:
        for gap in (step, int(0.5 * step)):
            for c in range(step - gap, width, step):
                c0, c1 = (c, c + step) if c + step < width else (width - step, width)
                for r in range(step - gap, height, step):
                    r0, r1 = (r, r + step) if r + step < height else (height - step, height)
                    out.setdefault((r0, r1, c0, c1), None)
    return list(out)


@dataclass(frozen=True)
class Layout:
    """Windows of one scene and the cell grid their edges cut it into."""

    height: int
    width: int
    boxes: np.ndarray  # (n, 4) int64: r0, r1, c0, c1
    cells: np.ndarray  # (n, 4) int64: cell-row start/end, cell-column start/end per window
    row_edges: np.ndarray
    col_edges: np.ndarray
    counts: np.ndarray  # (cell rows, cell columns) float64: windows covering each cell

    @classmethod
    def of(cls, height: int, width: int, sizes: Sequence[int] = WINDOWS) -> Layout:
        boxes = np.array(windows(height, width, sizes), dtype=np.int64)
        row_edges = np.unique(np.concatenate([[0, height], boxes[:, 0], boxes[:, 1]]))
        col_edges = np.unique(np.concatenate([[0, width], boxes[:, 2], boxes[:, 3]]))
        cells = np.stack(
            [
                np.searchsorted(row_edges, boxes[:, 0]),
                np.searchsorted(row_edges, boxes[:, 1]),
                np.searchsorted(col_edges, boxes[:, 2]),
                np.searchsorted(col_edges, boxes[:, 3]),
            ],
            axis=1,
        )
        layout = cls(height, width, boxes, cells, row_edges, col_edges, np.empty(0))
        counts = layout.accumulate(np.ones(len(boxes)))
        if (counts == 0).any():  # cannot happen with the offset-0 grid; a guard on the code
            raise RsmEvalError(f"{width} x {height} scene: some pixels are in no window")
        object.__setattr__(layout, "counts", counts)
        return layout

    def accumulate(self, scores: np.ndarray) -> np.ndarray:
        """Per cell, the sum of the scores of the windows covering it (float64)."""
        sums = np.zeros((len(self.row_edges) - 1, len(self.col_edges) - 1), dtype=np.float64)
        for (a, b, c, d), s in zip(self.cells.tolist(), np.asarray(scores).tolist(), strict=True):
            sums[a:b, c:d] += s
        return sums

    def expand(self, cells: np.ndarray) -> np.ndarray:
        """A per-cell uint8 array at full resolution."""
        rows = np.repeat(cells, np.diff(self.row_edges), axis=0)
        return np.repeat(rows, np.diff(self.col_edges), axis=1)


def probability_map(
    layout: Layout,
    scores: np.ndarray,
    *,
    median: int | None = MEDIAN_BLUR,
    jpeg_quality: int | None = JPEG_QUALITY,
) -> tuple[np.ndarray, bool]:
    """The uint8 map the metrics read, and whether the scores were all equal (flat map)."""
    scores = np.asarray(scores)
    if scores.shape != (len(layout.boxes),) or not np.isfinite(scores).all():
        raise RsmEvalError(
            f"scores: expected {len(layout.boxes)} finite values, got shape {scores.shape}"
        )
    # Equal scores would leave only rounding noise to normalise (or 0 / 0): a zero map.
    flat = bool(np.ptp(scores) == 0)
    heat = layout.accumulate(scores) / layout.counts
    adaptive = heat - np.min(heat)
    top = np.max(adaptive)
    flat = flat or not top > 0
    cells = np.zeros(heat.shape, np.uint8) if flat else np.uint8(255 * (adaptive / top))
    gray = layout.expand(cells)
    if median:
        gray = cv2.medianBlur(gray, median)
    if jpeg_quality is not None:
        gray = jpeg_round_trip(gray, jpeg_quality, cv2.IMREAD_GRAYSCALE)
    return gray, flat


def jpeg_round_trip(img: np.ndarray, quality: int, flags: int) -> np.ndarray:
    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise RsmEvalError("cv2.imencode failed to encode a JPEG")
    return cv2.imdecode(buf, flags)


def read_scene(path) -> np.ndarray:
    """The scene as cv2 reads it (BGR uint8)."""
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise RsmEvalError(f"{path}: cannot decode the scene image with OpenCV")
    return bgr


def crop_spec(size: int = CROP_SIZE, jpeg_quality: int | None = JPEG_QUALITY) -> dict:
    """What, besides the scene's bytes and the box, decides a crop's pixels."""
    return {
        "kind": "selo-crop",
        "resize": size,
        "interpolation": "cv2.INTER_CUBIC",
        "jpeg_quality": jpeg_quality,
        "opencv": cv2.__version__,
    }


def crop_key(image_sha256: str, box: Sequence[int], spec: dict) -> str:
    """Feature-store key of one crop: its scene's content, its window and the crop recipe."""
    return cas.digest({"image": image_sha256, "box": [int(v) for v in box], **spec})


def crop_image(bgr: np.ndarray, box: Sequence[int], spec: dict):
    """One crop as the model's preprocessing receives it (a PIL RGB image)."""
    from PIL import Image

    r0, r1, c0, c1 = (int(v) for v in box)
    crop = cv2.resize(bgr[r0:r1, c0:c1], (spec["resize"],) * 2, interpolation=cv2.INTER_CUBIC)
    if spec["jpeg_quality"] is None:
        return Image.fromarray(cv2.cvtColor(crop, cv2.COLOR_BGR2RGB))
    ok, buf = cv2.imencode(".jpg", crop, [cv2.IMWRITE_JPEG_QUALITY, int(spec["jpeg_quality"])])
    if not ok:
        raise RsmEvalError("cv2.imencode failed to encode a crop")
    img = Image.open(io.BytesIO(buf.tobytes()))
    return img.convert("RGB")


def crop_batches(
    bgr: np.ndarray,
    boxes: Sequence[Sequence[int]],
    keys: Sequence[str],
    preprocess,
    spec: dict,
    batch_size: int,
) -> Iterator[tuple[list[str], object]]:
    """(keys, preprocessed tensor batch), made as they are consumed (one batch in memory)."""
    import torch

    for s in range(0, len(boxes), batch_size):
        part = boxes[s : s + batch_size]
        x = torch.stack([preprocess(crop_image(bgr, b, spec)) for b in part])
        yield list(keys[s : s + len(part)]), x
