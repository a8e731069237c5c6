"""Property-based tests (hypothesis) of the manifest readers and the retrieval metrics.

* Valid annotations (Karpathy JSON, caption CSV) read back to exactly the rows written, and
  build() gives tables whose counts and protocol order agree with them.
* Random bytes, JSON or CSV give RsmEvalError (or, if valid by chance, rows), never another
  exception.
* remoteclip_retrieval and metrics_from_ranks agree with a dense NumPy reference (stable
  descending argsort: equal scores rank the lower gallery index first, see metrics.py) and
  every recall is in [0, 100].
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from PIL import Image
from rsm_eval import manifests, metrics
from rsm_eval.config import Dataset
from rsm_eval.errors import RsmEvalError

SETTINGS = settings(
    deadline=None,
    max_examples=100,
    database=None,  # no .hypothesis/ example database in the checkout
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
KS = (1, 5, 10)


@pytest.fixture(scope="module")
def scratch(tmp_path_factory) -> Path:
    """A directory reused by every example (each example overwrites its files)."""
    return tmp_path_factory.mktemp("props")


POOL = [f"img_{i}.png" for i in range(6)]


@pytest.fixture(scope="module")
def image_pool(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("pool")
    for i, name in enumerate(POOL):
        Image.new("RGB", (8, 8), (40 * i, 255 - 40 * i, 7)).save(root / name)
    return root


# --------------------------------------------------------------------------- metrics


def reference_ranks(scores: np.ndarray, positives: list[list[int]]) -> np.ndarray:
    """0-based rank of each query's best positive under a dense stable descending sort."""
    out = []
    for q, pos in enumerate(positives):
        order = np.argsort(-scores[q], kind="stable")
        where = np.empty(len(order), dtype=np.int64)
        where[order] = np.arange(len(order))
        out.append(int(where[pos].min()))
    return np.array(out, dtype=np.int64)


def reference_metrics(i2t: np.ndarray, t2i: np.ndarray) -> dict[str, float]:
    out = {f"i2t_r{k}": 100.0 * float(np.mean(i2t < k)) for k in KS}
    out.update({f"t2i_r{k}": 100.0 * float(np.mean(t2i < k)) for k in KS})
    out["mean_recall"] = float(np.mean(list(out.values())))
    return out


@st.composite
def retrieval_case(draw, elements):
    """Image and text features plus each caption's image (every image has a caption)."""
    n_img = draw(st.integers(1, 7))
    n_txt = draw(st.integers(n_img, 3 * n_img))
    d = draw(st.integers(1, 6))
    extra = draw(
        st.lists(st.integers(0, n_img - 1), min_size=n_txt - n_img, max_size=n_txt - n_img)
    )
    owners = np.array(draw(st.permutations(list(range(n_img)) + extra)), dtype=np.int64)
    img = draw(arrays(np.float32, (n_img, d), elements=elements))
    txt = draw(arrays(np.float32, (n_txt, d), elements=elements))
    # Repeated rows: exact ties, as with duplicate captions or images.
    if n_txt > 1 and draw(st.booleans()):
        txt[draw(st.integers(1, n_txt - 1))] = txt[0]
    if n_img > 1 and draw(st.booleans()):
        img[-1] = img[0]
    return img, txt, owners


def check_against_reference(img, txt, owners):
    """remoteclip_retrieval against the dense reference; features must make float64 exact."""
    scores = img.astype(np.float64) @ txt.astype(np.float64).T
    result = metrics.remoteclip_retrieval(img, txt, owners)
    n_img = img.shape[0]
    i2t = reference_ranks(scores, [list(np.flatnonzero(owners == i)) for i in range(n_img)])
    t2i = reference_ranks(scores.T, [[int(o)] for o in owners])
    np.testing.assert_array_equal(result.i2t_ranks, i2t)
    np.testing.assert_array_equal(result.t2i_ranks, t2i)
    ref = reference_metrics(i2t, t2i)
    assert result.metrics.keys() == ref.keys()
    for key, value in result.metrics.items():
        assert 0.0 <= value <= 100.0, key
        assert value == pytest.approx(ref[key], abs=1e-9), key
    return result


# Quarter-integers: every product and sum is exact in float32 and float64, so the dense
# reference computes the true scores, and ties (frequent here) are exact.
QUARTERS = st.integers(-4, 4).map(lambda v: v / 4)
# 8-bit mantissas over 9 binades: exact in float64 (at most ~35 significant bits per score)
# but not in float32, so ranks go through the module's float32 filter and exact re-scoring.
NARROW = st.builds(lambda k, e: k / 2**e, st.integers(-255, 255), st.integers(0, 8))


@SETTINGS
@given(retrieval_case(QUARTERS))
def test_remoteclip_metrics_match_dense_reference_with_exact_ties(case):
    check_against_reference(*case)


@SETTINGS
@given(retrieval_case(NARROW), st.sampled_from([1, 64, 1 << 12]))
def test_remoteclip_metrics_match_reference_beyond_float32_and_any_block_size(case, block):
    result = check_against_reference(*case)
    blocked = metrics.remoteclip_retrieval(*case, block_bytes=block)
    np.testing.assert_array_equal(blocked.i2t_ranks, result.i2t_ranks)
    np.testing.assert_array_equal(blocked.t2i_ranks, result.t2i_ranks)


@SETTINGS
@given(retrieval_case(st.floats(-1, 1, width=32)))
def test_remoteclip_metrics_for_any_floats_are_consistent_and_bounded(case):
    img, txt, owners = case
    result = metrics.remoteclip_retrieval(img, txt, owners)
    assert ((result.i2t_ranks >= 0) & (result.i2t_ranks < txt.shape[0])).all()
    assert ((result.t2i_ranks >= 0) & (result.t2i_ranks < img.shape[0])).all()
    assert result.metrics == metrics.metrics_from_ranks(result.i2t_ranks, result.t2i_ranks)
    assert all(0.0 <= v <= 100.0 for v in result.metrics.values())
    for direction in ("i2t", "t2i"):
        r = [result.metrics[f"{direction}_r{k}"] for k in KS]
        assert r == sorted(r)
    blocked = metrics.remoteclip_retrieval(img, txt, owners, block_bytes=1)
    np.testing.assert_array_equal(blocked.i2t_ranks, result.i2t_ranks)
    np.testing.assert_array_equal(blocked.t2i_ranks, result.t2i_ranks)


@SETTINGS
@given(
    arrays(np.int64, st.integers(1, 40), elements=st.integers(0, 50)),
    arrays(np.int64, st.integers(1, 40), elements=st.integers(0, 50)),
)
def test_metrics_from_ranks_match_reference(i2t, t2i):
    got = metrics.metrics_from_ranks(i2t, t2i)
    assert got == pytest.approx(reference_metrics(i2t, t2i), abs=1e-9)
    assert all(0.0 <= v <= 100.0 for v in got.values())


def _huge(i, t, o):
    i, t = i.copy(), t.copy()
    i[0], t[0] = 3e30, 3e30  # norms whose product would overflow float32 scores
    return i, t, o, {}


def _nan(i, t, o):
    i = i.copy()
    i[0, 0] = np.nan
    return i, t, o, {}


def _inf(i, t, o):
    t = t.copy()
    t[-1, -1] = -np.inf
    return i, t, o, {}


BREAKERS = {
    "nan": _nan,
    "inf": _inf,
    "huge norms": _huge,
    "no images": lambda i, t, o: (i[:0], t, o, {}),
    "no captions": lambda i, t, o: (i, t[:0], o[:0], {}),
    "1-D features": lambda i, t, o: (i[:, 0], t, o, {}),
    "3-D features": lambda i, t, o: (i[None], t, o, {}),
    "int features": lambda i, t, o: (i.astype(np.int32), t, o, {}),
    "complex features": lambda i, t, o: (i, t.astype(complex), o, {}),
    "object features": lambda i, t, o: (i.astype(object), t, o, {}),
    "list features": lambda i, t, o: (i.tolist(), t, o, {}),
    "other dimension": lambda i, t, o: (np.hstack([i, i]), t, o, {}),
    "short text_image": lambda i, t, o: (i, t, o[:-1], {}),
    "float text_image": lambda i, t, o: (i, t, o.astype(np.float64), {}),
    "negative image": lambda i, t, o: (i, t, np.where(np.arange(len(o)) == 0, -1, o), {}),
    "image out of range": lambda i, t, o: (i, t, np.where(np.arange(len(o)) == 0, len(i), o), {}),
    "image without caption": lambda i, t, o: (np.vstack([i, i[:1]]), t, o, {}),
    "zero block": lambda i, t, o: (i, t, o, {"block_bytes": 0}),
    "bool block": lambda i, t, o: (i, t, o, {"block_bytes": True}),
    "float block": lambda i, t, o: (i, t, o, {"block_bytes": 1.5}),
}


@SETTINGS
@given(retrieval_case(st.floats(-1, 1, width=32)), st.sampled_from(sorted(BREAKERS)))
def test_invalid_metric_inputs_raise_rsm_eval_error(case, how):
    img, txt, owners, kwargs = BREAKERS[how](*case)
    with pytest.raises(RsmEvalError):
        metrics.remoteclip_retrieval(img, txt, owners, **kwargs)


@SETTINGS
@given(
    arrays(np.int64, st.integers(0, 5), elements=st.integers(0, 3)),
    arrays(np.int64, st.integers(0, 5), elements=st.integers(0, 3)),
    st.sampled_from([None, (), (0,), (-1,), (1.5,), (True,)]),
)
def test_invalid_ranks_or_ks_raise_rsm_eval_error(i2t, t2i, ks):
    assume(ks is not None or i2t.size == 0 or t2i.size == 0)
    with pytest.raises(RsmEvalError):
        metrics.metrics_from_ranks(i2t, t2i, KS if ks is None else ks)


def test_negative_ranks_are_rejected():
    with pytest.raises(RsmEvalError, match="ranks"):
        metrics.metrics_from_ranks(np.array([-1, 0]), np.array([0]))


# --------------------------------------------------------------------------- manifest readers

TEXT = st.text(max_size=30)
NAMES = st.text(min_size=1, max_size=12)


@st.composite
def karpathy_entries(draw):
    names = draw(st.lists(NAMES, min_size=0, max_size=6, unique=True))
    entries = []
    for name in names:
        split = draw(st.sampled_from(manifests.KNOWN_SPLITS) | TEXT)
        sentences = []
        for _ in range(draw(st.integers(1, 4))):
            sent = {"raw": draw(TEXT)}
            sentid = draw(st.none() | st.integers(-5, 10**6) | st.text(max_size=3))
            if sentid is not None:
                sent["sentid"] = sentid
            if draw(st.booleans()):
                sent["tokens"] = sent["raw"].split()
            sentences.append(sent)
        entries.append({"filename": name, "split": split, "sentences": sentences})
    return entries


@SETTINGS
@given(karpathy_entries(), st.booleans(), st.booleans())
def test_read_karpathy_returns_exactly_the_rows_written(scratch, entries, bom, ascii_only):
    path = scratch / "k.json"
    text = json.dumps({"images": entries, "dataset": "x"}, ensure_ascii=ascii_only, indent=1)
    path.write_bytes((("\ufeff" if bom else "") + text).encode("utf-8"))
    rows = manifests.read_karpathy(path)
    expected = [
        (e["filename"], e["split"], s["raw"], j, s.get("sentid"))
        for e in entries
        for j, s in enumerate(e["sentences"])
    ]
    got = [(r.image_key, r.split, r.caption, r.caption_index, r.sentid) for r in rows]
    assert [g[:4] for g in got] == [x[:4] for x in expected]
    assert [g[4] for g in got] == [x[4] if isinstance(x[4], int) else None for x in expected]


CSV_TEXT = st.text(st.characters(exclude_characters="\x00"), max_size=25)
CSV_NAMES = st.text(
    st.characters(categories=["L", "N"], include_characters=" ._-;,'\"()$`&"),
    min_size=1,
    max_size=12,
).filter(lambda s: s.strip() == s and s)


@st.composite
def caption_csv(draw):
    image_col = draw(st.sampled_from(manifests.IMAGE_COLUMNS))
    caption_col = draw(st.sampled_from(manifests.CAPTION_COLUMNS))
    if draw(st.booleans()):
        image_col = f" {image_col.upper()} "  # detection ignores case and padding
    with_split = draw(st.booleans())
    header = [image_col, caption_col] + (["split"] if with_split else [])
    header += [f"extra_{i}" for i in range(draw(st.integers(0, 2)))]
    header = draw(st.permutations(header))
    names = draw(st.lists(CSV_NAMES, min_size=1, max_size=4, unique=True))
    records = []
    for _ in range(draw(st.integers(0, 10))):
        rec = {h: draw(CSV_TEXT) for h in header}
        rec[image_col] = draw(st.sampled_from(names))
        if with_split:
            rec["split"] = draw(st.sampled_from(manifests.KNOWN_SPLITS))
        records.append(rec)
    sep = draw(st.sampled_from([",", ";", "\t", "|"]))
    return header, image_col, caption_col, with_split, records, sep


@SETTINGS
@given(caption_csv(), st.sampled_from(["utf-8", "utf-8-sig", "gb18030", "utf-16"]))
def test_read_caption_csv_returns_exactly_the_rows_written(scratch, spec, encoding):
    header, image_col, caption_col, with_split, records, sep = spec
    buf = io.StringIO(newline="")
    writer = csv.writer(buf, delimiter=sep, lineterminator="\r\n")
    writer.writerow(header)
    for rec in records:
        writer.writerow([rec[h] for h in header])
    path = scratch / "c.csv"
    try:
        path.write_bytes(buf.getvalue().encode(encoding))
    except UnicodeEncodeError:
        assume(False)
    decode_as = "utf-8" if encoding == "utf-8-sig" else encoding
    rows = manifests.read_caption_csv(path, encoding=decode_as, separator=sep, split="test")
    seen: dict[str, int] = {}
    expected = []
    for rec in records:
        key = rec[image_col]
        expected.append((key, rec[caption_col], seen.get(key, 0), rec.get("split", "test")))
        seen[key] = seen.get(key, 0) + 1
    assert [(r.image_key, r.caption, r.caption_index, r.split) for r in rows] == expected


@st.composite
def valid_dataset(draw):
    names = draw(st.lists(st.sampled_from(POOL), min_size=1, max_size=len(POOL), unique=True))
    splits = [draw(st.sampled_from(manifests.KNOWN_SPLITS)) for _ in names]
    splits[draw(st.integers(0, len(names) - 1))] = "test"
    non_blank = st.text(min_size=1, max_size=20).filter(lambda s: s.strip())
    entries = []
    for name, split in zip(names, splits, strict=True):
        caps = draw(st.lists(non_blank if split == "test" else TEXT, min_size=1, max_size=4))
        entries.append({"filename": name, "split": split, "sentences": [{"raw": c} for c in caps]})
    return entries


@SETTINGS
@given(valid_dataset())
def test_build_agrees_with_the_annotations(scratch, image_pool, entries):
    path = scratch / "b.json"
    path.write_text(json.dumps({"images": entries}), encoding="utf-8")
    ds = Dataset(name="p", format="karpathy-json", annotations=str(path), images=str(image_pool))
    captions, images, summary = manifests.build(ds, threads=1)
    assert captions.num_rows == sum(len(e["sentences"]) for e in entries)
    assert images.num_rows == len(entries)
    for split in {e["split"] for e in entries}:
        mine = [e for e in entries if e["split"] == split]
        counts = summary["counts"][split]
        assert counts["images"] == len(mine)
        assert counts["captions"] == sum(len(e["sentences"]) for e in mine)
    keys, shas, text_shas, text_image = manifests.evaluation_order(captions, "test")
    tests = sorted((e for e in entries if e["split"] == "test"), key=lambda e: e["filename"])
    assert keys == [e["filename"] for e in tests]
    assert text_image == [i for i, e in enumerate(tests) for _ in e["sentences"]]
    assert len(shas) == len(keys) and len(text_shas) == len(text_image)


# --------------------------------------------------------------------------- invalid input

JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(
            st.sampled_from(["images", "filename", "split", "sentences", "raw", "sentid"])
            | st.text(max_size=5),
            children,
            max_size=4,
        )
    ),
    max_leaves=20,
)
ALMOST_KARPATHY = st.fixed_dictionaries(
    {
        "images": st.lists(
            st.dictionaries(
                st.sampled_from(["filename", "split", "sentences", "raw"]), JSON_VALUES, max_size=4
            ),
            max_size=4,
        )
    }
)


def _rows_or_rsm_error(call) -> None:
    try:
        rows = call()
    except RsmEvalError:
        return
    assert isinstance(rows, list) and all(isinstance(r, manifests.Row) for r in rows)


@SETTINGS
@given(st.binary(max_size=200) | JSON_VALUES.map(json.dumps).map(str.encode))
def test_random_bytes_or_json_as_karpathy_give_rsm_eval_error(scratch, data):
    path = scratch / "r.json"
    path.write_bytes(data)
    _rows_or_rsm_error(lambda: manifests.read_karpathy(path))


@SETTINGS
@given(ALMOST_KARPATHY.map(json.dumps))
def test_malformed_karpathy_structure_gives_rsm_eval_error(scratch, image_pool, text):
    path = scratch / "m.json"
    path.write_text(text, encoding="utf-8")
    _rows_or_rsm_error(lambda: manifests.read_karpathy(path))
    ds = Dataset(name="p", format="karpathy-json", annotations=str(path), images=str(image_pool))
    with pytest.raises(RsmEvalError):
        manifests.build(ds, threads=1)  # no example references the pool's file names validly


CSV_NOISE = st.lists(
    st.sampled_from(list("ab,;\"'\n\r\t |\x00") + ["filepath", "title", "caption", "split"]),
    max_size=40,
).map("".join)


@SETTINGS
@given(st.binary(max_size=200) | CSV_NOISE.map(str.encode), st.sampled_from([",", ";", "\t"]))
def test_random_csv_gives_rsm_eval_error(scratch, image_pool, data, sep):
    path = scratch / "r.csv"
    path.write_bytes(data)
    _rows_or_rsm_error(lambda: manifests.read_caption_csv(path, separator=sep))
    ds = Dataset(
        name="p", format="csv", annotations=str(path), images=str(image_pool), csv_separator=sep
    )
    with pytest.raises(RsmEvalError):
        manifests.build(ds, threads=1)  # no example names a file of the pool


# Hostile JSON that the properties above do not generate at random.


def test_deeply_nested_json_is_an_rsm_eval_error(tmp_path):
    path = tmp_path / "deep.json"
    path.write_text('{"images": ' + "[" * 100_000)
    with pytest.raises(RsmEvalError, match="deep.json"):
        manifests.read_karpathy(path)


def test_huge_integer_in_json_is_an_rsm_eval_error(tmp_path):
    path = tmp_path / "big.json"
    path.write_text('{"images": [], "n": ' + "9" * 5000 + "}")
    with pytest.raises(RsmEvalError, match="big.json"):
        manifests.read_karpathy(path)


def test_lone_surrogate_caption_is_an_rsm_eval_error(tmp_path, image_pool):
    path = tmp_path / "s.json"
    path.write_text(
        '{"images": [{"filename": "img_0.png", "split": "test", '
        '"sentences": [{"raw": "a field \\ud800"}]}]}'
    )
    ds = Dataset(name="p", format="karpathy-json", annotations=str(path), images=str(image_pool))
    with pytest.raises(RsmEvalError, match=r"s\.json.*images\[0\]"):
        manifests.build(ds, threads=1)


@pytest.mark.parametrize(
    "sentid", [2**70, -(2**63) - 1, True], ids=["above-int64", "below-int64", "bool"]
)
def test_odd_sentid_is_dropped_or_an_rsm_eval_error(tmp_path, image_pool, sentid):
    entry = {"filename": "img_0.png", "split": "test"}
    entry["sentences"] = [{"raw": "a field", "sentid": sentid}]
    path = tmp_path / "sentid.json"
    path.write_text(json.dumps({"images": [entry]}))
    ds = Dataset(name="p", format="karpathy-json", annotations=str(path), images=str(image_pool))
    try:
        captions, _, _ = manifests.build(ds, threads=1)
    except RsmEvalError as exc:
        assert "sentid.json" in str(exc)
        return
    assert captions.column("sentid").to_pylist() == [None]
