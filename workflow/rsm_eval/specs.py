"""What a rule tells its stage, beyond file paths: one small dataclass per stage.

The plan (rsm_eval.plan) builds each spec from the configuration and serialises it with
`to_json()`; the stage's command line (rsm_eval.cli) reads it back with the same class's
`from_json()` (rsm_eval.jsonspec). Models, datasets and fetched sources travel as their
config dataclasses (config.Model, config.Dataset, config.FetchSpec), which are specs too.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .config import Model
from .jsonspec import JsonSpec


@dataclass(frozen=True)
class TrainingSet(JsonSpec):
    """One training source of a fine-tune: a caption manifest and its image root."""

    name: str  # "<dataset>" or "<dataset>:<split>"
    captions: str
    images: str
    split: str | None = None  # None: every row of the manifest


@dataclass(frozen=True)
class TestSet(JsonSpec):
    """An evaluated split that the training data must not overlap (test_overlap)."""

    name: str
    captions: str
    split: str


@dataclass(frozen=True)
class FinetuneSpec(JsonSpec):
    name: str
    base: Model
    training: tuple[TrainingSet, ...]
    tests: tuple[TestSet, ...]
    test_overlap: str
    params: dict[str, Any] = field(default_factory=dict)

    _nested = {"base": Model, "training": (TrainingSet, "list"), "tests": (TestSet, "list")}


@dataclass(frozen=True)
class HashTable(JsonSpec):
    """An image-hash table of one dataset and the split the audit reads (None: all rows)."""

    hashes: str
    split: str | None = None


@dataclass(frozen=True)
class LeakageSpec(JsonSpec):
    tests: dict[str, HashTable]  # evaluated dataset -> its test split
    trains: dict[str, HashTable]  # training source label ("demo:train") -> its rows
    max_hamming: int
    cosine_threshold: float
    confirm_with: Model | None = None  # near pairs also need image-embedding cosine
    image_roots: dict[str, str] = field(default_factory=dict)  # dataset -> image dir

    _nested = {
        "tests": (HashTable, "dict"),
        "trains": (HashTable, "dict"),
        "confirm_with": Model,
    }


@dataclass(frozen=True)
class LocalizationSpec(JsonSpec):
    """One AIR-SLT-style set and the parameters of its maps (config localization)."""

    name: str
    annotations: str
    images: str
    published: str
    figures: int
    params: dict[str, Any]
    expected: dict[str, int] = field(default_factory=dict)
