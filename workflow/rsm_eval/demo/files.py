"""Writing the demo benchmark: the images, the Karpathy JSON and the caption CSV, staged in a
hidden sibling and swapped into place, and the summary that the benchmark returns."""

from __future__ import annotations

import csv
import json
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .. import cas
from ..errors import RsmEvalError
from .classes import SCENE_CLASSES
from .primitives import Attrs, encode

SPLITS = ("train", "val", "test")
SENTENCES_PER_IMAGE = 5


@dataclass
class Entry:
    """One image to be written: its pixels or bytes, captions and bookkeeping."""

    cls: str
    attrs: Attrs
    ext: str
    captions: list[str]
    pixels: np.ndarray | None = None
    data: bytes | None = None
    filename: str = ""
    notes: dict[str, object] = field(default_factory=dict)


def check_replaceable(out_dir: Path) -> None:
    if not out_dir.exists():
        return
    if not out_dir.is_dir():
        raise RsmEvalError(f"generate_benchmark: {out_dir} exists and is not a directory")
    if any(out_dir.iterdir()) and not any(out_dir.glob("dataset_*.json")):
        raise RsmEvalError(
            f"generate_benchmark: refusing to replace {out_dir}: it is not empty and holds no "
            "dataset_*.json of an earlier benchmark"
        )


def write_benchmark(
    out_dir: Path, name: str, karpathy: list[tuple[Entry, str]], csv_entries: list[Entry]
) -> dict:
    """Write the benchmark into a temporary sibling of ``out_dir``, then swap it into place."""
    tmp = out_dir.parent / f".{out_dir.name}.partial"
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    if tmp.exists():
        shutil.rmtree(tmp)
    try:
        doc = _write_tree(tmp, name, karpathy, csv_entries)
        cas.replace_path(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return doc


def _write_tree(
    root: Path, name: str, karpathy: list[tuple[Entry, str]], csv_entries: list[Entry]
) -> dict:
    """Write images, the Karpathy JSON and the CSV under ``root``; return the JSON document."""
    images_dir = root / "images"
    csv_dir = root / "rsmitd_images"
    images_dir.mkdir(parents=True)
    csv_dir.mkdir()
    docs = []
    sentid = 0
    for imgid, (entry, split) in enumerate(karpathy):
        if entry.data is None:
            entry.data = encode(entry.pixels, entry.ext)
        (images_dir / entry.filename).write_bytes(entry.data)
        sentids = list(range(sentid, sentid + len(entry.captions)))
        sentences = [
            {"tokens": _tokens(raw), "raw": raw, "imgid": imgid, "sentid": sid}
            for sid, raw in zip(sentids, entry.captions, strict=True)
        ]
        sentid += len(entry.captions)
        docs.append(
            {
                "filename": entry.filename,
                "imgid": imgid,
                "split": split,
                "sentids": sentids,
                "sentences": sentences,
            }
        )
    doc = {"images": docs, "dataset": name}
    (root / f"dataset_{name}.json").write_text(json.dumps(doc), encoding="utf-8")
    for entry in csv_entries:
        if entry.data is None:
            entry.data = encode(entry.pixels, entry.ext)
        (csv_dir / entry.filename).write_bytes(entry.data)
    with (root / "RSMITD.csv").open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(["filepath", "title"])
        for entry in csv_entries:
            for title in entry.captions:
                writer.writerow([entry.filename, title])
    return doc


def _tokens(raw: str) -> list[str]:
    """Karpathy tokens: the lower-cased words of a caption, without punctuation."""
    return re.findall(r"[a-z0-9]+", raw.lower())


def _counts(groups: list[list[str]]) -> dict[str, int]:
    return {
        "images": len(groups),
        "captions": sum(len(g) for g in groups),
        "distinct_captions": len({c for g in groups for c in g}),
    }


def summary(
    name: str,
    seed: int,
    doc: dict,
    csv_entries: list[Entry],
    dups: list[Entry],
    padded_slots: set[tuple[str, int]],
    entries: dict[str, list[Entry]],
    chosen_pairs: list[tuple[str, int]],
) -> dict:
    splits = {
        s: _counts(
            [[x["raw"] for x in im["sentences"]] for im in doc["images"] if im["split"] == s]
        )
        for s in SPLITS
    }
    duplicates = []
    for entry in dups:
        src: Entry = entry.notes["source"]
        copy = f"{entry.notes['folder']}/{entry.filename}"
        duplicates.append({"test": src.filename, "copy": copy, "kind": entry.notes["kind"]})
    duplicates.sort(key=lambda d: (d["kind"], d["copy"]))
    return {
        "name": name,
        "seed": seed,
        "classes": list(SCENE_CLASSES),
        "files": {
            "json": f"dataset_{name}.json",
            "images_dir": "images",
            "csv": "RSMITD.csv",
            "csv_images_dir": "rsmitd_images",
        },
        "splits": splits,
        "csv": _counts([e.captions for e in csv_entries]),
        "duplicates": duplicates,
        "padded": sorted(entries[s][p].filename for s, p in padded_slots),
        "shared_caption_sets": [
            [entries[s][p].filename, entries[s][p + 1].filename] for s, p in chosen_pairs
        ],
    }
