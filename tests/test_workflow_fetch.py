"""The workflow against a real HTTP server on 127.0.0.1, with a config shaped like the real one:
archives with members, a checkpoint with a published sha256 and one locked on first use."""

from __future__ import annotations

import hashlib
import json
import shutil
import zipfile

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
