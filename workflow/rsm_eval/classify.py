"""Zero-shot scene classification with the retrieval benchmarks' own images.

RSITMD and RSICD name most images ``<class>_<number>.<ext>`` (``airport_12.jpg``,
``baseballfield_452.tif``, ``denseresidential_1.tif``), so the test split doubles as a
scene-classification set: one text prompt per class and template, a classifier per class
that is the re-normalised mean of its template embeddings (CLIP's prompt ensembling), and
top-1 / top-5 accuracy by cosine similarity. The caller embeds :func:`prompts` through the
feature store (text keyed by the sha256 of the prompt) and passes normalised features.

Scores are float64 dot products summed in one fixed order for every (image, class) pair, so
two classes with identical classifiers score exactly equal however the work is laid out;
ties rank the lower class index first, as the retrieval protocol ranks the earlier item
first.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import PurePosixPath
from typing import Any

import numpy as np

from rsm_eval.demo import class_of
from rsm_eval.errors import RsmEvalError

__all__ = [
    "DEFAULT_TEMPLATES",
    "UCM_CLASSES",
    "class_labels",
    "class_scores",
    "classifier",
    "class_text",
    "label_indices",
    "prompts",
    "zero_shot",
]

DEFAULT_TEMPLATES = (
    "a satellite image of a {}.",
    "an aerial photograph of {}.",
    "a remote sensing image of {}.",
)
"""Prompt templates; ``{}`` receives :func:`class_text` of the class."""

UCM_CLASSES = (
    "agricultural", "airplane", "baseballdiamond", "beach", "buildings", "chaparral",
    "denseresidential", "forest", "freeway", "golfcourse", "harbor", "intersection",
    "mediumresidential", "mobilehomepark", "overpass", "parkinglot", "river", "runway",
    "sparseresidential", "storagetanks", "tenniscourt",
)  # fmt: skip
"""UC Merced Land Use's 21 classes in alphabetical order: UCM-Captions' ``n.tif`` is image
``(n - 1) % 100`` of class ``(n - 1) // 100`` (ANCHORS, "Dataset sources")."""
_UCM_RE = re.compile(r"^([1-9]\d{0,3})\.tif$")

# <class><separator><number>: the class is letters and separators (spaces, '_' or '-'),
# starting with a letter; the number follows the last separator. "00012" or "airport" have
# no class.
_SEPARATORS = re.compile(r"[ _-]+")
_NORM_TOL = 1e-3


def _class_of(filename: str) -> str | None:
    """Class id of one real-style file name: :func:`rsm_eval.demo.class_of` on the name with
    each run of separators in its stem (spaces, '_', '-') folded to one ``_``."""
    name = PurePosixPath(filename.replace("\\", "/")).name
    stem, dot, ext = name.rpartition(".") if "." in name else (name, "", "")
    return class_of(_SEPARATORS.sub("_", stem) + dot + ext)


def ucm_class(filename: str) -> str | None:
    """Scene class of a UCM-Captions image name (``1.tif`` .. ``2100.tif``), else None."""
    match = _UCM_RE.match(PurePosixPath(filename.replace("\\", "/")).name)
    n = int(match.group(1)) if match else 0
    return UCM_CLASSES[(n - 1) // 100] if 1 <= n <= 100 * len(UCM_CLASSES) else None


def class_labels(
    filenames: Iterable[str],
    *,
    class_map: Mapping[str, str] | None = None,
    scheme: str = "file-names",
) -> tuple[list[str | None], float]:
    """Scene class of each file name, and the share of names that have one.

    ``airport_12.jpg`` -> ``airport``; ``dense_residential_001.jpg`` and
    ``Dense Residential 3.tif`` -> ``dense_residential``; directories are ignored. This
    agrees with :func:`rsm_eval.demo.class_of` on its names and also accepts spaces and
    hyphens. Names without a ``<class><sep><number>`` stem (UCM-Captions' ``1.tif`` ..
    ``2100.tif``, RSICD's numbered files) get ``None`` unless ``class_map`` (file name ->
    class, e.g. from a dataset's class folders) names their class; the map wins over the
    name. With ``scheme="ucm-numbering"`` a UCM-Captions number names the class
    (:func:`ucm_class`) instead of the file name. Coverage is the labelled share in [0, 1].
    """
    if scheme not in ("file-names", "ucm-numbering"):
        raise RsmEvalError(f"class_labels: unknown scheme {scheme!r}")
    from_name = ucm_class if scheme == "ucm-numbering" else _class_of
    names = list(filenames)
    if not names:
        raise RsmEvalError("class_labels: expected at least one file name, got none")
    labels: list[str | None] = []
    for row, name in enumerate(names):
        if not isinstance(name, str):
            raise RsmEvalError(f"class_labels: file name {row} is {type(name).__name__}, not str")
        label = None
        if class_map is not None and name in class_map:
            label = _SEPARATORS.sub("_", str(class_map[name]).strip(" _-")).lower() or None
        labels.append(label if label is not None else from_name(name))
    coverage = sum(label is not None for label in labels) / len(labels)
    return labels, coverage


def label_indices(labels: Sequence[str | None]) -> tuple[list[str], np.ndarray]:
    """Sorted distinct classes and each label's index into them (-1 for ``None``)."""
    classes = sorted({label for label in labels if label is not None})
    pos = {c: i for i, c in enumerate(classes)}
    idx = np.array([-1 if label is None else pos[label] for label in labels], dtype=np.int64)
    return classes, idx


def class_text(label: str) -> str:
    """Readable class name for a prompt: ``dense_residential`` -> ``dense residential``.

    The scene datasets' rule (:func:`rsm_eval.scenes.class_words`): separators become spaces
    and run-together names made of known words are split (``baseballfield`` -> ``baseball
    field``, ``storagetanks`` -> ``storage tanks``).
    """
    from .scenes import class_words

    if not isinstance(label, str) or not _SEPARATORS.sub("", label):
        raise RsmEvalError(f"class_text: expected a non-empty class name, got {label!r}")
    return class_words(label)


def prompts(classes: Sequence[str], templates: Sequence[str] = DEFAULT_TEMPLATES) -> list[str]:
    """Prompt texts in class-major order: all templates of class 0, then class 1, ...

    Row ``c * len(templates) + t`` is ``templates[t]`` filled with ``class_text(classes[c])``;
    :func:`zero_shot` expects the prompt features in exactly this order.
    """
    classes, templates = list(classes), list(templates)
    if not classes:
        raise RsmEvalError("prompts: expected at least one class")
    if len(set(classes)) != len(classes):
        dup = next(c for c in classes if classes.count(c) > 1)
        raise RsmEvalError(f"prompts: class {dup!r} is listed twice")
    if not templates:
        raise RsmEvalError("prompts: expected at least one template")
    for t in templates:
        if not isinstance(t, str) or t.count("{}") != 1 or re.search(r"\{(?!\})|(?<!\{)\}", t):
            raise RsmEvalError(f"prompts: template {t!r} must contain exactly one '{{}}'")
    return [t.replace("{}", class_text(c)) for c in classes for t in templates]


def _unit_rows(x: object, name: str) -> np.ndarray:
    """``x`` as a float64 (n, d) array of finite, unit-norm rows."""
    if not isinstance(x, np.ndarray) or x.ndim != 2 or 0 in x.shape:
        shape = getattr(x, "shape", None)
        raise RsmEvalError(f"{name}: expected a non-empty 2-D array (n, d), got shape {shape}")
    if not np.issubdtype(x.dtype, np.floating):
        raise RsmEvalError(f"{name}: expected floating-point features, got dtype {x.dtype}")
    out = x.astype(np.float64)
    norms = np.sqrt(np.einsum("ij,ij->i", out, out))
    bad = np.flatnonzero(~np.isfinite(norms) | (np.abs(norms - 1.0) > _NORM_TOL))
    if bad.size:
        i = int(bad[0])
        raise RsmEvalError(
            f"{name}: row {i} has norm {norms[i]:.6g}; expected L2-normalised finite features"
        )
    return out


def _fixed_order_sum(x: np.ndarray) -> np.ndarray:
    """Sum over the last axis by halving a zero-padded power-of-two width.

    Element-wise adds in a fixed pattern: the result of a row depends only on its values,
    not on its position or memory alignment (BLAS and SIMD reductions do not promise that).
    """
    d = x.shape[-1]
    width = 1 << (d - 1).bit_length()
    buf = np.zeros((*x.shape[:-1], width), dtype=np.float64)
    buf[..., :d] = x
    while width > 1:
        width //= 2
        np.add(buf[..., :width], buf[..., width : 2 * width], out=buf[..., :width])
    return buf[..., 0]


def _scores(img: np.ndarray, weights: np.ndarray, chunk_bytes: int = 64 << 20) -> np.ndarray:
    """(n, n_classes) float64 dot products, each summed in the same fixed order."""
    n, d = img.shape
    rows = max(1, chunk_bytes // (8 * 2 * d * weights.shape[0]))
    out = np.empty((n, weights.shape[0]), dtype=np.float64)
    for start in range(0, n, rows):
        block = img[start : start + rows, None, :] * weights[None, :, :]
        out[start : start + rows] = _fixed_order_sum(block)
    return out


def _classifier(txt: np.ndarray, n_classes: int) -> np.ndarray:
    """CLIP's prompt ensembling: mean of the normalised template embeddings, re-normalised."""
    weights = txt.reshape(n_classes, txt.shape[0] // n_classes, -1).mean(axis=1)
    norms = np.sqrt(_fixed_order_sum(weights * weights))
    if (norms == 0).any():
        c = int(np.flatnonzero(norms == 0)[0])
        raise RsmEvalError(f"prompt_feats: the templates of class {c} average to zero")
    return weights / norms[:, None]


def classifier(prompt_feats: np.ndarray, n_classes: int) -> np.ndarray:
    """(n_classes, d) zero-shot classifier from L2-normalised prompt features in
    :func:`prompts` order (class-major): each class's normalised mean template embedding."""
    txt = _unit_rows(prompt_feats, "prompt_feats")
    if txt.shape[0] % n_classes:
        raise RsmEvalError(
            f"prompt_feats: {txt.shape[0]} rows are not n_classes={n_classes} times a number "
            "of templates"
        )
    return _classifier(txt, n_classes)


def class_scores(image_feats: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """(n, n_classes) float64 cosines, each summed in one fixed order (ties are exact)."""
    return _scores(_unit_rows(image_feats, "image_feats"), np.asarray(weights, np.float64))


def zero_shot(
    image_feats: np.ndarray,
    prompt_feats: np.ndarray,
    n_classes: int,
    labels_idx: np.ndarray,
    *,
    class_names: Sequence[str] | None = None,
    top_k: int = 5,
) -> dict[str, Any]:
    """Zero-shot accuracy (percent) of images against per-class prompt ensembles.

    ``image_feats`` (n, d) and ``prompt_feats`` (n_classes * n_templates, d) are
    L2-normalised, the prompts in :func:`prompts` order. ``labels_idx`` gives each image's
    class index; images with -1 (no label) are skipped. Each class's classifier is the mean
    of its template embeddings, re-normalised; an image's prediction is the class of highest
    cosine, ties to the lower class index. ``top5`` counts the true class among the first
    ``min(top_k, n_classes)`` classes.

    Returns ``top1``, ``top5``, ``mean_class_top1`` (unweighted mean over classes with
    images), ``n`` (labelled images), ``n_classes``, ``n_templates`` and ``per_class``
    (keyed by ``class_names`` or the index: ``n``, ``top1``, ``top5``; classes without
    images are left out) and ``confusion`` (n_classes x n_classes counts, rows the true
    class, columns the predicted one).
    """
    if isinstance(n_classes, bool) or not isinstance(n_classes, int | np.integer) or n_classes < 1:
        raise RsmEvalError(f"n_classes: expected a positive int, got {n_classes!r}")
    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
        raise RsmEvalError(f"top_k: expected a positive int, got {top_k!r}")
    img = _unit_rows(image_feats, "image_feats")
    txt = _unit_rows(prompt_feats, "prompt_feats")
    if img.shape[1] != txt.shape[1]:
        raise RsmEvalError(
            f"image_feats have dimension {img.shape[1]} but prompt_feats {txt.shape[1]}"
        )
    if txt.shape[0] % n_classes:
        raise RsmEvalError(
            f"prompt_feats: {txt.shape[0]} rows are not n_classes={n_classes} times a number "
            "of templates"
        )
    n_templates = txt.shape[0] // n_classes
    if class_names is not None and len(class_names) != n_classes:
        raise RsmEvalError(f"class_names: expected {n_classes} names, got {len(class_names)}")
    labels = np.asarray(labels_idx)
    if labels.shape != (img.shape[0],) or not np.issubdtype(labels.dtype, np.integer):
        raise RsmEvalError(
            f"labels_idx: expected {img.shape[0]} integer class indices, got shape "
            f"{labels.shape} dtype {labels.dtype}"
        )
    bad = np.flatnonzero((labels < -1) | (labels >= n_classes))
    if bad.size:
        i = int(bad[0])
        raise RsmEvalError(
            f"labels_idx: image {i} has class {int(labels[i])}, expected -1 or a value in "
            f"[0, {n_classes})"
        )
    keep = np.flatnonzero(labels >= 0)
    if keep.size == 0:
        raise RsmEvalError("labels_idx: no image has a class label")

    scores = _scores(img[keep], _classifier(txt, n_classes))
    y = labels[keep]
    true = scores[np.arange(keep.size), y]
    classes = np.arange(n_classes)
    # Rank of the true class: strictly better classes, plus equal ones with a lower index.
    rank = np.count_nonzero(scores > true[:, None], axis=1) + np.count_nonzero(
        (scores == true[:, None]) & (classes[None, :] < y[:, None]), axis=1
    )
    k = min(top_k, n_classes)
    hit1, hitk = rank == 0, rank < k
    # Rows: true class, columns: predicted (the first highest score: lower index wins a tie).
    pred = scores.argmax(axis=1)
    confusion = np.bincount(y * n_classes + pred, minlength=n_classes * n_classes)

    per_class: dict[Any, dict[str, Any]] = {}
    for c in np.unique(y).tolist():
        sel = y == c
        key = class_names[c] if class_names is not None else c
        per_class[key] = {
            "n": int(sel.sum()),
            "top1": 100.0 * float(hit1[sel].mean()),
            "top5": 100.0 * float(hitk[sel].mean()),
        }
    return {
        "top1": 100.0 * float(hit1.mean()),
        "top5": 100.0 * float(hitk.mean()),
        "mean_class_top1": float(np.mean([v["top1"] for v in per_class.values()])),
        "n": int(keep.size),
        "n_classes": int(n_classes),
        "n_templates": int(n_templates),
        "per_class": per_class,
        "confusion": confusion.reshape(n_classes, n_classes).tolist(),
    }


# --------------------------------------------------------------------------- the stage


def classify_split(
    model: Any,
    captions_path: Any,
    image_features: Any,
    *,
    split: str,
    templates: Sequence[str] = DEFAULT_TEMPLATES,
    labels: str = "file-names",
    cache_dir: Any,
    device: str = "auto",
    batch_size: int = 64,
) -> dict[str, Any]:
    """Zero-shot classification of a split's images from their cached features.

    Images are never embedded again: their features come from the embed stage's table. Only
    the class prompts are embedded, through the same content-keyed text store as captions.
    """
    from . import embeddings, schemas
    from .manifests import evaluation_order

    captions, _ = schemas.read_table(captions_path, schemas.CAPTIONS)
    image_keys, image_shas, _, _ = evaluation_order(captions, split)
    image_labels, coverage = class_labels(image_keys, scheme=labels)
    record: dict[str, Any] = {
        "n_images": len(image_keys),
        "coverage": 100.0 * coverage,
        "templates": list(templates),
        "labels": labels,
        "n_unlabelled": sum(label is None for label in image_labels),
    }
    classes, idx = label_indices(image_labels)
    if len(classes) < 2:
        record.update(
            applicable=False,
            reason=f"fewer than two classes from the {labels}: the images are unlabelled",
        )
        return record
    keys, feats, meta = embeddings.read_features(image_features)
    pos = {k: i for i, k in enumerate(keys)}
    img = feats[[pos[s] for s in image_shas]]
    texts = prompts(classes, templates)
    prompt_feats = embeddings.embed_texts(
        model, texts, cache_dir=cache_dir, device=device, batch_size=batch_size
    )
    result = zero_shot(img, prompt_feats, len(classes), idx, class_names=classes)
    record.update(
        applicable=True, classes=classes, model_address=meta.get("model_address"), **result
    )
    return record
