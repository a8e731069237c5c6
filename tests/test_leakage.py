"""Tests for rsm_eval.leakage: pixel and perceptual hashes, duplicate search, confirmation."""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from rsm_eval import leakage
from rsm_eval.demo import generate_benchmark
from rsm_eval.errors import RsmEvalError
from rsm_eval.leakage import (
    audit,
    confirm,
    find_duplicates,
    image_hash,
    image_hashes,
    phash,
    pixel_sha256,
    thumbnail_data_uri,
)

# ------------------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    """A demo benchmark with 3 exact and 6 near planted duplicates, hashed once.

    Returns (root, summary, test items, train items); train holds the train and val splits
    and the CSV images, keyed by their path relative to root (as the summary names copies).
    """
    root = tmp_path_factory.mktemp("leak") / "data"
    summary = generate_benchmark(
        root,
        seed=11,
        n_train=30,
        n_val=4,
        n_test=24,
        n_csv_images=16,
        n_exact_duplicates=3,
        n_near_duplicates=6,
    )
    doc = json.loads((root / "dataset_demo.json").read_text())
    test_keys = [im["filename"] for im in doc["images"] if im["split"] == "test"]
    train_keys = [f"images/{im['filename']}" for im in doc["images"] if im["split"] != "test"]
    train_keys += [f"rsmitd_images/{p.name}" for p in sorted((root / "rsmitd_images").iterdir())]
    test_h = image_hashes([root / "images" / k for k in test_keys], threads=2)
    train_h = image_hashes([root / k for k in train_keys], threads=2)
    test = [_item(k, h) for k, h in zip(test_keys, test_h, strict=True)]
    train = [_item(k, h) for k, h in zip(train_keys, train_h, strict=True)]
    return root, summary, test, train


def _item(key: str, h: dict) -> tuple:
    return key, h["pixel_sha256"], h["phash"], h["dhash"]


def _scene(seed: int = 0, size: int = 96) -> np.ndarray:
    """A textured test picture with low-frequency structure (what pHash looks at)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size] / size
    base = 120 + 60 * np.sin(2 * np.pi * (x * rng.uniform(0.5, 2) + y * rng.uniform(0.5, 2)))
    blob = 50 * np.exp(-((x - rng.uniform(0.2, 0.8)) ** 2 + (y - 0.3) ** 2) / 0.02)
    grey = base + blob + rng.normal(0, 4, (size, size))
    rgb = np.stack([grey, grey * 0.9 + 10, grey * 0.7 + 30], axis=-1)
    return np.clip(np.rint(rgb), 0, 255).astype(np.uint8)


def _features(path: Path) -> np.ndarray:
    """A stand-in image embedding: the mean-centred 16x16 greyscale thumbnail."""
    with Image.open(path) as im:
        v = np.asarray(im.convert("L").resize((16, 16), Image.Resampling.BILINEAR), float)
    v = v.ravel() - v.mean()
    return v / np.linalg.norm(v)


# ------------------------------------------------------------------------ planted leakage


def test_finds_all_planted_exact_pairs_and_no_false_ones(planted):
    _, summary, test, train = planted
    found = find_duplicates(test, train)
    exact = {(p["test_key"], p["train_key"]) for p in found if p["kind"] == "exact"}
    want = {(d["test"], d["copy"]) for d in summary["duplicates"] if d["kind"] == "exact"}
    assert len(want) == 3
    assert exact == want
    assert all(p["hamming"] == 0 for p in found if p["kind"] == "exact")


def test_finds_all_planted_near_pairs(planted):
    _, summary, test, train = planted
    found = find_duplicates(test, train)
    near = {(p["test_key"], p["train_key"]) for p in found if p["kind"] == "near"}
    want = {(d["test"], d["copy"]) for d in summary["duplicates"] if d["kind"] == "near"}
    assert len(want) == 6
    assert want <= near
    # The demo's near copies (brightness shift, JPEG q75) move the pHash by very few bits.
    assert max(p["hamming"] for p in found if (p["test_key"], p["train_key"]) in want) <= 4


def test_confirmation_keeps_exactly_the_planted_pairs(planted):
    root, summary, test, train = planted
    # A loose threshold invites look-alikes; the embeddings weed them out.
    found = find_duplicates(test, train, max_hamming=20)
    assert len(found) > len(summary["duplicates"])
    test_feats = {k: _features(root / "images" / k) for k, *_ in test}
    train_feats = {k: _features(root / k) for k, *_ in train}
    kept = confirm(found, test_feats, train_feats, threshold=0.99)
    want = {(d["test"], d["copy"], d["kind"]) for d in summary["duplicates"]}
    assert {(p["test_key"], p["train_key"], p["kind"]) for p in kept} == want
    assert all(p["confirmed"] is True and p["cosine"] >= 0.99 for p in kept)


def test_audit_end_to_end(planted):
    root, summary, test, train = planted
    pairs = audit(
        {k: root / "images" / k for k, *_ in test},
        {k: root / k for k, *_ in train},
        threads=2,
    )
    planted_pairs = {(d["test"], d["copy"]) for d in summary["duplicates"]}
    assert planted_pairs <= {(p["test_key"], p["train_key"]) for p in pairs}
    assert all(p["confirmed"] is not False for p in pairs)


# --------------------------------------------------------------------------- hashing


def test_pixel_identical_but_byte_different_files_are_exact(tmp_path):
    rgb = _scene(1)
    Image.fromarray(rgb).save(tmp_path / "a.tif")
    Image.fromarray(rgb).save(tmp_path / "b.tif", compression="tiff_lzw")
    Image.fromarray(rgb).save(tmp_path / "c.png")
    Image.fromarray(rgb).save(tmp_path / "d.jpg", quality=95)
    files = ["a.tif", "b.tif", "c.png", "d.jpg"]
    assert len({(tmp_path / f).read_bytes() for f in files}) == 4
    h = dict(zip(files, image_hashes([tmp_path / f for f in files]), strict=True))
    assert h["a.tif"]["pixel_sha256"] == h["b.tif"]["pixel_sha256"] == h["c.png"]["pixel_sha256"]
    assert h["d.jpg"]["pixel_sha256"] != h["a.tif"]["pixel_sha256"]
    assert h["a.tif"]["pixel_sha256"] == pixel_sha256(rgb)
    items = [(f, v["pixel_sha256"], v["phash"]) for f, v in h.items()]
    pairs = find_duplicates(items[:1], items[1:])
    assert {(p["train_key"], p["kind"]) for p in pairs} == {
        ("b.tif", "exact"),
        ("c.png", "exact"),
        ("d.jpg", "near"),
    }


def test_pixel_hash_includes_the_shape():
    flat = np.zeros((4, 6, 3), np.uint8)
    assert pixel_sha256(flat) != pixel_sha256(flat.reshape(6, 4, 3))


def test_phash_survives_brightness_and_reencoding_not_rotation():
    rgb = _scene(2)
    brighter = np.clip(rgb.astype(int) + 5, 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="JPEG", quality=70)
    reencoded = np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))
    h = phash(rgb)

    def dist(other):
        return (h ^ phash(other)).bit_count()

    assert dist(brighter) <= 2
    assert dist(reencoded) <= 4
    assert dist(np.rot90(rgb).copy()) > 6
    assert dist(_scene(3)) > 6
    assert 0 <= h < 2**64


def test_rotated_and_unrelated_demo_images_are_not_near(planted, tmp_path):
    root, summary, test, _ = planted
    sources = [d["test"] for d in summary["duplicates"]]
    rotated = []
    for k in sources:
        with Image.open(root / "images" / k) as im:
            im.convert("RGB").transpose(Image.Transpose.ROTATE_90).save(tmp_path / f"r_{k}.png")
        h = image_hash(tmp_path / f"r_{k}.png")
        rotated.append((f"r_{k}", h["pixel_sha256"], h["phash"]))
    assert find_duplicates([t[:3] for t in test], rotated) == []
    # Test images against each other (a stand-in for unrelated pictures): only self-pairs.
    pairs = find_duplicates([t[:3] for t in test], [(f"x/{k}", s, p) for k, s, p, _ in test])
    assert all(p["kind"] == "exact" and p["train_key"] == f"x/{p['test_key']}" for p in pairs)
    assert len(pairs) == len(test)


def test_dct_matrix_is_orthonormal():
    m = leakage.images._dct_matrix(32, 32)
    np.testing.assert_allclose(m @ m.T, np.eye(32), atol=1e-12)
    np.testing.assert_array_equal(leakage.images._DCT, m[:8])


def test_image_hashes_threads_keep_order(planted):
    root, _, test, _ = planted
    paths = [root / "images" / k for k, *_ in test[:8]]
    assert image_hashes(paths, threads=1) == image_hashes(paths, threads=3)
    assert [h["path"] for h in image_hashes(paths)] == [str(p) for p in paths]


def test_bad_image_files_are_named(tmp_path):
    with pytest.raises(RsmEvalError, match="missing.tif: image file does not exist"):
        image_hash(tmp_path / "missing.tif")
    (tmp_path / "broken.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(RsmEvalError, match="broken.jpg: image cannot be decoded"):
        image_hashes([tmp_path / "broken.jpg"])
    with pytest.raises(RsmEvalError, match="threads"):
        image_hashes([], threads=0)


# ----------------------------------------------------------------------- duplicate search


def test_blocked_search_matches_naive_pairs(monkeypatch):
    rng = np.random.default_rng(5)
    base = rng.integers(0, 2**63, 40, dtype=np.uint64) * np.uint64(2)
    flips = [0, 1, 2, 3, 5, 7, 20]
    train = []
    for j, b in enumerate(base):
        mask = 0
        for bit in rng.choice(64, size=flips[j % len(flips)], replace=False):
            mask |= 1 << int(bit)
        train.append((f"r{j}", f"{j:064x}", int(b) ^ mask))
    test = [(f"t{i}", f"{i + 1000:064x}", int(b)) for i, b in enumerate(base[:25])]
    naive = sorted(
        (t[0], r[0], (t[2] ^ r[2]).bit_count())
        for t in test
        for r in train
        if (t[2] ^ r[2]).bit_count() <= 6
    )
    for tile in (1, 7, 64, 10_000):
        monkeypatch.setattr(leakage.pairs, "_TILE", tile)
        got = sorted(
            (p["test_key"], p["train_key"], p["hamming"]) for p in find_duplicates(test, train)
        )
        assert got == naive


def test_dhash_filter_and_mapping_items():
    sha = "0" * 63
    test = [{"key": "t", "pixel_sha256": sha + "1", "phash": 0b1111, "dhash": 0}]
    train = [
        {"key": "close", "pixel_sha256": sha + "2", "phash": 0b0111, "dhash": 0b1},
        {"key": "far_d", "pixel_sha256": sha + "3", "phash": 0b0011, "dhash": 2**40 - 1},
    ]
    both = find_duplicates(test, train, max_dhash=4)
    assert [(p["train_key"], p["hamming"], p["dhash_hamming"]) for p in both] == [("close", 1, 1)]
    assert [p["train_key"] for p in find_duplicates(test, train)] == ["close", "far_d"]


@pytest.mark.parametrize(
    ("test", "kwargs", "match"),
    [
        ([("a", "0" * 64, 1), ("a", "1" * 64, 2)], {}, r"test\[1\]: key 'a' occurs twice"),
        ([("a", "0" * 64, 2**64)], {}, "test 'a': phash .* is not a 64-bit hash"),
        ([("a", "0" * 64, -1)], {}, "test 'a': phash"),
        ([("a", "0" * 64, "ff")], {}, "test 'a': phash must be an int"),
        ([("a", "abc", 1)], {}, "test 'a': pixel_sha256"),
        ([("a", "0" * 64)], {}, r"test\[0\]: expected \(key"),
        ([("a", "0" * 64, 1)], {"max_hamming": 64}, "max_hamming"),
        ([("a", "0" * 64, 1)], {"max_dhash": 3}, "test 'a': dhash must be an int"),
    ],
)
def test_find_duplicates_validates_input(test, kwargs, match):
    with pytest.raises(RsmEvalError, match=match):
        find_duplicates(test, [("b", "1" * 64, 1, 1)], **kwargs)


# --------------------------------------------------------------------------- confirm


def test_confirm_rules():
    pairs = [
        {"test_key": "t1", "train_key": "r1", "kind": "exact", "hamming": 0},
        {"test_key": "t2", "train_key": "r2", "kind": "near", "hamming": 2},
        {"test_key": "t3", "train_key": "r3", "kind": "near", "hamming": 4},
        {"test_key": "t4", "train_key": "unknown", "kind": "near", "hamming": 4},
    ]
    e = np.eye(3)
    test_f = {"t1": e[0], "t2": [1.0, 0.1, 0.0], "t3": e[0], "t4": e[0]}
    train_f = {"r1": e[1], "r2": [2.0, 0.0, 0.0], "r3": e[2]}
    out = confirm(pairs, test_f, train_f, threshold=0.9)
    by = {p["test_key"]: p for p in out}
    assert set(by) == {"t1", "t2", "t4"}  # t3's embeddings disagree: dropped
    assert by["t1"]["confirmed"] is True  # exact pairs stand on their pixels
    assert by["t2"]["confirmed"] is True
    assert by["t2"]["cosine"] == pytest.approx(1 / np.sqrt(1.01))
    assert by["t4"]["cosine"] is None and by["t4"]["confirmed"] is None
    kept_all = confirm(pairs, test_f, train_f, threshold=0.9, drop_unconfirmed=False)
    assert [p["confirmed"] for p in kept_all] == [True, True, False, None]
    assert confirm(pairs, None, None)[1]["confirmed"] is None
    assert pairs[0] == {"test_key": "t1", "train_key": "r1", "kind": "exact", "hamming": 0}


def test_confirm_validates_input():
    pair = [{"test_key": "t", "train_key": "r", "kind": "near", "hamming": 1}]
    with pytest.raises(RsmEvalError, match="test features 't'.*non-zero"):
        confirm(pair, {"t": np.zeros(3)}, {"r": np.ones(3)})
    with pytest.raises(RsmEvalError, match="different dimensions"):
        confirm(pair, {"t": np.ones(3)}, {"r": np.ones(4)})
    with pytest.raises(RsmEvalError, match="threshold"):
        confirm(pair, {}, {}, threshold=1.5)
    with pytest.raises(RsmEvalError, match="expected pairs from find_duplicates"):
        confirm([{"test_key": "t"}], {}, {})


# -------------------------------------------------------------------------- thumbnails


def test_thumbnail_data_uri(tmp_path):
    Image.fromarray(_scene(4, size=120)[:, :90]).save(tmp_path / "s.tif")
    uri = thumbnail_data_uri(tmp_path / "s.tif", size=64)
    prefix = "data:image/png;base64,"
    assert uri.startswith(prefix)
    with Image.open(io.BytesIO(base64.b64decode(uri[len(prefix) :]))) as im:
        assert im.format == "PNG"
        assert im.size == (48, 64)  # aspect ratio kept
    assert thumbnail_data_uri(tmp_path / "s.tif", size=64) == uri
    with pytest.raises(RsmEvalError, match="size"):
        thumbnail_data_uri(tmp_path / "s.tif", size=0)


def test_stage_finds_planted_copies_and_cleans_the_split(small_benchmark, tmp_path):
    """The workflow's stage functions on the generator's planted copies: every exact copy in
    train is found, only training-source pairs count as leaks, and the clean split drops them."""
    from rsm_eval import manifests
    from rsm_eval.config import Dataset

    out = tmp_path / "m"
    for name, ann, images, fmt, split in (
        ("demo", "dataset_demo.json", "images", "karpathy-json", "test"),
        ("csv", "RSMITD.csv", "rsmitd_images", "csv", "train"),
    ):
        ds = Dataset(
            name=name,
            format=fmt,
            annotations=str(small_benchmark / ann),
            images=str(small_benchmark / images),
            split=split,
        )
        manifests.write(
            ds, out / f"{name}.c.parquet", out / f"{name}.i.parquet", out / f"{name}.s.json", "v"
        )
        leakage.hash_dataset(
            out / f"{name}.i.parquet", small_benchmark / images, out / f"{name}.h.parquet"
        )
    audit = leakage.audit_sources(
        {"demo": (out / "demo.h.parquet", "test")},
        {"demo:train": (out / "demo.h.parquet", "train"), "csv:all": (out / "csv.h.parquet", None)},
        max_hamming=4,
    )
    exact = {(p["test_image"], p["source_image"]) for p in audit["pairs"] if p["kind"] == "exact"}
    assert exact, "the generator plants exact copies of test images in train"
    for p in audit["pairs"]:
        if p["kind"] == "exact":
            assert p["test_pixel_sha256"] == p["source_pixel_sha256"]
    leaked = leakage.leaked_images(audit, "demo")
    assert {a for a, _ in exact} <= leaked
    assert not any(p["between_tests"] for p in audit["pairs"])
