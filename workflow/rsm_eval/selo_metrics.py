"""Semantic-localization metrics Rsu, Ras, Rda and Rmi (Yuan et al., TGRS 2022).

The definitions and parameters are those of SemanticLocalizationMetrics `evaluations/SLM.py`
(commit 1e9596de), which GeoRSCLIP's inference tool copies; ANCHORS.md ("Semantic
localization") summarises them. Details kept exactly as there:

- the map is read as P = gray / 255 from a uint8 image; the predicted centres are found on
  `uint8(P * 255.0)` (a cast that truncates, done here through a 256-entry table);
- annotation mask: `cv2.fillPoly` of all the query's polygons at once, vertices truncated to
  int32;
- region circle: centre = int(mean of the vertices, summed in order), radius =
  int(1.5 x mean vertex distance to that integer centre);
- predicted centres: 50 x 50 box filter 5 times (`cv2.boxFilter`, uint8), local maxima where
  `scipy.ndimage.maximum_filter(size=1000)` equals the value (and the value > 0), one centre
  per 8-connected group of maxima (its centroid, truncated to int), kept when P >= 0.5 there;
- Ras with no predicted centre at all is 1 (the reference's offset r / r of the first region).

Unlike the reference, no full-size float64 copy of the map or mask is made: sums are taken in
integers over the uint8 map, labels only over the bounding box of the maxima, so a 10k x 10k
scene costs a few uint8 arrays (about 100 MB each) instead of several GB.
"""

from __future__ import annotations

import math
import operator
from dataclasses import dataclass
from functools import reduce
from typing import Any

import cv2
import numpy as np
from scipy.ndimage import maximum_filter

from .errors import RsmEvalError

# The published parameters (SLM.__init__).
RSU_BETA = 0.707
RSU_EPS = 1e-7
RAS_EXPAND_FACTOR = 1.5
RAS_FILTER_TIMES = 5
RAS_BOX = 50
RAS_PEAK_WINDOW = 1000
RAS_MIN_PROB = 0.5
RAS_SCALE_BETA = 3.0
RDA_ETA = 0.5
RMI_WEIGHTS = (0.4, 0.35, 0.25)  # Rsu, 1 - Ras, Rda

# P = gray / 255.0 for each uint8 value, and the reference's recovered gray uint8(P * 255.0).
PROB = np.arange(256, dtype=np.float64) / 255.0
RECOVERED = np.asarray(PROB * 255.0, dtype=np.uint8)


@dataclass(frozen=True)
class Circle:
    x: int
    y: int
    r: int


def _check_map(gray: Any) -> np.ndarray:
    gray = np.asarray(gray)
    if gray.dtype != np.uint8 or gray.ndim != 2:
        raise RsmEvalError(
            f"probability map: expected a 2-D uint8 array, got {gray.dtype} {gray.shape}"
        )
    return gray


def region_mask(shape: tuple[int, int], polygons: list) -> np.ndarray:
    """Boolean mask of the filled polygons (one cv2.fillPoly call, int32 vertices)."""
    mask = np.zeros(shape, dtype=np.uint8)
    cv2.fillPoly(mask, [np.array(p, np.int32) for p in polygons], 1)
    return mask.view(bool)


def region_circle(polygon: list, expand: float = RAS_EXPAND_FACTOR) -> Circle:
    pts = np.array(polygon)
    mid_x = int(reduce(operator.add, pts[:, 0]) / len(pts))
    mid_y = int(reduce(operator.add, pts[:, 1]) / len(pts))
    centre = np.array([mid_x, mid_y])
    dists = [np.linalg.norm(np.array(p) - centre) for p in polygon]
    return Circle(mid_x, mid_y, int(np.mean(dists) * expand))


def predicted_centres(
    gray: Any,
    *,
    filter_times: int = RAS_FILTER_TIMES,
    box: int = RAS_BOX,
    peak_window: int = RAS_PEAK_WINDOW,
    min_prob: float = RAS_MIN_PROB,
) -> list[tuple[int, int]]:
    """(x, y) of the attention centres, highest probability first."""
    gray = _check_map(gray)
    g = RECOVERED[gray]
    for _ in range(filter_times):
        g = cv2.boxFilter(g, ddepth=-1, ksize=(box, box))
    peaks = (maximum_filter(g, size=peak_window) == g) & (g > 0)
    del g
    peaks_u8 = peaks.view(np.uint8)
    x0, y0, w, h = cv2.boundingRect(peaks_u8)
    if w == 0 or h == 0:
        return []
    n, _, _, centroids = cv2.connectedComponentsWithStats(
        np.ascontiguousarray(peaks_u8[y0 : y0 + h, x0 : x0 + w]), connectivity=8, ltype=cv2.CV_32S
    )
    # Label 0 is the background; labels are in raster order, as skimage's regionprops.
    centres = [(int(cx + x0), int(cy + y0)) for cx, cy in centroids[1:n]]
    centres.sort(key=lambda c: PROB[gray[c[1], c[0]]], reverse=True)
    return [c for c in centres if PROB[gray[c[1], c[0]]] >= min_prob]


def rsu(gray: Any, mask: np.ndarray, *, beta: float = RSU_BETA, eps: float = RSU_EPS) -> float:
    """1 - exp(-beta * [sum(PM) / (sum(P) - sum(PM) + eps)] * [(HW - sum(M)) / sum(M)])."""
    gray = _check_map(gray)
    if mask.shape != gray.shape:
        raise RsmEvalError(f"mask {mask.shape} and map {gray.shape} differ in shape")
    area = int(np.count_nonzero(mask))
    if area == 0:
        raise RsmEvalError("Rsu: the annotation mask is empty (no polygon covers a pixel)")
    in_mask = int(np.sum(gray, where=mask, dtype=np.uint64)) / 255.0
    total = int(np.sum(gray, dtype=np.uint64)) / 255.0
    h, w = gray.shape
    left = in_mask / (total - in_mask + eps)
    right = (h * w - area) / area
    return float(1.0 - np.exp(-beta * left * right))


def _dist(circle: Circle, p: tuple[int, int]) -> float:
    return float(np.linalg.norm(np.array([circle.x, circle.y]) - np.array(p)))


def ras(
    circles: list[Circle], centres: list[tuple[int, int]], *, beta: float = RAS_SCALE_BETA
) -> float:
    """Attention shift: mean normalised offset of the centres within each region, scaled."""
    if not circles:
        raise RsmEvalError("Ras: no annotated region")
    if not centres:
        offsets = [float(circles[0].r)]
    else:
        offsets = []
        for c in circles:
            within = [d for d in (_dist(c, p) for p in centres) if d <= c.r]
            offsets.append(float(np.mean(within)) if within else float(c.r))
    g = float(np.mean([off / c.r for off, c in zip(offsets, circles, strict=False)]))
    return float((np.exp(beta * g) - 1) / (np.exp(beta) - 1))


def rda(circles: list[Circle], centres: list[tuple[int, int]], *, eta: float = RDA_ETA) -> float:
    """Attention dispersion: per region, n centres within r score n (n <= 1) or
    0.5 (1 - mean distance to their centroid / r) + exp(-eta (n + 2)); mean over regions."""
    if not circles:
        raise RsmEvalError("Rda: no annotated region")
    values = []
    for c in circles:
        inside = [p for p in centres if _dist(c, p) <= c.r]
        if len(inside) <= 1:
            values.append(float(len(inside)))
            continue
        centroid = np.average(inside, axis=0)
        spread = float(np.mean([np.linalg.norm(centroid - np.array(p)) for p in inside])) / c.r
        values.append(0.5 * (1 - spread) + math.exp(-eta * (len(inside) + 2)))
    return float(np.mean(values))


def rmi(
    rsu_: float, ras_: float, rda_: float, weights: tuple[float, float, float] = RMI_WEIGHTS
) -> float:
    w_su, w_as, w_da = weights
    return w_su * rsu_ + w_as * (1 - ras_) + w_da * rda_


def evaluate(gray: Any, polygons: list) -> dict[str, Any]:
    """All four metrics of one query's map, with the circles and centres they came from."""
    gray = _check_map(gray)
    circles = [region_circle(p) for p in polygons]
    centres = predicted_centres(gray)
    su = rsu(gray, region_mask(gray.shape, polygons))
    as_ = ras(circles, centres)
    da = rda(circles, centres)
    return {
        "rsu": su,
        "ras": as_,
        "rda": da,
        "rmi": rmi(su, as_, da),
        "circles": [[c.x, c.y, c.r] for c in circles],
        "centres": [list(c) for c in centres],
    }
