"""Tests for rsm_eval.stats: bootstrap intervals, paired comparison, duplication ceilings."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
from rsm_eval import schemas
from rsm_eval.errors import RsmEvalError
from rsm_eval.metrics import METRIC_COLUMNS, metrics_from_ranks, remoteclip_retrieval
from rsm_eval.stats import (
    bootstrap_ci,
    bootstrap_distribution,
    caption_duplication_ceiling,
    paired_bootstrap,
    ranks_from_table,
    retrieval_ceilings,
)

# ------------------------------------------------------------------------------ helpers


def _split(rng: np.random.Generator, n_images: int):
    """A synthetic test split drawn from a known population (see ``_population_truth``).

    Each image has a latent quality q ~ Beta(1, 6); it has 1 + Binomial(4, q) captions, so
    better images have more captions (t2i recall is then a ratio, not a plain mean). Its i2t
    rank and each caption's t2i rank are Geometric(q) failures, independent given q: ranks
    are correlated within an image, which is why images are the resampling unit.
    """
    q = rng.beta(1.0, 6.0, n_images)
    n_caps = 1 + rng.binomial(4, q)
    text_image = np.repeat(np.arange(n_images), n_caps)
    i2t = rng.geometric(q) - 1
    t2i = rng.geometric(q[text_image]) - 1
    return i2t.astype(np.int64), t2i.astype(np.int64), text_image


def _population_truth() -> dict[str, float]:
    """Population values of the metrics for ``_split``'s model, in closed form.

    With q ~ Beta(1, 6): E[(1-q)^k] = 6/(6+k) and E[q(1-q)^k] = 6/((6+k)(7+k)).
    P(rank < k | q) = 1 - (1-q)^k; t2i weights each image by its E[captions] = 1 + 4q.
    """
    truth = {}
    mean_caps = 1 + 4 / 7
    for k in (1, 5, 10):
        truth[f"i2t_r{k}"] = 100.0 * (1 - 6 / (6 + k))
        hits = mean_caps - 6 / (6 + k) - 24 / ((6 + k) * (7 + k))
        truth[f"t2i_r{k}"] = 100.0 * hits / mean_caps
    truth["mean_recall"] = float(np.mean([truth[m] for m in METRIC_COLUMNS[:-1]]))
    return truth


# ------------------------------------------------------------------------ bootstrap_ci


def test_replicates_are_metrics_of_materialised_resamples():
    """Each replicate equals metrics_from_ranks on the resample written out in full."""
    rng = np.random.default_rng(1)
    i2t, t2i, text_image = _split(rng, 40)
    n = i2t.size
    dist = bootstrap_distribution(i2t, t2i, text_image, n_resamples=25, seed=7)
    # The documented scheme: n uniform image draws per resample from default_rng(seed).
    draws = np.random.default_rng(7).integers(0, n, size=(25, n))
    captions_of = [np.flatnonzero(text_image == i) for i in range(n)]
    for row, idx in zip(dist, draws, strict=True):
        t2i_resampled = np.concatenate([t2i[captions_of[i]] for i in idx])
        expected = metrics_from_ranks(i2t[idx], t2i_resampled)
        np.testing.assert_allclose(row, [expected[m] for m in METRIC_COLUMNS], rtol=1e-12)


def test_ci_keys_order_and_determinism():
    rng = np.random.default_rng(2)
    i2t, t2i, text_image = _split(rng, 200)
    ci = bootstrap_ci(i2t, t2i, text_image, n_resamples=300, seed=5)
    assert list(ci) == list(METRIC_COLUMNS)
    point = metrics_from_ranks(i2t, t2i)
    for m, (low, high) in ci.items():
        assert low <= point[m] <= high
    assert ci == bootstrap_ci(i2t, t2i, text_image, n_resamples=300, seed=5)
    assert ci != bootstrap_ci(i2t, t2i, text_image, n_resamples=300, seed=6)
    narrow = bootstrap_ci(i2t, t2i, text_image, n_resamples=300, seed=5, level=0.5)
    for m in METRIC_COLUMNS:
        assert ci[m][0] <= narrow[m][0] <= narrow[m][1] <= ci[m][1]


def test_ci_is_degenerate_when_every_query_hits():
    text_image = np.repeat(np.arange(10), 5)
    ci = bootstrap_ci(np.zeros(10, int), np.zeros(50, int), text_image, n_resamples=50)
    assert all(v == (100.0, 100.0) for v in ci.values())


def test_ci_coverage_is_near_nominal():
    """95% intervals from 300 finite test sets cover the population value ~95% of the time.

    Binomial noise at 300 repetitions is about +-1.3 points per metric; the percentile
    bootstrap also runs slightly short at n=300 images, hence the asymmetric bounds.
    """
    truth = _population_truth()
    rng = np.random.default_rng(20240601)
    reps = 300
    covered = dict.fromkeys(METRIC_COLUMNS, 0)
    for rep in range(reps):
        i2t, t2i, text_image = _split(rng, 300)
        ci = bootstrap_ci(i2t, t2i, text_image, n_resamples=500, seed=rep)
        for m, (low, high) in ci.items():
            covered[m] += low <= truth[m] <= high
    coverage = {m: c / reps for m, c in covered.items()}
    for m, c in coverage.items():
        assert 0.88 <= c <= 0.985, (m, coverage)
    assert 0.91 <= np.mean(list(coverage.values())) <= 0.975, coverage


def test_caption_level_resampling_would_under_cover():
    """Sanity check of the test design: the within-image correlation matters.

    Treating captions as independent (resampling images but counting one caption each)
    would give narrower t2i intervals; the image-cluster bootstrap is wider.
    """
    rng = np.random.default_rng(3)
    i2t, t2i, text_image = _split(rng, 300)
    clustered = bootstrap_ci(i2t, t2i, text_image, n_resamples=500)["t2i_r5"]
    # Same captions, each its own "image": an i.i.d. caption bootstrap.
    n_t = t2i.size
    flat = bootstrap_ci(np.zeros(n_t, int), t2i, np.arange(n_t), n_resamples=500, seed=0)["t2i_r5"]
    assert clustered[1] - clustered[0] > flat[1] - flat[0]


# --------------------------------------------------------------------- paired_bootstrap


def test_paired_bootstrap_detects_a_real_difference():
    rng = np.random.default_rng(4)
    i2t, t2i, text_image = _split(rng, 400)
    # B is A made worse on a random 30% of the queries.
    worse_i = np.where(rng.random(i2t.size) < 0.3, i2t + 3, i2t)
    worse_t = np.where(rng.random(t2i.size) < 0.3, t2i + 3, t2i)
    res = paired_bootstrap((i2t, t2i), (worse_i, worse_t), text_image, n_resamples=1000)
    assert res["diff"] > 0
    assert res["ci"][0] > 0
    assert res["p_value"] < 0.01
    expected = metrics_from_ranks(i2t, t2i)["mean_recall"]
    assert res["a"] == pytest.approx(expected)
    assert res["diff"] == pytest.approx(res["a"] - res["b"])
    # Swapping the models flips the sign and nothing else.
    back = paired_bootstrap((worse_i, worse_t), (i2t, t2i), text_image, n_resamples=1000)
    assert back["diff"] == pytest.approx(-res["diff"])
    assert back["p_value"] == res["p_value"]


def test_paired_bootstrap_identical_models():
    rng = np.random.default_rng(5)
    i2t, t2i, text_image = _split(rng, 100)
    res = paired_bootstrap((i2t, t2i), (i2t.copy(), t2i.copy()), text_image, metric="t2i_r1")
    assert res["diff"] == 0.0
    assert res["ci"] == (0.0, 0.0)
    assert res["p_value"] == 1.0


def test_paired_bootstrap_null_rejection_rate():
    """Two models with the same per-image quality: a 5% test rejects about 5% of the time."""
    rng = np.random.default_rng(6)
    reps, rejected = 150, 0
    for rep in range(reps):
        q = rng.beta(1.0, 6.0, 200)
        text_image = np.repeat(np.arange(200), 1 + rng.binomial(4, q))
        a = (rng.geometric(q) - 1, rng.geometric(q[text_image]) - 1)
        b = (rng.geometric(q) - 1, rng.geometric(q[text_image]) - 1)
        res = paired_bootstrap(a, b, text_image, n_resamples=400, seed=rep)
        rejected += res["p_value"] < 0.05
    assert rejected / reps <= 0.10


def test_paired_bootstrap_accepts_retrieval_results():
    rng = np.random.default_rng(7)
    img = rng.standard_normal((12, 8)).astype(np.float32)
    txt = np.repeat(img, 2, axis=0) + 0.8 * rng.standard_normal((24, 8)).astype(np.float32)
    text_image = np.repeat(np.arange(12), 2)
    ra = remoteclip_retrieval(img, txt, text_image)
    rb = remoteclip_retrieval(img, rng.standard_normal((24, 8)).astype(np.float32), text_image)
    res = paired_bootstrap(ra, rb, text_image, n_resamples=200)
    assert res["diff"] == pytest.approx(ra.metrics["mean_recall"] - rb.metrics["mean_recall"])


# ---------------------------------------------------------------------------- ceilings


def test_ceiling_ucm_like_shared_caption_sets():
    # Images 0 and 1 share one caption set (UCM neighbours); 2 and 3 are unique.
    shared = [f"shared {j}" for j in range(5)]
    captions = shared + shared + [f"two {j}" for j in range(5)] + [f"three {j}" for j in range(5)]
    text_image = np.repeat(np.arange(4), 5)
    assert caption_duplication_ceiling(captions, text_image) == pytest.approx(75.0)
    assert retrieval_ceilings(captions, text_image) == pytest.approx(
        {"t2i_r1": 75.0, "i2t_r1": 75.0}
    )


def test_ceiling_picks_the_image_with_most_copies():
    # "a" twice on image 0 and three times on image 1 -> at most 3 hits; "b" and "c" hit.
    captions = ["a", "a", "b", "a", "a", "a", "c"]
    text_image = np.array([0, 0, 0, 1, 1, 1, 1])
    assert caption_duplication_ceiling(captions, text_image) == pytest.approx(100 * 5 / 7)
    # i2t: image 0 owns "a" and "b", image 1 owns "c": both can hit.
    assert retrieval_ceilings(captions, text_image)["i2t_r1"] == 100.0


def test_ceiling_without_duplicates_is_100():
    captions = [f"c{t}" for t in range(12)]
    text_image = np.repeat(np.arange(4), 3)
    assert retrieval_ceilings(captions, text_image) == {"t2i_r1": 100.0, "i2t_r1": 100.0}


def test_ceiling_with_identical_images():
    captions = ["x0", "x1", "y0", "y1", "z0", "z1"]
    text_image = np.repeat(np.arange(3), 2)
    # Images 0 and 2 are the same picture: image 2 can never be t2i rank 0, and 0 and 2
    # share one i2t ranking, so only one of them hits.
    res = retrieval_ceilings(captions, text_image, image_content=["p", "q", "p"])
    assert res["t2i_r1"] == pytest.approx(100 * 4 / 6)
    assert res["i2t_r1"] == pytest.approx(100 * 2 / 3)


def _one_hot_model(captions, text_image, n_img, target_of_string):
    """Features that realise a chosen top-1 image per distinct caption string."""
    img = np.eye(n_img, dtype=np.float32)
    txt = np.stack([img[target_of_string[s]] for s in captions])
    return remoteclip_retrieval(img, txt, np.asarray(text_image))


def test_ceiling_is_attained_and_never_exceeded():
    rng = np.random.default_rng(8)
    vocab = [f"s{j}" for j in range(9)]
    for _ in range(30):
        n_img = int(rng.integers(2, 6))
        per = rng.integers(1, 4, n_img)
        text_image = np.repeat(np.arange(n_img), per)
        captions = [vocab[j] for j in rng.integers(0, len(vocab), text_image.size)]
        ceiling = retrieval_ceilings(captions, text_image)
        # Attained: each string points to the image holding most of its copies.
        target = {}
        for s in set(captions):
            counts = np.bincount(text_image[[c == s for c in captions]], minlength=n_img)
            target[s] = int(np.argmax(counts))
        best = _one_hot_model(captions, text_image, n_img, target)
        assert best.metrics["t2i_r1"] == pytest.approx(ceiling["t2i_r1"])
        # Never exceeded by random models in which equal strings share an embedding.
        for _ in range(10):
            img = rng.standard_normal((n_img, 4)).astype(np.float32)
            emb = {s: rng.standard_normal(4).astype(np.float32) for s in vocab}
            txt = np.stack([emb[s] for s in captions])
            m = remoteclip_retrieval(img, txt, text_image).metrics
            assert m["t2i_r1"] <= ceiling["t2i_r1"] + 1e-9
            assert m["i2t_r1"] <= ceiling["i2t_r1"] + 1e-9


# -------------------------------------------------------------------------- ranks table


def test_ranks_from_table_round_trip():
    rng = np.random.default_rng(9)
    i2t, t2i, text_image = _split(rng, 30)
    n_img, n_txt = i2t.size, t2i.size
    table = pa.table(
        {
            "direction": ["i2t"] * n_img + ["t2i"] * n_txt,
            "query": np.concatenate([np.arange(n_img), np.arange(n_txt)]),
            "group": np.concatenate([np.arange(n_img), text_image]),
            "rank": np.concatenate([i2t, t2i]),
        },
        schema=schemas.RANKS,
    )
    shuffled = table.take(rng.permutation(table.num_rows))
    got = ranks_from_table(shuffled)
    for x, y in zip(got, (i2t, t2i, text_image), strict=True):
        np.testing.assert_array_equal(x, y)
    broken = table.slice(1)  # i2t query 0 missing
    with pytest.raises(RsmEvalError, match="i2t rows' query"):
        ranks_from_table(broken, "m/ranks.parquet")


# --------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"i2t_ranks": np.array([0, -1])}, "i2t_ranks.*-1 at query 1"),
        ({"i2t_ranks": np.array([0.0, 1.0])}, "i2t_ranks: expected integers"),
        ({"t2i_ranks": np.zeros((2, 2), int)}, "t2i_ranks: expected a 1-D"),
        ({"text_image": np.array([0, 0, 1])}, "text_image: expected length 4"),
        ({"text_image": np.array([0, 0, 1, 2])}, r"caption 3 has image index 2"),
        ({"text_image": np.array([0, 0, 0, 0])}, "image 1 has no caption"),
        ({"n_resamples": 0}, "n_resamples"),
        ({"level": 1.0}, "level"),
        ({"seed": -1}, "seed"),
        ({"i2t_ranks": np.array([], dtype=int)}, "at least one"),
    ],
)
def test_bootstrap_ci_validates_input(kwargs, match):
    args = {
        "i2t_ranks": np.array([0, 3]),
        "t2i_ranks": np.array([0, 1, 2, 0]),
        "text_image": np.array([0, 0, 1, 1]),
    }
    args.update(kwargs)
    with pytest.raises(RsmEvalError, match=match):
        bootstrap_ci(**args)


def test_paired_bootstrap_validates_input():
    ti = np.array([0, 0, 1, 1])
    a = (np.array([0, 1]), np.array([0, 1, 2, 3]))
    with pytest.raises(RsmEvalError, match="metric"):
        paired_bootstrap(a, a, ti, metric="r1")
    with pytest.raises(RsmEvalError, match="but b has 2 and 3"):
        paired_bootstrap(a, (np.array([0, 1]), np.array([0, 1, 2])), ti)
    with pytest.raises(RsmEvalError, match="b: expected"):
        paired_bootstrap(a, np.array([0, 1]), ti)


def test_ceiling_validates_input():
    with pytest.raises(RsmEvalError, match="expected str"):
        caption_duplication_ceiling(["a", 3], np.array([0, 0]))
    with pytest.raises(RsmEvalError, match="text_image: expected length 2"):
        caption_duplication_ceiling(["a", "b"], np.array([0]))
    with pytest.raises(RsmEvalError, match="image 1 has no caption"):
        caption_duplication_ceiling(["a", "b"], np.array([0, 0]), image_content=["x", "y"])
    with pytest.raises(RsmEvalError, match="at least one caption"):
        caption_duplication_ceiling([], np.array([], dtype=int))
