"""Training pairs: image-caption rows read from `captions` manifests, checked, in one order.

A `TrainingManifest` names one captions manifest (rsm_eval.schemas.CAPTIONS), its image root
and the splits to train on. `load_pairs` reads them into a `TrainingSet` sorted by content
(image sha256, caption sha256), so that the training CSV, and with it the fine-tune's address,
does not depend on the order or the names of the manifests; `split_train_val` draws the
validation images as a pure function of their hashes and the seed.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import cas, schemas
from ..errors import RsmEvalError

# Strings pandas.read_csv (what open_clip_train's CsvDataset uses) reads as missing values even
# when quoted; a caption equal to one of them would be trained on as the text "nan".
_PANDAS_NA = frozenset(
    {
        "",
        "#N/A",
        "#N/A N/A",
        "#NA",
        "-1.#IND",
        "-1.#QNAN",
        "-NaN",
        "-nan",
        "1.#IND",
        "1.#QNAN",
        "<NA>",
        "N/A",
        "NA",
        "NULL",
        "NaN",
        "None",
        "n/a",
        "nan",
        "null",
    }
)


@dataclass(frozen=True)
class TrainingManifest:
    """Training pairs from one `captions` manifest.

    `captions`: the Parquet table written by rsm_eval.manifests; `images`: the image root its
    `image_path`s are relative to; `splits`: which splits to use (None: every row, as for an
    RSM-ITD-style CSV, whose rows all carry the dataset's configured split); `name`: for
    messages and the record (defaults to the manifest's dataset name).
    """

    captions: str
    images: str
    splits: tuple[str, ...] | None = ("train",)
    name: str = ""


@dataclass(frozen=True)
class Pair:
    image_sha256: str
    caption_sha256: str
    caption: str
    path: str  # absolute image path
    image_key: str
    source: str


@dataclass
class TrainingSet:
    """The selected pairs (canonical order) and what was dropped on the way."""

    pairs: list[Pair]
    sources: list[dict[str, Any]]
    dropped: dict[str, int] = field(default_factory=dict)
    overlaps: list[dict[str, str]] = field(default_factory=list)
    test_overlap: str = "refuse"

    def image_names(self) -> dict[str, str]:
        """image sha256 -> one file name (for messages)."""
        out: dict[str, str] = {}
        for p in self.pairs:
            out.setdefault(p.image_sha256, f"{p.source}:{p.image_key}")
        return out


def read_captions(path: Path | str, what: str):
    """(table, metadata) of a captions manifest; a missing file is an error naming `what`."""
    path = Path(path)
    if not path.is_file():
        raise RsmEvalError(f"{what}: captions manifest {path} not found")
    return schemas.read_table(path, schemas.CAPTIONS)


def _selected_rows(src: TrainingManifest, rows: list[dict], where: str) -> list[dict]:
    """The rows of the splits `src` asks for (each must have rows); all rows for None."""
    if src.splits is None:
        return rows
    if not src.splits:
        raise RsmEvalError(f"{where}: 'splits' is empty; give splits or null for all")
    present = sorted({r["split"] for r in rows})
    for s in src.splits:
        if s not in present:
            raise RsmEvalError(
                f"{where}: split {s!r} has no rows in {src.captions} (splits present: {present})"
            )
    return [r for r in rows if r["split"] in set(src.splits)]


def _usable_pairs(
    src: TrainingManifest, rows: list[dict], root: Path, name: str, where: str, dropped: Counter
) -> list[Pair]:
    """Pairs of the rows whose caption open_clip_train would read as written; the others are
    counted in `dropped`. A caption that does not match its sha256 is a stale manifest."""
    kept: list[Pair] = []
    for r in rows:
        cap = r["caption"]
        if not cap.strip():
            dropped["blank_captions"] += 1
            continue
        if cap in _PANDAS_NA:
            dropped["captions_read_as_missing_by_pandas"] += 1
            continue
        if cas.sha256_text(cap) != r["caption_sha256"]:
            raise RsmEvalError(
                f"{where}: {src.captions}: caption_sha256 of {r['image_key']!r} caption "
                f"{r['caption_index']} does not match its text; rebuild the manifest"
            )
        kept.append(
            Pair(
                image_sha256=r["image_sha256"],
                caption_sha256=r["caption_sha256"],
                caption=cap,
                path=os.path.abspath(root / r["image_path"]),
                image_key=r["image_key"],
                source=name,
            )
        )
    return kept


def _verify_images(pairs: list[Pair], src: TrainingManifest, where: str) -> None:
    """Every image still has the sha256 the manifest recorded (memoised by stat)."""
    by_path = {p.path: p for p in pairs}
    shas = cas.memo().files(list(by_path))
    for (path, p), sha in zip(by_path.items(), shas, strict=True):
        if sha != p.image_sha256:
            raise RsmEvalError(
                f"{where}: image {path} has changed since the manifest {src.captions} "
                "was built (sha256 differs); rebuild the manifest"
            )


def load_pairs(sources: Sequence[TrainingManifest], *, verify_images: bool = True) -> TrainingSet:
    """Read the selected rows of each manifest, drop unusable captions, check the images.

    Blank captions (old RSITMD train copies have some) and captions that pandas would read as
    missing are dropped and counted. With `verify_images`, every image must exist under its
    root with the sha256 the manifest recorded (hashes are memoised by stat, so this is cheap
    after the first time); a changed image means a stale manifest, which is an error.
    """
    if not sources:
        raise RsmEvalError("finetune: no training sources given")
    pairs: list[Pair] = []
    source_info: list[dict[str, Any]] = []
    dropped: Counter[str] = Counter()
    for i, src in enumerate(sources):
        where = f"finetune.sources[{i}]"
        table, meta = read_captions(src.captions, where)
        rows = table.to_pylist()
        name = src.name or (rows[0]["dataset"] if rows else f"source{i}")
        where = f"{where} ({name})"
        root = Path(src.images)
        if not root.is_dir():
            raise RsmEvalError(f"{where}: image root {root} does not exist or is not a directory")
        kept = _usable_pairs(src, _selected_rows(src, rows, where), root, name, where, dropped)
        if verify_images and kept:
            _verify_images(kept, src, where)
        source_info.append(
            {
                "name": name,
                "splits": list(src.splits) if src.splits is not None else None,
                "manifest_address": meta.get("address"),
                "pairs": len(kept),
                "images": len({p.image_sha256 for p in kept}),
            }
        )
        pairs.extend(kept)
    if not pairs:
        raise RsmEvalError(
            "finetune: the training set is empty (no usable image-caption pairs in "
            f"{[s.captions for s in sources]})"
        )
    pairs.sort(key=lambda p: (p.image_sha256, p.caption_sha256, p.path))
    return TrainingSet(pairs=pairs, sources=source_info, dropped=dict(sorted(dropped.items())))


def split_train_val(pairs: Sequence[Pair], fraction: float, seed: int) -> tuple[list, list]:
    """Random validation split by image, a pure function of the image hashes and the seed.

    All captions of an image (and every copy of identical image content) fall on one side.
    At least one image goes to validation when `fraction` > 0 and there are two images.
    """
    images = sorted({p.image_sha256 for p in pairs})
    n_val = round(fraction * len(images))
    if fraction > 0 and len(images) >= 2:
        n_val = max(1, min(n_val, len(images) - 1))
    order = sorted(images, key=lambda s: cas.sha256_text(f"{seed}:{s}"))
    val_images = set(order[:n_val])
    train = [p for p in pairs if p.image_sha256 not in val_images]
    val = [p for p in pairs if p.image_sha256 in val_images]
    return train, val
