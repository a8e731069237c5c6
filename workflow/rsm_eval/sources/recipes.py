"""Recipes: turn what an archive holds into a dataset's own layout, verifying every file.

``ucm-captions``: UCM-Captions' 2,100 images ``1.tif`` ... ``2100.tif`` are the UC Merced
Land Use images renamed (``<class>/<class>NN.tif`` -> ``n.tif``, n = 100 x alphabetical class
index + NN + 1). The table ``data/ucm_captions_images.tsv`` lists every pair with the sha256
of the UC Merced file; each image is checked against it, and a missing or different file
stops the recipe with its name and both hashes.
"""

from __future__ import annotations

import csv
import os
from concurrent.futures import ThreadPoolExecutor
from functools import cache
from pathlib import Path

from rsm_eval import cas
from rsm_eval.errors import RsmEvalError

from .spec import VerificationError

UCM_TABLE = Path(__file__).resolve().parents[1] / "data" / "ucm_captions_images.tsv"


def ucm_table() -> tuple[tuple[str, str, str], ...]:
    """(UCM-Captions name, UC Merced path inside UCMerced_LandUse/Images, sha256) per image."""
    return _read_table(UCM_TABLE)


@cache
def _read_table(path: Path) -> tuple[tuple[str, str, str], ...]:
    lines = [ln for ln in path.read_text(encoding="utf-8").splitlines() if not ln.startswith("#")]
    rows = list(csv.DictReader(lines, delimiter="\t"))
    try:
        return tuple(
            (r["ucm_captions_filename"], r["ucmerced_filename"], r["sha256"]) for r in rows
        )
    except KeyError as exc:
        raise RsmEvalError(f"{path}: missing column {exc}") from None


def source_names(recipe: str) -> list[str]:
    """The files the recipe reads, relative to the folder that holds them (for discovery)."""
    if recipe == "ucm-captions":
        return [src for _, src, _ in ucm_table()]
    raise RsmEvalError(f"unknown recipe {recipe!r}")


def apply(recipe: str, src: Path, out: Path, key: str) -> Path:
    """Build the recipe's layout from folder src into the new folder out; return out."""
    if recipe != "ucm-captions":
        raise RsmEvalError(f"{key}: unknown recipe {recipe!r}")
    table = ucm_table()

    def check(row: tuple[str, str, str]) -> str | None:
        name, rel, want = row
        path = src / rel
        if not path.is_file():
            return f"{rel} (becomes {name}): missing; expected a file with sha256 {want}"
        got, _ = cas.hash_file(path)
        if got != want:
            return f"{rel} (becomes {name}): sha256 {got}, expected {want}"
        return None

    with ThreadPoolExecutor(max_workers=4) as pool:
        problems = [p for p in pool.map(check, table) if p]
    if problems:
        raise VerificationError(
            f"{key}: {len(problems)} of {len(table)} UC Merced images do not match the "
            f"UCM-Captions table {UCM_TABLE} (no image is guessed): "
            + "; ".join(problems[:10])
            + ("; ..." if len(problems) > 10 else "")
        )
    out.mkdir(parents=True)
    for name, rel, _ in table:
        os.replace(src / rel, out / name)
    return out
