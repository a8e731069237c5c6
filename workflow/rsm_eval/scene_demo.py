"""The demo's class-folder scene benchmark, built beside the demo's retrieval benchmark.

``<out>/<folder>/<image>`` with folder names in the styles of the real datasets (RSSCN7's
ordering letter and CamelCase: ``aAirport``, ``bBaseballField`` ... ``lStorageTanks``), so the
class-name rule is exercised. It holds a byte-identical copy of every test image of the demo's
Karpathy benchmark, as UC Merced Land Use holds UCM-Captions' images: a workflow that
evaluates both embeds those images once (the scene-features log says how many it reused).
``extra_per_class`` freshly drawn images per class complete it.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np

from . import demo
from .cas import replace_path, write_json_atomic
from .errors import RsmEvalError

FOLDERS = {
    "airport": "aAirport",
    "baseballfield": "bBaseballField",
    "beach": "cBeach",
    "bridge": "dBridge",
    "desert": "eDesert",
    "farmland": "fFarmland",
    "forest": "gForest",
    "parking": "hParking",
    "pond": "iPond",
    "residential": "jResidential",
    "river": "kRiver",
    "storagetanks": "lStorageTanks",
}


def generate_scenes(
    out: Path, karpathy_json: Path, images_dir: Path, *, seed: int = 0, extra_per_class: int = 4
) -> dict:
    """Write the class folders under ``out`` (replacing it); return the per-class counts."""
    doc = json.loads(Path(karpathy_json).read_text(encoding="utf-8"))
    tmp = out.with_name(f".{out.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    counts: dict[str, int] = dict.fromkeys(FOLDERS.values(), 0)
    for folder in FOLDERS.values():
        (tmp / folder).mkdir(parents=True)
    for img in doc["images"]:
        if img["split"] != "test":
            continue
        cls = demo.class_of(img["filename"])
        if cls not in FOLDERS:
            raise RsmEvalError(f"{karpathy_json}: {img['filename']!r} has no demo class")
        folder = FOLDERS[cls]
        shutil.copyfile(images_dir / img["filename"], tmp / folder / img["filename"])
        counts[folder] += 1
    rng = np.random.default_rng([seed, 7])
    for cls, folder in FOLDERS.items():
        kind = demo.SCENES[cls]
        for i in range(extra_per_class):
            pixels = kind.draw(kind.attrs(rng), rng)
            (tmp / folder / f"extra_{i:02d}.jpg").write_bytes(demo.encode(pixels, ".jpg"))
            counts[folder] += 1
    replace_path(tmp, out)
    write_json_atomic(out.with_name(out.name + ".json"), {"per_class": counts})
    return counts
