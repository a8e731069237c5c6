"""The demo's scene classes as data: one row per class, pairing its attribute table with its
drawer and captioner, and the file-name rule that recovers a class from an image name.

A class's attributes are drawn in the order its table lists them, each by a small sampler
(an integer range, a choice of words, a coin flip...), so that a seed gives the same scene.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

import numpy as np

from . import captions, drawers
from .primitives import Attrs

Sampler = Callable[[np.random.Generator, Attrs], Any]
"""Draws one attribute, given the random stream and the attributes drawn before it."""


@dataclass(frozen=True)
class Int:
    """An integer in ``[low, high)``."""

    low: int
    high: int

    def __call__(self, rng: np.random.Generator, drawn: Attrs) -> int:
        return int(rng.integers(self.low, self.high))


class Choice:
    """One of the given words."""

    def __init__(self, *options: str) -> None:
        self.options = list(options)

    def __call__(self, rng: np.random.Generator, drawn: Attrs) -> str:
        return str(rng.choice(self.options))


@dataclass(frozen=True)
class Distinct:
    """``k`` different words of the given ones, in drawn order."""

    k: int
    options: tuple[str, ...]

    def __call__(self, rng: np.random.Generator, drawn: Attrs) -> list[str]:
        return [str(c) for c in rng.choice(list(self.options), size=self.k, replace=False)]


def flag(rng: np.random.Generator, drawn: Attrs) -> bool:
    """A fair coin."""
    return bool(rng.integers(0, 2))


def if_single(sampler: Sampler, otherwise: Any) -> Sampler:
    """``sampler`` where the scene has one object (``n == 1``), else the fixed ``otherwise``."""
    return lambda rng, drawn: sampler(rng, drawn) if drawn["n"] == 1 else otherwise


def tank_count(rng: np.random.Generator, drawn: Attrs) -> int:
    """As many tanks as fit in one row across the image, or a grid of four to nine."""
    cap = 4 if drawn["size"] == "large" else 6
    return (
        int(rng.integers(2, cap + 1)) if drawn["arrangement"] == "row" else int(rng.integers(4, 10))
    )


@dataclass(frozen=True)
class SceneClass:
    """A scene class: its attribute table, drawer and captioner."""

    attributes: Mapping[str, Sampler]
    draw: Callable[[Attrs, np.random.Generator], np.ndarray]
    captions: Callable[[Attrs], list[str]]

    def attrs(self, rng: np.random.Generator) -> Attrs:
        """Draw the attributes of one scene, in table order."""
        drawn: Attrs = {}
        for key, sample in self.attributes.items():
            drawn[key] = sample(rng, drawn)
        return drawn


_HV = ("horizontal", "vertical")
_HVD = (*_HV, "diagonal")
_BANK = Choice("green", "sandy")

SCENES: dict[str, SceneClass] = {
    "airport": SceneClass(
        {"runways": Int(1, 3), "planes": Int(1, 5), "orientation": Choice(*_HV)},
        drawers.airport,
        captions.airport,
    ),
    "baseballfield": SceneClass(
        {
            "n": Int(1, 3),
            "position": if_single(Choice("left", "centre", "right"), "side by side"),
            "trees": flag,
            "stands": flag,
        },
        drawers.baseballfield,
        captions.baseballfield,
    ),
    "beach": SceneClass(
        {"side": Choice("left", "right", "top", "bottom"), "boats": Int(0, 4)},
        drawers.beach,
        captions.beach,
    ),
    "bridge": SceneClass(
        {"direction": Choice(*_HV), "n": Int(1, 3), "colour": Choice("grey", "red"), "bank": _BANK},
        drawers.bridge,
        captions.bridge,
    ),
    "desert": SceneClass(
        {"tone": Choice("yellow", "orange"), "orientation": Choice(*_HVD), "shrubs": flag},
        drawers.desert,
        captions.desert,
    ),
    "farmland": SceneClass(
        {
            "colours": Distinct(2, ("green", "yellow", "brown")),
            "n": Int(3, 7),
            "orientation": Choice(*_HV),
        },
        drawers.farmland,
        captions.farmland,
    ),
    "forest": SceneClass(
        {"road": Choice("none", *_HVD), "density": Choice("dense", "sparse"), "clearing": flag},
        drawers.forest,
        captions.forest,
    ),
    "parking": SceneClass(
        {
            "rows": Int(2, 5),
            "fullness": Choice("full", "half empty"),
            "cars": Choice("colourful", "white"),
            "orientation": Choice(*_HV),
        },
        drawers.parking,
        captions.parking,
    ),
    "pond": SceneClass(
        {
            "n": Int(1, 3),
            "position": if_single(
                Choice("centre", "left", "right", "top", "bottom"), "side by side"
            ),
            "water": Choice("blue", "dark green"),
        },
        drawers.pond,
        captions.pond,
    ),
    "residential": SceneClass(
        {"rows": Int(2, 5), "roof": Choice("red", "grey", "mixed"), "orientation": Choice(*_HV)},
        drawers.residential,
        captions.residential,
    ),
    "river": SceneClass(
        {"direction": Choice(*_HVD), "width": Choice("narrow", "wide"), "bank": _BANK},
        drawers.river,
        captions.river,
    ),
    "storagetanks": SceneClass(
        {
            "size": Choice("large", "small"),
            "arrangement": Choice("row", "grid"),
            "n": tank_count,
            "ground": Choice("grey", "brown"),
        },
        drawers.storagetanks,
        captions.storagetanks,
    ),
}
"""Every scene class by name, in the order of :data:`SCENE_CLASSES`."""

SCENE_CLASSES = tuple(SCENES)
"""Scene classes, as they appear before ``_`` in generated file names."""

_CLASS_RE = re.compile(r"^([A-Za-z][A-Za-z_]*)_(\d+)$")


def class_of(filename: str) -> str | None:
    """Return the scene class encoded in a real-style image file name, or ``None``.

    Real benchmark files are named ``<class>_<number>.<ext>`` (``airport_12.jpg``,
    ``baseballfield_452.tif``, ``dense_residential_001.jpg``); the class is everything
    before the last ``_<digits>``, lower-cased. Directories are ignored. Names without that
    pattern (``00012.tif``, ``airport.jpg``) give ``None``.
    """
    stem = PurePosixPath(filename.replace("\\", "/")).name
    stem = stem.rsplit(".", 1)[0] if "." in stem else stem
    match = _CLASS_RE.match(stem)
    return match.group(1).lower() if match else None
