"""Tests for rsm_eval.metrics: correctness first (references), then blocking invariance."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from rsm_eval.errors import RsmEvalError
from rsm_eval.metrics import (
    KS,
    METRIC_COLUMNS,
    RetrievalResult,
    best_positive_ranks,
    metrics_from_ranks,
    recall_at_k,
    remoteclip_retrieval,
    skyscript_retrieval,
)

WORKFLOW_DIR = Path(__file__).resolve().parents[1] / "workflow"


# ------------------------------------------------------------------------------ helpers


def _normalised(rng: np.random.Generator, n: int, d: int) -> np.ndarray:
    x = rng.standard_normal((n, d))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def _exact_scores(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Correctly rounded dot products (float32 products are exact in float64; fsum is exact)."""
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    return np.array([[math.fsum(row * col) for col in b64] for row in a64])


def _reference_ranks(scores: np.ndarray, positives: list[list[int]]) -> np.ndarray:
    """Dense reference: stable descending argsort per query, minimum rank over positives."""
    out = []
    for q, row in enumerate(scores):
        order = np.argsort(-row, kind="stable")
        rank_of = np.empty(len(row), dtype=np.int64)
        rank_of[order] = np.arange(len(row))
        out.append(min(rank_of[p] for p in positives[q]))
    return np.array(out, dtype=np.int64)


def _reference_rank_bounds(
    scores: np.ndarray, positives: list[list[int]]
) -> tuple[np.ndarray, np.ndarray]:
    """Dense reference of the tie bounds: items strictly above the best positive, plus the
    non-positive items tied with it for the worst case."""
    low, high = [], []
    for q, row in enumerate(scores):
        best = row[positives[q]].max()
        tied = np.flatnonzero(row == best)
        low.append(int(np.count_nonzero(row > best)))
        high.append(low[-1] + len(set(tied.tolist()) - set(positives[q])))
    return np.array(low), np.array(high)


def _reference_metrics(i2t: np.ndarray, t2i: np.ndarray) -> dict[str, float]:
    vals = {}
    for name, ranks in (("i2t", i2t), ("t2i", t2i)):
        for k in KS:
            vals[f"{name}_r{k}"] = 100.0 * np.mean(ranks < k)
    vals["mean_recall"] = float(np.mean(list(vals.values())))
    return vals


def _random_dataset(
    rng: np.random.Generator, n_images: int, d: int, *, max_caps: int = 5, signal: float = 0.3
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Images, captions correlated with their image, and each caption's image index.

    Some images get duplicated captions (identical rows), as real datasets do.
    """
    images = _normalised(rng, n_images, d)
    caps_per_image = rng.integers(1, max_caps + 1, size=n_images)
    text_image = np.repeat(np.arange(n_images), caps_per_image)
    noise = rng.standard_normal((len(text_image), d))
    text = images[text_image] * signal + noise / np.sqrt(d)
    text = (text / np.linalg.norm(text, axis=1, keepdims=True)).astype(np.float32)
    starts = np.concatenate([[0], np.cumsum(caps_per_image)[:-1]])
    for img in rng.choice(n_images, size=max(1, n_images // 4), replace=False):
        if caps_per_image[img] > 1:
            text[starts[img] + 1] = text[starts[img]]  # within-image duplicate caption
    return images, text, text_image


def _clip_benchmark_metrics(
    images: np.ndarray, text: np.ndarray, text_image: np.ndarray
) -> dict[str, float]:
    """Our metric names from clip_benchmark's own recall_at_k, exactly as its evaluate does."""
    torch = pytest.importorskip("torch")
    from clip_benchmark.metrics.zeroshot_retrieval import batchify
    from clip_benchmark.metrics.zeroshot_retrieval import recall_at_k as cb_recall_at_k

    scores = torch.from_numpy(text @ images.T)  # (texts, images), float32 on CPU
    positive_pairs = torch.zeros_like(scores, dtype=torch.bool)
    positive_pairs[torch.arange(len(scores)), torch.from_numpy(text_image)] = True
    batch_size = 16
    out = {}
    for k in KS:
        image_retrieval = batchify(cb_recall_at_k, scores, positive_pairs, batch_size, "cpu", k=k)
        text_retrieval = batchify(
            cb_recall_at_k, scores.T, positive_pairs.T, batch_size, "cpu", k=k
        )
        # clip_benchmark's image_retrieval is our t2i, text_retrieval our i2t; fractions.
        out[f"t2i_r{k}"] = 100.0 * (image_retrieval > 0).float().mean().item()
        out[f"i2t_r{k}"] = 100.0 * (text_retrieval > 0).float().mean().item()
    return out


# ---------------------------------------------------------------------------- toy example


def _toy() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    images = np.array([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]], dtype=np.float32)
    text = np.array(
        [[1.0, 0.0], [0.0, 1.0], [0.6, 0.8], [0.0, 1.0], [0.8, 0.6], [-1.0, 0.0]],
        dtype=np.float32,
    )
    text_image = np.array([0, 0, 1, 1, 2, 2])
    return images, text, text_image


def test_toy_example_hand_computed() -> None:
    images, text, text_image = _toy()
    result = remoteclip_retrieval(images, text, text_image)
    assert isinstance(result, RetrievalResult)
    # image 0: captions by score t0 1, t4 .8, t2 .6, t1 0, t3 0, t5 -1 -> t0 at 0.
    # image 1: t1 1, t3 1 (exact tie: t1 first, lower index), t2 .8 -> best positive t3 at 1.
    # image 2: t2 1, t4 .96, ... -> best positive t4 at 1.
    np.testing.assert_array_equal(result.i2t_ranks, [0, 1, 1])
    # t0 -> img0 first; t1 (0,1): img1 1, img2 .8, img0 0 -> 2; t2: img2 1, img1 .8 -> 1;
    # t3 -> img1 first; t4 (.8,.6): img2 .96 first; t5 (-1,0): img1 0, img2 -.6 -> 1.
    np.testing.assert_array_equal(result.t2i_ranks, [0, 2, 1, 0, 0, 1])
    assert result.i2t_ranks.dtype == np.int64 and result.t2i_ranks.dtype == np.int64
    m = result.metrics
    assert tuple(m) == METRIC_COLUMNS
    assert m["i2t_r1"] == pytest.approx(100.0 / 3)
    assert m["i2t_r5"] == m["i2t_r10"] == 100.0
    assert m["t2i_r1"] == pytest.approx(50.0)
    assert m["t2i_r5"] == m["t2i_r10"] == 100.0
    assert m["mean_recall"] == pytest.approx((100.0 / 3 + 50.0 + 400.0) / 6)
    assert all(type(v) is float for v in m.values())


def test_toy_example_blockwise() -> None:
    images, text, text_image = _toy()
    dense = remoteclip_retrieval(images, text, text_image)
    for block_bytes in (1, 8, 24, 25):
        r = remoteclip_retrieval(images, text, text_image, block_bytes=block_bytes)
        np.testing.assert_array_equal(r.i2t_ranks, dense.i2t_ranks)
        np.testing.assert_array_equal(r.t2i_ranks, dense.t2i_ranks)
        assert r.metrics == dense.metrics


# ------------------------------------------------------------------ clip_benchmark parity


@pytest.mark.parametrize(
    ("seed", "n_images", "d", "signal"),
    [(0, 12, 8, 0.3), (1, 40, 16, 0.2), (2, 60, 32, 0.1), (3, 150, 64, 0.15), (4, 25, 4, 1.0)],
)
def test_matches_clip_benchmark(seed: int, n_images: int, d: int, signal: float) -> None:
    rng = np.random.default_rng(seed)
    images, text, text_image = _random_dataset(rng, n_images, d, signal=signal)
    ours = remoteclip_retrieval(images, text, text_image).metrics
    theirs = _clip_benchmark_metrics(images, text, text_image)
    for key, value in theirs.items():
        assert ours[key] == pytest.approx(value, abs=1e-4), key  # theirs is a float32 mean
    assert ours["mean_recall"] == pytest.approx(np.mean(list(theirs.values())), abs=1e-4)


# ------------------------------------------------------------------ dense NumPy reference


def _with_cross_duplicates(
    rng: np.random.Generator, images: np.ndarray, text: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Copy some captions onto captions of other images, and one image onto another."""
    text = text.copy()
    n = len(text)
    for _ in range(max(2, n // 6)):
        src, dst = rng.choice(n, size=2, replace=False)
        text[dst] = text[src]
    images = images.copy()
    images[-1] = images[0]  # identical images: exact ties for text->image too
    return images, text


@pytest.mark.parametrize(("seed", "n_images", "d"), [(10, 8, 3), (11, 20, 8), (12, 35, 16)])
def test_matches_numpy_reference_with_cross_image_duplicates(
    seed: int, n_images: int, d: int
) -> None:
    rng = np.random.default_rng(seed)
    images, text, text_image = _random_dataset(rng, n_images, d)
    images, text = _with_cross_duplicates(rng, images, text)
    scores = _exact_scores(images, text)
    i2t_ref = _reference_ranks(
        scores, [list(np.flatnonzero(text_image == i)) for i in range(n_images)]
    )
    t2i_ref = _reference_ranks(scores.T, [[int(i)] for i in text_image])
    i2t_low, i2t_high = _reference_rank_bounds(
        scores, [list(np.flatnonzero(text_image == i)) for i in range(n_images)]
    )
    t2i_low, t2i_high = _reference_rank_bounds(scores.T, [[int(i)] for i in text_image])
    assert (t2i_high > t2i_low).any() and (i2t_high >= i2t_low).all()  # duplicates tie
    for block_bytes in (1, 4 * len(text) + 3, 256 << 20):
        r = remoteclip_retrieval(images, text, text_image, block_bytes=block_bytes)
        np.testing.assert_array_equal(r.i2t_ranks, i2t_ref)
        np.testing.assert_array_equal(r.t2i_ranks, t2i_ref)
        ref = _reference_metrics(i2t_ref, t2i_ref)
        assert r.metrics == pytest.approx(ref, abs=1e-12)
        for got, want in (
            (r.i2t_rank_low, i2t_low),
            (r.i2t_rank_high, i2t_high),
            (r.t2i_rank_low, t2i_low),
            (r.t2i_rank_high, t2i_high),
        ):
            np.testing.assert_array_equal(got, want)
        worst, best = _reference_metrics(i2t_high, t2i_high), _reference_metrics(i2t_low, t2i_low)
        assert set(r.tie_interval) == set(worst)
        for k, (lo, hi) in r.tie_interval.items():
            assert (lo, hi) == pytest.approx((worst[k], best[k]), abs=1e-12), k


@pytest.mark.parametrize("seed", [20, 21, 22])
def test_exact_ties_on_a_grid(seed: int) -> None:
    """Features on a coarse dyadic grid: every score is exact and ties are everywhere."""
    rng = np.random.default_rng(seed)
    n_images, d = 15, 4
    images = (rng.integers(-2, 3, size=(n_images, d)) / 4).astype(np.float32)
    text_image = np.sort(np.concatenate([np.arange(n_images), rng.integers(0, n_images, 30)]))
    text = (rng.integers(-2, 3, size=(len(text_image), d)) / 4).astype(np.float32)
    scores = images.astype(np.float64) @ text.astype(np.float64).T  # exact on this grid
    i2t_ref = _reference_ranks(
        scores, [list(np.flatnonzero(text_image == i)) for i in range(n_images)]
    )
    t2i_ref = _reference_ranks(scores.T, [[int(i)] for i in text_image])
    i2t_bounds = _reference_rank_bounds(
        scores, [list(np.flatnonzero(text_image == i)) for i in range(n_images)]
    )
    t2i_bounds = _reference_rank_bounds(scores.T, [[int(i)] for i in text_image])
    for block_bytes in (1, 100, 256 << 20):
        r = remoteclip_retrieval(images, text, text_image, block_bytes=block_bytes)
        np.testing.assert_array_equal(r.i2t_ranks, i2t_ref)
        np.testing.assert_array_equal(r.t2i_ranks, t2i_ref)
        np.testing.assert_array_equal((r.i2t_rank_low, r.i2t_rank_high), i2t_bounds)
        np.testing.assert_array_equal((r.t2i_rank_low, r.t2i_rank_high), t2i_bounds)


def test_all_scores_tied() -> None:
    """Zero features: every score is 0, so rank = number of items with a lower index."""
    images = np.zeros((4, 3), dtype=np.float32)
    text = np.zeros((6, 3), dtype=np.float32)
    text_image = np.array([0, 1, 1, 2, 3, 3])
    r = remoteclip_retrieval(images, text, text_image, block_bytes=16)
    np.testing.assert_array_equal(r.i2t_ranks, [0, 1, 3, 4])  # first caption of each image
    np.testing.assert_array_equal(r.t2i_ranks, text_image)
    # Any order is legitimate: a positive first, or every other item before the positives.
    np.testing.assert_array_equal(r.i2t_rank_low, [0, 0, 0, 0])
    np.testing.assert_array_equal(r.i2t_rank_high, [5, 4, 5, 4])  # 6 captions minus own
    np.testing.assert_array_equal(r.t2i_rank_low, np.zeros(6))
    np.testing.assert_array_equal(r.t2i_rank_high, np.full(6, 3))
    assert r.tie_interval["i2t_r1"] == (0.0, 100.0)
    assert r.tie_interval["t2i_r5"] == (100.0, 100.0)


def test_near_ties_below_float32_resolution() -> None:
    """Gallery items one or two ulps away from the query: float32 BLAS cannot order them."""
    rng = np.random.default_rng(30)
    d = 48
    query = _normalised(rng, 1, d)
    gallery = np.repeat(query, 60, axis=0)
    for j in range(60):
        k = rng.integers(d)
        direction = np.float32(np.inf if rng.random() < 0.5 else -np.inf)
        for _ in range(rng.integers(0, 3)):
            gallery[j, k] = np.nextafter(gallery[j, k], direction)
    queries = np.concatenate([query, _normalised(rng, 5, d)])
    scores = _exact_scores(queries, gallery)
    indptr = np.array([0, 1, 3, 4, 7, 8, 10])
    indices = np.array([5, 7, 2, 59, 0, 30, 31, 40, 1, 2])
    positives = [list(indices[indptr[q] : indptr[q + 1]]) for q in range(len(queries))]
    ref = _reference_ranks(scores, positives)
    for block_bytes in (1, 4 * 60 * 2, 256 << 20):
        got = best_positive_ranks(queries, gallery, indptr, indices, block_bytes=block_bytes)
        np.testing.assert_array_equal(got, ref)


# ------------------------------------------------------------------- blocking invariance


def test_blockwise_equals_dense_moderately_large() -> None:
    rng = np.random.default_rng(40)
    n_images, n_text, d = 2_000, 10_000, 64
    images = _normalised(rng, n_images, d)
    text_image = np.repeat(np.arange(n_images), 5)
    noise = rng.standard_normal((n_text, d)) / np.sqrt(d)
    text = images[text_image] * 0.2 + noise
    text = (text / np.linalg.norm(text, axis=1, keepdims=True)).astype(np.float32)

    dense = remoteclip_retrieval(images, text, text_image)  # one block each way
    blocked = remoteclip_retrieval(images, text, text_image, block_bytes=200_000)  # 400 blocks
    np.testing.assert_array_equal(blocked.i2t_ranks, dense.i2t_ranks)
    np.testing.assert_array_equal(blocked.t2i_ranks, dense.t2i_ranks)
    assert blocked.metrics == dense.metrics
    assert blocked.tie_interval == dense.tie_interval
    # Random features: nothing ties, so the interval is the value.
    assert dense.tie_interval == {k: (v, v) for k, v in dense.metrics.items()}

    # Independent dense reference: float64 scores, count of items ranked before the positive.
    scores = images.astype(np.float64) @ text.astype(np.float64).T
    pos = scores.reshape(n_images, n_images, 5)[np.arange(n_images), np.arange(n_images)]
    best = pos.argmax(axis=1)
    best_col = np.arange(n_images) * 5 + best
    best_score = pos[np.arange(n_images), best]
    cols = np.arange(n_text)
    before = (scores > best_score[:, None]) | (
        (scores == best_score[:, None]) & (cols < best_col[:, None])
    )
    np.testing.assert_array_equal(dense.i2t_ranks, before.sum(axis=1))
    own = scores[text_image, np.arange(n_text)]
    before_t = (own[:, None] < scores.T) | (
        (own[:, None] == scores.T) & (np.arange(n_images) < text_image[:, None])
    )
    np.testing.assert_array_equal(dense.t2i_ranks, before_t.sum(axis=1))
    assert 0 < dense.metrics["t2i_r1"] < dense.metrics["t2i_r10"] < 100  # not degenerate


def test_best_positive_ranks_csr_unsorted_and_repeated_positives() -> None:
    rng = np.random.default_rng(50)
    queries, gallery = _normalised(rng, 7, 6), _normalised(rng, 30, 6)
    gallery[11] = gallery[3]
    positives = [[29, 3, 11], [11, 3], [0], [5, 5, 5], [28, 1, 17, 2], [3], [11]]
    indptr = np.concatenate([[0], np.cumsum([len(p) for p in positives])])
    indices = np.concatenate(positives)
    ref = _reference_ranks(_exact_scores(queries, gallery), positives)
    for block_bytes in (1, 256 << 20):
        got = best_positive_ranks(queries, gallery, indptr, indices, block_bytes=block_bytes)
        assert got.dtype == np.int64
        np.testing.assert_array_equal(got, ref)
    # Query 1's positives tie exactly (3 and 11 are identical); the lower index counts.
    np.testing.assert_array_equal(
        best_positive_ranks(queries[[1]], gallery, np.array([0, 1]), np.array([3])), ref[[1]]
    )


def test_float64_and_float16_inputs_are_scored_in_float32() -> None:
    rng = np.random.default_rng(60)
    images, text, text_image = _random_dataset(rng, 10, 8)
    base = remoteclip_retrieval(images, text, text_image)
    r64 = remoteclip_retrieval(images.astype(np.float64), text.astype(np.float64), text_image)
    np.testing.assert_array_equal(r64.i2t_ranks, base.i2t_ranks)
    r16 = remoteclip_retrieval(images.astype(np.float16), text.astype(np.float16), text_image)
    assert r16.i2t_ranks.shape == (10,)


# -------------------------------------------------------------------------------- skyscript


def test_skyscript_toy_many_to_many() -> None:
    images = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1], [0.6, 0.8, 0]], dtype=np.float32)
    text = np.array(
        [[0.8, 0.6, 0], [0, 0.6, 0.8], [0, 0, 1], [0.6, 0, 0.8], [-1, 0, 0]], dtype=np.float32
    )
    # Caption 0 describes images 0 and 3, caption 1 images 1 and 2, and so on.
    pairs_text = np.array([0, 0, 1, 1, 2, 3, 4, 4])
    pairs_image = np.array([0, 3, 1, 2, 2, 0, 3, 1])
    r = skyscript_retrieval(images, text, pairs_text, pairs_image)

    scores = _exact_scores(images, text)
    i2t_pos = [list(pairs_text[pairs_image == i]) for i in range(len(images))]
    t2i_pos = [list(pairs_image[pairs_text == t]) for t in range(len(text))]
    i2t_ref = _reference_ranks(scores, i2t_pos)
    t2i_ref = _reference_ranks(scores.T, t2i_pos)
    np.testing.assert_array_equal(r.i2t_ranks, i2t_ref)
    np.testing.assert_array_equal(r.t2i_ranks, t2i_ref)
    # By hand: image 0 ranks captions 0 (.8), 3 (.6) ... -> positives 0, 3 -> 0.
    # Caption 4 (-1,0,0): images 1 and 2 tie at 0 (1 first), then 3, 0 -> positives 3, 1 -> 0.
    assert r.i2t_ranks[0] == 0 and r.t2i_ranks[4] == 0

    expected = _reference_metrics(i2t_ref, t2i_ref)
    expected["i2t_mean"] = np.mean([expected[f"i2t_r{k}"] for k in KS])
    expected["t2i_mean"] = np.mean([expected[f"t2i_r{k}"] for k in KS])
    assert set(r.metrics) == set(METRIC_COLUMNS) | {"i2t_mean", "t2i_mean"}
    assert r.metrics == pytest.approx(expected, abs=1e-12)
    assert r.metrics["mean_recall"] == pytest.approx(
        (r.metrics["i2t_mean"] + r.metrics["t2i_mean"]) / 2
    )


@pytest.mark.parametrize("seed", [70, 71])
def test_skyscript_random_many_to_many(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n_images, n_text, d = 30, 18, 8
    images, text = _normalised(rng, n_images, d), _normalised(rng, n_text, d)
    images[5] = images[6]
    pairs_image = np.arange(n_images)
    pairs_text = np.concatenate([rng.permutation(n_text), rng.integers(0, n_text, 12)])
    extra_images = rng.integers(0, n_images, 15)
    pairs_image = np.concatenate([pairs_image, extra_images])
    pairs_text = np.concatenate([pairs_text, rng.integers(0, n_text, 15)])
    pairs_text = np.concatenate([pairs_text, pairs_text[:3]])  # repeated pairs are harmless
    pairs_image = np.concatenate([pairs_image, pairs_image[:3]])

    scores = _exact_scores(images, text)
    i2t_ref = _reference_ranks(scores, [list(pairs_text[pairs_image == i]) for i in range(30)])
    t2i_ref = _reference_ranks(scores.T, [list(pairs_image[pairs_text == t]) for t in range(18)])
    for block_bytes in (1, 256 << 20):
        r = skyscript_retrieval(images, text, pairs_text, pairs_image, block_bytes=block_bytes)
        np.testing.assert_array_equal(r.i2t_ranks, i2t_ref)
        np.testing.assert_array_equal(r.t2i_ranks, t2i_ref)


def test_skyscript_one_to_one_pairs_equal_remoteclip() -> None:
    rng = np.random.default_rng(80)
    images, text, text_image = _random_dataset(rng, 20, 8)
    a = remoteclip_retrieval(images, text, text_image)
    b = skyscript_retrieval(images, text, np.arange(len(text)), text_image)
    np.testing.assert_array_equal(a.i2t_ranks, b.i2t_ranks)
    np.testing.assert_array_equal(a.t2i_ranks, b.t2i_ranks)
    assert all(a.metrics[k] == b.metrics[k] for k in METRIC_COLUMNS)


# ------------------------------------------------------------------------ metric helpers


def test_recall_at_k_and_metrics_from_ranks() -> None:
    ranks = np.array([0, 4, 5, 9, 10, 100])
    assert recall_at_k(ranks, 1) == pytest.approx(100 / 6)
    assert recall_at_k(ranks, 5) == pytest.approx(200 / 6)
    assert recall_at_k(ranks, 10) == pytest.approx(400 / 6)
    m = metrics_from_ranks(np.array([0, 1]), np.array([0, 0, 7, 20]))
    assert tuple(m) == METRIC_COLUMNS
    assert m == pytest.approx(
        {
            "i2t_r1": 50.0,
            "i2t_r5": 100.0,
            "i2t_r10": 100.0,
            "t2i_r1": 50.0,
            "t2i_r5": 50.0,
            "t2i_r10": 75.0,
            "mean_recall": 425.0 / 6,
        }
    )
    assert set(metrics_from_ranks(ranks, ranks, ks=(1, 3))) == {
        "i2t_r1",
        "i2t_r3",
        "t2i_r1",
        "t2i_r3",
        "mean_recall",
    }


def test_metrics_module_does_not_import_torch() -> None:
    code = "import sys, rsm_eval.metrics; sys.exit('torch' in sys.modules)"
    proc = subprocess.run(
        [sys.executable, "-c", code], env={"PYTHONPATH": str(WORKFLOW_DIR)}, check=False
    )
    assert proc.returncode == 0


# ------------------------------------------------------------------------------ bad input


def _good() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return _toy()


@pytest.mark.parametrize(
    ("mutate", "match"),
    [
        (lambda i, t, ti: (i[0], t, ti), "2-D"),
        (lambda i, t, ti: (i.astype(np.int32), t, ti), "floating"),
        (lambda i, t, ti: (i[:0], t, ti), "at least one row"),
        (lambda i, t, ti: (i, t[:, :1], ti), "dimension"),
        (lambda i, t, ti: (i, np.where(t == 1, np.nan, t).astype(np.float32), ti), "finite"),
        (lambda i, t, ti: (i.tolist(), t, ti), "numpy array"),
        (lambda i, t, ti: (i, t, ti[:-1]), "length 6"),
        (lambda i, t, ti: (i, t, ti.astype(float)), "integer"),
        (lambda i, t, ti: (i, t, np.array([0, 0, 1, 1, 2, 3])), r"\[0, 3\)"),
        (lambda i, t, ti: (i, t, np.array([0, 0, 1, 1, 2, -1])), r"\[0, 3\)"),
        (lambda i, t, ti: (i, t, np.array([0, 0, 2, 2, 2, 2])), "image 1 has no caption"),
        (lambda i, t, ti: (i * np.float32(1e30), t * np.float32(1e30), ti), "L2-normalised"),
    ],
)
def test_remoteclip_bad_input(mutate, match: str) -> None:
    images, text, text_image = mutate(*_good())
    with pytest.raises(RsmEvalError, match=match):
        remoteclip_retrieval(images, text, text_image)


@pytest.mark.parametrize("block_bytes", [0, -5, 1.5, True])
def test_bad_block_bytes(block_bytes) -> None:
    with pytest.raises(RsmEvalError, match="block_bytes"):
        remoteclip_retrieval(*_good(), block_bytes=block_bytes)


@pytest.mark.parametrize(
    ("pairs_text", "pairs_image", "match"),
    [
        (np.array([0, 1, 2]), np.array([0, 1]), "length 3"),
        (np.array([], dtype=int), np.array([], dtype=int), "at least one"),
        (np.array([0, 1, 2, 3, 4, 5, 6]), np.array([0, 1, 2, 0, 1, 2, 0]), r"\[0, 6\)"),
        (np.array([0, 1, 2, 3, 4, 5]), np.array([0, 1, 2, 0, 1, 3]), r"\[0, 3\)"),
        (np.array([0, 1, 2, 3, 4, 5]), np.array([0, 1, 0, 0, 1, 0]), "image 2 is in no pair"),
        (np.array([0, 1, 2, 3, 4, 4]), np.array([0, 1, 2, 0, 1, 2]), "caption 5 is in no pair"),
        (np.array([[0, 1, 2, 3, 4, 5]]), np.array([0, 1, 2, 0, 1, 2]), "1-D"),
    ],
)
def test_skyscript_bad_input(pairs_text, pairs_image, match: str) -> None:
    images, text, _ = _good()
    with pytest.raises(RsmEvalError, match=match):
        skyscript_retrieval(images, text, pairs_text, pairs_image)


@pytest.mark.parametrize(
    ("indptr", "indices", "match"),
    [
        (np.array([0, 1, 1]), np.array([0]), "query 1 has no positive"),
        (np.array([0, 1]), np.array([0]), "length 3"),
        (np.array([1, 1, 2]), np.array([0, 1]), "start at 0"),
        (np.array([0, 2, 1]), np.array([0]), "non-decreasing|start at 0"),
        (np.array([0, 1, 2]), np.array([0, 6]), r"\[0, 6\)"),
    ],
)
def test_best_positive_ranks_bad_input(indptr, indices, match: str) -> None:
    images, text, _ = _good()
    with pytest.raises(RsmEvalError, match=match):
        best_positive_ranks(images[:2], text, indptr, indices)


def test_recall_bad_input() -> None:
    with pytest.raises(RsmEvalError, match="at least one query"):
        recall_at_k(np.array([], dtype=np.int64), 1)
    with pytest.raises(RsmEvalError, match="positive int"):
        recall_at_k(np.array([0]), 0)
    with pytest.raises(RsmEvalError, match="1-D"):
        recall_at_k(np.zeros((2, 2), dtype=np.int64), 1)
