"""Karpathy JSON and caption CSV -> Parquet manifests, with validation and quirk counts.

The real benchmarks have quirks that are data, not errors (ANCHORS.md): RSICD pads images to
five captions with copies, UCM repeats caption sets across neighbouring images, old RSITMD
copies have blank captions in train, RSICD and RSITMD share images. Those are counted and
reported. What would make numbers wrong is an error naming the file and row: a missing or
undecodable image, a duplicate file name, an unknown split, a blank caption in the evaluated
split, counts that differ from the expected ones.
"""

from __future__ import annotations

import csv
import io
import json
import posixpath
import re
import warnings
from collections import Counter, defaultdict
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import pyarrow as pa
from PIL import Image

from . import cas, schemas
from .config import Dataset
from .errors import RsmEvalError

KNOWN_SPLITS = ("train", "val", "test", "restval")
IMAGE_COLUMNS = ("filepath", "filename", "image", "image_path", "img", "path", "file")
CAPTION_COLUMNS = ("title", "caption", "text", "sentence", "raw", "captions")


@dataclass
class Row:
    """One caption as read from the annotations, before images are inspected."""

    split: str
    image_key: str
    caption: str
    caption_index: int
    sentid: int | None
    where: str  # "file:row" for messages


def _read_text(path: Path, encoding: str) -> str:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise RsmEvalError(f"{path}: cannot read annotations ({exc.strerror})") from None
    try:
        text = data.decode(encoding)
    except UnicodeDecodeError as exc:
        raise RsmEvalError(
            f"{path}: not valid {encoding} at byte {exc.start}; set the dataset's 'encoding' "
            "in config (GeoRSCLIP's RSICD CSV, for example, is gb18030)"
        ) from None
    except LookupError:
        raise RsmEvalError(f"{path}: unknown encoding {encoding!r} in config") from None
    return text.removeprefix("\ufeff")


def read_karpathy(path: Path, encoding: str = "utf-8") -> list[Row]:
    """Rows of a Karpathy-style JSON; only filename, split and sentences[].raw are used."""
    try:
        doc = json.loads(_read_text(path, encoding))
    except json.JSONDecodeError as exc:
        raise RsmEvalError(
            f"{path}: invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}"
        ) from None
    except (RecursionError, ValueError) as exc:  # absurd nesting, 4300+-digit integers
        raise RsmEvalError(f"{path}: invalid JSON ({str(exc)[:200]})") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("images"), list):
        raise RsmEvalError(
            f"{path}: expected a JSON object with an 'images' list (Karpathy format)"
        )
    rows: list[Row] = []
    seen: dict[str, int] = {}
    for i, img in enumerate(doc["images"]):
        where = f"{path}: images[{i}]"
        if not isinstance(img, dict):
            raise RsmEvalError(f"{where}: expected an object")
        for key in ("filename", "split", "sentences"):
            if key not in img:
                raise RsmEvalError(f"{where}: missing key {key!r}")
        name, split, sentences = img["filename"], img["split"], img["sentences"]
        if not isinstance(name, str) or not name:
            raise RsmEvalError(f"{where}: 'filename' must be a non-empty string")
        if not isinstance(split, str):
            raise RsmEvalError(f"{where} ({name}): 'split' must be a string")
        if not isinstance(sentences, list) or not sentences:
            raise RsmEvalError(f"{where} ({name}): 'sentences' must be a non-empty list")
        if name in seen:
            raise RsmEvalError(f"{where}: duplicate filename {name!r} (also images[{seen[name]}])")
        seen[name] = i
        for j, sent in enumerate(sentences):
            if not isinstance(sent, dict) or not isinstance(sent.get("raw"), str):
                raise RsmEvalError(f"{where} ({name}): sentences[{j}] needs a string 'raw'")
            sentid = sent.get("sentid")
            is_int = isinstance(sentid, int) and not isinstance(sentid, bool)
            if not is_int or not -(2**63) <= sentid < 2**63:
                sentid = None  # only Parquet int64 ids are kept; evaluators never read them
            _check_unicode(where, name, split, sent["raw"])
            rows.append(
                Row(
                    split=split,
                    image_key=name,
                    caption=sent["raw"],
                    caption_index=j,
                    sentid=sentid,
                    where=f"{where}.sentences[{j}] ({name})",
                )
            )
    return rows


def _check_unicode(where: str, *texts: str) -> None:
    """JSON can spell lone surrogates ("\\ud800"), which no file name or UTF-8 text holds."""
    for text in texts:
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            raise RsmEvalError(f"{where}: {text!r} is not valid Unicode (lone surrogate)") from None


def _check_relative(where: str, key: str) -> None:
    """An image name must stay inside the dataset's image directory."""
    parts = PurePosixPath(key.replace("\\", "/"))
    if parts.is_absolute() or ".." in parts.parts or re.match(r"^[A-Za-z]:", key):
        raise RsmEvalError(
            f"{where}: image file name {key!r} must be relative to the image directory, "
            "without '..'"
        )


def _csv_records(reader: Any, header: list[str], path: Path) -> Iterator[tuple[int, list[str]]]:
    """(line number, fields) of each non-blank CSV row after the header; RsmEvalError naming
    the line when a row has another number of fields than the header."""
    for lineno, rec in enumerate(reader, start=2):
        if not rec:
            continue
        if len(rec) != len(header):
            raise RsmEvalError(
                f"{path}:{lineno}: expected {len(header)} fields ({header}), found {len(rec)}"
            )
        yield lineno, rec


def _pick(
    columns: list[str], wanted: str | None, candidates: tuple[str, ...], what: str, path: Path
) -> str:
    if wanted is not None:
        if wanted not in columns:
            raise RsmEvalError(
                f"{path}: configured {what} column {wanted!r} not found; columns are {columns}"
            )
        return wanted
    lower = {c.lower().strip(): c for c in columns}
    for cand in candidates:
        if cand in lower:
            return lower[cand]
    raise RsmEvalError(
        f"{path}: cannot tell which column holds the {what}; columns are {columns}, expected one "
        f"of {list(candidates)} or set datasets.<name>.columns.{what} in config"
    )


def read_caption_csv(
    path: Path,
    *,
    encoding: str = "utf-8",
    separator: str = ",",
    columns: dict[str, str] | None = None,
    split: str = "test",
) -> list[Row]:
    """Rows of a caption CSV (`filepath,title` and similar); one row per image-caption pair."""
    columns = columns or {}
    text = _read_text(path, encoding)
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=separator)
    try:
        header = next(reader)
    except StopIteration:
        raise RsmEvalError(f"{path}: empty CSV, expected a header row") from None
    except csv.Error as exc:
        raise RsmEvalError(f"{path}: malformed CSV header ({exc})") from None
    image_col = _pick(header, columns.get("image"), IMAGE_COLUMNS, "image", path)
    caption_col = _pick(header, columns.get("caption"), CAPTION_COLUMNS, "caption", path)
    split_col = columns.get("split") or ("split" if "split" in header else None)
    idx_image, idx_caption = header.index(image_col), header.index(caption_col)
    idx_split = header.index(split_col) if split_col else None
    rows: list[Row] = []
    per_image: Counter[str] = Counter()
    try:
        for lineno, rec in _csv_records(reader, header, path):
            key = rec[idx_image].strip()
            if not key:
                raise RsmEvalError(f"{path}:{lineno}: empty {image_col!r}")
            rows.append(
                Row(
                    split=rec[idx_split] if idx_split is not None else split,
                    image_key=key,
                    caption=rec[idx_caption],
                    caption_index=per_image[key],
                    sentid=None,
                    where=f"{path}:{lineno} ({key})",
                )
            )
            per_image[key] += 1
    except csv.Error as exc:
        raise RsmEvalError(f"{path}: malformed CSV ({exc})") from None
    return rows


def _inspect_image(path: Path, key: str, max_pixels: int) -> tuple[int, int]:
    """Decode fully (a truncated file fails here, not in the GPU job) and return its size."""
    if not path.is_file():
        raise RsmEvalError(f"{path}: image {key!r} referenced by the annotations does not exist")
    if path.stat().st_size == 0:
        raise RsmEvalError(f"{path}: image {key!r} is an empty file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                w, h = im.size
                if w * h > max_pixels:
                    raise RsmEvalError(
                        f"{path}: image {key!r} has {w}x{h} pixels, more than max_image_pixels="
                        f"{max_pixels}"
                    )
                im.load()
    except RsmEvalError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise RsmEvalError(f"{path}: image {key!r} exceeds the decompression-bomb limit") from None
    except Exception as exc:  # PIL raises many types for corrupt files
        raise RsmEvalError(f"{path}: image {key!r} cannot be decoded ({exc})") from None
    return w, h


def _relative_to_root(rows: list[Row], root: Path) -> str:
    """Make image names relative to the image folder; return the folder prefix removed.

    A test-split CSV (SkyScript's) names images from its benchmark root ('RSICD/images/a.jpg')
    where the Karpathy JSON names them from the image folder ('a.jpg'). When the names do not
    resolve under root but do once their common leading folders are removed, those folders are
    removed, so both give the same manifest. Every image is still checked to exist.
    """
    keys = list(dict.fromkeys(r.image_key.replace("\\", "/") for r in rows))
    if not keys or all((root / k).is_file() for k in keys):
        return ""
    prefix = posixpath.commonpath([posixpath.dirname(k) for k in keys])
    if not prefix or not all((root / k[len(prefix) + 1 :]).is_file() for k in keys):
        return ""
    for r in rows:
        r.image_key = r.image_key.replace("\\", "/")[len(prefix) + 1 :]
    return prefix


def build(dataset: Dataset, *, threads: int = 4) -> tuple[pa.Table, pa.Table, dict[str, Any]]:
    """Captions table, images table and validation summary for one dataset."""
    ann = Path(dataset.annotations)
    root = Path(dataset.images)
    if dataset.format == "karpathy-json":
        rows = read_karpathy(ann, dataset.encoding)
    else:
        rows = read_caption_csv(
            ann,
            encoding=dataset.encoding,
            separator=dataset.csv_separator,
            columns=dataset.columns,
            split=dataset.split,
        )
    if not root.is_dir():
        raise RsmEvalError(f"{root}: image directory of dataset {dataset.name!r} does not exist")
    for r in rows:
        _check_relative(r.where, r.image_key)
    stripped = _relative_to_root(rows, root)

    # One split per image and known split names (a CSV lists an image once per caption).
    image_split: dict[str, str] = {}
    for r in rows:
        _check_relative(r.where, r.image_key)
        if r.split not in KNOWN_SPLITS and r.split != dataset.split:
            raise RsmEvalError(
                f"{r.where}: unknown split {r.split!r}, expected one of {list(KNOWN_SPLITS)}"
            )
        prev = image_split.setdefault(r.image_key, r.split)
        if prev != r.split:
            raise RsmEvalError(f"{r.where}: image is in split {prev!r} and in {r.split!r}")
    if dataset.split not in set(image_split.values()):
        raise RsmEvalError(
            f"{ann}: the evaluated split {dataset.split!r} of dataset {dataset.name!r} is empty "
            f"(splits found: {sorted(set(image_split.values()))})"
        )

    quirks: Counter[str] = Counter()
    for r in rows:
        if not r.caption.strip():
            if r.split == dataset.split:
                raise RsmEvalError(
                    f"{r.where}: blank caption in the evaluated split {dataset.split!r}"
                )
            quirks["blank_captions"] += 1

    keys = sorted(image_split)
    paths = [root / k for k in keys]
    with ThreadPoolExecutor(max_workers=threads) as pool:
        sizes = list(
            pool.map(
                lambda kp: _inspect_image(kp[1], kp[0], dataset.max_image_pixels),
                zip(keys, paths, strict=True),
            )
        )
    shas = cas.memo().files(paths)
    image_sha = dict(zip(keys, shas, strict=True))
    image_size = dict(zip(keys, sizes, strict=True))

    captions_by_image: dict[str, list[Row]] = defaultdict(list)
    for r in rows:
        captions_by_image[r.image_key].append(r)

    # Quirk counts over all splits and, where it matters for the protocol, the evaluated one.
    caption_sets: Counter[tuple[str, ...]] = Counter()
    for k in keys:
        caps = [r.caption for r in captions_by_image[k]]
        if len(set(caps)) < len(caps):
            quirks["images_with_repeated_captions"] += 1
        caption_sets[tuple(sorted(caps))] += 1
    quirks["images_sharing_a_caption_set"] = sum(n for n in caption_sets.values() if n > 1)
    by_content: dict[str, list[str]] = defaultdict(list)
    for k in keys:
        by_content[image_sha[k]].append(k)
    duplicate_groups = [sorted(v) for v in by_content.values() if len(v) > 1]
    quirks["images_with_identical_content"] = sum(len(g) for g in duplicate_groups)

    cap_rows = sorted(rows, key=lambda r: (r.image_key, r.caption_index))
    captions = pa.table(
        {
            "dataset": [dataset.name] * len(cap_rows),
            "split": [r.split for r in cap_rows],
            "image_key": [r.image_key for r in cap_rows],
            "image_path": [r.image_key for r in cap_rows],
            "image_sha256": [image_sha[r.image_key] for r in cap_rows],
            "caption_index": [r.caption_index for r in cap_rows],
            "caption": [r.caption for r in cap_rows],
            "caption_sha256": [cas.sha256_text(r.caption) for r in cap_rows],
            "sentid": [r.sentid for r in cap_rows],
        },
        schema=schemas.CAPTIONS,
    )
    images = pa.table(
        {
            "dataset": [dataset.name] * len(keys),
            "split": [image_split[k] for k in keys],
            "image_key": keys,
            "image_path": keys,
            "image_sha256": [image_sha[k] for k in keys],
            "width": [image_size[k][0] for k in keys],
            "height": [image_size[k][1] for k in keys],
            "n_captions": [len(captions_by_image[k]) for k in keys],
            "n_distinct_captions": [len({r.caption for r in captions_by_image[k]}) for k in keys],
        },
        schema=schemas.IMAGES,
    )

    counts: dict[str, dict[str, int]] = {}
    for split in sorted(set(image_split.values())):
        split_rows = [r for r in rows if r.split == split]
        counts[split] = {
            "images": sum(1 for k in keys if image_split[k] == split),
            "captions": len(split_rows),
            "distinct_captions": len({r.caption for r in split_rows}),
        }
    for split, want in dataset.expected.items():
        got = counts.get(split, {"images": 0, "captions": 0})
        for what, n in want.items():
            if got[what] != n:
                raise RsmEvalError(
                    f"{ann}: split {split!r} of dataset {dataset.name!r} has {got[what]} {what}, "
                    f"expected {n} (datasets.{dataset.name}.expected.{split}.{what})"
                )
    summary = {
        "dataset": dataset.name,
        "annotations_sha256": cas.file_sha256(ann),
        "counts": counts,
        "quirks": dict(sorted(quirks.items())),
        "identical_content_groups": duplicate_groups[:50],
    }
    if stripped:
        summary["image_prefix_removed"] = stripped
    return captions, images, summary


def write(
    dataset: Dataset, captions_out: Path, images_out: Path, summary_out: Path, code: str
) -> dict[str, Any]:
    """Build and write the manifests; every file appears whole or not at all."""
    captions, images, summary = build(dataset)
    address = cas.digest(
        {
            "stage": "manifest",
            "code": code,
            "params": dataset.params(),
            "annotations": summary["annotations_sha256"],
            "images": sorted(images.column("image_sha256").to_pylist()),
        }
    )
    meta = {"stage": "manifest", "address": address, "dataset": dataset.name, "code": code}
    summary["address"] = address
    schemas.write_table(captions, captions_out, schemas.CAPTIONS, meta)
    schemas.write_table(images, images_out, schemas.IMAGES, meta)
    cas.write_json_atomic(summary_out, summary)
    return summary


def evaluation_order(
    captions: pa.Table, split: str
) -> tuple[list[str], list[str], list[str], list[int]]:
    """The protocol's order for one split.

    Returns (image_keys, image_sha256 per image, caption_sha256 per caption, text_image index
    per caption): images ordered by file name, captions grouped per image in file order.
    """
    rows = [r for r in captions.to_pylist() if r["split"] == split]
    rows.sort(key=lambda r: (r["image_key"], r["caption_index"]))
    image_keys: list[str] = []
    image_shas: list[str] = []
    text_shas: list[str] = []
    text_image: list[int] = []
    for r in rows:
        if not image_keys or image_keys[-1] != r["image_key"]:
            image_keys.append(r["image_key"])
            image_shas.append(r["image_sha256"])
        text_shas.append(r["caption_sha256"])
        text_image.append(len(image_keys) - 1)
    if not image_keys:
        raise RsmEvalError(f"manifest has no rows in split {split!r}")
    return image_keys, image_shas, text_shas, text_image
