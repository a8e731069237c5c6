"""Scene datasets: class folders and label CSVs, class names, template sets, UCM labels."""

from __future__ import annotations

import importlib.resources
import json
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT
from PIL import Image
from rsm_eval import classify, scenes, schemas
from rsm_eval.config import Dataset
from rsm_eval.errors import RsmEvalError


def write_image(path: Path, rgb=(10, 120, 30), size=(32, 32)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, rgb).save(path)


def class_folders(root: Path, per_class: dict[str, int]) -> Path:
    for i, (cls, n) in enumerate(per_class.items()):
        for j in range(n):
            write_image(root / cls / f"img_{j}.jpg", (20 * i, 7 * j, 100))
    return root


def folder_dataset(root: Path, **kw) -> Dataset:
    return Dataset(name="s", format="class-folders", annotations="", images=str(root),
                   split="all", **kw)  # fmt: skip


# --------------------------------------------------------------------------- class names


@pytest.mark.parametrize(
    ("folder", "words"),
    [
        ("aGrass", "grass"),
        ("dRiverLake", "river lake"),
        ("fResident", "resident"),
        ("storagetanks", "storage tanks"),
        ("HerbaceousVegetation", "herbaceous vegetation"),
        ("SeaLake", "sea lake"),
        ("BareLand", "bare land"),
        ("railwayStation", "railway station"),
        ("footballField", "football field"),
        ("idle_land", "idle land"),
        ("wastewater_treatment_plant", "wastewater treatment plant"),
        ("baseballdiamond", "baseball diamond"),
        ("mobilehomepark", "mobile home park"),
        ("overpass", "overpass"),
        ("intersection", "intersection"),
        ("chaparral", "chaparral"),
        ("Airport", "airport"),
        ("group/sub/tenniscourt", "tennis court"),
        ("oil_gas_field", "oil gas field"),
    ],
)
def test_class_words(folder, words):
    assert scenes.class_words(folder) == words


def test_class_words_overrides_and_rules():
    assert scenes.class_words("fResident", {"fResident": "residential area"}) == "residential area"
    assert scenes.class_words("a/b/Park", {"Park": "park land"}) == "park land"
    assert scenes.lower_name("StorageTanks") == "storagetanks"  # GeoRSCLIP's rule
    assert scenes.lower_name("baseball_field") == "baseball field"
    with pytest.raises(RsmEvalError, match="no letters"):
        scenes.class_words("__")


def test_every_ucm_class_is_split_into_words():
    words = [scenes.class_words(c) for c in classify.UCM_CLASSES]
    assert words[:4] == ["agricultural", "airplane", "baseball diamond", "beach"]
    assert "medium residential" in words and "parking lot" in words and "golf course" in words


# ------------------------------------------------------------------------------ templates


def test_template_sets():
    sets = scenes.template_sets()
    geo = sets["georsclip"]["templates"]
    assert len(geo) == 105 == len(set(geo))
    assert geo[0] == "a remote sensing image of many {}."
    assert geo[35] == "an aerial image of many {}."
    assert geo[-1] == "a satellite image of a cool {}."
    assert sets["georsclip"]["classnames"] == "lower"
    assert sets["skyscript"]["templates"] == ["a satellite photo of {}.", "a satellite image of {}"]
    assert len(sets["single"]["templates"]) == 1
    with pytest.raises(RsmEvalError, match="unknown template set 'x'"):
        scenes.template_set("x")


def test_clip_benchmark_sets_equal_the_installed_package():
    base = importlib.resources.files("clip_benchmark") / "datasets"
    templates = json.loads((base / "en_zeroshot_classification_templates.json").read_text())
    classnames = json.loads((base / "en_classnames.json").read_text())
    for name in ("eurosat", "resisc45"):
        ours = scenes.template_set(f"clip_benchmark-{name}")["templates"]
        assert ours == [t.replace("{c}", "{}") for t in templates[name]]
    mapping = scenes.template_set("clip_benchmark-eurosat")["classnames"]
    # clip_benchmark lists EuroSAT's names in the sorted order of its class folders.
    assert [mapping[k] for k in sorted(mapping)] == classnames["eurosat"]
    ids = ["2750/AnnualCrop", "2750/SeaLake"]
    assert scenes.prompt_names(ids, mapping) == ["annual crop land", "lake or sea"]
    with pytest.raises(RsmEvalError, match="only with the dataset"):
        scenes.prompt_names(["aGrass"], mapping)


# ------------------------------------------------------------------------------ manifests


def test_class_folder_manifest(tmp_path):
    root = class_folders(tmp_path / "ds", {"aGrass": 3, "bField": 2})
    write_image(root / "group" / "StorageTanks" / "x.png")  # a nested class
    (root / "aGrass" / "readme.txt").write_text("not an image")
    (root / "aGrass" / ".DS_Store").write_text("hidden")
    ds = folder_dataset(
        root, expected={"all": {"classes": 3, "images": 6, "per_class": {"aGrass": 3}}}
    )
    summary = scenes.write(ds, tmp_path / "m.parquet", tmp_path / "s.json", code="c")
    table, meta = schemas.read_table(tmp_path / "m.parquet", schemas.SCENES)
    assert meta["address"] == summary["address"]
    rows = table.to_pylist()
    assert [r["class_id"] for r in rows] == ["aGrass"] * 3 + ["bField"] * 2 + ["group/StorageTanks"]
    assert {r["class_name"] for r in rows} == {"grass", "field", "storage tanks"}
    assert rows[-1]["image_key"] == "group/StorageTanks/x.png"
    assert summary["quirks"]["skipped_files"] == 1
    assert summary["skipped_examples"] == ["aGrass/readme.txt"]
    assert summary["counts"]["all"]["per_class"]["bField"] == 2
    # identical solid images in one class are counted, not fatal
    assert summary["quirks"]["images_with_identical_content"] == 0


@pytest.mark.parametrize(
    ("expected", "match"),
    [
        ({"classes": 3}, "has 2 classes, expected 3"),
        ({"images": 4}, "has 5 images, expected 4"),
        ({"per_class": 3}, "class 'bField' has 2 images, expected 3"),
        ({"per_class_min": 3}, "class 'bField' has 2 images, expected 3..None"),
        ({"per_class": {"cX": 1}}, "class 'cX' has 0 images"),
    ],
)
def test_class_folder_counts_are_checked(tmp_path, expected, match):
    root = class_folders(tmp_path / "ds", {"aGrass": 3, "bField": 2})
    with pytest.raises(RsmEvalError, match=match):
        scenes.build(folder_dataset(root, expected={"all": expected}))


def test_class_folder_errors(tmp_path):
    root = class_folders(tmp_path / "ds", {"aGrass": 1})
    write_image(root / "loose.jpg")
    with pytest.raises(RsmEvalError, match="not inside a class folder"):
        scenes.build(folder_dataset(root))
    (root / "loose.jpg").unlink()
    (root / "aGrass" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    with pytest.raises(RsmEvalError, match="broken.jpg.*cannot be decoded"):
        scenes.build(folder_dataset(root))
    with pytest.raises(RsmEvalError, match="does not exist"):
        scenes.build(folder_dataset(tmp_path / "nope"))


def test_label_csv_manifest(tmp_path):
    images = tmp_path / "imgs"
    lines = ["filepath,label,split"]
    for i in range(6):
        write_image(images / f"{i}.jpg", (40 * i, 0, 0))
        lines.append(f"{i}.jpg,{'Forest' if i % 2 else 'SeaLake'},{'train' if i < 4 else 'test'}")
    (tmp_path / "labels.csv").write_text("\n".join(lines) + "\n")
    ds = Dataset(
        name="l", format="label-csv", annotations=str(tmp_path / "labels.csv"),
        images=str(images), split="test",
        expected={"train": {"classes": 2, "per_class": 2}, "test": {"images": 2}},
    )  # fmt: skip
    table, summary = scenes.build(ds)
    assert table.column("split").to_pylist() == ["train"] * 4 + ["test"] * 2
    assert summary["class_names"] == {"Forest": "forest", "SeaLake": "sea lake"}
    rows, _ = scenes.read(_write(ds, tmp_path), "test")
    assert [r["image_key"] for r in rows] == ["4.jpg", "5.jpg"]
    (tmp_path / "labels.csv").write_text("image,category\n0.jpg,a\n0.jpg,b\n")
    with pytest.raises(RsmEvalError, match=r"labels.csv:3: image '0.jpg' also on line 2"):
        scenes.build(ds)
    (tmp_path / "labels.csv").write_text("image,what\n0.jpg,a\n")
    with pytest.raises(RsmEvalError, match="which column holds the class"):
        scenes.build(ds)


def _write(ds: Dataset, tmp: Path) -> Path:
    scenes.write(ds, tmp / "m.parquet", tmp / "s.json", code="")
    return tmp / "m.parquet"


# ---------------------------------------------------------------------- retrieval labels


def test_ucm_numbering_labels():
    names = ["1.tif", "100.tif", "101.tif", "2100.tif", "2101.tif", "00012.jpg", "airport_1.jpg"]
    labels, coverage = classify.class_labels(names, scheme="ucm-numbering")
    assert labels == ["agricultural", "agricultural", "airplane", "tenniscourt", None, None, None]
    assert coverage == pytest.approx(4 / 7)
    # RSICD's numeric names stay unlabelled under the default scheme.
    assert classify.class_labels(["00012.jpg", "1.tif"])[0] == [None, None]


def _shared_tsv() -> Path | None:
    for base in (ROOT.parent / "shared", Path("/work/shared")):
        if (base / "data" / "ucm_captions_images.tsv").is_file():
            return base / "data" / "ucm_captions_images.tsv"
    return None


@pytest.mark.skipif(_shared_tsv() is None, reason="shared/data/ucm_captions_images.tsv absent")
def test_ucm_numbering_agrees_with_the_published_renaming():
    lines = [x for x in _shared_tsv().read_text().splitlines() if x and not x.startswith("#")]
    rows = [x.split("\t") for x in lines[1:]]
    assert len(rows) == 2100
    labels, coverage = classify.class_labels([r[0] for r in rows], scheme="ucm-numbering")
    assert coverage == 1.0 and labels == [r[1] for r in rows]


def test_prompt_names_rules():
    ids = ["aGrass", "storage_tanks"]
    assert scenes.prompt_names(ids, "words") == ["grass", "storage tanks"]
    assert scenes.prompt_names(ids, "lower") == ["agrass", "storage tanks"]
    assert scenes.prompt_names(ids, "words", {"aGrass": "meadow"})[0] == "meadow"
    assert np.array_equal(np.arange(2), np.arange(2))


# -------------------------------------------------------------------------------- config


def _cfg(**extra):
    base = {
        "datasets": {
            "sc": {"format": "class-folders", "images": "x", "templates": ["single", "georsclip"]},
            "ret": {"format": "csv", "annotations": "a.csv", "images": "i"},
        },
        "models": {"m": {"arch": "ViT-B-32", "random": 0}},
    }
    base.update(extra)
    return base


def test_config_scene_evaluations():
    from rsm_eval import config

    cfg = config.load(_cfg())
    assert cfg.datasets["sc"].split == "all" and cfg.datasets["sc"].annotations == ""
    assert [(e.dataset, e.templates) for e in cfg.scene_evaluations] == [
        ("sc", "single"),
        ("sc", "georsclip"),
    ]
    assert [e.dataset for e in cfg.evaluations] == ["ret"]
    picked = config.load(
        _cfg(evaluations=[{"model": "m", "dataset": "sc", "templates": "skyscript"}])
    )
    assert [e.templates for e in picked.scene_evaluations] == [
        "skyscript"
    ] and not picked.evaluations
    bad = [
        (
            {"evaluations": [{"model": "m", "dataset": "sc", "templates": "nope"}]},
            "unknown template",
        ),
        (
            {"evaluations": [{"model": "m", "dataset": "ret", "templates": "single"}]},
            "only for scene",
        ),
        ({"evaluations": [{"model": "m", "dataset": "sc", "protocol": "skyscript"}]}, "retrieval"),
        ({"leakage": {"train": [{"dataset": "sc"}]}}, "is a scene dataset"),
    ]
    for extra, match in bad:
        with pytest.raises(RsmEvalError, match=match):
            config.load(_cfg(**extra))
    with pytest.raises(RsmEvalError, match="'annotations' is a required property"):
        config.load({"datasets": {"l": {"format": "label-csv", "images": "x"}},
                     "models": {"m": {"arch": "ViT-B-32", "random": 0}}})  # fmt: skip
