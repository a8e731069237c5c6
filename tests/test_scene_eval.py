"""Scene classification stage: metrics, zero-shot, feature reuse, linear probes.

References are independent: scikit-learn's metrics, plain NumPy resampling, clip_benchmark's
own zero-shot classifier on the same model and images, and direct scikit-learn fits.
"""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from conftest import TINY_ARCH
from rsm_eval import cas, probe, scene_eval, scenes
from rsm_eval.config import Dataset, Model
from rsm_eval.embeddings import read_features, text_key
from rsm_eval.featstore import FeatureStore
from rsm_eval.models import address
from test_scenes import class_folders, folder_dataset, write_image

MODEL = Model(name="tiny", arch=str(TINY_ARCH), random=0)


def _unit(x):
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


# ------------------------------------------------------------------------------ metrics


def test_metrics_equal_scikit_learn():
    from sklearn.metrics import (
        accuracy_score,
        balanced_accuracy_score,
        confusion_matrix,
        top_k_accuracy_score,
    )

    rng = np.random.default_rng(0)
    scores = rng.standard_normal((300, 8))
    y = rng.integers(0, 8, 300)
    y[:5] = 3  # every class present
    names = [f"c{i}" for i in range(8)]
    m = scene_eval.classification_metrics(scores, y, names, n_resamples=0)
    pred = scores.argmax(1)
    assert m["top1"] == pytest.approx(100 * accuracy_score(y, pred))
    assert m["top5"] == pytest.approx(100 * top_k_accuracy_score(y, scores, k=5))
    assert m["mean_per_class"] == pytest.approx(100 * balanced_accuracy_score(y, pred))
    assert m["confusion"] == confusion_matrix(y, pred, labels=range(8)).tolist()
    for i, c in enumerate(names):
        assert m["per_class"][c]["top1"] == pytest.approx(100 * np.mean(pred[y == i] == i))
    assert m["ci"] is None


def test_ties_go_to_the_lower_class_index():
    scores = np.array([[0.5, 0.5, 0.1], [0.5, 0.5, 0.1]])
    m = scene_eval.classification_metrics(scores, np.array([0, 1]), ["a", "b", "c"], n_resamples=0)
    assert m["top1"] == 50.0 and m["confusion"] == [[1, 0, 0], [1, 0, 0], [0, 0, 0]]


def test_bootstrap_intervals_equal_a_plain_loop():
    rng = np.random.default_rng(1)
    scores = rng.standard_normal((60, 6))
    y = np.repeat(np.arange(6), 10)
    m = scene_eval.classification_metrics(scores, y, list("abcdef"), n_resamples=200, seed=4)
    hit1 = (scores.argmax(1) == y).astype(float)
    top5 = np.argsort(-scores, axis=1, kind="stable")[:, :5]
    hit5 = (top5 == y[:, None]).any(1).astype(float)
    draws = np.random.default_rng(4)
    reps = []
    for _ in range(200):
        idx = draws.integers(0, 60, 60)
        per = [hit1[idx][y[idx] == c].mean() for c in range(6) if (y[idx] == c).any()]
        reps.append([hit1[idx].mean(), hit5[idx].mean(), np.mean(per)])
    low, high = np.quantile(100 * np.array(reps), [0.025, 0.975], axis=0)
    for j, key in enumerate(("top1", "top5", "mean_per_class")):
        assert m["ci"][key] == pytest.approx([low[j], high[j]])
        assert low[j] <= m[key] <= high[j]


# ------------------------------------------------------------------------- the stage


def _manifest(tmp_path, root, name="s"):
    ds = folder_dataset(root)
    ds = Dataset(**{**ds.__dict__, "name": name})
    out = tmp_path / f"{name}.parquet"
    scenes.write(ds, out, tmp_path / f"{name}.json", code="")
    return ds, out


def test_zero_shot_of_a_model_with_a_known_accuracy(tmp_path):
    """Features planted in the store: 22 of 24 images lie next to their class's prompts, two
    next to another class's. The stage must report exactly 22/24, computing no embedding."""
    per_class = {"aGrass": 8, "bField": 8, "cIndustry": 8}
    root = class_folders(tmp_path / "ds", per_class)
    ds, manifest = _manifest(tmp_path, root)
    rows, _ = scenes.read(manifest)
    cache = tmp_path / "cache"
    q, _ = np.linalg.qr(np.random.default_rng(0).standard_normal((16, 16)))
    centroids = q[:3]
    y = np.array([["aGrass", "bField", "cIndustry"].index(r["class_id"]) for r in rows])
    planted = y.copy()
    planted[[0, 9]] = [2, 0]  # two images look like another class
    noise = 0.05 * q[3:5].sum(0)
    img = _unit(centroids[planted] + noise).astype(np.float32)
    FeatureStore(cache, address(MODEL), "image").commit([r["image_sha256"] for r in rows], img)
    templates = scenes.template_set("skyscript")["templates"]
    names = ["grass", "field", "industry"]
    texts = [t.replace("{}", n) for n in names for t in templates]
    prompts = np.repeat(centroids, len(templates), axis=0).astype(np.float32)
    FeatureStore(cache, address(MODEL), "text").commit([text_key(t) for t in texts], prompts)

    feats = tmp_path / "f.parquet"
    record = scene_eval.scene_features(MODEL, manifest, root, feats, cache_dir=cache, device="cpu")
    assert (record["images_computed"], record["images_reused"]) == (0, 24)
    z = scene_eval.zero_shot(
        MODEL, ds, manifest, feats, "skyscript", cache_dir=cache, device="cpu", n_resamples=100
    )
    assert z["top1"] == pytest.approx(100 * 22 / 24)
    assert z["class_names"] == names and z["n_templates"] == 2
    assert z["per_class"]["aGrass"]["top1"] == pytest.approx(100 * 7 / 8)
    assert z["confusion"][0] == [7, 0, 1] and z["confusion"][1] == [1, 7, 0]
    assert z["top5"] == 100.0 and z["mean_per_class"] == pytest.approx(100 * (7 + 7 + 8) / 24)


def test_zero_shot_equals_clip_benchmark(tmp_path):
    """The tiny model, six classes: clip_benchmark's zero-shot classifier and classification
    run on the same images give the stage's top-1, top-5 and mean per-class recall."""
    import torch
    from clip_benchmark.metrics.zeroshot_classification import (
        run_classification,
        zero_shot_classifier,
    )
    from PIL import Image
    from rsm_eval import models
    from sklearn.metrics import balanced_accuracy_score

    rng = np.random.default_rng(5)
    folders = ["aAirport", "bBeach", "cForest", "dRiver", "eDesert", "fParking"]
    for i, f in enumerate(folders):
        for j in range(4):
            pixels = rng.integers(0, 255, (40, 40, 3)) // (i + 1) + 30 * i
            write_image(tmp_path / "ds" / f / f"{j}.png")
            Image.fromarray(pixels.astype(np.uint8)).save(tmp_path / "ds" / f / f"{j}.png")
    ds, manifest = _manifest(tmp_path, tmp_path / "ds")
    cache = tmp_path / "cache"
    feats = tmp_path / "f.parquet"
    scene_eval.scene_features(
        MODEL, manifest, tmp_path / "ds", feats, cache_dir=cache, device="cpu"
    )
    z = scene_eval.zero_shot(
        MODEL, ds, manifest, feats, "skyscript", cache_dir=cache, device="cpu", n_resamples=10
    )

    loaded = models.build(MODEL, "cpu")
    rows, _ = scenes.read(manifest)
    templates = [t.replace("{}", "{c}") for t in scenes.template_set("skyscript")["templates"]]
    classifier = zero_shot_classifier(
        loaded.model, loaded.tokenizer, z["class_names"], templates, "cpu", amp=False
    )
    data = [
        (loaded.preprocess(Image.open(tmp_path / "ds" / r["image_path"]).convert("RGB")),
         folders.index(r["class_id"]))
        for r in rows
    ]  # fmt: skip
    loader = torch.utils.data.DataLoader(data, batch_size=7)
    logits, target = run_classification(loaded.model, classifier, loader, "cpu", amp=False)
    # clip_benchmark's own `accuracy` fails on NumPy 2 (float() of a 1-element array), so
    # top-k is read from its logits with torch.topk here.
    top5 = logits.topk(5, dim=1).indices
    acc1 = float((top5[:, 0] == target).float().mean())
    acc5 = float((top5 == target[:, None]).any(dim=1).float().mean())
    recall = balanced_accuracy_score(target, logits.argmax(1))
    assert z["top1"] == pytest.approx(100 * acc1, abs=1e-4)
    assert z["top5"] == pytest.approx(100 * acc5, abs=1e-4)
    assert z["mean_per_class"] == pytest.approx(100 * recall, abs=1e-4)


def test_a_second_dataset_with_the_same_bytes_embeds_nothing(tmp_path, capfd):
    root = class_folders(tmp_path / "a", {"x": 3, "y": 3})
    copy = tmp_path / "b"
    for i, p in enumerate(sorted(root.rglob("*.jpg"))):
        write_image(copy / "AllInOne" / f"renamed_{i}.jpg")
        shutil.copyfile(p, copy / "AllInOne" / f"renamed_{i}.jpg")
    _, m1 = _manifest(tmp_path, root, "a")
    _, m2 = _manifest(tmp_path, copy, "b")
    cache = tmp_path / "cache"
    r1 = scene_eval.scene_features(MODEL, m1, root, tmp_path / "fa.parquet", cache_dir=cache)
    r2 = scene_eval.scene_features(MODEL, m2, copy, tmp_path / "fb.parquet", cache_dir=cache)
    assert (r1["images_computed"], r2["images_computed"], r2["images_reused"]) == (6, 0, 6)
    assert "embedded 0 images, reused 6" in capfd.readouterr().err
    ka, fa, _ = read_features(tmp_path / "fa.parquet")
    kb, fb, _ = read_features(tmp_path / "fb.parquet")
    assert sorted(ka) == sorted(kb)
    assert np.array_equal(fa[np.argsort(ka)], fb[np.argsort(kb)])
    assert cas.memo() is not None


# ------------------------------------------------------------------------- linear probe


def _blobs(n_classes=5, per_class=40, d=12, seed=0, spread=0.8):
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((n_classes, d))
    y = np.repeat(np.arange(n_classes), per_class)
    x = _unit(centres[y] + spread * rng.standard_normal((y.size, d)))
    keys = [f"{i:04d}" for i in range(y.size)]
    return x, y, keys


def test_probe_equals_a_direct_scikit_learn_fit():
    from sklearn.linear_model import LogisticRegression

    x, y, keys = _blobs()
    cs = [0.1, 1.0, 10.0]
    out = probe.run(
        x, y, keys, ["all"] * len(keys), list("abcde"), test_split="all", shots=[4],
        seeds=2, cs=cs, test_fraction=0.5,
    )  # fmt: skip
    pool, test = probe.holdout(keys, y, 0.5)
    assert len(set(pool) & set(test)) == 0 and test.size == 100
    for s in out["results"]["4"]["seeds"]:
        train, val, _ = probe.sample_shots(pool, y, 4, s["seed"])
        assert train.size == 20 and val.size == 20 and not set(val) & set(test)
        val_acc = {
            c: LogisticRegression(C=c, max_iter=1000).fit(x[train], y[train]).score(x[val], y[val])
            for c in cs
        }
        best = max(cs, key=lambda c: (val_acc[c], -c))
        assert s["C"] == best
        clf = LogisticRegression(C=best, max_iter=1000).fit(x[train], y[train])
        assert s["top1"] == pytest.approx(100 * clf.score(x[test], y[test]))
    r = out["results"]["4"]
    assert r["top1_mean"] == pytest.approx(np.mean([s["top1"] for s in r["seeds"]]))
    assert r["top1_std"] == pytest.approx(np.std([s["top1"] for s in r["seeds"]]))


def test_probe_full_train_split_and_shots():
    from sklearn.linear_model import LogisticRegression

    x, y, keys = _blobs(per_class=30)
    splits = ["train" if i % 3 else "test" for i in range(len(keys))]
    out = probe.run(
        x, y, keys, splits, list("abcde"), test_split="test", shots=[1, 2], seeds=2,
        cs=[1.0, 100.0], test_fraction=0.5,
    )  # fmt: skip
    assert set(out["results"]) == {"1", "2", "full"}
    train = np.flatnonzero(np.array(splits) == "train")
    test = np.flatnonzero(np.array(splits) == "test")
    full = out["results"]["full"]["seeds"][0]
    assert full["n_train"] == train.size
    clf = LogisticRegression(C=full["C"], max_iter=1000).fit(x[train], y[train])
    assert full["top1"] == pytest.approx(100 * clf.score(x[test], y[test]))
    assert out["results"]["1"]["seeds"][0]["n_train"] == 5
    # well-separated blobs: more shots do not do worse than one on average here
    assert out["results"]["full"]["top1_mean"] >= out["results"]["1"]["top1_mean"]


def test_probe_stage_on_cached_features(tmp_path):
    root = class_folders(tmp_path / "ds", {"a": 6, "b": 6, "c": 6})
    _, manifest = _manifest(tmp_path, root)
    feats = tmp_path / "f.parquet"
    cache = tmp_path / "cache"
    scene_eval.scene_features(MODEL, manifest, root, feats, cache_dir=cache, device="cpu")
    settings = {"shots": [1, 2], "seeds": 2, "C": [1.0, 10.0], "test_fraction": 0.5,
                "full": True, "max_iter": 500}  # fmt: skip
    rec = probe.probe_dataset("s", "tiny", "all", manifest, feats, settings)
    assert rec["n_test"] == 9 and rec["n_train_pool"] == 9 and set(rec["results"]) == {"1", "2"}
    assert "held out" in rec["split_rule"] and len(rec["address"]) == 64
