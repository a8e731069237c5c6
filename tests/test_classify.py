"""Tests for rsm_eval.classify: labels from file names, prompts, zero-shot accuracy."""

from __future__ import annotations

import json

import numpy as np
import pytest
from rsm_eval.classify import (
    DEFAULT_TEMPLATES,
    class_labels,
    class_text,
    label_indices,
    prompts,
    zero_shot,
)
from rsm_eval.demo import class_of
from rsm_eval.errors import RsmEvalError

# ------------------------------------------------------------------------------ helpers


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _synthetic(n_classes: int, n_templates: int, d: int, per_class: int, seed: int = 0):
    """Orthonormal class centroids; templates and images are small perturbations of them.

    Perturbations are orthogonal to every centroid and shorter than 0.3, so an image's
    cosine with its own class's classifier is > 0.9 and with any other class < 0.1: the
    answer is known exactly (100% top-1).
    """
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.standard_normal((d, d)))
    centroids = q[:n_classes]
    free = q[n_classes:]  # orthogonal complement of the centroids

    def near(c, n):
        noise = rng.standard_normal((n, free.shape[0])) @ free
        noise *= 0.3 * rng.uniform(0, 1, (n, 1)) / np.linalg.norm(noise, axis=1, keepdims=True)
        return _unit(centroids[c] + noise)

    prompt_feats = np.concatenate([near(c, n_templates) for c in range(n_classes)])
    images = np.concatenate([near(c, per_class) for c in range(n_classes)])
    labels = np.repeat(np.arange(n_classes), per_class)
    return centroids, prompt_feats.astype(np.float32), images.astype(np.float32), labels


# ------------------------------------------------------------------------------- labels


def test_class_labels_on_real_style_names():
    names = [
        "airport_12.jpg",
        "baseballfield_452.tif",
        "denseresidential_1.tif",
        "dense_residential_001.jpg",
        "Dense Residential 3.tif",
        "sub/dir/storage-tanks-7.png",
        "C:\\data\\RSICD\\bareland_10.jpg",
        "00012.tif",
        "airport.jpg",
        "1.tif",
    ]
    labels, coverage = class_labels(names)
    assert labels == [
        "airport",
        "baseballfield",
        "denseresidential",
        "dense_residential",
        "dense_residential",
        "storage_tanks",
        "bareland",
        None,
        None,
        None,
    ]
    assert coverage == pytest.approx(0.7)


def test_class_labels_agree_with_demo_class_of(small_benchmark):
    doc = json.loads(next(small_benchmark.glob("dataset_*.json")).read_text())
    names = [im["filename"] for im in doc["images"]]
    labels, coverage = class_labels(names)
    assert labels == [class_of(n) for n in names]
    assert coverage == 1.0


def test_class_map_labels_numbered_files():
    labels, coverage = class_labels(
        ["1.tif", "2.tif", "river_3.tif"], class_map={"1.tif": "Golf Course", "river_3.tif": "x"}
    )
    assert labels == ["golf_course", None, "x"]
    assert coverage == pytest.approx(2 / 3)


def test_label_indices():
    classes, idx = label_indices(["river", None, "airport", "river"])
    assert classes == ["airport", "river"]
    assert idx.tolist() == [1, -1, 0, 1]


def test_class_labels_validates_input():
    with pytest.raises(RsmEvalError, match="at least one file name"):
        class_labels([])
    with pytest.raises(RsmEvalError, match="file name 1 is int"):
        class_labels(["a_1.tif", 3])


# ------------------------------------------------------------------------------ prompts


def test_class_text():
    assert class_text("dense_residential") == "dense residential"
    assert class_text("baseballfield") == "baseball field"  # run-together known words
    assert class_text("chaparral") == "chaparral"
    assert class_text("storage-tanks") == "storage tanks"
    with pytest.raises(RsmEvalError, match="non-empty class name"):
        class_text("_")


def test_prompts_are_class_major():
    got = prompts(["dense_residential", "beach"], ["a {}.", "photo of {}"])
    assert got == [
        "a dense residential.",
        "photo of dense residential",
        "a beach.",
        "photo of beach",
    ]
    default = prompts(["airport"])
    assert default == [t.format("airport") for t in DEFAULT_TEMPLATES]
    assert len(DEFAULT_TEMPLATES) >= 3


@pytest.mark.parametrize(
    ("classes", "templates", "match"),
    [
        ([], ["{}"], "at least one class"),
        (["a", "a"], ["{}"], "class 'a' is listed twice"),
        (["a"], [], "at least one template"),
        (["a"], ["no slot"], "exactly one"),
        (["a"], ["{} and {}"], "exactly one"),
        (["a"], ["{0} image"], "exactly one"),
    ],
)
def test_prompts_validate(classes, templates, match):
    with pytest.raises(RsmEvalError, match=match):
        prompts(classes, templates)


# ---------------------------------------------------------------------------- zero_shot


def test_zero_shot_separable_classes_is_100_percent():
    _, prompt_feats, images, labels = _synthetic(7, 3, 40, per_class=5)
    res = zero_shot(images, prompt_feats, 7, labels)
    assert res["top1"] == 100.0
    assert res["top5"] == 100.0
    assert res["mean_class_top1"] == 100.0
    assert (res["n"], res["n_classes"], res["n_templates"]) == (35, 7, 3)
    assert set(res["per_class"]) == set(range(7))
    assert all(v == {"n": 5, "top1": 100.0, "top5": 100.0} for v in res["per_class"].values())


def test_zero_shot_planted_75_percent():
    centroids, prompt_feats, _, _ = _synthetic(8, 2, 24, per_class=1, seed=1)
    images, labels = [], []
    for c in range(8):
        for _ in range(3):  # right: the image is its class centroid
            images.append(centroids[c])
            labels.append(c)
        # wrong: closer to the next class, with its own class second
        images.append(_unit(centroids[(c + 1) % 8] + 0.5 * centroids[c]))
        labels.append(c)
    res = zero_shot(
        np.array(images, dtype=np.float32),
        prompt_feats,
        8,
        np.array(labels),
        class_names=[f"class{c}" for c in range(8)],
    )
    assert res["top1"] == 75.0
    assert res["top5"] == 100.0
    assert res["per_class"]["class3"] == {"n": 4, "top1": 75.0, "top5": 100.0}


def test_zero_shot_unlabelled_images_are_skipped_and_top_k_caps():
    _, prompt_feats, images, labels = _synthetic(3, 2, 16, per_class=4, seed=2)
    labels = labels.copy()
    labels[:4] = -1
    res = zero_shot(images, prompt_feats, 3, labels)
    assert res["n"] == 8
    assert set(res["per_class"]) == {1, 2}
    assert res["top5"] == 100.0  # only 3 classes: top-5 is every class


def test_zero_shot_ties_go_to_the_lower_class_index():
    # Classes 2 and 5 have identical prompts; d=37 is not a power of two (padded sums).
    centroids, prompt_feats, _, _ = _synthetic(6, 2, 37, per_class=1, seed=3)
    prompt_feats = prompt_feats.copy()
    prompt_feats[10:12] = prompt_feats[4:6]
    img = np.repeat(centroids[2:3], 2, axis=0).astype(np.float32)
    res = zero_shot(img, prompt_feats, 6, np.array([2, 5]), top_k=2)
    assert res["per_class"][2]["top1"] == 100.0
    assert res["per_class"][5] == {"n": 1, "top1": 0.0, "top5": 100.0}


def test_zero_shot_uses_renormalised_template_means():
    """Mean-then-renormalise picks class 0; unnormalised means or best templates pick 1."""
    x, y, z = np.eye(3)
    image = x[None, :]
    angle = np.deg2rad(60)
    class0 = [np.cos(angle) * x + np.sin(angle) * z, np.cos(angle) * x - np.sin(angle) * z]
    class1 = [_unit(0.8 * x + 0.6 * y)] * 2
    prompt_feats = np.array(class0 + class1)
    assert zero_shot(image, prompt_feats, 2, np.array([0]))["top1"] == 100.0
    assert zero_shot(image, prompt_feats, 2, np.array([1]))["top1"] == 0.0


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"image_feats": np.ones((4, 8))}, "image_feats: row 0 has norm"),
        ({"image_feats": np.zeros(8)}, "image_feats: expected a non-empty 2-D array"),
        ({"image_feats": np.eye(8, dtype=int)[:4]}, "image_feats: expected floating-point"),
        ({"prompt_feats": np.eye(8)[:5]}, "5 rows are not n_classes=2"),
        ({"prompt_feats": np.eye(6)[:4]}, "dimension 8 but prompt_feats 6"),
        ({"labels_idx": np.array([0, 1, 2, 0])}, "image 2 has class 2"),
        ({"labels_idx": np.array([0, 1])}, "expected 4 integer class indices"),
        ({"labels_idx": np.full(4, -1)}, "no image has a class label"),
        ({"n_classes": 0}, "n_classes"),
        ({"class_names": ["a"]}, "class_names: expected 2 names"),
    ],
)
def test_zero_shot_validates_input(change, match):
    args = {
        "image_feats": np.eye(8)[:4],
        "prompt_feats": np.eye(8)[:4],
        "n_classes": 2,
        "labels_idx": np.array([0, 1, 0, -1]),
    }
    args.update(change)
    with pytest.raises(RsmEvalError, match=match):
        zero_shot(**args)


def test_zero_shot_rejects_cancelling_templates():
    prompt_feats = np.array([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
    with pytest.raises(RsmEvalError, match="class 0 average to zero"):
        zero_shot(np.array([[1.0, 0.0]]), prompt_feats, 2, np.array([0]))
