"""A mirror that gives only the test split as a CSV (SkyScript's layout: image paths from the
benchmark root; GeoRSCLIP's RSICD CSV: gb18030) yields the same test-split manifest as the
Karpathy JSON: same images, captions and evaluation order."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest
from rsm_eval import manifests
from rsm_eval.config import Dataset
from rsm_eval.errors import RsmEvalError

COLUMNS = ("image_key", "image_path", "image_sha256", "caption_index", "caption", "caption_sha256")


def _test_split_csv(benchmark: Path, out: Path, prefix: str, encoding: str) -> int:
    doc = json.loads((benchmark / "dataset_demo.json").read_text(encoding="utf-8"))
    buf = io.StringIO(newline="")
    writer = csv.writer(buf)
    writer.writerow(["filepath", "title"])
    n = 0
    for img in reversed(doc["images"]):  # file order must not matter, caption order must
        if img["split"] == "test":
            for sent in img["sentences"]:
                writer.writerow([f"{prefix}{img['filename']}", sent["raw"]])
                n += 1
    out.write_bytes(buf.getvalue().encode(encoding))
    return n


@pytest.mark.parametrize(
    ("prefix", "encoding"), [("DEMO/images/", "utf-8"), ("", "gb18030"), ("images/", "gb18030")]
)
def test_csv_test_split_gives_the_json_manifest(small_benchmark, tmp_path, prefix, encoding):
    json_ds = Dataset(
        name="demo",
        format="karpathy-json",
        annotations=str(small_benchmark / "dataset_demo.json"),
        images=str(small_benchmark / "images"),
    )
    n = _test_split_csv(small_benchmark, tmp_path / "test.csv", prefix, encoding)
    csv_ds = Dataset(
        name="demo",
        format="csv",
        annotations=str(tmp_path / "test.csv"),
        images=str(small_benchmark / "images"),
        encoding=encoding,
        expected={"test": {"images": 30, "captions": n}},
    )
    caps_j, _, sum_j = manifests.build(json_ds)
    caps_c, imgs_c, sum_c = manifests.build(csv_ds)

    rows_j = [r for r in caps_j.to_pylist() if r["split"] == "test"]
    rows_c = caps_c.to_pylist()
    assert len(rows_c) == n == sum_j["counts"]["test"]["captions"]
    assert [tuple(r[c] for c in COLUMNS) for r in rows_c] == [
        tuple(r[c] for c in COLUMNS) for r in rows_j
    ]
    assert manifests.evaluation_order(caps_c, "test") == manifests.evaluation_order(caps_j, "test")
    assert sum_c["counts"]["test"] == sum_j["counts"]["test"]
    assert sum_c.get("image_prefix_removed", "") == prefix.rstrip("/")
    assert imgs_c.num_rows == 30


def test_names_that_resolve_nowhere_are_still_an_error(small_benchmark, tmp_path):
    """One name outside the common folders: nothing is removed, and the image is missing."""
    _test_split_csv(small_benchmark, tmp_path / "test.csv", "DEMO/images/", "utf-8")
    lines = (tmp_path / "test.csv").read_text().splitlines()
    lines[1] = lines[1].replace("DEMO/images/", "DEMO/other/")
    (tmp_path / "test.csv").write_text("\n".join(lines) + "\n")
    ds = Dataset(
        name="demo",
        format="csv",
        annotations=str(tmp_path / "test.csv"),
        images=str(small_benchmark / "images"),
    )
    with pytest.raises(RsmEvalError, match="does not exist"):
        manifests.build(ds)
