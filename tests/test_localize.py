"""The localization stage: windows and maps as the reference makes them, metrics on generated
scenes whose crops are scored by construction, AIR-SLT validation, and the feature store
(a crop or caption is embedded once)."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from rsm_eval import airslt, demo_scene, localize, selo_maps, selo_metrics
from rsm_eval.config import Model
from rsm_eval.errors import RsmEvalError


def reference_windows(height: int, width: int, steps=(256, 512, 768)) -> set[str]:
    """generate_selo.py's loop, verbatim in its logic: the set of crop file names it writes."""
    names = set()
    img_weight, img_height = height, width  # (sic) shape[0], shape[1]
    for step in steps:
        for gap in [step, 0.5 * step]:
            gap = int(gap)
            for h in range(0 + (step - gap), img_height, step):
                h_start, h_end = h, h + step
                if h_end >= img_height:
                    h_start, h_end = img_height - step, img_height
                for w in range(0 + (step - gap), img_weight, step):
                    w_start, w_end = w, w + step
                    if w_end >= img_weight:
                        w_start, w_end = img_weight - step, img_weight
                    names.add(f"{w_start}_{w_end}_{h_start}_{h_end}.jpg")
    return names


@pytest.mark.parametrize(
    "shape", [(768, 768), (1024, 1536), (2000, 3000), (1999, 2305), (4096, 4096)]
)
def test_windows_are_the_reference_crops(shape):
    h, w = shape
    boxes = selo_maps.windows(h, w)
    assert len(boxes) == len(set(boxes))
    assert {f"{a}_{b}_{c}_{d}.jpg" for a, b, c, d in boxes} == reference_windows(h, w)
    assert all(0 <= a < b <= h and 0 <= c < d <= w for a, b, c, d in boxes)


def test_windows_refuse_a_scene_smaller_than_a_window():
    with pytest.raises(RsmEvalError, match="smaller than the largest window"):
        selo_maps.windows(700, 2000)


def reference_map(h, w, boxes, scores) -> np.ndarray:
    """generate_heatmap's map, per pixel in float64, before the median blur."""
    heat_map = np.zeros([h, w], dtype=float)
    heat_num = np.zeros([h, w], dtype=float)
    for (r0, r1, c0, c1), s in zip(boxes, scores, strict=True):
        heat_map[r0:r1, c0:c1] += s
        heat_num[r0:r1, c0:c1] += 1
    heat_map = heat_map / heat_num
    adaptive = heat_map - np.min(heat_map)
    return np.uint8(255 * (adaptive / np.max(adaptive)))


def test_cell_map_equals_the_per_pixel_reference():
    rng = np.random.default_rng(0)
    h, w = 1100, 1700
    layout = selo_maps.Layout.of(h, w)
    scores = rng.normal(0.2, 0.05, len(layout.boxes)).astype(np.float32)
    ref = reference_map(h, w, layout.boxes.tolist(), scores)
    got, flat = selo_maps.probability_map(layout, scores, median=None, jpeg_quality=None)
    assert not flat and got.dtype == np.uint8 and (got == ref).all()
    blurred, _ = selo_maps.probability_map(layout, scores)
    ok, buf = cv2.imencode(".jpg", cv2.medianBlur(ref, 251))
    assert (blurred == cv2.imdecode(buf, cv2.IMREAD_GRAYSCALE)).all()  # imwrite, then imread


def test_flat_scores_give_a_zero_map():
    layout = selo_maps.Layout.of(800, 800)
    gray, flat = selo_maps.probability_map(layout, np.full(len(layout.boxes), 0.3))
    assert flat and not gray.any()


def constructed_scores(layout: selo_maps.Layout, mask: np.ndarray) -> np.ndarray:
    """A 'model' that scores each crop by the share of it inside the mask."""
    return np.array([mask[a:b, c:d].mean() for a, b, c, d in layout.boxes.tolist()])


def test_metrics_on_a_generated_scene_scored_by_construction():
    h, w = 1600, 2400
    objects = demo_scene.scene_objects(w, h)
    layout = selo_maps.Layout.of(h, w)
    params = localize.DEFAULT_PARAMS
    records = {}
    for kind, polys in objects.items():
        scores = constructed_scores(layout, selo_metrics.region_mask((h, w), polys))
        q = airslt.Query(0, kind, "0.jpg", polys)
        records[kind], _ = localize.query_record(layout, scores, q, params)
    roofs = records["roofs"]  # two regions, each found once, near its centre
    assert roofs["n_regions"] == 2 and len(roofs["centres"]) == 2
    assert roofs["rda"] == 1.0
    assert roofs["ras"] < 0.05 and roofs["rsu"] > 0.8
    for kind in ("lake", "runway"):
        assert records[kind]["rda"] == 1.0 and records[kind]["ras"] < 0.1

    # Captions scored against the wrong object: no predicted centre in the region.
    lake = objects["lake"]
    wrong = constructed_scores(layout, selo_metrics.region_mask((h, w), objects["roofs"]))
    rec, _ = localize.query_record(layout, wrong, airslt.Query(1, "lake", "0.jpg", lake), params)
    assert rec["ras"] == 1.0 and rec["rda"] == 0.0
    assert rec["rmi"] == pytest.approx(0.4 * rec["rsu"])
    assert rec["rsu"] < records["lake"]["rsu"]


# ----------------------------------------------------------------- dataset validation


def _anno(path: Path, items) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(items), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def scene_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("slt")
    demo_scene.generate(out, seed=1, width=1024, height=800)
    return out


def test_demo_set_validates(scene_dir):
    queries = airslt.load_queries(scene_dir / "annotations" / "anno.json")
    info = airslt.validate(queries, scene_dir / "imgs", {"images": 1, "queries": 3, "polygons": 4})
    assert info["sizes"] == {"0.jpg": [1024, 800]}


@pytest.mark.parametrize(
    ("item", "message"),
    [
        (
            {"caption": "x", "jpg_name": "0.jpg", "points": [[[0, 0], [2000, 0], [0, 10]]]},
            r"query 0 .*points\[0\] vertex \(2000, 0\) is outside the 1024 x 800 scene",
        ),
        (
            {"caption": "x", "jpg_name": "9.jpg", "points": [[[0, 0], [20, 0], [0, 10]]]},
            "scene .*9.jpg not found",
        ),
        (
            {"caption": "x", "jpg_name": "0.jpg", "points": [[[0, 0], [20, 0]]]},
            r"points\[0\] must be a polygon",
        ),
        (
            {"caption": "", "jpg_name": "0.jpg", "points": [[[0, 0], [20, 0], [0, 9]]]},
            "empty 'caption'",
        ),
        (
            {"caption": "x", "jpg_name": "../0.jpg", "points": [[[0, 0], [20, 0], [0, 9]]]},
            "plain file name",
        ),
    ],
)
def test_bad_annotations_are_named(scene_dir, tmp_path, item, message):
    anno = _anno(tmp_path / "anno.json", [item])
    with pytest.raises(RsmEvalError, match=message):
        airslt.validate(airslt.load_queries(anno), scene_dir / "imgs")


def test_counts_are_checked(scene_dir):
    queries = airslt.load_queries(scene_dir / "annotations" / "anno.json")
    with pytest.raises(RsmEvalError, match="expected 59 queries, found 3"):
        airslt.validate(queries, scene_dir / "imgs", {"queries": 59})


# ----------------------------------------------------------------- the stage, real model


def test_stage_embeds_each_crop_and_caption_once(scene_dir, tmp_path, tiny_arch):
    model = Model(name="tiny", arch=str(tiny_arch), random=0)
    anno = scene_dir / "annotations" / "anno.json"
    cache = tmp_path / "cache"
    kw = dict(dataset="slt", cache_dir=cache, device="cpu", n_resamples=50, threads=1)
    first = localize.run(
        model, anno, scene_dir / "imgs", tmp_path / "a.json", tmp_path / "fa", **kw
    )
    n_windows = len(selo_maps.windows(800, 1024))
    assert first["windows"] == n_windows
    assert (first["crops_computed"], first["texts_computed"]) == (n_windows, 3)
    assert json.loads((tmp_path / "a.json").read_text())["metrics"] == first["metrics"]
    for m in localize.METRICS:
        s = first["metrics"][m]
        assert s["ci_low"] <= s["mean"] <= s["ci_high"]
        assert s["mean"] == pytest.approx(np.mean([q[m] for q in first["queries"]]))
    figs = sorted(p.name for p in (tmp_path / "fa").iterdir())
    assert figs == ["query-000.png", "query-001.png", "query-002.png"]
    assert cv2.imread(str(tmp_path / "fa" / figs[0])).shape[1] == 900
    # No crop ever reaches the disk: only the store's Parquet chunks, JSON and figures.
    written = {p.suffix for p in tmp_path.rglob("*") if p.is_file()}
    assert written <= {".parquet", ".json", ".png"}

    # A new caption on the same scene: only that caption is embedded.
    items = json.loads(anno.read_text())
    items.append({**items[0], "caption": "a lake of dark water"})
    anno2 = _anno(tmp_path / "anno2.json", items)
    second = localize.run(
        model, anno2, scene_dir / "imgs", tmp_path / "b.json", tmp_path / "fb", **kw
    )
    assert (second["crops_computed"], second["texts_computed"]) == (0, 1)
    assert second["device"].startswith("cpu")
    assert second["queries"][:3] == first["queries"]
    assert second["queries"][3]["caption"] == "a lake of dark water"

    from rsm_eval.localize_report import localization_section

    geo = {
        **second,
        "model": "geo",
        "model_published": {"model": "GeoRSCLIP", "backbone": "ViT-B-32"},
        "dataset_published": "air-slt",
    }
    section = localization_section([second, geo], tmp_path)
    assert section.title == "Semantic localization"
    assert section.html.count('<img src="data:image/png;base64,') == 6
    assert "](fb/query-000.png)" in section.md  # relative to the report directory
    assert "RSM-CLIP (ICONIP 2024) Table 3" in section.md and "RS5M README" in section.md
    assert "0.7546" in section.md and "0.7556" in section.md  # GeoRSCLIP's two published rows
    assert "No evaluated model" not in section.md

    third = localize.run(
        model, anno2, scene_dir / "imgs", tmp_path / "c.json", tmp_path / "fc", **kw
    )
    assert (third["crops_computed"], third["texts_computed"]) == (0, 0)
    assert third["device"] == "none (all rows cached)"
    assert third["queries"] == second["queries"]


# ----------------------------------------------------------------- configuration


def _config(localization: dict) -> dict:
    return {
        "datasets": {"d": {"format": "csv", "annotations": "a.csv", "images": "imgs"}},
        "models": {"m": {"arch": "ViT-B-32", "random": 0}},
        "localization": localization,
    }


def test_config_resolves_an_air_slt_root_source():
    from rsm_eval import config

    url = "https://huggingface.co/Zilun/GeoRSCLIP/resolve/main/data/rs5m_test_data.zip"
    cfg = config.load(
        _config({"datasets": {"air-slt": {"root": {"url": url, "member": "AIR-SLT"}}}})
    )
    ds = cfg.localization.datasets["air-slt"]
    root = "results/sources/localization/datasets/air-slt/root/AIR-SLT"
    assert ds.root == root and ds.annotations == f"{root}/annotations/anno.json"
    assert ds.images == f"{root}/imgs" and ds.published == "air-slt"
    assert cfg.sources[root].key == "localization.datasets.air-slt.root"
    assert cfg.sources[root].is_dir and cfg.localization.models == ("m",)
    assert cfg.localization.windows == (256, 512, 768)
    assert cfg.localization.median_blur == 251


@pytest.mark.parametrize(
    ("loc", "message"),
    [
        ({"datasets": {"x": {"root": "r", "images": "i"}}}, "either 'root' or"),
        ({"datasets": {"x": {"annotations": "a.json"}}}, "needs 'root', or both"),
        ({"datasets": {"x": {"root": "r"}}, "models": ["nope"]}, "localization.models.0"),
        ({"datasets": {"x": {"root": "r"}}, "median_blur": 250}, "median_blur"),
    ],
)
def test_config_errors_name_the_key(loc, message):
    from rsm_eval import config

    with pytest.raises(RsmEvalError, match=message):
        config.load(_config(loc))
