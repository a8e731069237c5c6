"""Manifests: Karpathy JSON / caption CSV -> Parquet; errors name the file and row; real-data
quirks are counted, not fatal."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image
from rsm_eval import manifests, schemas
from rsm_eval.config import Dataset
from rsm_eval.errors import RsmEvalError


def make_image(path: Path, color=(10, 200, 30), mode="RGB", size=(16, 16), fmt=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    im = Image.new("RGB", size, color)
    if mode != "RGB":
        im = im.convert(mode)
    im.save(path, format=fmt)


def karpathy(tmp_path: Path, images: list[dict], name="ann.json") -> Path:
    doc = {"images": images, "dataset": "x"}
    p = tmp_path / name
    p.write_text(json.dumps(doc))
    return p


def entry(filename, split, captions, imgid=0):
    return {
        "filename": filename,
        "imgid": imgid,
        "split": split,
        "sentids": list(range(len(captions))),
        "sentences": [
            {"raw": c, "tokens": c.lower().split(), "imgid": imgid, "sentid": i}
            for i, c in enumerate(captions)
        ],
    }


def dataset(tmp_path, ann, **kw) -> Dataset:
    return Dataset(
        name="t",
        format=kw.pop("format", "karpathy-json"),
        annotations=str(ann),
        images=str(tmp_path / "imgs"),
        **kw,
    )


@pytest.fixture
def clean(tmp_path):
    imgs = tmp_path / "imgs"
    make_image(imgs / "b_2.tif", (0, 0, 255), fmt="TIFF")
    make_image(imgs / "a_1.jpg", (255, 0, 0))
    make_image(imgs / "c_3.tif", (0, 255, 0), mode="P", fmt="TIFF")  # palette: converted later
    make_image(imgs / "d_4.tif", (1, 2, 3), fmt="TIFF")
    ann = karpathy(
        tmp_path,
        [
            entry("b_2.tif", "test", ["blue water", "a lake", "blue", "lake", "sea"]),
            entry("a_1.jpg", "test", ["red roofs", "red roofs", "red", "houses", "town"]),
            entry("c_3.tif", "train", ["green field", "", "farm", "crops", "grass"]),
            entry("d_4.tif", "val", ["dark", "night", "black", "shadow", "ink"]),
        ],
    )
    return tmp_path, ann


def test_karpathy_to_tables_in_protocol_order(clean):
    tmp_path, ann = clean
    captions, images, summary = manifests.build(dataset(tmp_path, ann))
    schemas.check_schema(captions, schemas.CAPTIONS, "captions")
    schemas.check_schema(images, schemas.IMAGES, "images")
    keys, shas, text_shas, text_image = manifests.evaluation_order(captions, "test")
    assert keys == ["a_1.jpg", "b_2.tif"]  # ordered by file name, not file order
    assert text_image == [0] * 5 + [1] * 5
    assert len(set(text_shas)) == 9  # "red roofs" twice
    assert summary["counts"]["test"] == {"images": 2, "captions": 10, "distinct_captions": 9}
    assert summary["quirks"]["blank_captions"] == 1  # in train: counted, not fatal
    assert summary["quirks"]["images_with_repeated_captions"] == 1
    row = images.to_pylist()[2]
    assert (row["image_key"], row["width"], row["height"]) == ("c_3.tif", 16, 16)


def test_expected_counts_checked(clean):
    tmp_path, ann = clean
    ds = dataset(tmp_path, ann, expected={"test": {"images": 452, "captions": 2260}})
    with pytest.raises(RsmEvalError, match=r"split 'test' .* has 2 images, expected 452"):
        manifests.build(ds)


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda p: p.unlink(), "does not exist"),
        (lambda p: p.write_bytes(b""), "empty file"),
        (lambda p: p.write_bytes(b"not an image at all"), "cannot be decoded"),
        (lambda p: p.write_bytes(p.read_bytes()[:200]), "cannot be decoded"),
    ],
    ids=["missing", "zero-bytes", "not-an-image", "truncated"],
)
def test_bad_image_names_file(clean, mutate, message):
    tmp_path, ann = clean
    mutate(tmp_path / "imgs" / "b_2.tif")
    with pytest.raises(RsmEvalError, match=rf"b_2\.tif.*{message}"):
        manifests.build(dataset(tmp_path, ann))


def test_pixel_limit_stops_decompression_bombs(clean):
    tmp_path, ann = clean
    with pytest.raises(RsmEvalError, match="max_image_pixels"):
        manifests.build(dataset(tmp_path, ann, max_image_pixels=100))


def test_duplicate_filename(tmp_path):
    make_image(tmp_path / "imgs" / "a.tif", fmt="TIFF")
    ann = karpathy(tmp_path, [entry("a.tif", "test", ["x"] * 5), entry("a.tif", "test", ["y"])])
    with pytest.raises(RsmEvalError, match=r"images\[1\]: duplicate filename 'a.tif'"):
        manifests.build(dataset(tmp_path, ann))


def test_unknown_split(tmp_path):
    make_image(tmp_path / "imgs" / "a.tif", fmt="TIFF")
    ann = karpathy(tmp_path, [entry("a.tif", "tset", ["x"])])
    with pytest.raises(RsmEvalError, match=r"images\[0\].*unknown split 'tset'"):
        manifests.build(dataset(tmp_path, ann))


def test_empty_test_split(tmp_path):
    make_image(tmp_path / "imgs" / "a.tif", fmt="TIFF")
    ann = karpathy(tmp_path, [entry("a.tif", "train", ["x"])])
    with pytest.raises(RsmEvalError, match="evaluated split 'test' .* is empty"):
        manifests.build(dataset(tmp_path, ann))


def test_blank_caption_in_evaluated_split_is_an_error(tmp_path):
    make_image(tmp_path / "imgs" / "a.tif", fmt="TIFF")
    ann = karpathy(tmp_path, [entry("a.tif", "test", ["x", "  "])])
    with pytest.raises(RsmEvalError, match=r"sentences\[1\] \(a.tif\): blank caption"):
        manifests.build(dataset(tmp_path, ann))


@pytest.mark.parametrize(
    "text, message",
    [
        ('{"images": [', "invalid JSON at line 1"),
        ('{"imgs": []}', "expected a JSON object with an 'images' list"),
        ('{"images": [{"filename": "a.tif", "split": "test"}]}', "missing key 'sentences'"),
    ],
)
def test_invalid_json(tmp_path, text, message):
    (tmp_path / "imgs").mkdir()
    p = tmp_path / "bad.json"
    p.write_text(text)
    with pytest.raises(RsmEvalError, match=message):
        manifests.build(dataset(tmp_path, p))


def test_csv_columns_detected_and_identical_content_counted(tmp_path):
    make_image(tmp_path / "imgs" / "x 1.tif", (5, 5, 5), fmt="TIFF")
    make_image(tmp_path / "imgs" / "y;2.tif", (5, 5, 5), fmt="TIFF")  # same pixels and bytes
    csv = tmp_path / "caps.csv"
    csv.write_text(
        'filepath,title\n"x 1.tif",a grey square\n"x 1.tif",grey\ny;2.tif,"grey, flat"\n'
    )
    captions, images, summary = manifests.build(dataset(tmp_path, csv, format="csv"))
    assert captions.column("caption").to_pylist() == ["a grey square", "grey", "grey, flat"]
    assert captions.column("caption_index").to_pylist() == [0, 1, 0]
    assert summary["quirks"]["images_with_identical_content"] == 2


def test_csv_wrong_columns_lists_what_was_found(tmp_path):
    (tmp_path / "imgs").mkdir()
    csv = tmp_path / "caps.csv"
    csv.write_text("picture,words\na.tif,hello\n")
    with pytest.raises(RsmEvalError, match=r"columns are \['picture', 'words'\]"):
        manifests.build(dataset(tmp_path, csv, format="csv"))
    ds = dataset(tmp_path, csv, format="csv", columns={"image": "picture", "caption": "words"})
    with pytest.raises(RsmEvalError, match="a.tif.*does not exist"):
        manifests.build(ds)


def test_csv_encoding_must_be_declared(tmp_path):
    make_image(tmp_path / "imgs" / "a.tif", fmt="TIFF")
    csv = tmp_path / "caps.csv"
    csv.write_bytes("filename,title\na.tif,机场跑道\n".encode("gb18030"))
    with pytest.raises(RsmEvalError, match="not valid utf-8.*encoding"):
        manifests.build(dataset(tmp_path, csv, format="csv"))
    captions, _, _ = manifests.build(dataset(tmp_path, csv, format="csv", encoding="gb18030"))
    assert captions.column("caption").to_pylist() == ["机场跑道"]


def test_write_is_atomic_and_addressed_by_content(clean, tmp_path):
    root, ann = clean
    out = tmp_path / "out"
    s1 = manifests.write(
        dataset(root, ann), out / "c.parquet", out / "i.parquet", out / "s.json", code="v1"
    )
    table, meta = schemas.read_table(out / "c.parquet", schemas.CAPTIONS)
    assert meta["address"] == s1["address"]
    # Same bytes under another annotations path: same address.
    moved = root / "moved.json"
    moved.write_bytes(Path(ann).read_bytes())
    s2 = manifests.write(
        dataset(root, moved), out / "c2.parquet", out / "i2.parquet", out / "s2.json", code="v1"
    )
    assert s2["address"] == s1["address"]
    (root / "imgs" / "a_1.jpg").unlink()
    with pytest.raises(RsmEvalError):
        manifests.write(
            dataset(root, ann), out / "c3.parquet", out / "i3.parquet", out / "s3.json", code="v1"
        )
    assert not (out / "c3.parquet").exists() and not (out / "s3.json").exists()


def test_generated_benchmark_quirks_are_counted(small_benchmark):
    ds = Dataset(
        name="demo",
        format="karpathy-json",
        annotations=str(small_benchmark / "dataset_demo.json"),
        images=str(small_benchmark / "images"),
    )
    _, _, summary = manifests.build(ds)
    assert summary["counts"]["test"]["images"] == 30
    assert summary["quirks"]["images_with_identical_content"] >= 2  # planted exact duplicates
    assert summary["quirks"]["images_sharing_a_caption_set"] >= 2
