"""The real workflow, run with Snakemake's command line on a small generated benchmark.

Shows the content-addressing contract: a second run does nothing; touching a checkpoint
reruns nothing; new bytes recompute exactly that model's features, metrics and the report;
renaming a checkpoint or putting old bytes back computes no embedding.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
import yaml
from conftest import TINY_ARCH, run_snakemake, snakemake_env, tiny_state_dict

pytestmark = pytest.mark.workflow


def write_config(workdir: Path, weights_a: str) -> None:
    cfg = {
        "demo": {"seed": 1, "n_train": 20, "n_val": 5, "n_test": 30, "n_csv_images": 10},
        "datasets": {
            "demo": {
                "format": "karpathy-json",
                "annotations": "results/demo/data/dataset_demo.json",
                "images": "results/demo/data/images",
                "expected": {"test": {"images": 30, "captions": 150}},
            }
        },
        "models": {
            "ckpt-a": {"arch": str(TINY_ARCH), "weights": weights_a},
            "ckpt-b": {"arch": str(TINY_ARCH), "weights": "ckpts/b.pt"},
            "rand": {"arch": str(TINY_ARCH), "random": 7},
        },
        "embed": {"batch_size": 32, "workers": 0, "device": "cpu"},
    }
    (workdir / "config.yaml").write_text(yaml.safe_dump(cfg))


def features_meta(workdir: Path, model: str, kind: str = "images") -> dict:
    path = workdir / f"results/features/{model}/demo/remoteclip/{kind}.parquet"
    return json.loads(pq.read_schema(path).metadata[b"rsm_eval"])


def mtimes(workdir: Path) -> dict[str, int]:
    return {
        str(p.relative_to(workdir)): p.stat().st_mtime_ns
        for p in (workdir / "results").rglob("*")
        if p.is_file() and "/cache/" not in str(p) and "/logs/" not in str(p)
    }


def reference_metrics(workdir: Path, model: str) -> dict[str, float]:
    """Independent recall@k: plain NumPy, dense scores, straight from the Parquet files."""
    caps = pq.read_table(workdir / "results/manifests/demo/captions.parquet").to_pandas()
    caps = caps[caps.split == "test"].sort_values(["image_key", "caption_index"])
    feats = {}
    for kind in ("images", "texts"):
        t = pq.read_table(workdir / f"results/features/{model}/demo/remoteclip/{kind}.parquet")
        emb = np.stack(t.column("embedding").to_numpy(zero_copy_only=False))
        feats[kind] = dict(zip(t.column("key").to_pylist(), emb, strict=True))
    image_keys = list(dict.fromkeys(caps.image_key))
    first_sha = caps.groupby("image_key").image_sha256.first()
    img = np.stack([feats["images"][first_sha[k]] for k in image_keys])
    txt = np.stack([feats["texts"][s] for s in caps.caption_sha256])
    owner = np.array([image_keys.index(k) for k in caps.image_key])
    scores = img @ txt.T
    out = {}
    for k in (1, 5, 10):
        top_t = np.argsort(-scores, axis=1, kind="stable")[:, :k]
        out[f"i2t_r{k}"] = 100 * np.mean([np.any(owner[top_t[i]] == i) for i in range(len(img))])
        top_i = np.argsort(-scores.T, axis=1, kind="stable")[:, :k]
        out[f"t2i_r{k}"] = 100 * np.mean([owner[j] in top_i[j] for j in range(len(txt))])
    out["mean_recall"] = float(np.mean(list(out.values())))
    return out


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    wd = tmp_path_factory.mktemp("wf")
    (wd / "ckpts").mkdir()
    torch.save(tiny_state_dict(11), wd / "ckpts/a.pt")
    torch.save(tiny_state_dict(12), wd / "ckpts/b.pt")
    write_config(wd, "ckpts/a.pt")
    run_snakemake(wd)
    return wd


def test_first_run_reports_every_model_and_numbers_match_numpy(workdir):
    csv = (workdir / "results/report/retrieval.csv").read_text().splitlines()
    assert csv[0].startswith(
        "model,dataset,split,n_images,n_captions,i2t_r1,i2t_r5,i2t_r10,"
        "t2i_r1,t2i_r5,t2i_r10,mean_recall"
    )
    assert len(csv) == 4
    for model in ("ckpt-a", "ckpt-b", "rand"):
        record = json.loads((workdir / f"results/metrics/{model}/demo/remoteclip.json").read_text())
        assert (record["n_images"], record["n_captions"]) == (30, 150)
        ref = reference_metrics(workdir, model)
        for key, value in ref.items():
            assert record["metrics"][key] == pytest.approx(value, abs=1e-9), key
        assert features_meta(workdir, model)["images_computed"] == 30
    html = (workdir / "results/report/report.html").read_text()
    assert "<svg" in html and "Provenance" in html


def test_content_addressing_contract(workdir):
    # A second run does nothing.
    assert "Nothing to be done" in run_snakemake(workdir)

    # Touching a checkpoint (same bytes) reruns nothing.
    before = mtimes(workdir)
    future = time.time() + 5
    os.utime(workdir / "ckpts/a.pt", (future, future))
    assert "Nothing to be done" in run_snakemake(workdir)
    assert mtimes(workdir) == before

    # New bytes: that model's features, metrics and the report are recomputed, nothing else.
    original = (workdir / "ckpts/a.pt").read_bytes()
    torch.save(tiny_state_dict(13), workdir / "ckpts/a.pt")
    run_snakemake(workdir)
    after = mtimes(workdir)
    changed = {p for p in after if after[p] != before.get(p)}
    # The report's figures and tables are redrawn with it (and only with it).
    redrawn = {
        p for p in changed if p.startswith(("results/report/figures/", "results/report/tables/"))
    }
    assert redrawn
    assert changed - redrawn == {
        "results/features/ckpt-a/demo/remoteclip/images.parquet",
        "results/features/ckpt-a/demo/remoteclip/texts.parquet",
        "results/metrics/ckpt-a/demo/remoteclip.json",
        "results/metrics/ckpt-a/demo/remoteclip.ranks.parquet",
        "results/statistics/paired.json",
        "results/classification/ckpt-a/demo.json",
        "results/report/retrieval.csv",
        "results/report/report.md",
        "results/report/report.html",
        "results/report/provenance.json",
    }
    assert features_meta(workdir, "ckpt-a")["images_computed"] == 30
    assert features_meta(workdir, "ckpt-a", "texts")["texts_computed"] > 0

    # Renaming (moving) the checkpoint computes no embedding.
    (workdir / "moved").mkdir()
    shutil.move(workdir / "ckpts/a.pt", workdir / "moved/a-renamed.pt")
    write_config(workdir, "moved/a-renamed.pt")
    run_snakemake(workdir)
    meta = features_meta(workdir, "ckpt-a")
    assert (meta["images_computed"], meta["images_reused"]) == (0, 30)
    assert features_meta(workdir, "ckpt-a", "texts")["texts_computed"] == 0

    # Putting the previous bytes back reuses the earlier features: nothing is embedded.
    (workdir / "moved/a-renamed.pt").write_bytes(original)
    run_snakemake(workdir)
    meta = features_meta(workdir, "ckpt-a")
    assert (meta["images_computed"], meta["images_reused"]) == (0, 30)
    ref = reference_metrics(workdir, "ckpt-a")
    record = json.loads((workdir / "results/metrics/ckpt-a/demo/remoteclip.json").read_text())
    assert record["metrics"]["mean_recall"] == pytest.approx(ref["mean_recall"])


def test_seed_command_line_gives_the_workflow_numbers(workdir, tmp_path):
    """`rsm-eval retrieve` with RET3_RetrieveTest.py's flags: same metrics as the workflow,
    the seed's metric names, and embeddings saved in evaluation order."""
    npz = tmp_path / "emb.npz"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "rsm_eval",
            "retrieve",
            "--model-name",
            str(TINY_ARCH),
            "--retrieval-images-dir",
            str(workdir / "results/demo/data/images"),
            "--retrieval-json-dir",
            str(workdir / "results/demo/data"),
            "--RSM_CLIP_path",
            str(workdir / "ckpts/b.pt"),
            "--batch-size",
            "16",
            "--workers",
            "0",
            "--cache-dir",
            str(tmp_path / "cache"),
            "--save-embeddings",
            str(npz),
        ],
        capture_output=True,
        text=True,
        env=snakemake_env(),
    )
    assert proc.returncode == 0, proc.stderr
    printed = dict(line.split(": ") for line in proc.stdout.strip().splitlines())
    record = json.loads((workdir / "results/metrics/ckpt-b/demo/remoteclip.json").read_text())
    names = {
        "i2t_r1": "retrieval-image2text-R@1",
        "t2i_r10": "retrieval-text2image-R@10",
        "mean_recall": "retrieval-mean-recall",
    }
    for key, name in names.items():
        assert float(printed[name]) == pytest.approx(round(record["metrics"][key], 2))
    assert len(printed) == 7
    emb = np.load(npz)
    assert emb["image"].shape == (30, 64) and emb["text"].shape == (150, 64)
    assert emb["image"].dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(emb["text"], axis=1), 1, atol=1e-5)
    # Same order as the protocol: recomputing the metric from the saved arrays agrees.
    owner = np.repeat(np.arange(30), 5)
    top1 = np.argmax(emb["text"] @ emb["image"].T, axis=1)
    assert 100 * np.mean(top1 == owner) == pytest.approx(record["metrics"]["t2i_r1"])
