"""Few-shot linear probes on cached image features (scikit-learn logistic regression).

Protocol (stated in the report):

* Features: the scene-features table of the model (L2-normalised image embeddings, the same
  rows zero-shot classification reads); nothing is embedded here.
* Train and test: a dataset with a ``train`` split and an evaluated split uses them. A dataset
  with one split (class folders) is split once per class by content: images ordered by the
  sha256 of ``"probe-split:" + image sha256``, the first ``test_fraction`` of each class
  (rounded, at least one image) is the test set, the rest the training pool. The split does not
  depend on the seed, so every seed and k is scored on the same test images.
* k-shot (k in ``shots``): for each seed, each class's training pool is shuffled
  (``numpy.random.default_rng([seed, k])``); its first k images are the training set and the
  next k (what is left, if fewer) the validation set. "full": all training-split images, with a
  stratified 20% of them as the validation set (only where the dataset has a train split).
* Regularisation: ``LogisticRegression(C=c, max_iter=max_iter)`` (lbfgs, multinomial) is fit on
  the training set for each ``c`` in ``C``; the ``c`` with the best validation accuracy (ties:
  the smaller) is kept, and for "full" refit on all training images. The validation images
  come from the training pool only, never from the test set.
* Metrics on the test set per seed (top-1, top-5, mean per-class); mean and standard
  deviation (ddof 0) over seeds.
"""

from __future__ import annotations

import hashlib
import warnings
from collections import defaultdict
from typing import Any

import numpy as np

from .errors import RsmEvalError

VAL_FRACTION_FULL = 0.2


def holdout(keys: list[str], y: np.ndarray, test_fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """(train pool, test) row indices: per class, a content-ordered ``test_fraction``."""
    by_class: dict[int, list[int]] = defaultdict(list)
    for i, c in enumerate(y.tolist()):
        by_class[c].append(i)
    train, test = [], []
    for c in sorted(by_class):
        rows = sorted(
            by_class[c], key=lambda i: hashlib.sha256(f"probe-split:{keys[i]}".encode()).digest()
        )
        n_test = min(len(rows) - 1, max(1, round(test_fraction * len(rows))))
        if n_test < 1:
            raise RsmEvalError(f"linear probe: class {c} has one image; cannot hold one out")
        test += rows[:n_test]
        train += rows[n_test:]
    return np.array(sorted(train)), np.array(sorted(test))


def sample_shots(
    pool: np.ndarray, y: np.ndarray, k: int, seed: int
) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """(train, val) row indices: k per class from ``pool`` and the next k for validation.

    Returns also the classes whose pool had fewer than k images (they train on what there is;
    a class with no image left has no validation image)."""
    rng = np.random.default_rng([seed, k])
    train, val, short = [], [], []
    for c in np.unique(y[pool]).tolist():
        rows = pool[y[pool] == c]
        rows = rows[rng.permutation(rows.size)]
        if rows.size < k:
            short.append(int(c))
        take = min(k, rows.size)
        train += rows[:take].tolist()
        val += rows[take : take + k].tolist()
    return np.array(sorted(train)), np.array(sorted(val)), short


def stratified_val(pool: np.ndarray, y: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(fit, val) split of the full training pool, ``VAL_FRACTION_FULL`` of each class."""
    rng = np.random.default_rng([seed, 0])
    fit, val = [], []
    for c in np.unique(y[pool]).tolist():
        rows = pool[y[pool] == c]
        rows = rows[rng.permutation(rows.size)]
        n_val = min(rows.size - 1, max(1, round(VAL_FRACTION_FULL * rows.size)))
        val += rows[:n_val].tolist()
        fit += rows[n_val:].tolist()
    return np.array(sorted(fit)), np.array(sorted(val))


def _fit(x: np.ndarray, y: np.ndarray, c: float, max_iter: int):
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression

    clf = LogisticRegression(C=c, max_iter=max_iter)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        if np.unique(y).size == 1:
            raise RsmEvalError("linear probe: the training set has one class")
        clf.fit(x, y)
    clf.converged_ = not any(issubclass(w.category, ConvergenceWarning) for w in caught)
    return clf


def class_scores(clf, x: np.ndarray, n_classes: int) -> np.ndarray:
    """(n, n_classes) decision values; classes the probe never saw score -inf."""
    out = np.full((x.shape[0], n_classes), -np.inf)
    dec = clf.decision_function(x)
    if dec.ndim == 1:  # two classes: sklearn returns the positive class's margin
        dec = np.stack([-dec, dec], axis=1) / 2
    out[:, clf.classes_] = dec
    return out


def select_and_fit(
    feats: np.ndarray,
    y: np.ndarray,
    train: np.ndarray,
    val: np.ndarray,
    cs: list[float],
    max_iter: int,
    refit: np.ndarray | None = None,
) -> tuple[Any, float, dict[str, float]]:
    """Fit on ``train`` for each C, keep the best validation accuracy (ties: the smaller C);
    refit on ``refit`` rows when given. Returns (classifier, C, validation accuracy per C)."""
    scores: dict[str, float] = {}
    best = None
    for c in sorted(cs):
        clf = _fit(feats[train], y[train], c, max_iter)
        acc = float((clf.predict(feats[val]) == y[val]).mean()) if val.size else float("nan")
        scores[repr(c)] = 100.0 * acc
        if best is None or (val.size and acc > best[2]):
            best = (clf, c, acc)
    assert best is not None
    clf, c = best[0], best[1]
    if refit is not None:
        clf = _fit(feats[refit], y[refit], c, max_iter)
    return clf, c, scores


def run(
    feats: np.ndarray,
    y: np.ndarray,
    keys: list[str],
    splits: list[str],
    class_ids: list[str],
    *,
    test_split: str,
    shots: list[int],
    seeds: int,
    cs: list[float],
    test_fraction: float,
    full: bool = True,
    max_iter: int = 1000,
) -> dict[str, Any]:
    """Linear-probe results for every k (and "full") over ``seeds`` seeds."""
    from .scene_eval import classification_metrics

    n_classes = len(class_ids)
    split_arr = np.array(splits)
    has_train = bool((split_arr == "train").any()) and test_split != "train"
    if has_train:
        pool, test = np.flatnonzero(split_arr == "train"), np.flatnonzero(split_arr == test_split)
        if test.size == 0:
            raise RsmEvalError(f"linear probe: the test split {test_split!r} is empty")
        split_rule = f"the dataset's 'train' and {test_split!r} splits"
    else:
        pool, test = holdout(keys, y, test_fraction)
        split_rule = f"{test_fraction:g} of each class held out by content hash"
    settings: list[tuple[str, int | None]] = [(str(k), k) for k in shots]
    if full and has_train:
        settings.append(("full", None))
    results: dict[str, Any] = {}
    for label, k in settings:
        per_seed = []
        for seed in range(seeds):
            if k is None:
                fit, val = stratified_val(pool, y, seed)
                clf, c, val_acc = select_and_fit(feats, y, fit, val, cs, max_iter, refit=pool)
                short: list[int] = []
                n_train = int(pool.size)
            else:
                train, val, short = sample_shots(pool, y, k, seed)
                clf, c, val_acc = select_and_fit(feats, y, train, val, cs, max_iter)
                n_train = int(train.size)
            m = classification_metrics(
                class_scores(clf, feats[test], n_classes), y[test], class_ids, n_resamples=0
            )
            per_seed.append(
                {
                    "seed": seed,
                    "C": c,
                    "val_accuracy": val_acc,
                    "n_train": n_train,
                    "n_val": int(val.size),
                    "converged": bool(clf.converged_),
                    "short_classes": [class_ids[i] for i in short],
                    **{key: m[key] for key in ("top1", "top5", "mean_per_class")},
                }
            )
        results[label] = {
            "k": k,
            "seeds": per_seed,
            **{
                f"{key}_{stat}": float(fn([s[key] for s in per_seed]))
                for key in ("top1", "top5", "mean_per_class")
                for stat, fn in (("mean", np.mean), ("std", np.std))
            },
        }
    return {
        "n_train_pool": int(pool.size),
        "n_test": int(test.size),
        "split_rule": split_rule,
        "C_grid": sorted(cs),
        "max_iter": max_iter,
        "results": results,
    }


def probe_dataset(
    dataset_name: str,
    model_name: str,
    test_split: str,
    manifest: Any,
    features: Any,
    settings: dict[str, Any],
    code: str = "",
) -> dict[str, Any]:
    """The linear-probe record of one model on one scene dataset (all from cached features)."""
    from . import cas
    from .scene_eval import load_split

    rows, feats, class_ids, y, meta = load_split(manifest, features, None)
    norms = np.linalg.norm(feats, axis=1)
    if not np.allclose(norms, 1.0, atol=1e-3):
        raise RsmEvalError(
            f"{features}: features are not L2-normalised (norms {norms.min():.4g}..)"
        )
    keys = [r["image_sha256"] for r in rows]
    params = {k: settings[k] for k in ("shots", "seeds", "C", "test_fraction", "full", "max_iter")}
    result = run(
        feats.astype(np.float64),
        y,
        keys,
        [r["split"] for r in rows],
        class_ids,
        test_split=test_split,
        shots=list(params["shots"]),
        seeds=params["seeds"],
        cs=list(params["C"]),
        test_fraction=params["test_fraction"],
        full=params["full"],
        max_iter=params["max_iter"],
    )
    address = cas.digest(
        {
            "stage": "linear_probe",
            "code": code,
            "model": meta.get("model_address"),
            "images": keys,
            "labels": [r["class_id"] for r in rows],
            "splits": [r["split"] for r in rows],
            "params": params,
        }
    )
    return {
        "stage": "linear_probe",
        "model": model_name,
        "dataset": dataset_name,
        "address": address,
        "model_address": meta.get("model_address"),
        "n_classes": len(class_ids),
        "params": params,
        **result,
    }
