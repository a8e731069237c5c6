"""Cross-modal retrieval metrics: recall@k for image->text and text->image retrieval.

Two protocols:

* RemoteCLIP (``remoteclip_retrieval``), the one the RSM-CLIP paper reports: images in
  filename order, each caption's only positive is its own image; image->text R@k is a hit
  when ANY of the image's captions is in the top k; text->image R@k is a hit when the
  caption's image is in the top k. ``mean_recall`` is the mean of the six values.
* SkyScript (``skyscript_retrieval``): unique captions, many-to-many positives given as
  (caption, image) pairs, plus the per-direction means ``i2t_mean`` and ``t2i_mean``.

Recalls are percentages (unrounded). Per-query ranks are returned for bootstrapping.

Scores and ties
---------------
The score of a (query, item) pair is its dot product (cosine for L2-normalised features).
Ranks are 0-based: the rank of gallery item ``j`` for a query is
``#{items with a strictly greater score} + #{items with an equal score and a lower gallery
index}``, i.e. its position in a stable descending sort. A query with several positives
takes the minimum rank over them. (RemoteCLIP's remoteclip_retrieval.py ranks with
clip_benchmark's ``torch.topk``, whose order among exactly tied scores is unspecified; the
rule only matters for exact ties, e.g. duplicate captions, and here it is fixed.)

The compared score is the *canonical* score: the float64 sum of the exact float64 products
of the float32 features, added in a fixed pairwise order. Float32 BLAS results change in
the last bit with the block size, the thread count and even the column position (so two
identical captions would not tie exactly), which would make ranks depend on how the work
was split. Here float32 BLAS only filters: with ``m`` a rigorous bound on the difference
between a float32 dot product (any summation order) and the canonical score, items whose
float32 score is more than ``m`` above (below) the positive's canonical score are
certainly ranked before (after) it, and only the few items inside that window get their
canonical score computed. Ranks are therefore identical for every block size and equal
to a dense stable sort of the canonical scores, which orders exactly like the true dot
products unless two of them differ by less than about ``d * 2**-53``.

Tie intervals
-------------
The tie rule above is one legitimate order among exactly equal scores; any other order is
as legitimate (identical captions have bit-identical features, so their scores are equal,
and clip_benchmark's ``torch.topk`` may return them in any order). For each query, let
``m`` be the canonical score of its best positive, ``G`` the number of items scoring
``> m`` and ``E`` the number of *non-positive* items scoring exactly ``m``. Over all orders
of tied items the best positive's 0-based rank takes every value from ``G`` (a positive
first among the ties; ``rank_low``) to ``G + E`` (every tied non-positive first;
``rank_high``), and the module's rank lies in between. Each query orders its own ties
(rankings of different queries are independent), and every recall is non-increasing in
each query's rank, so one order, each query's worst, minimises every R@k and the mean
recall at once, and each query's best maximises them: the tie interval of a metric is its
value on ``rank_high`` (low end) and on ``rank_low`` (high end). ``G`` and ``E`` come from
the same window of candidates as the rank, so the interval costs a few extra counts per
block and is exact, not sampled.

Memory: queries are processed in blocks of rows whose float32 score block stays under
``block_bytes`` (at least one row per block); two boolean masks of a quarter of that size
each come on top, so peak extra memory is about ``1.5 * block_bytes`` (under
``2 * block_bytes`` even when every score ties), plus float32 copies of non-float32 inputs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from rsm_eval.errors import RsmEvalError

KS = (1, 5, 10)
METRIC_COLUMNS = ("i2t_r1", "i2t_r5", "i2t_r10", "t2i_r1", "t2i_r5", "t2i_r10", "mean_recall")

_DEFAULT_BLOCK_BYTES = 256 << 20
_U32 = 2.0**-24  # unit roundoff, float32
_U64 = 2.0**-53  # unit roundoff, float64
# Largest allowed product of feature norms: keeps every float32 score far from overflow.
_MAX_NORM_PRODUCT = 2.0**100


@dataclass(frozen=True)
class RankBounds:
    """Per-query 0-based ranks of the best positive: by the tie rule (``rank``), and the
    lowest and highest over all orders of exactly tied scores (``low <= rank <= high``)."""

    rank: np.ndarray
    low: np.ndarray
    high: np.ndarray


@dataclass(frozen=True)
class RetrievalResult:
    """Recall metrics (percent) and the per-query 0-based ranks they were computed from.

    ``tie_interval[metric]`` is ``(low, high)``: the metric's lowest and highest value over
    all orders of exactly tied scores; ``metrics[metric]`` lies inside. The ``*_rank_low``
    and ``*_rank_high`` arrays are the per-query rank bounds behind it.
    """

    metrics: dict[str, float]
    i2t_ranks: np.ndarray
    t2i_ranks: np.ndarray
    tie_interval: dict[str, tuple[float, float]]
    i2t_rank_low: np.ndarray
    i2t_rank_high: np.ndarray
    t2i_rank_low: np.ndarray
    t2i_rank_high: np.ndarray


# ---------------------------------------------------------------------------- validation


def _features(x: object, name: str) -> np.ndarray:
    """``x`` as a C-contiguous float32 (n, d) array with n, d >= 1 and finite values."""
    if not isinstance(x, np.ndarray):
        raise RsmEvalError(f"{name}: expected a numpy array, got {type(x).__name__}")
    if x.ndim != 2:
        raise RsmEvalError(f"{name}: expected a 2-D array (n, d), got shape {x.shape}")
    if not np.issubdtype(x.dtype, np.floating):
        raise RsmEvalError(f"{name}: expected a floating-point array, got dtype {x.dtype}")
    if x.shape[0] == 0 or x.shape[1] == 0:
        raise RsmEvalError(f"{name}: expected at least one row and one column, got {x.shape}")
    out = np.ascontiguousarray(x, dtype=np.float32)
    if not np.isfinite(out).all():
        bad = int(np.flatnonzero(~np.isfinite(out).all(axis=1))[0])
        raise RsmEvalError(
            f"{name}: expected finite float32 values, row {bad} has NaN/inf (or overflows)"
        )
    return out


def int_vector(
    x: object, name: str, length: int | None = None, *, nonempty: bool = False
) -> np.ndarray:
    """``x`` (any array-like) as a 1-D int64 array, optionally of a given length or non-empty;
    RsmEvalError naming ``name`` otherwise. The one integer check of metrics and stats."""
    arr = np.asarray(x)
    if arr.ndim != 1:
        raise RsmEvalError(f"{name}: expected a 1-D array, got shape {arr.shape}")
    if nonempty and arr.size == 0:
        raise RsmEvalError(f"{name}: expected at least one entry, got an empty array")
    if not np.issubdtype(arr.dtype, np.integer):
        raise RsmEvalError(f"{name}: expected integers, got dtype {arr.dtype}")
    if length is not None and arr.shape[0] != length:
        raise RsmEvalError(f"{name}: expected length {length}, got {arr.shape[0]}")
    return arr.astype(np.int64, copy=False)


def _check_range(x: np.ndarray, upper: int, name: str) -> None:
    """Every value of ``x`` in ``[0, upper)``."""
    bad = np.flatnonzero((x < 0) | (x >= upper))
    if bad.size:
        i = int(bad[0])
        raise RsmEvalError(
            f"{name}: expected values in [0, {upper}), got {int(x[i])} at position {i}"
        )


def _check_block_bytes(block_bytes: object) -> int:
    if isinstance(block_bytes, bool) or not isinstance(block_bytes, int | np.integer):
        raise RsmEvalError(f"block_bytes: expected an int, got {type(block_bytes).__name__}")
    if block_bytes < 1:
        raise RsmEvalError(f"block_bytes: expected a positive byte count, got {block_bytes}")
    return int(block_bytes)


def _check_same_dim(a: np.ndarray, b: np.ndarray, name_a: str, name_b: str) -> None:
    if a.shape[1] != b.shape[1]:
        raise RsmEvalError(
            f"{name_a} has dimension {a.shape[1]} but {name_b} has {b.shape[1]}; "
            "expected the same embedding dimension"
        )


def _csr_from_pairs(rows: np.ndarray, cols: np.ndarray, n_rows: int) -> tuple[np.ndarray, ...]:
    """CSR (indptr, indices) of the pairs grouped by row; stable within a row."""
    order = np.argsort(rows, kind="stable")
    counts = np.bincount(rows, minlength=n_rows)
    indptr = np.zeros(n_rows + 1, dtype=np.int64)
    np.cumsum(counts, out=indptr[1:])
    return indptr, cols[order]


# ------------------------------------------------------------------- canonical scores


def _canonical_dots(
    a: np.ndarray, ia: np.ndarray, b: np.ndarray, ib: np.ndarray, *, chunk_bytes: int
) -> np.ndarray:
    """Canonical scores of the pairs (a[ia[t]], b[ib[t]]): float64 sum of exact products.

    float32 x float32 products are exact in float64; they are summed by halving a
    zero-padded power-of-two width, a fixed order that does not depend on the pair's
    position, the batch or the machine.
    """
    n, d = ia.shape[0], a.shape[1]
    out = np.empty(n, dtype=np.float64)
    if n == 0:
        return out
    width = 1 << (d - 1).bit_length()
    rows = int(min(n, max(64, chunk_bytes // (8 * width + 8 * d))))
    buf = np.zeros((rows, width), dtype=np.float64)  # columns >= d stay zero
    for start in range(0, n, rows):
        stop = min(n, start + rows)
        prod = buf[: stop - start]
        np.multiply(a[ia[start:stop]], b[ib[start:stop]], out=prod[:, :d], dtype=np.float64)
        w = width
        while w > 1:
            w //= 2
            np.add(prod[:, :w], prod[:, w : 2 * w], out=prod[:, :w])
        out[start:stop] = prod[:, 0]
    return out


def _error_bound_factor(d: int) -> float:
    """K with |float32 dot - canonical| <= K * |q| * |g| for any float32 summation order."""
    gamma32 = d * _U32 / (1.0 - d * _U32)  # Higham's gamma_d: any order, with or without FMA
    gamma64 = d * _U64 / (1.0 - d * _U64)  # canonical pairwise sum, bounded loosely
    return 1.0625 * (gamma32 + gamma64)  # slack covers rounding of norms and thresholds


def _to_f32_above(x: np.ndarray) -> np.ndarray:
    """Smallest float32 values >= x (float64)."""
    y = x.astype(np.float32)
    low = y.astype(np.float64) < x
    y[low] = np.nextafter(y[low], np.float32(np.inf))
    return y


def _to_f32_below(x: np.ndarray) -> np.ndarray:
    """Largest float32 values <= x (float64)."""
    y = x.astype(np.float32)
    high = y.astype(np.float64) > x
    y[high] = np.nextafter(y[high], np.float32(-np.inf))
    return y


# ------------------------------------------------------------------------------ ranks


def _ranks_f32(
    q: np.ndarray, g: np.ndarray, indptr: np.ndarray, indices: np.ndarray, block_bytes: int
) -> RankBounds:
    """Best-positive ranks and tie bounds for validated float32 inputs (see
    ``best_positive_rank_bounds``)."""
    nq, d = q.shape
    ng = g.shape[0]
    counts = np.diff(indptr)

    # Best positive per query: highest canonical score, then lowest gallery index.
    owner = np.repeat(np.arange(nq, dtype=np.int64), counts)
    pos_scores = _canonical_dots(q, owner, g, indices, chunk_bytes=block_bytes)
    starts = indptr[:-1]
    best_score = np.maximum.reduceat(pos_scores, starts)
    tied_best = np.where(pos_scores == np.repeat(best_score, counts), indices, ng)
    best_item = np.minimum.reduceat(tied_best, starts)
    # Distinct positives scoring exactly the best score (repeated pairs count once): the
    # tied items that are not positives are the window's equal scores minus these.
    at_best = tied_best < ng
    pair_key = np.unique(owner[at_best] * ng + indices[at_best])
    n_pos_at_best = np.bincount(pair_key // ng, minlength=nq)

    q_norm = np.sqrt(np.einsum("ij,ij->i", q, q, dtype=np.float64))
    g_norm_max = float(np.sqrt(np.einsum("ij,ij->i", g, g, dtype=np.float64).max()))
    if float(q_norm.max()) * g_norm_max > _MAX_NORM_PRODUCT:
        raise RsmEvalError(
            "feature norms are too large for float32 scores; expected L2-normalised features"
        )
    # Absolute term: float32 underflow (or flush-to-zero) errors, negligible otherwise.
    margin = _error_bound_factor(d) * q_norm * g_norm_max + (2 * d + 2) * 2.0**-126
    hi_all = _to_f32_above(best_score + margin)
    lo_all = _to_f32_below(best_score - margin)

    ranks = np.empty(nq, dtype=np.int64)
    low = np.empty(nq, dtype=np.int64)
    high = np.empty(nq, dtype=np.int64)
    rows = int(min(nq, max(1, block_bytes // (4 * ng))))
    scores_buf = np.empty((rows, ng), dtype=np.float32)
    above_buf = np.empty((rows, ng), dtype=bool)
    window_buf = np.empty((rows, ng), dtype=bool)
    # Row groups for the window's candidates, so that their index and score arrays stay
    # small even when every item is in the window (degenerate, e.g. all-zero features).
    group = max(1, rows // 32)
    g_t = g.T
    for start in range(0, nq, rows):
        stop = min(nq, start + rows)
        n = stop - start
        scores = scores_buf[:n]
        np.matmul(q[start:stop], g_t, out=scores)
        hi = hi_all[start:stop, None]
        lo = lo_all[start:stop, None]
        above = above_buf[:n]
        window = window_buf[:n]
        np.greater(scores, hi, out=above)  # certainly ranked before the positive
        # Row-wise 1-D counts are several times faster than count_nonzero(axis=1).
        block_low = np.fromiter((np.count_nonzero(row) for row in above), np.int64, n)
        block_equal = np.zeros(n, dtype=np.int64)
        block_earlier = np.zeros(n, dtype=np.int64)
        np.greater_equal(scores, lo, out=window)
        np.logical_xor(window, above, out=window)  # lo <= score <= hi: undecided
        for g_start in range(0, n, group):
            g_stop = min(n, g_start + group)
            # 1-D flatnonzero on the contiguous rows is far faster than 2-D nonzero.
            r, c = np.divmod(np.flatnonzero(window[g_start:g_stop].reshape(-1)), ng)
            r += start + g_start  # query index
            cand = _canonical_dots(q, r, g, c, chunk_bytes=block_bytes // 4)
            ref_score = best_score[r]
            local = r - (start + g_start)
            equal = cand == ref_score
            width = g_stop - g_start
            block_low[g_start:g_stop] += np.bincount(local[cand > ref_score], minlength=width)
            block_equal[g_start:g_stop] += np.bincount(local[equal], minlength=width)
            earlier = local[equal & (c < best_item[r])]  # tie rule: lower index first
            block_earlier[g_start:g_stop] += np.bincount(earlier, minlength=width)
        low[start:stop] = block_low
        ranks[start:stop] = block_low + block_earlier
        high[start:stop] = block_low + block_equal - n_pos_at_best[start:stop]
    if (high < ranks).any():  # every positive at the best score is in the window
        q_bad = int(np.flatnonzero(high < ranks)[0])
        raise RsmEvalError(f"internal error: tie bounds of query {q_bad} exclude its rank")
    return RankBounds(ranks, low, high)


def best_positive_rank_bounds(
    queries: np.ndarray,
    gallery: np.ndarray,
    indptr: np.ndarray,
    indices: np.ndarray,
    *,
    block_bytes: int = _DEFAULT_BLOCK_BYTES,
) -> RankBounds:
    """0-based rank (int64) of the best-ranked positive for each query, with its bounds
    over all orders of exactly tied scores (see the module's "Tie intervals").

    The positives of query ``q`` are the gallery indices ``indices[indptr[q]:indptr[q+1]]``
    (CSR). Ranks follow the module's tie rule (stable descending sort of canonical scores).
    A query with no positive is an error. ``block_bytes`` bounds one block of float32
    scores (at least one query row per block); the result does not depend on it.
    """
    q = _features(queries, "queries")
    g = _features(gallery, "gallery")
    _check_same_dim(q, g, "queries", "gallery")
    block_bytes = _check_block_bytes(block_bytes)
    indptr = int_vector(indptr, "indptr", q.shape[0] + 1)
    indices = int_vector(indices, "indices")
    if indptr[0] != 0 or indptr[-1] != indices.shape[0]:
        raise RsmEvalError(
            f"indptr: expected to start at 0 and end at len(indices)={indices.shape[0]}, "
            f"got {int(indptr[0])} .. {int(indptr[-1])}"
        )
    counts = np.diff(indptr)
    if (counts < 0).any():
        raise RsmEvalError("indptr: expected a non-decreasing array")
    empty = np.flatnonzero(counts == 0)
    if empty.size:
        raise RsmEvalError(
            f"query {int(empty[0])} has no positive; expected at least one per query "
            f"({empty.size} queries without one)"
        )
    _check_range(indices, g.shape[0], "indices")
    return _ranks_f32(q, g, indptr, indices, block_bytes)


def best_positive_ranks(
    queries: np.ndarray,
    gallery: np.ndarray,
    indptr: np.ndarray,
    indices: np.ndarray,
    *,
    block_bytes: int = _DEFAULT_BLOCK_BYTES,
) -> np.ndarray:
    """The ``rank`` of :func:`best_positive_rank_bounds` (the module's tie rule)."""
    return best_positive_rank_bounds(
        queries, gallery, indptr, indices, block_bytes=block_bytes
    ).rank


# ---------------------------------------------------------------------------- metrics


def recall_at_k(ranks: np.ndarray, k: int) -> float:
    """Percent of queries whose (0-based) rank is below ``k``."""
    ranks = int_vector(ranks, "ranks")
    if ranks.shape[0] == 0:
        raise RsmEvalError("ranks: expected at least one query, got an empty array")
    if ranks.min() < 0:
        raise RsmEvalError(f"ranks: expected 0-based ranks >= 0, found {int(ranks.min())}")
    if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 1:
        raise RsmEvalError(f"k: expected a positive int, got {k!r}")
    return float(100.0 * np.count_nonzero(ranks < k) / ranks.shape[0])


def metrics_from_ranks(
    i2t_ranks: np.ndarray, t2i_ranks: np.ndarray, ks: tuple[int, ...] = KS
) -> dict[str, float]:
    """``i2t_r{k}`` and ``t2i_r{k}`` for each k (percent), then ``mean_recall`` of them all."""
    if len(ks) == 0:
        raise RsmEvalError("ks: expected at least one k")
    metrics = {f"i2t_r{k}": recall_at_k(i2t_ranks, k) for k in ks}
    metrics.update({f"t2i_r{k}": recall_at_k(t2i_ranks, k) for k in ks})
    metrics["mean_recall"] = sum(metrics.values()) / len(metrics)
    return metrics


def _direction_means(metrics: dict[str, float]) -> dict[str, float]:
    """SkyScript's per-direction means ``i2t_mean`` and ``t2i_mean`` added to ``metrics``."""
    for d in ("i2t", "t2i"):
        metrics[f"{d}_mean"] = sum(metrics[f"{d}_r{k}"] for k in KS) / len(KS)
    return metrics


def tie_interval(
    i2t: RankBounds, t2i: RankBounds, *, direction_means: bool = False
) -> dict[str, tuple[float, float]]:
    """``(low, high)`` of every metric over all orders of exactly tied scores: the metric on
    each query's worst rank and on each query's best (exact; see "Tie intervals")."""
    worst = metrics_from_ranks(i2t.high, t2i.high)
    best = metrics_from_ranks(i2t.low, t2i.low)
    if direction_means:
        worst, best = _direction_means(worst), _direction_means(best)
    return {m: (worst[m], best[m]) for m in worst}


def _result(i2t: RankBounds, t2i: RankBounds, *, direction_means: bool) -> RetrievalResult:
    metrics = metrics_from_ranks(i2t.rank, t2i.rank)
    if direction_means:
        metrics = _direction_means(metrics)
    interval = tie_interval(i2t, t2i, direction_means=direction_means)
    return RetrievalResult(
        metrics, i2t.rank, t2i.rank, interval, i2t.low, i2t.high, t2i.low, t2i.high
    )


def remoteclip_retrieval(
    image_features: np.ndarray,
    text_features: np.ndarray,
    text_image: np.ndarray,
    *,
    block_bytes: int = _DEFAULT_BLOCK_BYTES,
) -> RetrievalResult:
    """RemoteCLIP retrieval: each caption's single positive is its image ``text_image[t]``.

    ``image_features`` (n_images, d) and ``text_features`` (n_captions, d) in gallery
    order; every image needs at least one caption. ``i2t_ranks`` has one rank per image
    (best of its captions), ``t2i_ranks`` one per caption.
    """
    img = _features(image_features, "image_features")
    txt = _features(text_features, "text_features")
    _check_same_dim(img, txt, "image_features", "text_features")
    block_bytes = _check_block_bytes(block_bytes)
    text_image = int_vector(text_image, "text_image", txt.shape[0])
    _check_range(text_image, img.shape[0], "text_image")
    n_img, n_txt = img.shape[0], txt.shape[0]
    counts = np.bincount(text_image, minlength=n_img)
    missing = np.flatnonzero(counts == 0)
    if missing.size:
        raise RsmEvalError(
            f"image {int(missing[0])} has no caption; expected at least one caption per image "
            f"({missing.size} images without one)"
        )
    i2t_indptr, i2t_indices = _csr_from_pairs(text_image, np.arange(n_txt), n_img)
    i2t = _ranks_f32(img, txt, i2t_indptr, i2t_indices, block_bytes)
    t2i = _ranks_f32(txt, img, np.arange(n_txt + 1, dtype=np.int64), text_image, block_bytes)
    return _result(i2t, t2i, direction_means=False)


def skyscript_retrieval(
    image_features: np.ndarray,
    text_features: np.ndarray,
    pairs_text: np.ndarray,
    pairs_image: np.ndarray,
    *,
    block_bytes: int = _DEFAULT_BLOCK_BYTES,
) -> RetrievalResult:
    """SkyScript retrieval: unique captions; (pairs_text[i], pairs_image[i]) are positives.

    A caption is correct for every image paired with it and vice versa; every image and
    every caption needs at least one pair (repeated pairs are harmless). Metrics add
    ``i2t_mean`` and ``t2i_mean`` (mean of R@1/5/10 per direction) to ``METRIC_COLUMNS``.
    """
    img = _features(image_features, "image_features")
    txt = _features(text_features, "text_features")
    _check_same_dim(img, txt, "image_features", "text_features")
    block_bytes = _check_block_bytes(block_bytes)
    pairs_text = int_vector(pairs_text, "pairs_text")
    pairs_image = int_vector(pairs_image, "pairs_image", pairs_text.shape[0])
    if pairs_text.shape[0] == 0:
        raise RsmEvalError("pairs_text/pairs_image: expected at least one (caption, image) pair")
    n_img, n_txt = img.shape[0], txt.shape[0]
    _check_range(pairs_text, n_txt, "pairs_text")
    _check_range(pairs_image, n_img, "pairs_image")
    for values, n, what in ((pairs_image, n_img, "image"), (pairs_text, n_txt, "caption")):
        missing = np.flatnonzero(np.bincount(values, minlength=n) == 0)
        if missing.size:
            raise RsmEvalError(
                f"{what} {int(missing[0])} is in no pair; expected at least one pair per "
                f"{what} ({missing.size} without one)"
            )
    i2t_indptr, i2t_indices = _csr_from_pairs(pairs_image, pairs_text, n_img)
    t2i_indptr, t2i_indices = _csr_from_pairs(pairs_text, pairs_image, n_txt)
    i2t = _ranks_f32(img, txt, i2t_indptr, i2t_indices, block_bytes)
    t2i = _ranks_f32(txt, img, t2i_indptr, t2i_indices, block_bytes)
    return _result(i2t, t2i, direction_means=True)
