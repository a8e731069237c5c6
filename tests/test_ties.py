"""Tie intervals of rsm_eval.metrics against brute force over every order of tied items.

The reference knows nothing of the closed form in metrics ("G" items above the best
positive, "E" tied non-positives): it enumerates every permutation of the gallery, keeps
those that list the items in non-increasing score order (exactly the orders a sort may
return when scores tie), reads off each query's first-positive rank, and takes the minimum
and maximum of every metric over the product of all queries' choices, so the claim that
one order is the worst for all metrics at once is tested, not assumed. Features lie on a
coarse dyadic grid, where every float64 dot product is exact, so exact ties are real ties.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from rsm_eval.metrics import (
    METRIC_COLUMNS,
    best_positive_rank_bounds,
    best_positive_ranks,
    metrics_from_ranks,
    remoteclip_retrieval,
    skyscript_retrieval,
)

SKYSCRIPT_COLUMNS = (*METRIC_COLUMNS, "i2t_mean", "t2i_mean")


# ---------------------------------------------------------------------------- reference


def _grid(rng: np.random.Generator, n: int, d: int, levels: int = 2) -> np.ndarray:
    """Features on {-levels..levels}/4: exact dot products, many exact ties."""
    return (rng.integers(-levels, levels + 1, size=(n, d)) / 4).astype(np.float32)


def _achievable_ranks(scores: np.ndarray, positives: list[int]) -> set[int]:
    """Every 0-based first-positive rank over all orders consistent with the scores."""
    out = set()
    for order in itertools.permutations(range(len(scores))):
        ordered = scores[list(order)]
        if np.all(ordered[:-1] >= ordered[1:]):  # a legitimate descending order
            out.add(min(order.index(p) for p in positives))
    return out


def _brute_force_interval(
    i2t_sets: list[set[int]], t2i_sets: list[set[int]], *, direction_means: bool = False
) -> dict[str, tuple[float, float]]:
    """(min, max) of every metric over all combinations of the queries' achievable ranks."""
    i2t_choices = list(itertools.product(*[sorted(s) for s in i2t_sets]))
    t2i_choices = list(itertools.product(*[sorted(s) for s in t2i_sets]))
    lo: dict[str, float] = {}
    hi: dict[str, float] = {}
    for a in i2t_choices:
        for b in t2i_choices:
            m = metrics_from_ranks(np.array(a), np.array(b))
            if direction_means:
                m["i2t_mean"] = (m["i2t_r1"] + m["i2t_r5"] + m["i2t_r10"]) / 3
                m["t2i_mean"] = (m["t2i_r1"] + m["t2i_r5"] + m["t2i_r10"]) / 3
            for k, v in m.items():
                lo[k] = min(lo.get(k, v), v)
                hi[k] = max(hi.get(k, v), v)
    return {k: (lo[k], hi[k]) for k in lo}


def _assert_interval(got: dict, want: dict) -> None:
    assert set(got) == set(want)
    for k, (lo, hi) in want.items():
        assert got[k][0] == pytest.approx(lo, abs=1e-9), (k, got[k], (lo, hi))
        assert got[k][1] == pytest.approx(hi, abs=1e-9), (k, got[k], (lo, hi))


def _assert_bounds(result, i2t_sets, t2i_sets) -> None:
    """Per-query bounds are the extremes of the achievable ranks; the rank lies among them."""
    for low, rank, high, sets in (
        (result.i2t_rank_low, result.i2t_ranks, result.i2t_rank_high, i2t_sets),
        (result.t2i_rank_low, result.t2i_ranks, result.t2i_rank_high, t2i_sets),
    ):
        np.testing.assert_array_equal(low, [min(s) for s in sets])
        np.testing.assert_array_equal(high, [max(s) for s in sets])
        assert all(int(r) in s for r, s in zip(rank, sets, strict=True))


# -------------------------------------------------------------------- brute-force checks


@pytest.mark.parametrize("seed", range(6))
def test_remoteclip_interval_equals_brute_force(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n_img, d = 3, 2
    text_image = np.array([0, 0, 1, 1, 2, 2])
    images = _grid(rng, n_img, d, levels=1)
    text = _grid(rng, len(text_image), d, levels=1)
    text[3] = text[1]  # a caption shared by two images, as in UCM
    scores = images.astype(np.float64) @ text.astype(np.float64).T  # exact on the grid
    i2t_sets = [
        _achievable_ranks(scores[i], list(np.flatnonzero(text_image == i))) for i in range(n_img)
    ]
    t2i_sets = [_achievable_ranks(scores[:, t], [int(i)]) for t, i in enumerate(text_image)]
    for block_bytes in (1, 256 << 20):
        r = remoteclip_retrieval(images, text, text_image, block_bytes=block_bytes)
        _assert_bounds(r, i2t_sets, t2i_sets)
        _assert_interval(r.tie_interval, _brute_force_interval(i2t_sets, t2i_sets))
        assert any(lo < hi for lo, hi in r.tie_interval.values())  # the case has ties
        for k, v in r.metrics.items():
            assert r.tie_interval[k][0] <= v <= r.tie_interval[k][1]


@pytest.mark.parametrize("seed", range(4))
def test_skyscript_multiple_positives_equals_brute_force(seed: int) -> None:
    """Several positives per query, some tied with each other and with non-positives."""
    rng = np.random.default_rng(100 + seed)
    n_img, n_txt, d = 4, 5, 2
    images = _grid(rng, n_img, d, levels=1)
    text = _grid(rng, n_txt, d, levels=1)
    images[3] = images[1]  # identical images under two names
    pairs = {(t, t % n_img) for t in range(n_txt)} | {(0, 3), (1, 2), (2, 1), (4, 3)}
    pairs_text = np.array([p[0] for p in sorted(pairs)] + [0])  # (0, 3) repeated
    pairs_image = np.array([p[1] for p in sorted(pairs)] + [3])
    scores = images.astype(np.float64) @ text.astype(np.float64).T
    i2t_sets = [
        _achievable_ranks(scores[i], sorted({t for t, j in pairs if j == i})) for i in range(n_img)
    ]
    t2i_sets = [
        _achievable_ranks(scores[:, t], sorted({j for u, j in pairs if u == t}))
        for t in range(n_txt)
    ]
    r = skyscript_retrieval(images, text, pairs_text, pairs_image, block_bytes=1)
    _assert_bounds(r, i2t_sets, t2i_sets)
    want = _brute_force_interval(i2t_sets, t2i_sets, direction_means=True)
    _assert_interval(r.tie_interval, want)
    assert tuple(r.tie_interval) == SKYSCRIPT_COLUMNS
    assert any(lo < hi for lo, hi in r.tie_interval.values())  # the case has ties


def test_csr_bounds_with_repeated_and_tied_positives() -> None:
    rng = np.random.default_rng(7)
    queries, gallery = _grid(rng, 5, 2, levels=1), _grid(rng, 7, 2, levels=1)
    gallery[4] = gallery[2]
    positives = [[2, 4, 2], [6], [0, 0], [4, 1, 5], [3]]
    indptr = np.concatenate([[0], np.cumsum([len(p) for p in positives])])
    indices = np.concatenate(positives)
    scores = queries.astype(np.float64) @ gallery.astype(np.float64).T
    sets = [_achievable_ranks(scores[q], p) for q, p in enumerate(positives)]
    for block_bytes in (1, 64, 256 << 20):
        b = best_positive_rank_bounds(queries, gallery, indptr, indices, block_bytes=block_bytes)
        np.testing.assert_array_equal(b.low, [min(s) for s in sets])
        np.testing.assert_array_equal(b.high, [max(s) for s in sets])
        np.testing.assert_array_equal(
            b.rank, best_positive_ranks(queries, gallery, indptr, indices)
        )


def test_every_global_tie_break_lies_inside_the_interval() -> None:
    """A tool that breaks ties by its own gallery order (a stable sort after relabelling the
    items) gets a value inside the interval. The interval is over each query's own order of
    its ties (as torch.topk may return them), so it can reach further than any single
    relabelling of the gallery: here t2i R@1 spans 16.67-66.67 over per-query orders but
    only 33.33-50.00 over the 720 x 6 relabellings."""
    rng = np.random.default_rng(3)
    images = _grid(rng, 3, 2, levels=1)
    text = _grid(rng, 6, 2, levels=1)
    text[4] = text[0]
    text[5] = text[2]
    text_image = np.array([0, 0, 1, 1, 2, 2])
    r = remoteclip_retrieval(images, text, text_image)
    assert r.tie_interval["t2i_r1"] == pytest.approx((100 / 6, 200 / 3))
    pick = np.random.default_rng(0)
    seen = []
    for _ in range(150):
        p_t, p_i = pick.permutation(6), pick.permutation(3)
        # Relabel captions and images: scores are unchanged, only the tie order moves.
        inv_i = np.argsort(p_i)
        other = remoteclip_retrieval(images[p_i], text[p_t], inv_i[text_image[p_t]])
        for k, v in other.metrics.items():
            lo, hi = r.tie_interval[k]
            assert lo - 1e-9 <= v <= hi + 1e-9, (k, v, lo, hi)
        seen.append(other.metrics["t2i_r1"])
    assert min(seen) == pytest.approx(100 / 3) and max(seen) == pytest.approx(50.0)


# ----------------------------------------------------------------- collapse and examples


def test_interval_collapses_without_ties() -> None:
    rng = np.random.default_rng(11)
    images = rng.standard_normal((40, 16)).astype(np.float32)
    text_image = np.repeat(np.arange(40), 5)
    text = (images[text_image] * 0.3 + rng.standard_normal((200, 16))).astype(np.float32)
    r = remoteclip_retrieval(images, text, text_image)
    np.testing.assert_array_equal(r.i2t_rank_low, r.i2t_ranks)
    np.testing.assert_array_equal(r.i2t_rank_high, r.i2t_ranks)
    np.testing.assert_array_equal(r.t2i_rank_low, r.t2i_ranks)
    np.testing.assert_array_equal(r.t2i_rank_high, r.t2i_ranks)
    assert r.tie_interval == {k: (v, v) for k, v in r.metrics.items()}
    assert 0 < r.metrics["t2i_r1"] < 100  # not degenerate


def test_identical_images_create_the_tie() -> None:
    """Images 0 and 1 are the same picture under two names; captions are all distinct.

    Text->image: captions 0 (of image 0) and 1 (of image 1) score both images equally, so
    each may come first or second; image->text has no tie at all.
    """
    images = np.array([[1, 0], [1, 0], [0, 1]], dtype=np.float32)
    text = np.array([[1, 0], [0.75, 0.25], [0, 1]], dtype=np.float32)
    text_image = np.array([0, 1, 2])
    r = remoteclip_retrieval(images, text, text_image)
    # Tie rule: the earlier image first, so caption 0 hits, caption 1 is at rank 1.
    np.testing.assert_array_equal(r.t2i_ranks, [0, 1, 0])
    np.testing.assert_array_equal(r.t2i_rank_low, [0, 0, 0])
    np.testing.assert_array_equal(r.t2i_rank_high, [1, 1, 0])
    assert r.metrics["t2i_r1"] == pytest.approx(200 / 3)
    assert r.tie_interval["t2i_r1"] == pytest.approx((100 / 3, 100.0))
    assert r.tie_interval["t2i_r5"] == (100.0, 100.0)
    # Image->text: images 0 and 1 rank the captions identically (0 first, then 1), so
    # image 1's own caption is second however ties go: no caption scores are tied.
    np.testing.assert_array_equal(r.i2t_ranks, [0, 1, 0])
    np.testing.assert_array_equal(r.i2t_rank_low, r.i2t_rank_high)
    assert r.tie_interval["i2t_r1"] == (r.metrics["i2t_r1"],) * 2
    lo, hi = r.tie_interval["mean_recall"]
    assert (lo, hi) == pytest.approx(((200 / 3 + 100 / 3 + 400) / 6, (200 / 3 + 100 + 400) / 6))


def test_shared_caption_sets_ucm_style() -> None:
    """Two neighbouring images with the same five captions (UCM-Captions): image->text R@1
    ranges from neither image hitting to both; the tie rule lets only the first hit."""
    rng = np.random.default_rng(5)
    base = rng.standard_normal((5, 8))
    shared = (base / np.linalg.norm(base, axis=1, keepdims=True)).astype(np.float32)
    images = np.stack([shared[0], shared[0] * 0.9 + shared[1] * 0.1]).astype(np.float32)
    text = np.concatenate([shared, shared])  # image 1 carries image 0's caption set
    text_image = np.repeat([0, 1], 5)
    r = remoteclip_retrieval(images, text, text_image)
    np.testing.assert_array_equal(r.i2t_ranks, [0, 1])
    np.testing.assert_array_equal(r.i2t_rank_low, [0, 0])
    np.testing.assert_array_equal(r.i2t_rank_high, [1, 1])
    assert r.metrics["i2t_r1"] == 50.0
    assert r.tie_interval["i2t_r1"] == (0.0, 100.0)
    # Each caption ties with its copy for text->image only if the two images score it
    # equally, which they do not: the t2i interval is a point.
    assert r.tie_interval["t2i_r1"] == (r.metrics["t2i_r1"],) * 2


# --------------------------------------------------------------- evaluate record, report


def _write_split(tmp_path, prefix: str = "") -> tuple:
    """A UCM-like test split: a.tif and b.tif carry the same two captions, c.tif its own.
    Features are keyed by content, so identical captions get one (identical) feature row."""
    import pyarrow as pa
    from rsm_eval import cas, schemas
    from rsm_eval.embeddings import text_key

    caps = {"a.tif": ["a red roof", "two roads"], "b.tif": ["a red roof", "two roads"]}
    caps["c.tif"] = ["a green field", "a river"]
    rows = [
        {
            "dataset": "ucm",
            "split": "test",
            "image_key": img,
            "image_path": img,
            "image_sha256": cas.sha256_text("pixels of " + img),
            "caption_index": i,
            "caption": c,
            "caption_sha256": cas.sha256_text(c),
            "sentid": None,
        }
        for img, cs in caps.items()
        for i, c in enumerate(cs)
    ]
    captions = tmp_path / "captions.parquet"
    schemas.write_table(
        pa.Table.from_pylist(rows, schemas.CAPTIONS), captions, schemas.CAPTIONS, {}
    )
    vec = {
        "a red roof": [1.0, 0.0, 0.0],
        "two roads": [0.0, 1.0, 0.0],
        "a green field": [0.0, 0.0, 1.0],
        "a river": [0.0, 0.6, 0.8],
    }
    img_vec = {"a.tif": [0.8, 0.6, 0.0], "b.tif": [0.6, 0.8, 0.0], "c.tif": [0.0, 0.0, 1.0]}
    meta = {"model_address": "m" * 64, "text_prefix": prefix}
    paths = []
    for name, keys, feats in (
        ("img", [cas.sha256_text("pixels of " + k) for k in img_vec], list(img_vec.values())),
        ("txt", [text_key(c, prefix) for c in vec], list(vec.values())),
    ):
        arr = np.asarray(feats, dtype=np.float32)
        table = pa.table(
            {
                "key": pa.array(keys, pa.string()),
                "embedding": pa.FixedSizeListArray.from_arrays(pa.array(arr.reshape(-1)), 3),
            }
        )
        paths.append(tmp_path / f"{name}.parquet")
        schemas.write_table(table, paths[-1], schemas.features_schema(3), meta)
    return captions, *paths


@pytest.mark.parametrize("protocol", ["remoteclip", "skyscript"])
def test_evaluate_record_carries_the_interval(tmp_path, protocol: str) -> None:
    import json

    from rsm_eval import evaluate

    prefix = "a satellite image. " if protocol == "skyscript" else ""
    captions, img, txt = _write_split(tmp_path, prefix)
    record, _ = evaluate.evaluate(
        captions,
        img,
        txt,
        model="m",
        dataset="ucm",
        split="test",
        protocol=protocol,
        code="c",
        n_resamples=20,
    )
    json.dumps(record)  # plain JSON
    ties = record["tie_interval"]
    assert set(ties) == set(record["metrics"])
    for m, (lo, hi) in ties.items():
        assert lo <= record["metrics"][m] <= hi, m
    assert record["ties"] == evaluate.TIE_RULE
    if protocol == "remoteclip":
        # a.tif's best caption "a red roof" is tied with b.tif's copy and vice versa for
        # "two roads": by the rule only a.tif hits; either, both or neither over all orders.
        assert record["metrics"]["i2t_r1"] == pytest.approx(200 / 3)
        assert ties["i2t_r1"] == pytest.approx([100 / 3, 100.0])
        assert record["n_tied_queries"] == {"i2t": 2, "t2i": 0}
    else:
        # SkyScript: one query per distinct string, positive for both images; no image
        # query ties with a non-positive, so the interval is the value.
        assert ties == {m: [v, v] for m, v in record["metrics"].items()}
        assert record["n_tied_queries"] == {"i2t": 0, "t2i": 0}


def _report_record(metrics: dict, ties: dict | None) -> dict:
    rec = {
        "model": "m",
        "dataset": "ucm",
        "split": "test",
        "protocol": "remoteclip",
        "n_images": 210,
        "n_captions": 1050,
        "metrics": metrics,
        "address": "a" * 64,
        "inputs": {
            "model_address": "b" * 64,
            "manifest_address": "c" * 64,
            "image_features_sha256": "e" * 64,
            "text_features_sha256": "f" * 64,
        },
    }
    if ties is not None:
        rec["tie_interval"] = ties
    return rec


UCM_VALUES = {
    "i2t_r1": 9.52,
    "i2t_r5": 15.0,
    "i2t_r10": 22.38,
    "t2i_r1": 8.0,
    "t2i_r5": 30.0,
    "t2i_r10": 50.0,
    "mean_recall": 22.48,
}


def test_report_tie_columns_and_wide_intervals(tmp_path) -> None:
    import csv

    from rsm_eval import report

    ties = {m: [v, v] for m, v in UCM_VALUES.items()}
    ties["i2t_r1"] = [0.48, 12.86]
    ties["i2t_r10"] = [19.52, 24.76]
    ties["t2i_r1"] = [7.995, 8.004]  # narrower than 0.01: not shown
    paths = report.render([_report_record(UCM_VALUES, ties)], [], tmp_path, tmp_path)
    [row] = list(csv.DictReader(paths["csv"].open()))
    header = paths["csv"].read_text().splitlines()[0].split(",")
    assert header[-len(report.TIE_COLUMNS) :] == list(report.TIE_COLUMNS)
    assert (row["i2t_r1_tie_low"], row["i2t_r1_tie_high"]) == ("0.48", "12.86")
    assert (row["t2i_r5_tie_low"], row["t2i_r5_tie_high"]) == ("30.00", "30.00")
    md = paths["md"].read_text()
    assert "9.52 (ties 0.48-12.86)" in md and "22.38 (ties 19.52-24.76)" in md
    assert "8.00 (ties" not in md
    assert "Tie intervals wider than 0.01: m / ucm (remoteclip): i2t_r1, i2t_r10." in md
    assert "(ties" in paths["html"].read_text()
    # A record without intervals (older runs) still renders, with empty tie cells.
    paths = report.render([_report_record(UCM_VALUES, None)], [], tmp_path, tmp_path)
    [row] = list(csv.DictReader(paths["csv"].open()))
    assert row["i2t_r1_tie_low"] == ""


def test_published_match_uses_the_tie_interval() -> None:
    """A reproduction 7 points below the published UCM i2t R@1 (RSM-CLIP B-32, RET-3) by
    the tie rule matches when its tie interval reaches the published number minus the
    tolerance, and is flagged when it stops short of that."""
    from rsm_eval import report

    keys = {
        "models": {"m": {"model": "RSM-CLIP", "backbone": "ViT-B-32", "regime": "ret3"}},
        "datasets": {"ucm": "ucm"},
    }
    [pub] = [
        p
        for p in report.load_published()
        if (p["model"], p["backbone"], p["regime"], p["dataset"])
        == ("RSM-CLIP", "ViT-B-32", "ret3", "ucm")
    ]
    values = {m: (pub[m] if pub[m] is not None else 50.0) for m in report.METRICS}
    values["i2t_r1"] = pub["i2t_r1"] - 7.0
    ties = {m: [v, v] for m, v in values.items()}
    for tie_high, flagged in ((pub["i2t_r1"] - 1.5, True), (pub["i2t_r1"] - 0.5, False)):
        ties["i2t_r1"] = [values["i2t_r1"] - 3.0, tie_high]
        table = report.rows([_report_record(values, ties)])
        [c] = report.published_comparison(table, keys, tolerance=1.0)[0]
        assert c["diff"]["i2t_r1"] == pytest.approx(-7.0)
        assert ("i2t_r1" in c["flagged"]) is flagged
        assert c["tie_interval"]["i2t_r1"] == [round(values["i2t_r1"] - 3.0, 2), round(tie_high, 2)]
    # Without an interval the rule is the old one: |diff| <= tolerance.
    table = report.rows([_report_record(values, None)])
    [c] = report.published_comparison(table, keys, tolerance=1.0)[0]
    assert c["flagged"] == ["i2t_r1"]
