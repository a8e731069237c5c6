"""Rsu, Ras, Rda, Rmi against an independent NumPy/SciPy implementation of SLM.py's
definitions (no OpenCV): integral-image box filter, van Herk / Gil-Werman running maximum,
scipy.ndimage labelling, plain-NumPy distances, on random maps, masks and polygons."""

from __future__ import annotations

import math

import numpy as np
import pytest
from rsm_eval import selo_metrics as sm
from rsm_eval.errors import RsmEvalError
from scipy import ndimage

# ----------------------------------------------------------------- the independent version


def ind_box(u8: np.ndarray, k: int = 50) -> np.ndarray:
    """k x k mean, anchor at k // 2, reflect-101 border, rounded half to even, uint8."""
    left, right = k // 2, k - 1 - k // 2
    p = np.pad(u8.astype(np.int64), ((left, right), (left, right)), mode="reflect")
    c = np.zeros((p.shape[0] + 1, p.shape[1] + 1), np.int64)
    c[1:, 1:] = p.cumsum(0).cumsum(1)
    h, w = u8.shape
    s = c[k : k + h, k : k + w] - c[:h, k : k + w] - c[k : k + h, :w] + c[:h, :w]
    return np.rint(s / (k * k)).astype(np.uint8)


def _running_max(a: np.ndarray, k: int) -> np.ndarray:
    """Max over [i - k//2, i + k - 1 - k//2] along the last axis, symmetric border."""
    left, right = k // 2, k - 1 - k // 2
    p = np.pad(a, [(0, 0), (left, right)], mode="symmetric")
    n = p.shape[1]
    m = -(-n // k) * k
    q = np.pad(p, [(0, 0), (0, m - n)], constant_values=0).reshape(a.shape[0], -1, k)
    g = np.maximum.accumulate(q, axis=2).reshape(a.shape[0], m)
    h = np.maximum.accumulate(q[..., ::-1], axis=2)[..., ::-1].reshape(a.shape[0], m)
    j = np.arange(a.shape[1])
    return np.maximum(h[:, j], g[:, j + k - 1])


def ind_max(a: np.ndarray, k: int = 1000) -> np.ndarray:
    return _running_max(_running_max(a, k).T, k).T


def ind_centres(prob: np.ndarray) -> list[tuple[int, int]]:
    g = (prob * 255.0).astype(np.uint8)
    for _ in range(5):
        g = ind_box(g)
    peaks = (ind_max(g) == g) & (g > 0)
    labels, n = ndimage.label(peaks, structure=np.ones((3, 3)))
    if n == 0:
        return []
    coms = ndimage.center_of_mass(peaks, labels, range(1, n + 1))
    pts = [(int(c), int(r)) for r, c in coms]
    pts.sort(key=lambda p: prob[p[1], p[0]], reverse=True)
    return [p for p in pts if prob[p[1], p[0]] >= 0.5]


def ind_circle(poly) -> tuple[int, int, int]:
    pts = np.asarray(poly, dtype=np.float64)
    cx, cy = int(pts[:, 0].mean()), int(pts[:, 1].mean())
    r = int(np.hypot(pts[:, 0] - cx, pts[:, 1] - cy).mean() * 1.5)
    return cx, cy, r


def ind_rsu(prob: np.ndarray, mask: np.ndarray) -> float:
    m = mask.astype(np.float64)
    pm, p, area = (prob * m).sum(), prob.sum(), m.sum()
    return 1 - math.exp(-0.707 * pm / (p - pm + 1e-7) * (m.size - area) / area)


def _dists(circle, centres) -> np.ndarray:
    c = np.asarray(centres, dtype=np.float64).reshape(-1, 2)
    return np.hypot(c[:, 0] - circle[0], c[:, 1] - circle[1])


def ind_ras(circles, centres) -> float:
    if not centres:
        g = 1.0
    else:
        ratios = []
        for c in circles:
            d = _dists(c, centres)
            d = d[d <= c[2]]
            ratios.append((d.mean() if d.size else c[2]) / c[2])
        g = float(np.mean(ratios))
    return (math.exp(3 * g) - 1) / (math.exp(3) - 1)


def ind_rda(circles, centres) -> float:
    vals = []
    for c in circles:
        pts = np.asarray(centres, dtype=np.float64).reshape(-1, 2)[_dists(c, centres) <= c[2]]
        if len(pts) <= 1:
            vals.append(float(len(pts)))
        else:
            spread = np.hypot(*(pts - pts.mean(axis=0)).T).mean() / c[2]
            vals.append(0.5 * (1 - spread) + math.exp(-0.5 * (len(pts) + 2)))
    return float(np.mean(vals))


# ----------------------------------------------------------------- random data


def random_map(rng, h: int, w: int, n_blobs: int) -> np.ndarray:
    field = ndimage.gaussian_filter(rng.normal(size=(h, w)), 8)
    yy, xx = np.mgrid[:h, :w]
    for _ in range(n_blobs):
        cy, cx, s = rng.uniform(0, h), rng.uniform(0, w), rng.uniform(60, 200)
        field += rng.uniform(1, 4) * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * s * s))
    field -= field.min()
    return np.uint8(255 * field / field.max())


def random_polygon(rng, h: int, w: int) -> list[list[float]]:
    cx, cy = rng.uniform(100, w - 100), rng.uniform(100, h - 100)
    n = int(rng.integers(3, 9))
    ang = np.sort(rng.uniform(0, 2 * np.pi, n))
    rad = rng.uniform(20, 90, n)
    return [
        [float(cx + r * np.cos(a)), float(cy + r * np.sin(a))]
        for a, r in zip(ang, rad, strict=True)
    ]


@pytest.mark.parametrize("seed", range(3))
def test_metrics_equal_independent_implementation(seed):
    rng = np.random.default_rng(seed)
    h, w = int(rng.integers(600, 900)), int(rng.integers(1100, 1900))
    gray = random_map(rng, h, w, n_blobs=int(rng.integers(1, 6)))
    prob = gray / 255.0
    polygons = [random_polygon(rng, h, w) for _ in range(int(rng.integers(1, 4)))]

    centres = sm.predicted_centres(gray)
    assert centres == ind_centres(prob)
    circles = [sm.region_circle(p) for p in polygons]
    assert [(c.x, c.y, c.r) for c in circles] == [ind_circle(p) for p in polygons]

    masks = [rng.random((h, w)) < rng.uniform(0.01, 0.5), sm.region_mask((h, w), polygons)]
    for mask in masks:
        assert sm.rsu(gray, mask) == pytest.approx(ind_rsu(prob, mask), rel=1e-12, abs=1e-12)

    ind = [tuple(c) for c in (ind_circle(p) for p in polygons)]
    # Centres near the regions as well as the found ones, so Ras/Rda see 0, 1 and many.
    near = [(c.x + int(rng.integers(-5, 6)), c.y + int(rng.integers(-5, 6))) for c in circles]
    for cs in ([], centres, near, near + near[:1], centres + near):
        assert sm.ras(circles, cs) == pytest.approx(ind_ras(ind, cs), rel=1e-12)
        assert sm.rda(circles, cs) == pytest.approx(ind_rda(ind, cs), rel=1e-12)

    got = sm.evaluate(gray, polygons)
    su = ind_rsu(prob, sm.region_mask((h, w), polygons))
    as_, da = ind_ras(ind, centres), ind_rda(ind, centres)
    assert got["rmi"] == pytest.approx(0.4 * su + 0.35 * (1 - as_) + 0.25 * da, rel=1e-12)


def test_region_mask_is_the_filled_polygon_with_its_border():
    mask = sm.region_mask((100, 120), [[[10.7, 20.2], [50, 20], [50, 60], [10, 60]]])
    want = np.zeros((100, 120), bool)
    want[20:61, 10:51] = True  # vertices truncated to int, border pixels included
    assert (mask == want).all()


def test_metrics_with_known_values():
    # A map equal to the mask: Rsu = 1; one centre per region exactly at its centre.
    gray = np.zeros((1200, 2600), np.uint8)
    polys = [
        [[200, 300], [600, 300], [600, 700], [200, 700]],
        [[1800, 400], [2200, 400], [2200, 800], [1800, 800]],
    ]
    gray[300:701, 200:601] = 255
    gray[400:801, 1800:2201] = 255
    assert sm.rsu(gray, sm.region_mask(gray.shape, polys)) == pytest.approx(1.0)
    circles = [sm.region_circle(p) for p in polys]
    assert [(c.x, c.y) for c in circles] == [(400, 500), (2000, 600)]
    assert circles[0].r == int(math.hypot(200, 200) * 1.5)
    on_centre = [(400, 500), (2000, 600)]
    assert sm.ras(circles, on_centre) == 0.0
    assert sm.rda(circles, on_centre) == 1.0
    assert sm.rmi(1.0, 0.0, 1.0) == pytest.approx(1.0)
    # No centre at all, or none within a region: Ras 1, Rda 0.
    assert sm.ras(circles, []) == 1.0 and sm.rda(circles, []) == 0.0
    assert sm.ras(circles, [(1200, 1100)]) == 1.0
    # Two centres 2d apart in a region of radius r: 0.5 (1 - d / r) + exp(-2).
    r = circles[0].r
    two = [(390, 500), (410, 500)]
    assert sm.rda(circles[:1], two) == pytest.approx(0.5 * (1 - 10 / r) + math.exp(-2))
    assert sm.ras(circles[:1], two) == pytest.approx((math.exp(3 * 10 / r) - 1) / (math.exp(3) - 1))
    # The 50-px box (anchor 25: pixels i-25..i+24) moves a peak by half a pixel per pass,
    # 2.5 px after five: the plateaus' centroids land at centre + 2 after truncation.
    assert sorted(sm.predicted_centres(gray)) == [(402, 502), (2002, 602)]


def test_bad_inputs_are_named():
    with pytest.raises(RsmEvalError, match="uint8"):
        sm.predicted_centres(np.zeros((10, 10), np.float64))
    with pytest.raises(RsmEvalError, match="empty"):
        sm.rsu(np.zeros((10, 10), np.uint8), np.zeros((10, 10), bool))
