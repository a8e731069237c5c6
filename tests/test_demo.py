"""Tests for rsm_eval.demo: the deterministic synthetic benchmark generator."""

from __future__ import annotations

import csv
import hashlib
import json
import re
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from rsm_eval.demo import SCENE_CLASSES, SIZE, class_of, generate_benchmark
from rsm_eval.errors import RsmEvalError

# Words every caption of a class must contain (its class name as people write it).
CLASS_WORDS = {
    "airport": {"airport"},
    "baseballfield": {"baseball"},
    "beach": {"beach"},
    "bridge": {"bridge", "bridges"},
    "desert": {"desert"},
    "farmland": {"farmland", "farmlands"},
    "forest": {"forest"},
    "parking": {"parking"},
    "pond": {"pond", "ponds"},
    "residential": {"residential"},
    "river": {"river"},
    "storagetanks": {"tanks", "tank"},
}
NUMBERS = {"two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8, "nine": 9}
SMALL = {"n_train": 24, "n_val": 6, "n_test": 12, "n_csv_images": 10}


def tree_hashes(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def pixels(path: Path) -> np.ndarray:
    with Image.open(path) as img:
        return np.asarray(img.convert("RGB"), dtype=np.float32)


@pytest.fixture(scope="module")
def bench(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict, dict]:
    out = tmp_path_factory.mktemp("bench") / "demo"
    summary = generate_benchmark(out)
    doc = json.loads((out / "dataset_demo.json").read_text(encoding="utf-8"))
    return out, summary, doc


# --- determinism ------------------------------------------------------------------------


def test_same_seed_gives_byte_identical_tree(bench, tmp_path: Path) -> None:
    out, summary, _ = bench
    again = generate_benchmark(tmp_path / "again")
    assert tree_hashes(out) == tree_hashes(tmp_path / "again")
    assert again == summary


def test_different_seed_differs(bench, tmp_path: Path) -> None:
    out, _, _ = bench
    generate_benchmark(tmp_path / "other", seed=1)
    a, b = tree_hashes(out), tree_hashes(tmp_path / "other")
    assert a["dataset_demo.json"] != b["dataset_demo.json"]
    assert set(a.values()) != set(b.values())


def test_summary_is_json_serialisable(bench) -> None:
    _, summary, _ = bench
    assert json.loads(json.dumps(summary)) == summary
    assert summary["classes"] == list(SCENE_CLASSES)


# --- formats ----------------------------------------------------------------------------


def test_karpathy_json_format(bench) -> None:
    out, summary, doc = bench
    assert set(doc) == {"images", "dataset"} and doc["dataset"] == "demo"
    counts = defaultdict(int)
    sentids = []
    for imgid, im in enumerate(doc["images"]):
        assert set(im) == {"filename", "imgid", "split", "sentids", "sentences"}
        assert im["imgid"] == imgid
        assert im["split"] in {"train", "val", "test"}
        counts[im["split"]] += 1
        assert len(im["sentences"]) == 5
        assert im["sentids"] == [s["sentid"] for s in im["sentences"]]
        for s in im["sentences"]:
            assert set(s) == {"raw", "tokens", "imgid", "sentid"}
            assert s["imgid"] == imgid
            assert s["tokens"] == re.findall(r"[a-z0-9]+", s["raw"].lower())
            assert all(t == t.lower() and t.isalnum() for t in s["tokens"])
        sentids += im["sentids"]
    assert dict(counts) == {"train": 300, "val": 50, "test": 100}
    assert sentids == list(range(len(sentids)))
    for split, n in counts.items():
        assert summary["splits"][split]["images"] == n
        assert summary["splits"][split]["captions"] == 5 * n


def test_images_exist_decode_and_mix_formats(bench) -> None:
    out, _, doc = bench
    names = [im["filename"] for im in doc["images"]]
    assert len(set(names)) == len(names)
    assert sorted(p.name for p in (out / "images").iterdir()) == sorted(names)
    for name in names:
        assert "/" not in name and class_of(name) in SCENE_CLASSES
        with Image.open(out / "images" / name) as img:
            assert img.mode == "RGB" and img.size == (SIZE, SIZE)
            if name.endswith(".tif"):
                assert img.format == "TIFF" and img.info.get("compression") == "raw"
            else:
                assert img.format == "JPEG"
    assert {Path(n).suffix for n in names} == {".tif", ".jpg"}


def test_csv_format(bench) -> None:
    out, summary, doc = bench
    raw = (out / "RSMITD.csv").read_bytes()
    raw.decode("utf-8")
    with (out / "RSMITD.csv").open(encoding="utf-8", newline="") as handle:
        rows = list(csv.reader(handle))
    assert rows[0] == ["filepath", "title"]
    per_image = defaultdict(list)
    for path, title in rows[1:]:
        assert (out / "rsmitd_images" / path).is_file()
        assert title.strip()
        per_image[path].append(title)
    assert len(per_image) == 300 == summary["csv"]["images"]
    assert all(len(set(t)) == len(t) == 2 for t in per_image.values())
    assert sorted(per_image) == sorted(p.name for p in (out / "rsmitd_images").iterdir())
    # CSV scenes are fresh draws: no file name shared with the Karpathy images.
    assert not set(per_image) & {im["filename"] for im in doc["images"]}


# --- quirks -----------------------------------------------------------------------------


def test_padded_images(bench) -> None:
    _, summary, doc = bench
    padded = {
        im["filename"] for im in doc["images"] if len({s["raw"] for s in im["sentences"]}) < 5
    }
    assert padded == set(summary["padded"]) and len(padded) == 5


def test_shared_caption_sets(bench) -> None:
    _, summary, doc = bench
    groups = defaultdict(list)
    for im in doc["images"]:
        groups[frozenset(s["raw"] for s in im["sentences"])].append(im)
    shared = [g for g in groups.values() if len(g) > 1]
    assert sorted([im["filename"] for im in g] for g in shared) == sorted(
        summary["shared_caption_sets"]
    )
    assert len(shared) == 3
    for a, b in shared:
        assert [s["raw"] for s in a["sentences"]] == [s["raw"] for s in b["sentences"]]
        assert b["imgid"] == a["imgid"] + 1 and a["split"] == b["split"]
        assert class_of(a["filename"]) == class_of(b["filename"])
        number = lambda f: int(Path(f).stem.rsplit("_", 1)[1])  # noqa: E731
        assert number(b["filename"]) == number(a["filename"]) + 1


def test_planted_duplicates(bench) -> None:
    out, summary, doc = bench
    split_of = {im["filename"]: im["split"] for im in doc["images"]}
    dups = summary["duplicates"]
    assert sum(d["kind"] == "exact" for d in dups) == 3
    assert sum(d["kind"] == "near" for d in dups) == 3
    assert {d["copy"].split("/")[0] for d in dups if d["kind"] == "near"} == {
        "images",
        "rsmitd_images",
    }
    for d in dups:
        assert split_of[d["test"]] == "test"
        src, copy = out / "images" / d["test"], out / d["copy"]
        assert copy.name != src.name and class_of(copy.name) == class_of(src.name)
        if copy.parent.name == "images":
            assert split_of[copy.name] == "train"
        if d["kind"] == "exact":
            assert src.read_bytes() == copy.read_bytes()
        else:
            assert src.read_bytes() != copy.read_bytes()
            assert np.abs(pixels(src) - pixels(copy)).mean() < 8
    # The planted exact copies are the only byte-identical files in the tree.
    by_hash = defaultdict(list)
    for path, digest in tree_hashes(out).items():
        by_hash[digest].append(path)
    identical = sorted(sorted(paths) for paths in by_hash.values() if len(paths) > 1)
    expected = sorted(
        sorted([f"images/{d['test']}", d["copy"]]) for d in dups if d["kind"] == "exact"
    )
    assert identical == expected


def test_near_duplicates_closer_than_other_scenes(bench) -> None:
    out, summary, _ = bench
    for d in summary["duplicates"]:
        src = pixels(out / "images" / d["test"])
        near = np.abs(src - pixels(out / d["copy"])).mean()
        skip = {d["test"], Path(d["copy"]).name}
        others = [
            p for p in (out / "images").glob(f"{class_of(d['test'])}_*") if p.name not in skip
        ]
        assert near < 8
        assert near < 0.75 * min(np.abs(src - pixels(p)).mean() for p in others)


def test_quirks_can_be_switched_off(tmp_path: Path) -> None:
    summary = generate_benchmark(
        tmp_path / "clean",
        **SMALL,
        n_padded=0,
        n_shared_caption_sets=0,
        n_exact_duplicates=0,
        n_near_duplicates=0,
    )
    assert summary["padded"] == summary["shared_caption_sets"] == summary["duplicates"] == []
    doc = json.loads((tmp_path / "clean" / "dataset_demo.json").read_text())
    sets = [frozenset(s["raw"] for s in im["sentences"]) for im in doc["images"]]
    assert len(set(sets)) == len(sets) and all(len(s) == 5 for s in sets)


# --- captions describe the images -----------------------------------------------------


def test_captions_name_the_file_class(bench) -> None:
    out, _, doc = bench
    for im in doc["images"]:
        words = CLASS_WORDS[class_of(im["filename"])]
        for s in im["sentences"]:
            assert words & set(s["tokens"]), (im["filename"], s["raw"])
    with (out / "RSMITD.csv").open(encoding="utf-8", newline="") as handle:
        for row in list(csv.DictReader(handle)):
            tokens = set(re.findall(r"[a-z0-9]+", row["title"].lower()))
            assert CLASS_WORDS[class_of(row["filepath"])] & tokens, row


def test_classes_differ_visually(bench) -> None:
    out, _, doc = bench
    feats, labels, splits = [], [], []
    for im in doc["images"]:
        with Image.open(out / "images" / im["filename"]) as img:
            thumb = np.asarray(img.convert("RGB").resize((8, 8), Image.Resampling.BOX), float)
        feats.append(thumb.ravel() / 255.0)
        labels.append(class_of(im["filename"]))
        splits.append(im["split"])
    feats, labels = np.array(feats), np.array(labels)
    train, test = np.array(splits) == "train", np.array(splits) == "test"
    # Per-class mean colours are distinct.
    means = {c: feats[labels == c].reshape(-1, 64, 3).mean(axis=(0, 1)) for c in SCENE_CLASSES}
    for i, a in enumerate(SCENE_CLASSES):
        for b in SCENE_CLASSES[i + 1 :]:
            assert np.abs(means[a] - means[b]).max() > 0.015, (a, b)
    # A trivial nearest-centroid classifier on thumbnails beats chance (1/12) by far.
    centroids = np.stack([feats[train & (labels == c)].mean(axis=0) for c in SCENE_CLASSES])
    dist = ((feats[test][:, None, :] - centroids[None]) ** 2).sum(axis=2)
    predicted = np.array(SCENE_CLASSES)[dist.argmin(axis=1)]
    assert (predicted == labels[test]).mean() > 0.5


def _count_blobs(mask: np.ndarray, min_size: int = 12) -> int:
    """Count 4-connected components of a boolean mask (small images, plain Python)."""
    seen = np.zeros_like(mask)
    count = 0
    for y, x in zip(*np.nonzero(mask), strict=True):
        if seen[y, x]:
            continue
        stack, size = [(y, x)], 0
        seen[y, x] = True
        while stack:
            cy, cx = stack.pop()
            size += 1
            for ny, nx in ((cy + 1, cx), (cy - 1, cx), (cy, cx + 1), (cy, cx - 1)):
                inside = 0 <= ny < mask.shape[0] and 0 <= nx < mask.shape[1]
                if inside and mask[ny, nx] and not seen[ny, nx]:
                    seen[ny, nx] = True
                    stack.append((ny, nx))
        count += size >= min_size
    return count


def test_counts_and_orientation_in_captions_match_pixels(bench) -> None:
    out, _, doc = bench
    checked_tanks = checked_fields = 0
    for im in doc["images"]:
        cls = class_of(im["filename"])
        tokens = {t for s in im["sentences"] for t in s["tokens"]}
        arr = pixels(out / "images" / im["filename"])
        if cls == "storagetanks":
            said = {NUMBERS[t] for t in tokens if t in NUMBERS}
            if said:
                assert len(said) == 1
                assert _count_blobs(arr.min(axis=2) > 210) == said.pop(), im["filename"]
                checked_tanks += 1
        elif cls == "farmland":
            row_var = arr.mean(axis=(1, 2)).var()  # varies across horizontal stripes
            col_var = arr.mean(axis=(0, 2)).var()
            if tokens & {"horizontal", "horizontally"}:
                assert row_var > col_var, im["filename"]
            else:
                assert col_var > row_var, im["filename"]
            checked_fields += 1
    assert checked_tanks >= 5 and checked_fields >= 10


# --- API --------------------------------------------------------------------------------


def test_class_of() -> None:
    assert class_of("baseballfield_452.tif") == "baseballfield"
    assert class_of("airport_12.jpg") == "airport"
    assert class_of("images/dense_residential_001.jpg") == "dense_residential"
    assert class_of("00012.tif") is None
    assert class_of("airport.jpg") is None


def test_replaces_existing_output(tmp_path: Path) -> None:
    out = tmp_path / "bench"
    generate_benchmark(out, **SMALL, name="first")
    (out / "images" / "stale.tif").write_bytes(b"x")
    generate_benchmark(out, **SMALL, name="second")
    assert not (out / "dataset_first.json").exists()
    assert not (out / "images" / "stale.tif").exists()
    assert (out / "dataset_second.json").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bench"]


def test_refuses_to_replace_unrelated_directory(tmp_path: Path) -> None:
    out = tmp_path / "precious"
    out.mkdir()
    (out / "thesis.tex").write_text("keep me")
    with pytest.raises(RsmEvalError, match="refusing"):
        generate_benchmark(out, **SMALL)
    assert (out / "thesis.tex").read_text() == "keep me"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"n_test": 0}, "n_test"),
        ({"n_train": -1}, "n_train"),
        ({"seed": -3}, "seed"),
        ({"n_val": 1.5}, "n_val"),
        ({"n_padded": True}, "n_padded"),
        ({"captions_per_csv_image": 6}, "captions_per_csv_image"),
        ({"name": "../evil"}, "name"),
        ({"n_test": 4, "n_exact_duplicates": 3, "n_near_duplicates": 3}, "n_test"),
        ({"n_train": 2}, "n_train"),
        ({"n_csv_images": 1, "n_near_duplicates": 4}, "n_csv_images"),
        ({"n_shared_caption_sets": 1000}, "n_shared_caption_sets"),
        ({"n_padded": 10_000}, "n_padded"),
    ],
)
def test_rejects_bad_arguments(tmp_path: Path, kwargs: dict, message: str) -> None:
    with pytest.raises(RsmEvalError, match=message):
        generate_benchmark(tmp_path / "x", **kwargs)
    assert not (tmp_path / "x").exists()


GOLDEN = Path(__file__).parent / "data" / "demo-files.sha256"


def test_bundled_demo_bytes_are_pinned(tmp_path: Path) -> None:
    """The demo's three generators at the workflow's settings give exactly the recorded files.

    Refactoring the generators must not change a byte of the demo (its report is compared
    across versions). After a deliberate change, regenerate the list: `cd <out> && find . -type
    f | sort | xargs sha256sum`, without the leading `./`.
    """
    from rsm_eval.demo_scene import generate as generate_slt_scene
    from rsm_eval.scene_demo import generate_scenes

    data = tmp_path / "data"
    generate_benchmark(data, seed=0, n_train=300, n_val=50, n_test=100, n_csv_images=300)
    generate_scenes(data / "scenes", data / "dataset_demo.json", data / "images", seed=0)
    generate_slt_scene(tmp_path / "slt", seed=0, width=1536, height=1024)
    got = {
        p.relative_to(tmp_path).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(tmp_path.rglob("*"))
        if p.is_file()
    }
    want = dict(reversed(line.split("  ", 1)) for line in GOLDEN.read_text().splitlines() if line)
    assert sorted(got) == sorted(want), "the demo's file list changed"
    changed = sorted(k for k in want if got[k] != want[k])
    assert not changed, f"{len(changed)} demo files changed, e.g. {changed[:5]}"
