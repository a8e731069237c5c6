"""Deterministic generator of a small, offline, remote-sensing-like retrieval benchmark.

The bundled demo of RSM-Eval must run without network access on a small CPU, so this
module draws synthetic aerial scenes (128x128 RGB, numpy + PIL) for twelve land-cover
classes and writes them in the exact on-disk formats of the real datasets:

* ``dataset_{name}.json``: a Karpathy-style split file like RSITMD's ``dataset_RSITMD.json``
  or RSICD's ``dataset_rsicd.json`` (``images`` with ``filename``, ``imgid``, ``split``,
  ``sentids`` and five ``sentences`` each; ``dataset``). Images lie in ``images/`` and are
  named like the real ones (``farmland_12.tif``, ``airport_7.jpg``), a mix of uncompressed
  TIFF and JPEG (quality 90).
* ``RSMITD.csv``: an RSM-ITD-style training caption table (header ``filepath,title``, one
  row per image-caption pair, paths relative to ``rsmitd_images/``). Its scenes are fresh
  draws, apart from the planted near duplicates below.

Every caption is generated from the same attributes the renderer drew (object counts,
colours, orientation, position), so a model that learns something beats chance and
retrieval within a class is not trivial.

The quirks of the real data that a validator must count are reproduced on purpose, each
controlled by one argument of :func:`generate_benchmark`:

* RSICD-style padding: images with fewer than five distinct captions, padded with exact
  copies (``n_padded``).
* UCM-style shared caption sets: pairs of neighbouring images of one class (consecutive
  ``imgid`` and file number, same split) with an identical list of five captions
  (``n_shared_caption_sets``). No other two images share a caption set.
* Planted leakage: test images copied byte for byte into the train split under another
  name (``n_exact_duplicates``), and near duplicates (brightness shift or JPEG re-encoding
  of a test image) alternately in the train split and in the CSV set (``n_near_duplicates``).

Everything derives from ``seed`` through ``numpy.random.default_rng``; no global random
state, no time-dependent metadata, so one seed gives byte-identical files.
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from rsm_eval.errors import RsmEvalError

__all__ = ["SCENE_CLASSES", "SIZE", "class_of", "generate_benchmark"]

SIZE = 128
"""Edge length in pixels of every generated image."""

SCENE_CLASSES = (
    "airport",
    "baseballfield",
    "beach",
    "bridge",
    "desert",
    "farmland",
    "forest",
    "parking",
    "pond",
    "residential",
    "river",
    "storagetanks",
)
"""Scene classes, as they appear before ``_`` in generated file names."""

SPLITS = ("train", "val", "test")
SENTENCES_PER_IMAGE = 5
JPEG_QUALITY = 90
# Near duplicates are re-encoded at a lower quality, so their bytes always differ.
NEAR_JPEG_QUALITY = 75

_NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
_CLASS_RE = re.compile(r"^([A-Za-z][A-Za-z_]*)_(\d+)$")
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")

Attrs = dict[str, Any]
Rgb = tuple[int, int, int]


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


# ---------------------------------------------------------------------------------------
# Small drawing and wording helpers
# ---------------------------------------------------------------------------------------


def _word(n: int) -> str:
    return _NUMBER_WORDS[n] if 0 <= n < len(_NUMBER_WORDS) else str(n)


def _count(n: int, noun: str, plural: str | None = None) -> str:
    """``_count(2, "bridge") -> "two bridges"``."""
    return f"{_word(n)} {noun if n == 1 else (plural or noun + 's')}"


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:]


def _jit(rgb: Rgb, rng: np.random.Generator, amount: int = 12) -> Rgb:
    """Jitter a colour so that no two scenes share exact tones."""
    shift = rng.integers(-amount, amount + 1, size=3)
    return tuple(int(v) for v in np.clip(np.asarray(rgb) + shift, 0, 255))


def _shade(rgb: Rgb, delta: int) -> Rgb:
    return tuple(int(min(255, max(0, v + delta))) for v in rgb)


def _canvas(rgb: Rgb, size: int = SIZE) -> tuple[Image.Image, ImageDraw.ImageDraw]:
    img = Image.new("RGB", (size, size), rgb)
    return img, ImageDraw.Draw(img)


def _orient(img: Image.Image, orientation: str) -> Image.Image:
    """Turn a scene drawn with horizontal structure into the requested orientation."""
    if orientation == "vertical":
        return img.transpose(Image.Transpose.TRANSPOSE)
    if orientation == "diagonal":
        # Drawn on an oversized canvas, so the rotated crop has no empty corners.
        offset = (img.width - SIZE) // 2
        rotated = img.rotate(45, resample=Image.Resampling.BILINEAR)
        return rotated.crop((offset, offset, offset + SIZE, offset + SIZE))
    return img


def _big(orientation: str) -> int:
    """Canvas size needed to draw a scene before :func:`_orient`."""
    return int(math.ceil(SIZE * math.sqrt(2))) + 2 if orientation == "diagonal" else SIZE


def _texture(img: Image.Image, rng: np.random.Generator, grain: float, mottle: float) -> np.ndarray:
    """Add low-frequency mottling and per-pixel grain, like sensor noise on real imagery."""
    arr = np.asarray(img, dtype=np.float32)
    low = Image.fromarray(rng.normal(0.0, mottle, (8, 8)).astype(np.float32), mode="F")
    low_arr = np.asarray(low.resize((SIZE, SIZE), Image.Resampling.BILINEAR))
    arr = arr + low_arr[..., None] + rng.normal(0.0, grain, arr.shape)
    return np.clip(np.rint(arr), 0, 255).astype(np.uint8)


def _wave(length: int, rng: np.random.Generator, amp: float, period: tuple[int, int]) -> np.ndarray:
    phase = rng.uniform(0, 2 * math.pi)
    lam = rng.uniform(*period)
    return amp * np.sin(2 * math.pi * np.arange(length) / lam + phase)


COLOURS: dict[str, Rgb] = {
    "green": (78, 142, 62),
    "yellow": (206, 188, 92),
    "brown": (142, 102, 64),
    "red": (178, 64, 52),
    "grey": (128, 128, 132),
    "blue": (44, 92, 162),
    "white": (238, 238, 236),
    "black": (38, 38, 42),
    "silver": (186, 188, 192),
    "dark green": (36, 88, 66),
}


# ---------------------------------------------------------------------------------------
# Scene classes: attributes -> image, attributes -> candidate captions
# ---------------------------------------------------------------------------------------


def _attrs_farmland(rng: np.random.Generator) -> Attrs:
    colours = [str(c) for c in rng.choice(["green", "yellow", "brown"], size=2, replace=False)]
    return {
        "n": int(rng.integers(3, 7)),
        "orientation": str(rng.choice(["horizontal", "vertical"])),
        "colours": colours,
    }


def _draw_farmland(a: Attrs, rng: np.random.Generator) -> np.ndarray:
    n, colours = int(a["n"]), list(a["colours"])
    img, d = _canvas((0, 0, 0))
    edges = np.linspace(0, SIZE, n + 1)
    edges[1:-1] += rng.uniform(-SIZE / (5 * n), SIZE / (5 * n), n - 1)
    for i in range(n):
        y0, y1 = int(edges[i]), int(edges[i + 1])
        base = _jit(COLOURS[colours[i % 2]], rng)
        d.rectangle((0, y0, SIZE, y1), fill=base)
        for y in range(y0 + 2, y1 - 1, 4):  # furrows run along the strip
            d.line((0, y, SIZE, y), fill=_shade(base, -14), width=1)
        d.line((0, y1, SIZE, y1), fill=(70, 60, 45), width=2)
    return _texture(_orient(img, str(a["orientation"])), rng, grain=5, mottle=6)


def _caps_farmland(a: Attrs) -> list[str]:
    n, o = int(a["n"]), str(a["orientation"])
    c1, c2 = list(a["colours"])
    adv = o + "ly"
    return [
        f"{_cap(_count(n, 'strip'))} of farmland are arranged {adv}.",
        f"The farmland is divided into {_count(n, o + ' field')} of {c1} and {c2}.",
        f"{_cap(c1)} and {c2} fields lie side by side in {o} stripes of farmland.",
        f"There are {_count(n, 'field')} in the farmland.",
        f"Many {c1} and {c2} farmlands with {o} boundaries.",
        f"Some {o} field stripes in {c1} and {c2} cover the whole farmland.",
        f"The farmland consists of {_count(n, 'long ' + o + ' plot')}.",
        f"Alternating {c1} and {c2} plots of farmland run {adv}.",
    ]


def _attrs_forest(rng: np.random.Generator) -> Attrs:
    road = str(rng.choice(["none", "horizontal", "vertical", "diagonal"]))
    density = str(rng.choice(["dense", "sparse"]))
    return {"density": density, "road": road, "clearing": bool(rng.integers(0, 2))}


def _draw_forest(a: Attrs, rng: np.random.Generator) -> np.ndarray:
    dense = a["density"] == "dense"
    img, d = _canvas(_jit((34, 72, 38) if dense else (122, 112, 72), rng))
    n_trees = 420 if dense else 110
    xy = rng.uniform(-4, SIZE + 4, (n_trees, 2))
    radius = rng.uniform(3, 7.5, n_trees)
    tone = rng.integers(-16, 17, n_trees)
    for (x, y), r, t in zip(xy, radius, tone, strict=True):
        d.ellipse((x - r, y - r, x + r, y + r), fill=_shade((38, 96, 44), int(t)))
    if a["clearing"]:
        cx, cy, r = *rng.uniform(30, 98, 2), rng.uniform(13, 19)
        d.ellipse((cx - r, cy - r * 0.8, cx + r, cy + r * 0.8), fill=_jit((150, 132, 88), rng))
    road = str(a["road"])
    if road != "none":
        c = rng.uniform(38, 90)
        ends = {
            "horizontal": (0, c, SIZE, c + rng.uniform(-12, 12)),
            "vertical": (c, 0, c + rng.uniform(-12, 12), SIZE),
            "diagonal": (0, rng.uniform(0, 20), SIZE, SIZE - rng.uniform(0, 20)),
        }[road]
        d.line(ends, fill=_jit((176, 156, 116), rng), width=6)
    return _texture(img, rng, grain=6, mottle=5)


def _caps_forest(a: Attrs) -> list[str]:
    dens, road = str(a["density"]), str(a["road"])
    layout = (
        "The trees in the forest are densely packed."
        if dens == "dense"
        else "Trees are scattered sparsely in this forest with bare ground between them."
    )
    if road == "none":
        road_caps = [
            "No road crosses the forest.",
            f"A {dens} forest without any road.",
            "Dark green trees cover the forest completely.",
        ]
    else:
        road_caps = [
            f"A {road} road passes through the forest.",
            f"A {dens} forest is cut by a {road} path.",
            f"Dark green trees cover the forest except for a {road} road.",
        ]
    if a["clearing"]:
        road_caps += [
            "A small clearing of bare ground lies inside the forest.",
            f"The {dens} forest has an open brown clearing.",
        ]
    return [
        f"A {dens} forest with many dark green trees.",
        layout,
        f"Many green trees form a {dens} forest.",
        f"This is a {dens} piece of forest.",
        f"Lots of trees grow in a {dens} forest.",
        *road_caps,
    ]


_FLOW = {
    "horizontal": "from left to right",
    "vertical": "from top to bottom",
    "diagonal": "diagonally",
}


def _attrs_river(rng: np.random.Generator) -> Attrs:
    return {
        "direction": str(rng.choice(["horizontal", "vertical", "diagonal"])),
        "width": str(rng.choice(["narrow", "wide"])),
        "bank": str(rng.choice(["green", "sandy"])),
    }


def _draw_river(a: Attrs, rng: np.random.Generator) -> np.ndarray:
    size = _big(str(a["direction"]))
    bank = (82, 132, 62) if a["bank"] == "green" else (194, 172, 122)
    img, d = _canvas(_jit(bank, rng), size)
    width = int(rng.integers(9, 14) if a["width"] == "narrow" else rng.integers(24, 32))
    ys = size / 2 + rng.uniform(-14, 14) + _wave(size + 1, rng, rng.uniform(4, 12), (70, 160))
    xs = np.arange(0, size + 1, 4)
    # A polygon between two offset edges: thick PIL lines leave seams at their joints.
    for half, colour in ((width / 2 + 3, _shade(bank, -30)), (width / 2, _jit((42, 84, 150), rng))):
        top = [(float(x), float(ys[x] - half)) for x in xs]
        bottom = [(float(x), float(ys[x] + half)) for x in xs[::-1]]
        d.polygon(top + bottom, fill=colour)
    return _texture(_orient(img, str(a["direction"])), rng, grain=5, mottle=6)


def _caps_river(a: Attrs) -> list[str]:
    o, w, b = str(a["direction"]), str(a["width"]), str(a["bank"])
    flow = _FLOW[o]
    return [
        f"A {w} river flows {flow} through {b} land.",
        f"A {w} blue river runs {flow}.",
        f"The river crosses the image {flow}.",
        f"There is a {w} river with {b} banks.",
        f"{_cap(b)} land lies on both sides of the river.",
        f"A curved {w} river winds {flow}.",
        f"The {w} river is flanked by {b} banks.",
        f"A {o} river with {b} shores.",
    ]


def _attrs_bridge(rng: np.random.Generator) -> Attrs:
    return {
        "direction": str(rng.choice(["horizontal", "vertical"])),
        "n": int(rng.integers(1, 3)),
        "colour": str(rng.choice(["grey", "red"])),
        "bank": str(rng.choice(["green", "sandy"])),
    }


def _draw_bridge(a: Attrs, rng: np.random.Generator) -> np.ndarray:
    img, d = _canvas(_jit((92, 136, 70) if a["bank"] == "green" else (194, 172, 122), rng))
    n = int(a["n"])
    cy = SIZE / 2 + rng.uniform(-12, 12)
    half = rng.uniform(14, 19)
    d.rectangle((0, cy - half - 3, SIZE, cy + half + 3), fill=(120, 110, 80))  # embankment
    d.rectangle((0, cy - half, SIZE, cy + half), fill=_jit((40, 82, 148), rng))
    xs = (
        [SIZE / 2 + rng.uniform(-20, 20)] if n == 1 else [rng.uniform(22, 46), rng.uniform(82, 106)]
    )
    deck = _jit(COLOURS[str(a["colour"])], rng, 8)
    for x in xs:
        d.line((x, 0, x, SIZE), fill=(150, 150, 148), width=5)  # road leading onto the bridge
        d.rectangle((x - 4, cy - half - 7, x + 4, cy + half + 7), fill=deck)
    return _texture(_orient(img, str(a["direction"])), rng, grain=5, mottle=5)


def _caps_bridge(a: Attrs) -> list[str]:
    n, c, o, b = int(a["n"]), str(a["colour"]), str(a["direction"]), str(a["bank"])
    flow = _FLOW[o]
    verb = "crosses" if n == 1 else "cross"
    return [
        f"{_cap(_count(n, c + ' bridge'))} {verb} a river flowing {flow}.",
        f"There {'is' if n == 1 else 'are'} {_count(n, 'bridge')} over the blue river.",
        f"The river flows {flow} under {_count(n, 'bridge')}.",
        f"{_cap(_count(n, c + ' bridge'))} {'connects' if n == 1 else 'connect'} the {b} banks.",
        f"A {o} river with {_count(n, 'bridge')} on it.",
        f"{_cap(_count(n, 'road'))} {verb} the water on {_count(n, c + ' bridge')}.",
        f"The {b} banks of the river are joined by {_count(n, 'bridge')}.",
        f"A {c} bridge spans a {o} river.",
    ]


_SIDES = ("left", "right", "top", "bottom")
_OPPOSITE = {"left": "right", "right": "left", "top": "bottom", "bottom": "top"}


def _attrs_beach(rng: np.random.Generator) -> Attrs:
    return {"side": str(rng.choice(_SIDES)), "boats": int(rng.integers(0, 4))}


def _draw_beach(a: Attrs, rng: np.random.Generator) -> np.ndarray:
    img, d = _canvas(_jit((224, 202, 152), rng))
    edge = SIZE * rng.uniform(0.38, 0.52) + _wave(SIZE + 1, rng, 3.5, (20, 45))
    poly = [(0.0, 0.0)] + [(float(edge[y]), float(y)) for y in range(0, SIZE + 1, 4)]
    poly += [(0.0, float(SIZE))]
    d.polygon(poly, fill=_jit((38, 98, 168), rng))
    d.line(poly[1:-1], fill=(236, 240, 240), width=3)  # surf line
    for _ in range(int(a["boats"])):
        bx, by = rng.uniform(6, float(edge.min()) - 16), rng.uniform(8, SIZE - 8)
        d.ellipse((bx, by - 2, bx + 9, by + 2), fill=(245, 245, 245))
    for _ in range(14):  # footprints and debris on the sand
        px, py = rng.uniform(float(edge.max()) + 6, SIZE), rng.uniform(0, SIZE)
        d.point((px, py), fill=(190, 170, 130))
    turn = {
        "left": None,
        "right": Image.Transpose.FLIP_LEFT_RIGHT,
        "top": Image.Transpose.ROTATE_270,
        "bottom": Image.Transpose.ROTATE_90,
    }[str(a["side"])]
    return _texture(img if turn is None else img.transpose(turn), rng, grain=5, mottle=5)


def _caps_beach(a: Attrs) -> list[str]:
    side, boats = str(a["side"]), int(a["boats"])
    float_ = "floats" if boats == 1 else "float"
    at = f"on the {side}" if side in ("left", "right") else f"at the {side}"
    boat_caps = (
        [
            "There are no boats near the beach.",
            f"An empty beach with the sea {at}.",
        ]
        if boats == 0
        else [
            f"{_cap(_count(boats, 'white boat'))} {float_} on the sea near the beach.",
            f"The sea beside the beach carries {_count(boats, 'small boat')}.",
        ]
    )
    return [
        f"The sea is {at} of a yellow beach.",
        f"A sandy beach with the blue sea {at}.",
        f"White waves wash the beach from the {side}.",
        "Yellow sand and blue water meet on the beach.",
        f"Part of the beach is covered by sea on the {side} side.",
        f"A long beach lies to the {_OPPOSITE[side]} of the sea.",
        *boat_caps,
    ]


def _attrs_desert(rng: np.random.Generator) -> Attrs:
    return {
        "tone": str(rng.choice(["yellow", "orange"])),
        "orientation": str(rng.choice(["horizontal", "vertical", "diagonal"])),
        "shrubs": bool(rng.integers(0, 2)),
    }


def _draw_desert(a: Attrs, rng: np.random.Generator) -> np.ndarray:
    size = _big(str(a["orientation"]))
    base = (216, 186, 122) if a["tone"] == "yellow" else (206, 142, 82)
    base = _jit(base, rng, 8)
    img, d = _canvas(base, size)
    y = rng.uniform(2, 10)
    while y < size:
        ys = y + _wave(size + 1, rng, rng.uniform(2, 5), (30, 70))
        crest = [(float(x), float(ys[x])) for x in range(0, size + 1, 4)]
        d.line(crest, fill=_shade(base, 26), width=3)
        d.line([(x, yy + 3) for x, yy in crest], fill=_shade(base, -34), width=2)
        y += rng.uniform(10, 17)
    if a["shrubs"]:
        for x, yy in rng.uniform(0, size, (40, 2)):
            d.ellipse((x - 1.5, yy - 1.5, x + 1.5, yy + 1.5), fill=(72, 96, 48))
    return _texture(_orient(img, str(a["orientation"])), rng, grain=4, mottle=5)


def _caps_desert(a: Attrs) -> list[str]:
    t, o = str(a["tone"]), str(a["orientation"])
    shrub_caps = (
        ["A few green shrubs dot the desert.", f"Some small plants grow on the {t} desert."]
        if a["shrubs"]
        else ["The desert is bare without any plants.", f"No vegetation grows on the {t} desert."]
    )
    return [
        f"A {t} desert with {o} dunes.",
        f"Sand dunes run {_FLOW[o]} across the desert.",
        f"Ripples of {t} sand cover the desert.",
        f"This {t} desert is full of {o} ridges.",
        f"Many parallel dunes lie {o}ly in the desert.",
        *shrub_caps,
    ]


def _attrs_residential(rng: np.random.Generator) -> Attrs:
    return {
        "rows": int(rng.integers(2, 5)),
        "roof": str(rng.choice(["red", "grey", "mixed"])),
        "orientation": str(rng.choice(["horizontal", "vertical"])),
    }


def _draw_residential(a: Attrs, rng: np.random.Generator) -> np.ndarray:
    img, d = _canvas(_jit((118, 148, 92), rng))
    rows = int(a["rows"])
    band = SIZE / rows
    house = int(min(16, band - 12))
    for r in range(rows):
        y0 = r * band
        d.rectangle((0, y0, SIZE, y0 + 5), fill=_jit((156, 156, 152), rng, 6))  # street
        x = rng.uniform(0, 6)
        while x + 10 < SIZE:
            roof = str(a["roof"])
            if roof == "mixed":
                roof = str(rng.choice(["red", "grey", "brown"]))
            hy = y0 + 8 + rng.uniform(0, max(0.0, band - 10 - house))
            d.rectangle((x + 2, hy + 2, x + 12, hy + house + 2), fill=(60, 70, 50))  # shadow
            d.rectangle((x, hy, x + 10, hy + house), fill=_jit(COLOURS[roof], rng, 10))
            x += rng.uniform(14, 18)
    return _texture(_orient(img, str(a["orientation"])), rng, grain=5, mottle=4)


def _caps_residential(a: Attrs) -> list[str]:
    rows, o = int(a["rows"]), str(a["orientation"])
    roof = "red and grey" if a["roof"] == "mixed" else str(a["roof"])
    return [
        f"A residential area with {_count(rows, 'row')} of houses with {roof} roofs.",
        f"{_cap(_count(rows, 'row'))} of houses line {o} streets in the residential area.",
        f"Many houses with {roof} roofs are in a residential area.",
        f"The residential area has {o} streets.",
        f"Houses with {roof} roofs are neatly arranged in this residential district.",
        f"A residential area with {_count(rows, 'row')} of buildings along {o} roads.",
        f"Small residential houses stand in {o} rows.",
    ]


def _attrs_airport(rng: np.random.Generator) -> Attrs:
    return {
        "runways": int(rng.integers(1, 3)),
        "planes": int(rng.integers(1, 5)),
        "orientation": str(rng.choice(["horizontal", "vertical"])),
    }


def _draw_plane(d: ImageDraw.ImageDraw, x: float, y: float) -> None:
    white = (242, 242, 242)
    d.rectangle((x - 1.5, y - 8, x + 1.5, y + 8), fill=white)  # fuselage
    d.polygon([(x - 9, y + 1), (x + 9, y + 1), (x + 1.5, y - 3), (x - 1.5, y - 3)], fill=white)
    d.rectangle((x - 4, y + 6, x + 4, y + 8), fill=white)  # tail


def _draw_airport(a: Attrs, rng: np.random.Generator) -> np.ndarray:
    img, d = _canvas(_jit((162, 166, 122), rng))
    d.rectangle((6, 8, 122, 50), fill=_jit((152, 152, 150), rng, 6))  # apron
    y = rng.uniform(64, 76)
    for _ in range(int(a["runways"])):
        d.rectangle((0, y, SIZE, y + 14), fill=_jit((84, 84, 90), rng, 6))
        for x in range(4, SIZE, 16):  # centreline dashes
            d.line((x, y + 7, x + 8, y + 7), fill=(230, 230, 230), width=1)
        d.line((50, 50, 50, y), fill=(110, 110, 112), width=4)  # taxiway
        y += 28
    slots = rng.choice(4, size=int(a["planes"]), replace=False)
    for s in sorted(slots):
        _draw_plane(d, 20 + 28 * float(s) + rng.uniform(-3, 3), 29 + rng.uniform(-4, 4))
    return _texture(_orient(img, str(a["orientation"])), rng, grain=4, mottle=4)


def _caps_airport(a: Attrs) -> list[str]:
    r, p, o = int(a["runways"]), int(a["planes"]), str(a["orientation"])
    runway = "runway" if r == 1 else "runways"
    wait = "waits" if p == 1 else "wait"
    return [
        f"{_cap(_count(p, 'white plane'))} {'is' if p == 1 else 'are'} parked at the airport.",
        f"An airport with {_count(r, o + ' runway')}.",
        f"There {'is' if p == 1 else 'are'} {_count(p, 'plane')} near the {runway} of the airport.",
        f"The airport has {_count(r, 'grey runway')} running {o}ly.",
        f"{_cap(_count(p, 'airplane'))} and {_count(r, 'runway')} in an airport.",
        f"Planes stand on the apron beside the {o} {runway} of the airport.",
        f"An airport where {_count(p, 'aircraft', 'aircraft')} {wait} by {_count(r, 'runway')}.",
    ]


def _attrs_parking(rng: np.random.Generator) -> Attrs:
    return {
        "rows": int(rng.integers(2, 5)),
        "fullness": str(rng.choice(["full", "half empty"])),
        "cars": str(rng.choice(["colourful", "white"])),
        "orientation": str(rng.choice(["horizontal", "vertical"])),
    }


def _draw_parking(a: Attrs, rng: np.random.Generator) -> np.ndarray:
    img, d = _canvas(_jit((102, 102, 108), rng, 6))
    rows = int(a["rows"])
    band = SIZE / rows
    p_car = 0.9 if a["fullness"] == "full" else 0.45
    palette = (
        ["red", "blue", "white", "black", "silver", "yellow"]
        if a["cars"] == "colourful"
        else ["white", "white", "silver"]
    )
    for r in range(rows):
        y0 = r * band + (band - 12) / 2
        d.line((0, y0 - 2, SIZE, y0 - 2), fill=(222, 222, 222), width=1)
        for x in range(3, SIZE - 6, 9):
            d.line((x - 1.5, y0, x - 1.5, y0 + 12), fill=(210, 210, 210), width=1)
            if rng.random() < p_car:
                colour = COLOURS[str(rng.choice(palette))]
                d.rectangle((x, y0 + 1, x + 5, y0 + 11), fill=_jit(colour, rng, 10))
    return _texture(_orient(img, str(a["orientation"])), rng, grain=4, mottle=3)


def _caps_parking(a: Attrs) -> list[str]:
    rows, full, o = int(a["rows"]), str(a["fullness"]), str(a["orientation"])
    cars = "Cars of many colours" if a["cars"] == "colourful" else "White cars"
    state = (
        "The parking lot is almost full."
        if full == "full"
        else "About half of the spaces in the parking lot are empty."
    )
    return [
        f"A parking lot with {_count(rows, 'row')} of cars.",
        state,
        f"{cars} are parked in {_count(rows, o + ' row')} in the parking lot.",
        f"Many cars are parked {o}ly in a {full} parking lot.",
        f"{cars} fill a {full} parking lot.",
        f"A {full} parking lot with {o} rows.",
        f"The parking lot holds {_count(rows, 'long row')} of parked cars.",
    ]


def _attrs_baseballfield(rng: np.random.Generator) -> Attrs:
    n = int(rng.integers(1, 3))
    pos = str(rng.choice(["left", "centre", "right"])) if n == 1 else "side by side"
    return {
        "n": n,
        "position": pos,
        "trees": bool(rng.integers(0, 2)),
        "stands": bool(rng.integers(0, 2)),
    }


def _draw_baseballfield(a: Attrs, rng: np.random.Generator) -> np.ndarray:
    img, d = _canvas(_jit((72, 150, 66), rng, 8))
    if a["n"] == 1:
        radius = 58.0
        homes = [({"left": 44, "centre": 64, "right": 84}[str(a["position"])], 112.0)]
    else:
        radius = 40.0
        homes = [(34.0, 102.0), (94.0, 102.0)]
    for hx, hy in homes:
        hx += rng.uniform(-3, 3)
        box = (hx - radius, hy - radius, hx + radius, hy + radius)
        d.pieslice(box, 225, 315, fill=_jit((96, 176, 82), rng, 6))  # outfield
        r2 = radius * 0.58
        d.pieslice((hx - r2, hy - r2, hx + r2, hy + r2), 225, 315, fill=_jit((188, 136, 88), rng))
        s = r2 * 0.42
        diamond = [(hx, hy - 3), (hx + s, hy - s - 3), (hx, hy - 2 * s - 3), (hx - s, hy - s - 3)]
        d.polygon(diamond, fill=(92, 166, 78))  # infield grass
        k = radius / math.sqrt(2)
        d.line((hx, hy, hx - k, hy - k), fill=(240, 240, 240), width=1)
        d.line((hx, hy, hx + k, hy - k), fill=(240, 240, 240), width=1)
        if a["stands"]:  # bleachers behind home plate
            d.rectangle((hx - 14, hy + 4, hx + 14, hy + 12), fill=_jit((112, 112, 118), rng, 6))
    if a["trees"]:
        for x in np.linspace(4, SIZE - 4, 14):
            r = rng.uniform(3, 5)
            d.ellipse((x - r, 2, x + r, 2 + 2 * r), fill=(40, 96, 44))
    return _texture(img, rng, grain=5, mottle=4)


def _caps_baseballfield(a: Attrs) -> list[str]:
    n, pos = int(a["n"]), str(a["position"])
    where = "side by side" if n == 2 else ("in the centre" if pos == "centre" else f"on the {pos}")
    if a["trees"]:
        trees = [
            "Some trees grow along the edge of the baseball field.",
            "A line of trees stands behind the baseball diamond.",
        ]
    else:
        trees = [
            "The baseball field is surrounded by open lawn.",
            "No trees stand near the baseball field.",
        ]
    if a["stands"]:
        trees.append("Grey stands are built behind home plate of the baseball field.")
    return [
        f"{_cap(_count(n, 'baseball field'))} with brown diamonds {where}."
        if n == 2
        else f"A baseball field with a brown diamond {where}.",
        f"{_cap(_count(n, 'baseball field'))} on green grass.",
        f"The brown infield of the baseball field is {where}."
        if n == 1
        else "Two brown baseball infields lie next to each other.",
        f"There {'is' if n == 1 else 'are'} {_count(n, 'baseball diamond')} {where}.",
        f"A green lawn with {_count(n, 'baseball field')}.",
        *trees,
    ]


def _attrs_storagetanks(rng: np.random.Generator) -> Attrs:
    size = str(rng.choice(["large", "small"]))
    arrangement = str(rng.choice(["row", "grid"]))
    cap = 4 if size == "large" else 6  # as many as fit in one row across the image
    n = int(rng.integers(2, cap + 1)) if arrangement == "row" else int(rng.integers(4, 10))
    ground = str(rng.choice(["grey", "brown"]))
    return {"n": n, "size": size, "arrangement": arrangement, "ground": ground}


def _draw_storagetanks(a: Attrs, rng: np.random.Generator) -> np.ndarray:
    ground = (150, 148, 140) if a["ground"] == "grey" else (150, 118, 86)
    img, d = _canvas(_jit(ground, rng, 8))
    n = int(a["n"])
    r = rng.uniform(11, 13) if a["size"] == "large" else rng.uniform(6, 7.5)
    step = 2 * r + 5
    if a["arrangement"] == "row":
        cols, nrows = n, 1
    else:
        cols = math.ceil(math.sqrt(n))
        nrows = math.ceil(n / cols)
    x0 = (SIZE - step * (cols - 1)) / 2 + rng.uniform(-4, 4)
    y0 = (SIZE - step * (nrows - 1)) / 2 + rng.uniform(-4, 4)
    for i in range(n):
        cx, cy = x0 + step * (i % cols), y0 + step * (i // cols)
        d.ellipse((cx - r + 3, cy - r + 3, cx + r + 3, cy + r + 3), fill=_shade(ground, -50))
        d.ellipse((cx - r, cy - r, cx + r, cy + r), fill=(236, 236, 232), outline=(196, 196, 196))
        d.ellipse((cx - 1.5, cy - 1.5, cx + 1.5, cy + 1.5), fill=(180, 180, 180))
    return _texture(img, rng, grain=4, mottle=4)


def _caps_storagetanks(a: Attrs) -> list[str]:
    n, s, g = int(a["n"]), str(a["size"]), str(a["ground"])
    arr = "a row" if a["arrangement"] == "row" else "a grid"
    return [
        f"{_cap(_count(n, 'white storage tank'))} stand on {g} ground.",
        f"There are {_count(n, s + ' round storage tank')}.",
        f"{_cap(_count(n, s + ' white tank'))} are arranged in {arr}.",
        f"Some storage tanks are arranged in {arr} on {g} ground.",
        f"{_cap(_count(n, 'round white oil tank'))} in an industrial yard.",
        f"The {s} storage tanks form {arr}.",
        f"A group of {_word(n)} {s} tanks on {g} land.",
    ]


def _attrs_pond(rng: np.random.Generator) -> Attrs:
    n = int(rng.integers(1, 3))
    pos = (
        str(rng.choice(["centre", "left", "right", "top", "bottom"])) if n == 1 else "side by side"
    )
    return {"n": n, "water": str(rng.choice(["blue", "dark green"])), "position": pos}


def _draw_pond(a: Attrs, rng: np.random.Generator) -> np.ndarray:
    meadow = _jit((116, 166, 82), rng, 8)
    img, d = _canvas(meadow)
    for x, y in rng.uniform(0, SIZE, (60, 2)):  # tufts of grass
        d.ellipse((x - 2, y - 2, x + 2, y + 2), fill=_shade(meadow, -22))
    if a["n"] == 1:
        offsets = {"centre": (0, 0), "left": (-28, 0), "right": (28, 0), "top": (0, -28)}
        dx, dy = offsets.get(str(a["position"]), (0, 28))
        ponds = [(64.0 + dx, 64.0 + dy, 27.0)]
    else:
        ponds = [
            (34.0, 64.0 + rng.uniform(-14, 14), 20.0),
            (94.0, 64.0 + rng.uniform(-14, 14), 20.0),
        ]
    water = _jit(COLOURS[str(a["water"])], rng, 8)
    for cx, cy, radius in ponds:
        theta = np.linspace(0, 2 * math.pi, 40, endpoint=False)
        wobble = 1 + 0.14 * np.sin(3 * theta + rng.uniform(0, 6.3)) + rng.uniform(-0.05, 0.05, 40)
        rr = radius * wobble
        xs, ys = cx + rr * np.cos(theta), cy + rr * np.sin(theta)
        poly = [(float(x), float(y)) for x, y in zip(xs, ys, strict=True)]
        d.polygon(poly, fill=water, outline=(70, 104, 56))
    return _texture(img, rng, grain=5, mottle=4)


def _caps_pond(a: Attrs) -> list[str]:
    n, w, pos = int(a["n"]), str(a["water"]), str(a["position"])
    where = "side by side" if n == 2 else ("in the centre" if pos == "centre" else f"at the {pos}")
    return [
        f"{_cap(_count(n, w + ' pond'))} {'lies' if n == 1 else 'lie'} {where} of a meadow."
        if n == 1
        else f"Two {w} ponds lie {where} in a meadow.",
        f"{_cap(_count(n, 'pond'))} surrounded by green grass.",
        f"There {'is' if n == 1 else 'are'} {_count(n, w + ' pond')} in the field.",
        f"The water of the pond{'s' if n == 2 else ''} is {w}.",
        f"A meadow with {_count(n, 'small pond')} {where}.",
        f"{_cap(_count(n, 'irregular pond'))} of {w} water on green land.",
        f"Green grass grows around the {w} pond{'s' if n == 2 else ''}.",
    ]


@dataclass(frozen=True)
class _SceneKind:
    attrs: Callable[[np.random.Generator], Attrs]
    draw: Callable[[Attrs, np.random.Generator], np.ndarray]
    captions: Callable[[Attrs], list[str]]


_SCENES: dict[str, _SceneKind] = {
    name: _SceneKind(*(globals()[f"_{part}_{name}"] for part in ("attrs", "draw", "caps")))
    for name in SCENE_CLASSES
}


def _tokens(raw: str) -> list[str]:
    """Karpathy tokens: the lower-cased words of a caption, without punctuation."""
    return re.findall(r"[a-z0-9]+", raw.lower())


# ---------------------------------------------------------------------------------------
# Benchmark layout
# ---------------------------------------------------------------------------------------


@dataclass
class _Entry:
    """One image to be written: its pixels or bytes, captions and bookkeeping."""

    cls: str
    attrs: Attrs
    ext: str
    captions: list[str]
    pixels: np.ndarray | None = None
    data: bytes | None = None
    filename: str = ""
    notes: dict[str, object] = field(default_factory=dict)


def _encode(pixels: np.ndarray, ext: str, quality: int = JPEG_QUALITY) -> bytes:
    buf = io.BytesIO()
    img = Image.fromarray(pixels, mode="RGB")
    if ext == ".jpg":
        img.save(buf, format="JPEG", quality=quality)
    else:
        img.save(buf, format="TIFF")  # PIL writes uncompressed TIFF without a timestamp
    return buf.getvalue()


def _decode(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as img:
        return np.asarray(img.convert("RGB"))


def _pick_captions(
    candidates: list[str], k: int, rng: np.random.Generator, n_total: int = SENTENCES_PER_IMAGE
) -> list[str]:
    """Choose ``k`` distinct captions and pad to ``n_total`` with exact copies, RSICD-style."""
    unique = list(dict.fromkeys(candidates))
    if len(unique) < k:
        raise AssertionError(f"only {len(unique)} distinct candidate captions, need {k}")
    chosen = [unique[i] for i in rng.choice(len(unique), size=k, replace=False)]
    pads = [chosen[i] for i in rng.integers(0, k, size=n_total - k)] if n_total > k else []
    return chosen + pads


def _check_int(name: str, value: object, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise RsmEvalError(f"generate_benchmark: {name} must be an integer >= {low}, got {value!r}")
    return int(value)


def _balanced_classes(n: int, rng: np.random.Generator) -> list[str]:
    """Every class about equally often, in shuffled order."""
    k = len(SCENE_CLASSES)
    extra = rng.choice(k, size=n % k, replace=False)
    pool = list(SCENE_CLASSES) * (n // k) + [SCENE_CLASSES[i] for i in sorted(extra)]
    return [pool[i] for i in rng.permutation(n)]


def generate_benchmark(
    out_dir: Path,
    *,
    seed: int = 0,
    name: str = "demo",
    n_train: int = 300,
    n_val: int = 50,
    n_test: int = 100,
    n_csv_images: int = 300,
    captions_per_csv_image: int = 2,
    n_padded: int = 5,
    n_shared_caption_sets: int = 3,
    n_exact_duplicates: int = 3,
    n_near_duplicates: int = 3,
) -> dict:
    """Write a synthetic Karpathy-style benchmark plus an RSM-ITD-style caption CSV.

    Layout under ``out_dir`` (replaced as a whole if it exists):
    ``dataset_{name}.json``, ``images/`` (every image of the JSON), ``RSMITD.csv`` and
    ``rsmitd_images/`` (every image of the CSV).

    Split sizes count every image in that split, planted duplicates included. Exact
    duplicates all go to the train split; near duplicates go alternately to train and the
    CSV (train first), and alternate between a brightness shift and a JPEG re-encoding.
    Each planted copy's captions are fresh draws describing the same scene.

    ``out_dir`` is built in a hidden sibling directory and renamed into place at the end.
    An existing ``out_dir`` is replaced only if it is empty or holds a ``dataset_*.json``
    (a previous benchmark), so that a wrong path cannot wipe unrelated data.

    Returns a JSON-serialisable summary: ``name``, ``seed``, ``classes``, ``files``,
    ``splits`` (per split: ``images``, ``captions``, ``distinct_captions``), ``csv`` (the
    same counts for the CSV), ``duplicates`` (``{"test", "copy", "kind"}`` with ``copy``
    relative to ``out_dir``), ``padded`` (file names with fewer than five distinct
    captions) and ``shared_caption_sets`` (lists of file names sharing one caption set).

    Raises :class:`RsmEvalError` for invalid arguments or an unsafe ``out_dir``.
    """
    seed = _check_int("seed", seed, 0)
    n_train = _check_int("n_train", n_train, 0)
    n_val = _check_int("n_val", n_val, 0)
    n_test = _check_int("n_test", n_test, 1)
    n_csv_images = _check_int("n_csv_images", n_csv_images, 1)
    captions_per_csv_image = _check_int("captions_per_csv_image", captions_per_csv_image, 1)
    n_padded = _check_int("n_padded", n_padded, 0)
    n_shared = _check_int("n_shared_caption_sets", n_shared_caption_sets, 0)
    n_exact = _check_int("n_exact_duplicates", n_exact_duplicates, 0)
    n_near = _check_int("n_near_duplicates", n_near_duplicates, 0)
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise RsmEvalError(
            f"generate_benchmark: name must be letters, digits, '_', '-' or '.', got {name!r}"
        )
    if captions_per_csv_image > SENTENCES_PER_IMAGE:
        raise RsmEvalError(
            "generate_benchmark: captions_per_csv_image must be <= "
            f"{SENTENCES_PER_IMAGE}, got {captions_per_csv_image}"
        )
    n_near_train = (n_near + 1) // 2
    n_near_csv = n_near // 2
    if n_exact + n_near > n_test:
        raise RsmEvalError(
            "generate_benchmark: n_exact_duplicates + n_near_duplicates "
            f"({n_exact + n_near}) must not exceed n_test ({n_test}): each copies its own "
            "test image"
        )
    if n_exact + n_near_train > n_train:
        raise RsmEvalError(
            f"generate_benchmark: n_train ({n_train}) must hold the {n_exact} exact and "
            f"{n_near_train} near duplicates planted in the train split"
        )
    if n_near_csv > n_csv_images:
        raise RsmEvalError(
            f"generate_benchmark: n_csv_images ({n_csv_images}) must hold the {n_near_csv} "
            "near duplicates planted in the CSV set"
        )
    regular = {"train": n_train - n_exact - n_near_train, "val": n_val, "test": n_test}
    pair_slots = [(s, 2 * k) for s in SPLITS for k in range(regular[s] // 2)]
    if n_shared > len(pair_slots):
        raise RsmEvalError(
            f"generate_benchmark: n_shared_caption_sets ({n_shared}) exceeds the "
            f"{len(pair_slots)} pairs of neighbouring images available"
        )
    if n_padded > sum(regular.values()) - 2 * n_shared:
        raise RsmEvalError(
            f"generate_benchmark: n_padded ({n_padded}) exceeds the "
            f"{sum(regular.values()) - 2 * n_shared} images not in a shared caption set"
        )
    out_dir = Path(out_dir)
    _check_replaceable(out_dir)

    # Independent streams, so that e.g. the CSV draws do not depend on the split sizes.
    layout_rng = np.random.default_rng([seed, 0])

    # --- layout: classes per slot, shared pairs, padded slots, duplicate sources ---
    classes = {s: _balanced_classes(regular[s], layout_rng) for s in SPLITS}
    chosen_pairs = sorted(
        (pair_slots[i] for i in layout_rng.choice(len(pair_slots), size=n_shared, replace=False)),
        key=lambda p: (SPLITS.index(p[0]), p[1]),
    )
    shared_second: set[tuple[str, int]] = set()
    for split, pos in chosen_pairs:
        classes[split][pos + 1] = classes[split][pos]
        shared_second.add((split, pos + 1))
    in_pairs = {(s, p) for s, p in chosen_pairs} | shared_second
    free = [(s, p) for s in SPLITS for p in range(regular[s]) if (s, p) not in in_pairs]
    padded_slots = {free[i] for i in layout_rng.choice(len(free), size=n_padded, replace=False)}
    picks = layout_rng.choice(regular["test"], size=n_exact + n_near, replace=False)
    dup_sources = [int(i) for i in picks]

    # --- scenes of the Karpathy splits ---
    seen_sets: set[frozenset[str]] = set()
    entries: dict[str, list[_Entry]] = {s: [] for s in SPLITS}
    slot_no = 0
    for split in SPLITS:
        for pos in range(regular[split]):
            rng = np.random.default_rng([seed, 1, slot_no])
            slot_no += 1
            cls = classes[split][pos]
            if (split, pos) in shared_second:
                first = entries[split][pos - 1]
                # UCM-style: a neighbouring tile of the same scene type and caption set.
                pixels = _SCENES[cls].draw(first.attrs, rng)
                entries[split].append(
                    _Entry(cls, first.attrs, _ext(rng), list(first.captions), pixels)
                )
                continue
            n_distinct = int(rng.integers(1, 5)) if (split, pos) in padded_slots else 5
            attrs, captions = _unique_scene(cls, n_distinct, rng, seen_sets)
            pixels = _SCENES[cls].draw(attrs, rng)
            entries[split].append(_Entry(cls, attrs, _ext(rng), captions, pixels))

    # --- planted duplicates of test images ---
    dup_train: list[_Entry] = []
    dup_csv: list[_Entry] = []
    for j, src_pos in enumerate(dup_sources):
        rng = np.random.default_rng([seed, 3, j])
        src = entries["test"][src_pos]
        src.data = _encode(src.pixels, src.ext)
        attrs = src.attrs
        if j < n_exact:
            _, captions = _unique_scene(src.cls, 5, rng, seen_sets, attrs)
            copy = _Entry(src.cls, attrs, src.ext, captions, data=src.data)
            copy.notes = {"source": src, "kind": "exact", "folder": "images"}
            dup_train.append(copy)
            continue
        k = j - n_exact
        to_train = k % 2 == 0
        source_pixels = _decode(src.data)
        if k % 4 in (0, 1):
            delta = int(rng.integers(3, 6)) * (1 if rng.random() < 0.5 else -1)
            shifted = np.clip(source_pixels.astype(np.int16) + delta, 0, 255).astype(np.uint8)
            ext, data = src.ext, _encode(shifted, src.ext)
        else:
            ext, data = ".jpg", _encode(source_pixels, ".jpg", NEAR_JPEG_QUALITY)
        if to_train:
            _, captions = _unique_scene(src.cls, 5, rng, seen_sets, attrs)
        else:
            candidates = _SCENES[src.cls].captions(attrs)
            captions = _pick_captions(
                candidates, captions_per_csv_image, rng, captions_per_csv_image
            )
        copy = _Entry(src.cls, attrs, ext, captions, data=data)
        copy.notes = {"source": src, "kind": "near"}
        copy.notes["folder"] = "images" if to_train else "rsmitd_images"
        (dup_train if to_train else dup_csv).append(copy)

    # Insert train copies only at even boundaries, so no shared pair is split apart.
    train = _insert_at_even(entries["train"], dup_train, layout_rng)
    karpathy = [(e, "train") for e in train]
    karpathy += [(e, s) for s in ("val", "test") for e in entries[s]]

    # --- CSV scenes (fresh draws) ---
    csv_rng = np.random.default_rng([seed, 2])
    csv_classes = _balanced_classes(n_csv_images - n_near_csv, csv_rng)
    csv_entries: list[_Entry] = []
    for i, cls in enumerate(csv_classes):
        rng = np.random.default_rng([seed, 2, i])
        attrs = _SCENES[cls].attrs(rng)
        captions = _pick_captions(
            _SCENES[cls].captions(attrs), captions_per_csv_image, rng, captions_per_csv_image
        )
        csv_entries.append(_Entry(cls, attrs, _ext(rng), captions, _SCENES[cls].draw(attrs, rng)))
    csv_entries = _insert_at_even(csv_entries, dup_csv, csv_rng, every=1)

    # --- names: per-class counters across both image sets, so no name is reused ---
    counters = dict.fromkeys(SCENE_CLASSES, 0)
    for entry, _ in karpathy:
        counters[entry.cls] += 1
        entry.filename = f"{entry.cls}_{counters[entry.cls]}{entry.ext}"
    for entry in csv_entries:
        counters[entry.cls] += 1
        entry.filename = f"{entry.cls}_{counters[entry.cls]}{entry.ext}"

    # --- write into a temporary sibling, then swap into place ---
    tmp = out_dir.parent / f".{out_dir.name}.partial"
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    if tmp.exists():
        shutil.rmtree(tmp)
    try:
        doc = _write_tree(tmp, name, karpathy, csv_entries)
        _swap_into_place(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise

    return _summary(name, seed, doc, csv_entries, dup_train + dup_csv, padded_slots, entries,
                    chosen_pairs)  # fmt: skip


def _ext(rng: np.random.Generator) -> str:
    """RSITMD/UCM ship TIFF, RSICD ships JPEG: mix both."""
    return ".tif" if rng.random() < 0.5 else ".jpg"


def _unique_scene(
    cls: str,
    n_distinct: int,
    rng: np.random.Generator,
    seen: set[frozenset[str]],
    attrs: Attrs | None = None,
) -> tuple[Attrs, list[str]]:
    """Draw attributes and captions whose caption set no earlier image has.

    Only the planted groups may share a caption set, so a validator's count of shared
    sets equals what the summary reports.
    """
    kind = _SCENES[cls]
    for _ in range(200):
        a = attrs if attrs is not None else kind.attrs(rng)
        captions = _pick_captions(kind.captions(a), n_distinct, rng)
        key = frozenset(captions)
        if key not in seen:
            seen.add(key)
            return a, captions
    raise AssertionError(f"could not draw a new caption set for class {cls}")


def _insert_at_even(
    base: list[_Entry], extra: list[_Entry], rng: np.random.Generator, every: int = 2
) -> list[_Entry]:
    """Insert ``extra`` into ``base`` at random boundaries that are multiples of ``every``."""
    points = sorted(int(p) * every for p in rng.integers(0, len(base) // every + 1, len(extra)))
    out: list[_Entry] = []
    queue = list(zip(points, extra, strict=True))
    for i, entry in enumerate(base):
        while queue and queue[0][0] == i:
            out.append(queue.pop(0)[1])
        out.append(entry)
    out.extend(e for _, e in queue)
    return out


def _check_replaceable(out_dir: Path) -> None:
    if not out_dir.exists():
        return
    if not out_dir.is_dir():
        raise RsmEvalError(f"generate_benchmark: {out_dir} exists and is not a directory")
    if any(out_dir.iterdir()) and not any(out_dir.glob("dataset_*.json")):
        raise RsmEvalError(
            f"generate_benchmark: refusing to replace {out_dir}: it is not empty and holds no "
            "dataset_*.json of an earlier benchmark"
        )


def _swap_into_place(tmp: Path, out_dir: Path) -> None:
    if not out_dir.exists():
        tmp.rename(out_dir)
        return
    old = out_dir.parent / f".{out_dir.name}.old"
    if old.exists():
        shutil.rmtree(old)
    out_dir.rename(old)
    tmp.rename(out_dir)
    shutil.rmtree(old)


def _write_tree(
    root: Path, name: str, karpathy: list[tuple[_Entry, str]], csv_entries: list[_Entry]
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
            entry.data = _encode(entry.pixels, entry.ext)
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
            entry.data = _encode(entry.pixels, entry.ext)
        (csv_dir / entry.filename).write_bytes(entry.data)
    with (root / "RSMITD.csv").open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(["filepath", "title"])
        for entry in csv_entries:
            for title in entry.captions:
                writer.writerow([entry.filename, title])
    return doc


def _counts(groups: list[list[str]]) -> dict[str, int]:
    return {
        "images": len(groups),
        "captions": sum(len(g) for g in groups),
        "distinct_captions": len({c for g in groups for c in g}),
    }


def _summary(
    name: str,
    seed: int,
    doc: dict,
    csv_entries: list[_Entry],
    dups: list[_Entry],
    padded_slots: set[tuple[str, int]],
    entries: dict[str, list[_Entry]],
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
        src: _Entry = entry.notes["source"]
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
