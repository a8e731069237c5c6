"""Scene-classification datasets: class folders and label CSVs -> a validated Parquet manifest.

Two formats:

* ``class-folders``: ``<root>/<class>/<image>``; a class may be nested
  (``<root>/<group>/<class>/<image>``: the class id is the folder path relative to the root).
  Hidden files are skipped, other non-image files are counted and listed in the summary; an
  image directly under the root belongs to no class and is an error.
* ``label-csv``: one row per image with its class (columns detected: ``filepath``/
  ``filename``/``image``... and ``label``/``class``/``category``; an optional ``split``).

As for the retrieval sets, every image is decoded in full and hashed (its sha256 is its key in
the feature store), and the counts of classes and of images per class are checked against
``expected``. Class ids become readable names by :func:`class_words` (per-dataset overrides
in ``classnames``); the prompt name a template set uses is chosen by :func:`prompt_names`.
"""

from __future__ import annotations

import csv
import io
import os
import re
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from functools import cache
from pathlib import Path, PurePosixPath
from typing import Any

import pyarrow as pa
import yaml

from . import cas, schemas
from .config import Dataset
from .errors import RsmEvalError
from .manifests import (
    IMAGE_COLUMNS,
    _check_relative,
    _csv_records,
    _inspect_image,
    _pick,
    _read_text,
)

FORMATS = ("class-folders", "label-csv")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp", ".gif", ".webp")
CLASS_COLUMNS = ("label", "class", "classname", "class_name", "category", "scene")
DATA_DIR = Path(__file__).resolve().parent / "data"
ALL_SPLIT = "all"  # the one split of a class-folder dataset


# ------------------------------------------------------------------------- class names


@cache
def vocabulary() -> frozenset[str]:
    text = (DATA_DIR / "scene_words.txt").read_text(encoding="utf-8")
    lines = [line.split("#", 1)[0] for line in text.splitlines()]
    return frozenset(w for line in lines for w in line.split())


def _segment(word: str, vocab: frozenset[str]) -> list[str] | None:
    """``word`` as the fewest vocabulary words that spell it, or None."""
    best: list[list[str] | None] = [[]] + [None] * len(word)
    for end in range(1, len(word) + 1):
        for start in range(end):
            head = best[start]
            if head is not None and word[start:end] in vocab:
                cand = [*head, word[start:end]]
                if best[end] is None or len(cand) < len(best[end]):  # type: ignore[arg-type]
                    best[end] = cand
    return best[-1]


def class_words(
    class_id: str, overrides: dict[str, str] | None = None, vocab: frozenset[str] | None = None
) -> str:
    """Readable name of a class folder or label: lower-case words separated by spaces.

    ``aGrass`` -> ``grass`` (RSSCN7's ordering letter), ``HerbaceousVegetation`` ->
    ``herbaceous vegetation``, ``railwayStation`` -> ``railway station``,
    ``storage_tanks`` and ``storagetanks`` -> ``storage tanks`` (a run-together word is split
    only when it consists entirely of :func:`vocabulary` words). A nested class is named by
    its last folder. ``overrides`` (class id or last folder -> name) wins.
    """
    leaf = PurePosixPath(class_id).name or class_id
    for key in (class_id, leaf):
        if overrides and key in overrides:
            return str(overrides[key])
    text = re.sub(r"^[a-z](?=[A-Z][a-z])", "", leaf)  # aGrass, bField, dRiverLake
    text = re.sub(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])", " ", text)
    words = [w for w in re.split(r"[\s_\-/.,&]+", text.lower()) if w]
    if not words:
        raise RsmEvalError(f"class {class_id!r}: no letters to make a class name from")
    vocab = vocabulary() if vocab is None else vocab
    out: list[str] = []
    for w in words:
        parts = None if w in vocab else _segment(w, vocab)
        out.extend(parts or [w])
    return " ".join(out)


def lower_name(class_id: str) -> str:
    """GeoRSCLIP's rule: ``_`` and ``/`` become spaces, then lower case (nothing else)."""
    return PurePosixPath(class_id).name.replace("_", " ").replace("/", " ").lower()


@cache
def template_sets() -> dict[str, dict[str, Any]]:
    sets = yaml.safe_load((DATA_DIR / "templates.yaml").read_text(encoding="utf-8"))
    for name, entry in sets.items():
        templates = entry.get("templates")
        if not isinstance(templates, list) or not templates:
            raise RsmEvalError(f"templates.yaml: set {name!r} has no templates")
        for t in templates:
            if not isinstance(t, str) or t.count("{}") != 1:
                raise RsmEvalError(f"templates.yaml: {name}: {t!r} needs exactly one '{{}}'")
    return sets


def template_set(name: str) -> dict[str, Any]:
    sets = template_sets()
    if name not in sets:
        raise RsmEvalError(f"unknown template set {name!r} (known: {', '.join(sets)})")
    return sets[name]


def prompt_names(
    class_ids: list[str], rule: str | dict[str, str], overrides: dict[str, str] | None = None
) -> list[str]:
    """The class names a template set puts into its templates, one per class id."""
    if isinstance(rule, dict):
        missing = [c for c in class_ids if PurePosixPath(c).name not in rule]
        if missing:
            raise RsmEvalError(
                f"the template set names classes {sorted(rule)}, not {missing[:5]}: use it "
                "only with the dataset it was made for"
            )
        return [rule[PurePosixPath(c).name] for c in class_ids]
    if rule == "lower":
        return [lower_name(c) for c in class_ids]
    if rule == "words":
        return [class_words(c, overrides) for c in class_ids]
    raise RsmEvalError(f"unknown class-name rule {rule!r} (words, lower or a mapping)")


# ------------------------------------------------------------------------------ reading


def read_class_folders(root: Path) -> tuple[list[tuple[str, str]], list[str]]:
    """(image key, class id) of every image under ``root``, and the other files skipped."""
    if not root.is_dir():
        raise RsmEvalError(f"{root}: class-folder directory does not exist")
    items: list[tuple[str, str]] = []
    skipped: list[str] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        rel_dir = Path(dirpath).relative_to(root).as_posix()
        for name in sorted(filenames):
            if name.startswith("."):
                continue
            key = name if rel_dir == "." else f"{rel_dir}/{name}"
            if Path(name).suffix.lower() not in IMAGE_SUFFIXES:
                skipped.append(key)
            elif rel_dir == ".":
                raise RsmEvalError(
                    f"{root / name}: image is not inside a class folder (expected "
                    "<root>/<class>/<image>)"
                )
            else:
                items.append((key, rel_dir))
    if not items:
        raise RsmEvalError(f"{root}: no images in class folders (<root>/<class>/<image>)")
    return items, skipped


def read_label_csv(dataset: Dataset) -> list[tuple[str, str, str]]:
    """(image key, class id, split) of every row of a label CSV."""
    path = Path(dataset.annotations)
    text = _read_text(path, dataset.encoding)
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=dataset.csv_separator)
    try:
        header = next(reader)
        image_col = _pick(header, dataset.columns.get("image"), IMAGE_COLUMNS, "image", path)
        class_col = _pick(header, dataset.columns.get("class"), CLASS_COLUMNS, "class", path)
        split_col = dataset.columns.get("split") or ("split" if "split" in header else None)
        if split_col is not None and split_col not in header:
            raise RsmEvalError(f"{path}: configured split column {split_col!r} not in {header}")
        rows: list[tuple[str, str, str]] = []
        seen: dict[str, int] = {}
        for lineno, rec in _csv_records(reader, header, path):
            key = rec[header.index(image_col)].strip()
            label = rec[header.index(class_col)].strip()
            split = rec[header.index(split_col)].strip() if split_col else dataset.split
            if not key or not label:
                raise RsmEvalError(f"{path}:{lineno}: empty image or class")
            if key in seen:
                raise RsmEvalError(f"{path}:{lineno}: image {key!r} also on line {seen[key]}")
            seen[key] = lineno
            rows.append((key, label, split))
    except StopIteration:
        raise RsmEvalError(f"{path}: empty CSV, expected a header row") from None
    except csv.Error as exc:
        raise RsmEvalError(f"{path}: malformed CSV ({exc})") from None
    if not rows:
        raise RsmEvalError(f"{path}: no rows")
    return rows


def _check_counts(dataset: Dataset, per_split: dict[str, Counter[str]]) -> None:
    """Classes, images and images per class of each split against ``expected``."""
    for split, want in dataset.expected.items():
        got = per_split.get(split, Counter())
        where = f"dataset {dataset.name!r} split {split!r}"
        key = f"datasets.{dataset.name}.expected.{split}"
        checks = {"classes": len(got), "images": sum(got.values())}
        for what, n in want.items():
            if what in checks and checks[what] != n:
                raise RsmEvalError(f"{where} has {checks[what]} {what}, expected {n} ({key})")
        per_class = want.get("per_class")
        if isinstance(per_class, int):
            per_class = {c: per_class for c in got}
        for c, n in sorted((per_class or {}).items()):
            if got.get(c, 0) != n:
                raise RsmEvalError(
                    f"{where}: class {c!r} has {got.get(c, 0)} images, expected {n} ({key})"
                )
        low, high = want.get("per_class_min"), want.get("per_class_max")
        for c, n in sorted(got.items()):
            if (low is not None and n < low) or (high is not None and n > high):
                raise RsmEvalError(
                    f"{where}: class {c!r} has {n} images, expected {low}..{high} ({key})"
                )


def build(dataset: Dataset, *, threads: int = 4) -> tuple[pa.Table, dict[str, Any]]:
    """The scene manifest table and its validation summary."""
    root = Path(dataset.images)
    skipped: list[str] = []
    if dataset.format == "class-folders":
        found, skipped = read_class_folders(root)
        rows = [(k, c, ALL_SPLIT) for k, c in found]
    elif dataset.format == "label-csv":
        rows = read_label_csv(dataset)
        if not root.is_dir():
            raise RsmEvalError(f"{root}: image directory of dataset {dataset.name!r} is missing")
    else:
        raise RsmEvalError(f"dataset {dataset.name!r}: not a scene format: {dataset.format!r}")
    rows.sort()
    for key, _, _ in rows:
        _check_relative(f"dataset {dataset.name!r}", key)
    per_split: dict[str, Counter[str]] = defaultdict(Counter)
    for _, c, s in rows:
        per_split[s][c] += 1
    if dataset.split not in per_split:
        raise RsmEvalError(
            f"dataset {dataset.name!r}: the evaluated split {dataset.split!r} is empty "
            f"(splits found: {sorted(per_split)})"
        )
    _check_counts(dataset, per_split)
    paths = [root / k for k, _, _ in rows]
    with ThreadPoolExecutor(max_workers=threads) as pool:
        sizes = list(
            pool.map(
                lambda kp: _inspect_image(kp[1], kp[0], dataset.max_image_pixels),
                zip([k for k, _, _ in rows], paths, strict=True),
            )
        )
    shas = cas.memo().files(paths)
    names = {c: class_words(c, dataset.classnames) for c in {c for _, c, _ in rows}}
    table = pa.table(
        {
            "dataset": [dataset.name] * len(rows),
            "split": [s for _, _, s in rows],
            "image_key": [k for k, _, _ in rows],
            "image_path": [k for k, _, _ in rows],
            "image_sha256": shas,
            "class_id": [c for _, c, _ in rows],
            "class_name": [names[c] for _, c, _ in rows],
            "width": [w for w, _ in sizes],
            "height": [h for _, h in sizes],
        },
        schema=schemas.SCENES,
    )
    by_content: dict[str, set[str]] = defaultdict(set)
    for sha, (_, c, _) in zip(shas, rows, strict=True):
        by_content[sha].add(c)
    summary = {
        "dataset": dataset.name,
        "format": dataset.format,
        "counts": {
            s: {
                "classes": len(cnt),
                "images": sum(cnt.values()),
                "per_class": dict(sorted(cnt.items())),
            }
            for s, cnt in sorted(per_split.items())
        },
        "class_names": dict(sorted(names.items())),
        "quirks": {
            "skipped_files": len(skipped),
            "images_with_identical_content": sum(1 for _ in shas) - len(by_content),
            "identical_content_in_two_classes": sum(len(v) > 1 for v in by_content.values()),
            "sizes": dict(Counter(f"{w}x{h}" for w, h in sizes).most_common(5)),
        },
        "skipped_examples": skipped[:20],
        "annotations_sha256": cas.file_sha256(Path(dataset.annotations))
        if dataset.format == "label-csv"
        else None,
    }
    return table, summary


def params(dataset: Dataset) -> dict[str, Any]:
    return {**dataset.params(), "classnames": dict(sorted(dataset.classnames.items()))}


def write(dataset: Dataset, out: Path, summary_out: Path, code: str) -> dict[str, Any]:
    """Build and write the manifest and summary; each appears whole or not at all."""
    table, summary = build(dataset)
    address = cas.digest(
        {
            "stage": "scene_manifest",
            "code": code,
            "params": params(dataset),
            "annotations": summary["annotations_sha256"],
            "images": list(zip(table.column("image_key").to_pylist(),
                               table.column("image_sha256").to_pylist(), strict=True)),
        }
    )  # fmt: skip
    summary["address"] = address
    meta = {"stage": "scene_manifest", "address": address, "dataset": dataset.name, "code": code}
    schemas.write_table(table, out, schemas.SCENES, meta)
    cas.write_json_atomic(summary_out, summary)
    return summary


def read(path: Path | str, split: str | None = None) -> tuple[list[dict[str, Any]], dict]:
    """Rows of a scene manifest (optionally one split), ordered by image key, and its meta."""
    table, meta = schemas.read_table(path, schemas.SCENES)
    rows = sorted(table.to_pylist(), key=lambda r: r["image_key"])
    if split is not None:
        rows = [r for r in rows if r["split"] == split]
        if not rows:
            raise RsmEvalError(f"{path}: no images in split {split!r}")
    return rows, meta
