"""The workflow against a real HTTP server on 127.0.0.1, with a config shaped like the real one:
archives with members, a checkpoint with a published sha256 and one locked on first use."""

from __future__ import annotations

import csv
import hashlib
import json
import re
import shutil
import tempfile
import zipfile
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch
import yaml
from conftest import TINY_ARCH, run_snakemake, tiny_state_dict

pytestmark = pytest.mark.workflow


def test_fetch_verify_extract_validate_evaluate(http_root, small_benchmark, tmp_path):
    www, url = http_root
    # A release archive laid out like the public mirrors: annotations and images inside.
    with zipfile.ZipFile(www / "rsitmd_test.zip", "w") as zf:
        zf.write(small_benchmark / "dataset_demo.json", "RSITMD/dataset_RSITMD.json")
        for img in sorted((small_benchmark / "images").iterdir()):
            zf.write(img, f"RSITMD/images/{img.name}")
    torch.save(tiny_state_dict(31), www / "published.pt")
    torch.save(tiny_state_dict(32), www / "unpublished.pt")
    published_sha = hashlib.sha256((www / "published.pt").read_bytes()).hexdigest()

    wd = tmp_path / "wd"
    wd.mkdir()
    archive = f"{url}/rsitmd_test.zip"
    cfg = {
        "datasets": {
            "rsitmd": {
                "format": "karpathy-json",
                "annotations": {"url": archive, "member": "RSITMD/dataset_RSITMD.json"},
                "images": {"url": archive, "member": "RSITMD/images"},
                "expected": {"test": {"images": 30, "captions": 150}},
            }
        },
        "models": {
            "published": {
                "arch": str(TINY_ARCH),
                "weights": {"url": f"{url}/published.pt", "sha256": published_sha},
            },
            "unpublished": {"arch": str(TINY_ARCH), "weights": {"url": f"{url}/unpublished.pt"}},
        },
        "embed": {"batch_size": 32, "workers": 0, "device": "cpu"},
    }
    (wd / "config.yaml").write_text(yaml.safe_dump(cfg))
    run_snakemake(wd)

    csv = (wd / "results/report/retrieval.csv").read_text().splitlines()
    assert len(csv) == 3 and csv[1].startswith("published,rsitmd,test,30,150,")
    lock = yaml.safe_load((wd / "sources.lock.yaml").read_text())
    entry = lock["models.unpublished.weights"]
    assert entry["sha256"] == hashlib.sha256((www / "unpublished.pt").read_bytes()).hexdigest()
    assert entry["size"] == (www / "unpublished.pt").stat().st_size
    summary = json.loads((wd / "results/manifests/rsitmd/summary.json").read_text())
    assert summary["counts"]["test"]["images"] == 30
    assert "Nothing to be done" in run_snakemake(wd)

    # The server now serves other bytes: the lock catches it, naming both hashes.
    torch.save(tiny_state_dict(33), www / "unpublished.pt")
    shutil.rmtree(wd / "results/sources/models/unpublished")
    out = run_snakemake(wd, "--keep-going", "--forcerun", "fetch_file", expect_fail=True)
    log = (wd / "results/logs/fetch/models/unpublished/weights/unpublished.pt.log").read_text()
    assert entry["sha256"] in log
    assert hashlib.sha256((www / "unpublished.pt").read_bytes()).hexdigest() in log
    assert "models.unpublished.weights" in log
    assert "fetch_file" in out
    assert not (wd / "results/sources/models/unpublished/weights/unpublished.pt").exists()


def test_urls_with_mirrors_redirects_and_csv_test_split_to_report(small_benchmark, tmp_path):
    """From URLs to a report with the benchmarks' public layouts: RSICD-style (Karpathy JSON,
    images zip behind a raw/ -> LFS redirect, transfer cut and resumed, published sha256) and
    the same test split as a SkyScript-style CSV whose first URL fails (the mirror is used,
    the archive has an extra top folder and another image folder name). The CSV gives the
    same manifest, so both rows of the report hold the same numbers."""
    from loopback import serve

    doc = json.loads((small_benchmark / "dataset_demo.json").read_text())
    test = [img for img in doc["images"] if img["split"] == "test"]
    rows = "".join(
        f'RSICD/imgs/{img["filename"]},"{s["raw"]}"\n' for img in test for s in img["sentences"]
    )
    with serve() as server, tempfile.TemporaryDirectory() as tmp:
        lfs = Path(tmp) / "RSICD_images.zip"
        with zipfile.ZipFile(lfs, "w") as zf:
            for img in sorted((small_benchmark / "images").iterdir()):
                zf.write(img, f"RSICD_images/{img.name}")
        sky = Path(tmp) / "RSICD.zip"
        with zipfile.ZipFile(sky, "w") as zf:
            zf.writestr("benchmark/RSICD/RSICD_img_txt_pairs_test.csv", "filepath,title\n" + rows)
            for img in test:
                zf.write(
                    small_benchmark / "images" / img["filename"],
                    f"benchmark/RSICD/imgs/{img['filename']}",
                )
        raw = "/201528014227051/RSICD_optimal/raw/fc33b45/RSICD_images.zip"
        storage = "/media.githubusercontent.com/lfs/RSICD_images.zip"
        server.redirects[raw] = storage
        server.files[storage] = lfs.read_bytes()
        server.drop_after[storage] = len(server.files[storage]) // 3
        server.files["/raw/dataset_rsicd.json"] = (
            small_benchmark / "dataset_demo.json"
        ).read_bytes()
        server.files["/skyscript/RSICD.zip"] = sky.read_bytes()
        torch.save(tiny_state_dict(41), Path(tmp) / "m.pt")
        server.files["/m.pt"] = (Path(tmp) / "m.pt").read_bytes()
        oid = hashlib.sha256(server.files[storage]).hexdigest()

        wd = tmp_path / "wd"
        wd.mkdir()
        expected = {"test": {"images": len(test), "captions": 5 * len(test)}}
        cfg = {
            "datasets": {
                "rsicd": {
                    "format": "karpathy-json",
                    "annotations": {"url": server.url("/raw/dataset_rsicd.json")},
                    "images": {
                        "url": server.url(raw),
                        "sha256": oid,
                        "size": len(server.files[storage]),
                        "member": "RSICD_images",
                    },
                    "expected": expected,
                },
                "rsicd-csv": {
                    "format": "csv",
                    "published": "rsicd",
                    "annotations": {
                        "url": server.url("/down/RSICD.zip"),
                        "member": "RSICD/RSICD_img_txt_pairs_test.csv",
                        "mirrors": [server.url("/skyscript/RSICD.zip")],
                    },
                    "images": {
                        "url": server.url("/down/RSICD.zip"),
                        "mirrors": [server.url("/skyscript/RSICD.zip")],
                    },
                    "expected": expected,
                },
            },
            "models": {"m": {"arch": str(TINY_ARCH), "weights": {"url": server.url("/m.pt")}}},
            "classification": {"enabled": False},
            "embed": {"batch_size": 32, "workers": 0, "device": "cpu"},
        }
        (wd / "config.yaml").write_text(yaml.safe_dump(cfg))
        out = run_snakemake(wd)

    with open(wd / "results/report/retrieval.csv", newline="") as fh:
        by_dataset = {r["dataset"]: r for r in csv.DictReader(fh)}
    assert set(by_dataset) == {"rsicd", "rsicd-csv"}
    same = [k for k in by_dataset["rsicd"] if k not in ("dataset", "address", "manifest_address")]
    assert [by_dataset["rsicd"][k] for k in same] == [by_dataset["rsicd-csv"][k] for k in same]
    cols = ["image_key", "image_sha256", "caption_index", "caption"]
    manifests = [
        pq.read_table(wd / f"results/manifests/{d}/captions.parquet", columns=["split", *cols])
        for d in ("rsicd", "rsicd-csv")
    ]
    json_test = [r for r in manifests[0].to_pylist() if r["split"] == "test"]
    assert json_test == manifests[1].to_pylist()
    assert server.ranged(storage)  # the cut transfer was resumed with Range
    logs = wd / "results/logs/fetch/datasets"
    csv_log = (logs / "rsicd-csv/annotations/RSICD_img_txt_pairs_test.csv.log").read_text()
    assert "/down/RSICD.zip failed (" in csv_log and "trying the next mirror" in csv_log
    lfs_log = (logs / "rsicd/images/RSICD_images.log").read_text()
    assert re.search(r"MiB \(100%\), [\d.]+ MiB/s, done in", lfs_log), lfs_log
    assert "MiB/s" in out  # progress reaches the terminal too
    lock = yaml.safe_load((wd / "sources.lock.yaml").read_text())
    assert "datasets.rsicd.annotations" in lock
    assert f"datasets.rsicd-csv.images (mirror {server.url('/skyscript/RSICD.zip')})" in lock
