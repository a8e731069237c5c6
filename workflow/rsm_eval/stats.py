"""Uncertainty of retrieval metrics: bootstrap intervals, paired tests, duplication ceilings.

Everything here starts from what the evaluate stage keeps (``schemas.RANKS``): the 0-based
image->text rank of each test image, the text->image rank of each caption, and each
caption's image index (``text_image``). Recall@k is the percent of queries with rank < k, as
in :func:`rsm_eval.metrics.metrics_from_ranks`.

Resampling unit
---------------
The test set is a sample of *images*; captions come in groups of (usually) five per image
and are strongly correlated within a group. The bootstrap therefore resamples images with
replacement, and each drawn image brings all its captions: an image drawn twice counts its
own i2t query twice and each of its captions twice. Text->image recall of a resample is a
weighted share (hits of the drawn images' captions over their caption count), so the
weighting follows the protocol's average over captions.

Vectorisation: a resample is a vector of draw counts ``w`` (one per image, summing to
``n_images``). Per image we precompute its i2t hit (0/1) and its number of caption hits
for each k; every resample's metrics are then one matrix product ``W @ H``. Sums of
integers stay exact in float64, so the result does not depend on BLAS summation order.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from rsm_eval.errors import RsmEvalError
from rsm_eval.metrics import KS, METRIC_COLUMNS, RetrievalResult, int_vector, metrics_from_ranks

__all__ = [
    "bootstrap_ci",
    "bootstrap_distribution",
    "caption_duplication_ceiling",
    "paired_bootstrap",
    "ranks_from_table",
    "retrieval_ceilings",
]

# Upper bound on the elements of one block of draw counts (int64): ~32 MB.
_BLOCK_ELEMENTS = 4_000_000

Ranks = tuple[np.ndarray, np.ndarray]


# ---------------------------------------------------------------------------- validation


def _ranks(x: object, name: str) -> np.ndarray:
    arr = int_vector(x, name, nonempty=True)
    bad = np.flatnonzero(arr < 0)
    if bad.size:
        i = int(bad[0])
        raise RsmEvalError(f"{name}: expected 0-based ranks >= 0, got {int(arr[i])} at query {i}")
    return arr


def _text_image(text_image: object, n_images: int, n_captions: int) -> np.ndarray:
    ti = int_vector(text_image, "text_image", n_captions, nonempty=True)
    bad = np.flatnonzero((ti < 0) | (ti >= n_images))
    if bad.size:
        i = int(bad[0])
        raise RsmEvalError(
            f"text_image: caption {i} has image index {int(ti[i])}, expected a value in "
            f"[0, {n_images}) (one per i2t rank)"
        )
    missing = np.flatnonzero(np.bincount(ti, minlength=n_images) == 0)
    if missing.size:
        raise RsmEvalError(
            f"text_image: image {int(missing[0])} has no caption ({missing.size} images without "
            "one); the protocol gives every image at least one caption"
        )
    return ti


def _positive_int(x: object, name: str) -> int:
    if isinstance(x, bool) or not isinstance(x, int | np.integer) or x < 1:
        raise RsmEvalError(f"{name}: expected a positive int, got {x!r}")
    return int(x)


def _level(level: object) -> float:
    if isinstance(level, bool) or not isinstance(level, int | float) or not 0 < level < 1:
        raise RsmEvalError(f"level: expected a confidence level in (0, 1), got {level!r}")
    return float(level)


def _seed(seed: object) -> int:
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise RsmEvalError(f"seed: expected an int >= 0, got {seed!r}")
    return int(seed)


def _metric(metric: object) -> str:
    if metric not in METRIC_COLUMNS:
        raise RsmEvalError(f"metric: expected one of {list(METRIC_COLUMNS)}, got {metric!r}")
    return str(metric)


def _unpack(model: object, name: str) -> Ranks:
    """(i2t, t2i) ranks of a model given as a RetrievalResult or a 2-sequence."""
    if isinstance(model, RetrievalResult):
        return model.i2t_ranks, model.t2i_ranks
    if isinstance(model, Sequence) and len(model) == 2:
        return model[0], model[1]
    raise RsmEvalError(
        f"{name}: expected (i2t_ranks, t2i_ranks) or a RetrievalResult, got {type(model).__name__}"
    )


# ------------------------------------------------------------------------------ bootstrap


def _hit_matrix(i2t: np.ndarray, t2i: np.ndarray, text_image: np.ndarray) -> tuple[np.ndarray, ...]:
    """Per image: i2t hit (0/1) and caption hits for each k; and captions per image."""
    n_img = i2t.shape[0]
    cols = [(i2t < k).astype(np.float64) for k in KS]
    cols += [np.bincount(text_image, weights=(t2i < k), minlength=n_img) for k in KS]
    n_caps = np.bincount(text_image, minlength=n_img).astype(np.float64)
    return np.stack(cols, axis=1), n_caps


def _draw_counts(rng: np.random.Generator, rows: int, n: int) -> np.ndarray:
    """(rows, n) counts of each image in ``rows`` resamples of n images with replacement."""
    draws = rng.integers(0, n, size=(rows, n))
    draws += (np.arange(rows, dtype=np.int64) * n)[:, None]
    return np.bincount(draws.ravel(), minlength=rows * n).reshape(rows, n)


def _resampled_metrics(
    models: list[Ranks], text_image: np.ndarray, n_resamples: int, seed: int
) -> list[np.ndarray]:
    """(n_resamples, 7) metrics per model, all models under the same image resamples."""
    n_img = models[0][0].shape[0]
    nk = len(KS)
    prepared = [_hit_matrix(i2t, t2i, text_image) for i2t, t2i in models]
    n_caps = prepared[0][1]
    out = [np.empty((n_resamples, len(METRIC_COLUMNS))) for _ in models]
    rng = np.random.default_rng(seed)
    rows = max(1, _BLOCK_ELEMENTS // n_img)
    for start in range(0, n_resamples, rows):
        stop = min(n_resamples, start + rows)
        w = _draw_counts(rng, stop - start, n_img).astype(np.float64)
        caps = w @ n_caps  # captions in each resample (> 0: every image has one)
        for (hits, _), res in zip(prepared, out, strict=True):
            s = w @ hits
            block = res[start:stop]
            block[:, :nk] = 100.0 * s[:, :nk] / n_img
            block[:, nk : 2 * nk] = 100.0 * s[:, nk:] / caps[:, None]
            block[:, 2 * nk] = block[:, : 2 * nk].mean(axis=1)
    return out


def _check_model(i2t: object, t2i: object, text_image: object, name: str = "") -> tuple:
    prefix = f"{name}." if name else ""
    i2t = _ranks(i2t, f"{prefix}i2t_ranks")
    t2i = _ranks(t2i, f"{prefix}t2i_ranks")
    ti = _text_image(text_image, i2t.shape[0], t2i.shape[0])
    return i2t, t2i, ti


def bootstrap_distribution(
    i2t_ranks: np.ndarray,
    t2i_ranks: np.ndarray,
    text_image: np.ndarray,
    *,
    n_resamples: int = 1000,
    seed: int = 0,
) -> np.ndarray:
    """(n_resamples, 7) bootstrap replicates of the metrics, columns in ``METRIC_COLUMNS``.

    Resamples test images with replacement, each bringing its captions (module docstring).
    The same ``seed`` and image count give the same resamples in every function here.
    """
    i2t, t2i, ti = _check_model(i2t_ranks, t2i_ranks, text_image)
    n_resamples = _positive_int(n_resamples, "n_resamples")
    return _resampled_metrics([(i2t, t2i)], ti, n_resamples, _seed(seed))[0]


def _percentile_interval(samples: np.ndarray, level: float) -> np.ndarray:
    alpha = (1.0 - level) / 2.0
    return np.quantile(samples, [alpha, 1.0 - alpha], axis=0)


def bootstrap_ci(
    i2t_ranks: np.ndarray,
    t2i_ranks: np.ndarray,
    text_image: np.ndarray,
    *,
    n_resamples: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> dict[str, tuple[float, float]]:
    """Percentile bootstrap interval ``(low, high)`` (percent) of each metric.

    Keys are ``METRIC_COLUMNS`` (``i2t_r1`` .. ``t2i_r10``, ``mean_recall``). Test images are
    resampled with replacement, each bringing its captions; the interval is the
    ``(1-level)/2`` and ``(1+level)/2`` quantiles (linear interpolation) of the replicates.
    The point estimates are :func:`rsm_eval.metrics.metrics_from_ranks` of the same ranks.
    """
    level = _level(level)
    dist = bootstrap_distribution(
        i2t_ranks, t2i_ranks, text_image, n_resamples=n_resamples, seed=seed
    )
    low, high = _percentile_interval(dist, level)
    return {m: (float(low[j]), float(high[j])) for j, m in enumerate(METRIC_COLUMNS)}


def paired_bootstrap(
    a: Ranks | RetrievalResult,
    b: Ranks | RetrievalResult,
    text_image: np.ndarray,
    *,
    metric: str = "mean_recall",
    n_resamples: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> dict[str, Any]:
    """Paired bootstrap comparison of two models on the same split (A minus B).

    ``a`` and ``b`` are ``(i2t_ranks, t2i_ranks)`` pairs (or RetrievalResults) in the same
    protocol order; both are scored on the same image resamples, so the variation shared by
    both models (which images happen to be in the test set) cancels.

    Returns ``diff`` (observed metric of A minus that of B, points), ``ci`` (percentile
    interval of the resampled differences), ``p_value``, ``a`` and ``b`` (observed metric),
    ``metric`` and ``n_resamples``.

    ``p_value`` is two-sided: twice the share of resamples whose difference does not have
    the observed sign (a resampled difference of exactly 0 counts as flipped), capped at 1;
    1 when the observed difference is 0. Its resolution is ``2 / n_resamples``: 0 means no
    resample flipped, i.e. p < 2 / n_resamples, not p = 0.
    """
    metric = _metric(metric)
    level = _level(level)
    n_resamples = _positive_int(n_resamples, "n_resamples")
    seed = _seed(seed)
    a_i2t, a_t2i, ti = _check_model(*_unpack(a, "a"), text_image, "a")
    b_i2t_raw, b_t2i_raw = _unpack(b, "b")
    b_i2t, b_t2i = _ranks(b_i2t_raw, "b.i2t_ranks"), _ranks(b_t2i_raw, "b.t2i_ranks")
    if a_i2t.shape != b_i2t.shape or a_t2i.shape != b_t2i.shape:
        raise RsmEvalError(
            f"a has {a_i2t.shape[0]} images and {a_t2i.shape[0]} captions but b has "
            f"{b_i2t.shape[0]} and {b_t2i.shape[0]}; expected the same split in the same order"
        )
    obs_a = metrics_from_ranks(a_i2t, a_t2i)[metric]
    obs_b = metrics_from_ranks(b_i2t, b_t2i)[metric]
    dist_a, dist_b = _resampled_metrics([(a_i2t, a_t2i), (b_i2t, b_t2i)], ti, n_resamples, seed)
    j = METRIC_COLUMNS.index(metric)
    diffs = dist_a[:, j] - dist_b[:, j]
    diff = obs_a - obs_b
    low, high = _percentile_interval(diffs, level)
    if diff == 0:
        p = 1.0
    else:
        flipped = np.count_nonzero(diffs <= 0) if diff > 0 else np.count_nonzero(diffs >= 0)
        p = min(1.0, 2.0 * flipped / n_resamples)
    return {
        "metric": metric,
        "a": float(obs_a),
        "b": float(obs_b),
        "diff": float(diff),
        "ci": (float(low), float(high)),
        "p_value": float(p),
        "n_resamples": n_resamples,
    }


# ------------------------------------------------------------------------------ ranks I/O


def ranks_from_table(table: pa.Table, where: str = "ranks") -> tuple[np.ndarray, ...]:
    """``(i2t_ranks, t2i_ranks, text_image)`` from a ``schemas.RANKS`` table.

    Rows may come in any order; each direction's ``query`` values must be 0..n-1 exactly
    once, and an i2t row's ``group`` must equal its ``query`` (the image itself).
    """
    names = {"direction", "query", "group", "rank"}
    if not names <= set(table.column_names):
        raise RsmEvalError(f"{where}: expected columns {sorted(names)}, got {table.column_names}")
    direction = np.asarray(table.column("direction").to_pylist(), dtype=object)
    query = table.column("query").to_numpy()
    group = table.column("group").to_numpy()
    rank = table.column("rank").to_numpy()
    unknown = sorted({str(d) for d in direction} - {"i2t", "t2i"})
    if unknown:
        raise RsmEvalError(f"{where}: unknown direction {unknown[0]!r}, expected 'i2t' or 't2i'")
    out = []
    for d in ("i2t", "t2i"):
        sel = direction == d
        q = query[sel]
        order = np.argsort(q, kind="stable")
        if q.size == 0 or not np.array_equal(q[order], np.arange(q.size)):
            raise RsmEvalError(
                f"{where}: the {d} rows' query values must be 0..n-1, each exactly once"
            )
        out.append((rank[sel][order], group[sel][order]))
    (i2t, i2t_group), (t2i, text_image) = out
    bad = np.flatnonzero(i2t_group != np.arange(i2t.size))
    if bad.size:
        raise RsmEvalError(
            f"{where}: i2t query {int(bad[0])} has group {int(i2t_group[bad[0]])}, expected "
            "its own index"
        )
    i2t, t2i, text_image = _check_model(i2t, t2i, text_image)
    return i2t, t2i, text_image


# ------------------------------------------------------------------------------- ceilings


def retrieval_ceilings(
    captions: Sequence[str],
    text_image: np.ndarray,
    *,
    image_content: Sequence[str] | None = None,
) -> dict[str, float]:
    """Best R@1 (percent) any model can reach when some captions or images are identical.

    Identical inputs get identical embeddings, hence identical scores, and the protocol
    ranks equally scored items by their position (earlier first). Two consequences:

    * ``t2i_r1``: all captions with one string ``s`` share one ranking of the images, so at
      rank 0 they can all be right only for one image. With ``c[s, i]`` captions of string
      ``s`` on image ``i``, at most ``max_i c[s, i]`` of them hit; the ceiling is
      ``sum_s max_i c[s, i] / n_captions``. (UCM-Captions: neighbouring images sharing
      a caption set lose half of those captions.)
    * ``i2t_r1``: an image's top caption is the *first* caption (in protocol order) carrying
      the top string, so an image hits only if it owns the first occurrence of one of its
      strings. (Of two images with the same caption set, the later one never hits.)

    ``image_content`` (e.g. the image sha256 per image) adds identical images: within a
    group of identical images only the first can be rank 0 for text->image, and the group
    shares one ranking of captions, so it scores at most one i2t hit.

    Both ceilings are attained by some embedding (distinct inputs can be given distinct
    embeddings with any chosen strict argmax), so they are exact maxima for each metric
    separately. Strings compare exactly; captions that a tokenizer would make identical
    (case, spacing) count as different, which can only make the ceilings higher, never
    wrong as upper bounds.
    """
    caps = list(captions)
    if not caps:
        raise RsmEvalError("captions: expected at least one caption, got none")
    for t, c in enumerate(caps):
        if not isinstance(c, str):
            raise RsmEvalError(f"captions: caption {t} is {type(c).__name__}, expected str")
    ti = int_vector(text_image, "text_image", len(caps), nonempty=True)
    n_img = int(ti.max()) + 1 if image_content is None else len(image_content)
    ti = _text_image(ti, n_img, len(caps))
    content = list(range(n_img)) if image_content is None else list(image_content)
    # Representative (first image) of each content group, per image.
    first_of: dict[object, int] = {}
    group = np.array([first_of.setdefault(c, i) for i, c in enumerate(content)], dtype=np.int64)
    reachable = group == np.arange(n_img)

    per_string: dict[str, dict[int, int]] = defaultdict(lambda: defaultdict(int))
    first_owner: dict[str, int] = {}
    for s, i in zip(caps, ti.tolist(), strict=True):
        per_string[s][i] += 1
        first_owner.setdefault(s, i)
    t2i_hits = sum(
        max((n for i, n in counts.items() if reachable[i]), default=0)
        for counts in per_string.values()
    )
    owning_groups = {int(group[i]) for i in first_owner.values()}
    return {
        "t2i_r1": 100.0 * t2i_hits / len(caps),
        "i2t_r1": 100.0 * len(owning_groups) / n_img,
    }


def caption_duplication_ceiling(
    captions: Sequence[str],
    text_image: np.ndarray,
    *,
    image_content: Sequence[str] | None = None,
) -> float:
    """Highest text->image R@1 (percent) reachable given identical caption strings.

    ``captions`` and ``text_image`` are one split's captions in protocol order and their
    image index. See :func:`retrieval_ceilings` (its ``t2i_r1``) for the derivation.
    """
    return retrieval_ceilings(captions, text_image, image_content=image_content)["t2i_r1"]


def compare_models(
    records: list[dict],
    ranks_paths: list[Path],
    *,
    n_resamples: int = 1000,
    seed: int = 0,
    level: float = 0.95,
    metric: str = "mean_recall",
) -> list[dict]:
    """Paired bootstrap of every pair of models evaluated on the same dataset and split.

    `records` are the evaluate stage's metric records and `ranks_paths` their ranks tables,
    in the same order. Only published-protocol (remoteclip, fp32) rows are compared.
    """
    from . import schemas

    groups: dict[tuple[str, str], list[tuple[str, tuple]]] = {}
    for rec, path in zip(records, ranks_paths, strict=True):
        if rec.get("protocol") != "remoteclip" or rec.get("autocast"):
            continue
        table, _ = schemas.read_table(path, schemas.RANKS)
        groups.setdefault((rec["dataset"], rec["split"]), []).append(
            (rec["model"], ranks_from_table(table, str(path)))
        )
    out = []
    for (dataset, split), models in sorted(groups.items()):
        models.sort(key=lambda m: m[0])
        for i, (name_a, (a_i2t, a_t2i, owner)) in enumerate(models):
            for name_b, (b_i2t, b_t2i, owner_b) in models[i + 1 :]:
                if not np.array_equal(owner, owner_b):
                    raise RsmEvalError(
                        f"{dataset}/{split}: {name_a} and {name_b} were scored on different "
                        "caption sets; rerun evaluate"
                    )
                res = paired_bootstrap(
                    (a_i2t, a_t2i),
                    (b_i2t, b_t2i),
                    owner,
                    metric=metric,
                    n_resamples=n_resamples,
                    seed=seed,
                    level=level,
                )
                out.append(
                    {
                        "dataset": dataset,
                        "split": split,
                        "a": name_a,
                        "b": name_b,
                        "metric": metric,
                        "diff": float(res["diff"]),
                        "ci": [float(x) for x in res["ci"]],
                        "p_value": float(res["p_value"]),
                        "n_resamples": n_resamples,
                        "seed": seed,
                        "level": level,
                    }
                )
    return out
