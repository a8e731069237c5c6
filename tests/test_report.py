"""Report: exact CSV contract, published rows beside ours (regimes never mixed), escaping."""

from __future__ import annotations

import json

import pytest
from rsm_eval import report


def record(model="m", dataset="rsitmd", protocol="remoteclip", **metrics):
    values = {
        "i2t_r1": 32.08,
        "i2t_r5": 50.0,
        "i2t_r10": 60.0,
        "t2i_r1": 24.07,
        "t2i_r5": 50.0,
        "t2i_r10": 70.0,
        "mean_recall": 52.12,
    }
    values.update(metrics)
    return {
        "model": model,
        "dataset": dataset,
        "split": "test",
        "protocol": protocol,
        "n_images": 452,
        "n_captions": 2260,
        "n_distinct_captions": 2200,
        "metrics": values,
        "address": "a" * 64,
        "inputs": {
            "model_address": "b" * 64,
            "manifest_address": "c" * 64,
            "manifest_sha256": "d" * 64,
            "image_features_sha256": "e" * 64,
            "text_features_sha256": "f" * 64,
            "model_spec": {"weights": {"random": 0}},
        },
    }


SUMMARY = {
    "dataset": "rsitmd",
    "counts": {"test": {"images": 452, "captions": 2260, "distinct_captions": 2200}},
    "quirks": {},
    "address": "x",
    "annotations_sha256": "y",
}


def test_csv_first_columns_are_the_contract(tmp_path):
    paths = report.render([record()], [SUMMARY], tmp_path, tmp_path)
    lines = paths["csv"].read_text().splitlines()
    assert lines[0].split(",")[:12] == [
        "model",
        "dataset",
        "split",
        "n_images",
        "n_captions",
        "i2t_r1",
        "i2t_r5",
        "i2t_r10",
        "t2i_r1",
        "t2i_r5",
        "t2i_r10",
        "mean_recall",
    ]
    assert lines[1].split(",")[:12] == [
        "m",
        "rsitmd",
        "test",
        "452",
        "2260",
        "32.08",
        "50.00",
        "60.00",
        "24.07",
        "50.00",
        "70.00",
        "52.12",
    ]


def test_published_rows_matched_by_model_backbone_regime(tmp_path):
    keys = {
        "models": {"m": {"model": "RSM-CLIP", "backbone": "ViT-B-32", "regime": "ret3"}},
        "datasets": {"rsitmd": "rsitmd"},
    }
    table = report.rows([record(t2i_r1=20.0)])
    compared, unmatched = report.published_comparison(table, keys, tolerance=1.0)
    assert unmatched == []
    [c] = compared
    assert c["published"] == {"i2t_r1": 32.08, "t2i_r1": 24.07, "mean_recall": 52.12}
    assert c["diff"]["t2i_r1"] == pytest.approx(-4.07)
    assert c["flagged"] == ["t2i_r1"]
    # The zero-shot row of the same model is a different table: never mixed up.
    zs = {"models": {"m": {"model": "RSM-CLIP", "backbone": "ViT-B-32", "regime": "zero-shot"}}}
    [c] = report.published_comparison(table, zs, tolerance=1.0)[0]
    assert c["published"]["i2t_r1"] == 17.70
    # A SkyScript row is never compared with the published (RemoteCLIP-protocol) numbers.
    sky = report.rows([record(protocol="skyscript")])
    assert report.published_comparison(sky, keys, 1.0)[0] == []


def test_demo_says_there_is_no_published_row(tmp_path):
    paths = report.render([record(dataset="demo")], [SUMMARY], tmp_path, tmp_path)
    assert "No published row for: m / demo (remoteclip)" in paths["md"].read_text()


def test_html_escapes_names_and_captions(tmp_path):
    evil = '<script>alert("x")</script>'
    summary = {**SUMMARY, "dataset": evil}
    paths = report.render([record(model=evil)], [summary], tmp_path, tmp_path)
    page = paths["html"].read_text()
    assert evil not in page
    assert "&lt;script&gt;" in page
    prov = json.loads(paths["provenance"].read_text())
    assert prov["rows"][0]["model"] == evil
