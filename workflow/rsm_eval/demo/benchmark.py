"""The demo benchmark in named steps: check the sizes, lay out the slots, draw the scenes of
the Karpathy splits, plant the duplicates, draw the CSV scenes, name the files, write.

Every step draws from its own stream of ``numpy.random.default_rng([seed, ...])``, so that,
e.g., the CSV draws do not depend on the split sizes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import RsmEvalError
from .classes import SCENE_CLASSES, SCENES
from .files import SENTENCES_PER_IMAGE, SPLITS, Entry, check_replaceable, summary, write_benchmark
from .primitives import NEAR_JPEG_QUALITY, Attrs, decode, encode

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")

Slot = tuple[str, int]
"""A split and a position in it."""


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
    sizes = _Sizes.checked(
        seed=seed,
        name=name,
        n_train=n_train,
        n_val=n_val,
        n_test=n_test,
        n_csv_images=n_csv_images,
        captions_per_csv_image=captions_per_csv_image,
        n_padded=n_padded,
        n_shared=n_shared_caption_sets,
        n_exact=n_exact_duplicates,
        n_near=n_near_duplicates,
    )
    out_dir = Path(out_dir)
    check_replaceable(out_dir)
    layout = _Layout.drawn(sizes)
    seen_sets: set[frozenset[str]] = set()
    entries = _draw_splits(sizes, layout, seen_sets)
    dup_train, dup_csv = _plant_duplicates(sizes, entries["test"], layout.dup_sources, seen_sets)
    # Insert train copies only at even boundaries, so no shared pair is split apart.
    train = _insert_at_even(entries["train"], dup_train, layout.rng)
    karpathy = [(e, "train") for e in train]
    karpathy += [(e, s) for s in ("val", "test") for e in entries[s]]
    csv_entries = _draw_csv(sizes, dup_csv)
    _name_files([e for e, _ in karpathy] + csv_entries)
    doc = write_benchmark(out_dir, sizes.name, karpathy, csv_entries)
    return summary(sizes.name, sizes.seed, doc, csv_entries, dup_train + dup_csv,
                   layout.padded, entries, layout.pairs)  # fmt: skip


# --- step 1: sizes ----------------------------------------------------------------------


@dataclass(frozen=True)
class _Sizes:
    """The checked arguments of :func:`generate_benchmark`."""

    seed: int
    name: str
    n_train: int
    n_val: int
    n_test: int
    n_csv_images: int
    captions_per_csv_image: int
    n_padded: int
    n_shared: int
    n_exact: int
    n_near: int

    @property
    def n_near_train(self) -> int:
        return (self.n_near + 1) // 2

    @property
    def n_near_csv(self) -> int:
        return self.n_near // 2

    @property
    def regular(self) -> dict[str, int]:
        """Images per split that are not planted copies."""
        n_train = self.n_train - self.n_exact - self.n_near_train
        return {"train": n_train, "val": self.n_val, "test": self.n_test}

    @property
    def pair_slots(self) -> list[Slot]:
        """The first slots of the pairs of neighbouring images that may share captions."""
        return [(s, 2 * k) for s in SPLITS for k in range(self.regular[s] // 2)]

    @classmethod
    def checked(cls, *, name: object, **numbers: object) -> _Sizes:
        low = {"n_test": 1, "n_csv_images": 1, "captions_per_csv_image": 1}
        labels = {"n_shared": "n_shared_caption_sets", "n_exact": "n_exact_duplicates",
                  "n_near": "n_near_duplicates"}  # fmt: skip
        ints = {k: _check_int(labels.get(k, k), v, low.get(k, 0)) for k, v in numbers.items()}
        if not isinstance(name, str) or not _NAME_RE.match(name):
            raise RsmEvalError(
                f"generate_benchmark: name must be letters, digits, '_', '-' or '.', got {name!r}"
            )
        sizes = cls(name=name, **ints)
        sizes._check_room()
        return sizes

    def _check_room(self) -> None:
        """Every planted group must fit in the images it is planted among."""
        if self.captions_per_csv_image > SENTENCES_PER_IMAGE:
            raise RsmEvalError(
                "generate_benchmark: captions_per_csv_image must be <= "
                f"{SENTENCES_PER_IMAGE}, got {self.captions_per_csv_image}"
            )
        n_exact, n_near = self.n_exact, self.n_near
        if n_exact + n_near > self.n_test:
            raise RsmEvalError(
                "generate_benchmark: n_exact_duplicates + n_near_duplicates "
                f"({n_exact + n_near}) must not exceed n_test ({self.n_test}): each copies its "
                "own test image"
            )
        if n_exact + self.n_near_train > self.n_train:
            raise RsmEvalError(
                f"generate_benchmark: n_train ({self.n_train}) must hold the {n_exact} exact and "
                f"{self.n_near_train} near duplicates planted in the train split"
            )
        if self.n_near_csv > self.n_csv_images:
            raise RsmEvalError(
                f"generate_benchmark: n_csv_images ({self.n_csv_images}) must hold the "
                f"{self.n_near_csv} near duplicates planted in the CSV set"
            )
        if self.n_shared > len(self.pair_slots):
            raise RsmEvalError(
                f"generate_benchmark: n_shared_caption_sets ({self.n_shared}) exceeds the "
                f"{len(self.pair_slots)} pairs of neighbouring images available"
            )
        unpaired = sum(self.regular.values()) - 2 * self.n_shared
        if self.n_padded > unpaired:
            raise RsmEvalError(
                f"generate_benchmark: n_padded ({self.n_padded}) exceeds the "
                f"{unpaired} images not in a shared caption set"
            )


def _check_int(name: str, value: object, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise RsmEvalError(f"generate_benchmark: {name} must be an integer >= {low}, got {value!r}")
    return int(value)


# --- step 2: layout ---------------------------------------------------------------------


@dataclass
class _Layout:
    """Class per slot, shared pairs, padded slots and the test images to copy."""

    rng: np.random.Generator  # the layout stream; it also places the train copies later
    classes: dict[str, list[str]]
    pairs: list[Slot]
    shared_second: set[Slot]
    padded: set[Slot]
    dup_sources: list[int]

    @classmethod
    def drawn(cls, sizes: _Sizes) -> _Layout:
        rng = np.random.default_rng([sizes.seed, 0])
        regular, pair_slots = sizes.regular, sizes.pair_slots
        classes = {s: _balanced_classes(regular[s], rng) for s in SPLITS}
        pairs = sorted(
            (
                pair_slots[i]
                for i in rng.choice(len(pair_slots), size=sizes.n_shared, replace=False)
            ),
            key=lambda p: (SPLITS.index(p[0]), p[1]),
        )
        shared_second: set[Slot] = set()
        for split, pos in pairs:
            classes[split][pos + 1] = classes[split][pos]
            shared_second.add((split, pos + 1))
        in_pairs = {(s, p) for s, p in pairs} | shared_second
        free = [(s, p) for s in SPLITS for p in range(regular[s]) if (s, p) not in in_pairs]
        padded = {free[i] for i in rng.choice(len(free), size=sizes.n_padded, replace=False)}
        picks = rng.choice(regular["test"], size=sizes.n_exact + sizes.n_near, replace=False)
        return cls(rng, classes, pairs, shared_second, padded, [int(i) for i in picks])


def _balanced_classes(n: int, rng: np.random.Generator) -> list[str]:
    """Every class about equally often, in shuffled order."""
    k = len(SCENE_CLASSES)
    extra = rng.choice(k, size=n % k, replace=False)
    pool = list(SCENE_CLASSES) * (n // k) + [SCENE_CLASSES[i] for i in sorted(extra)]
    return [pool[i] for i in rng.permutation(n)]


# --- step 3: scenes of the Karpathy splits ----------------------------------------------


def _draw_splits(
    sizes: _Sizes, layout: _Layout, seen_sets: set[frozenset[str]]
) -> dict[str, list[Entry]]:
    entries: dict[str, list[Entry]] = {s: [] for s in SPLITS}
    slot_no = 0
    for split in SPLITS:
        for pos in range(sizes.regular[split]):
            rng = np.random.default_rng([sizes.seed, 1, slot_no])
            slot_no += 1
            cls = layout.classes[split][pos]
            if (split, pos) in layout.shared_second:
                first = entries[split][pos - 1]
                # UCM-style: a neighbouring tile of the same scene type and caption set.
                pixels = SCENES[cls].draw(first.attrs, rng)
                entries[split].append(
                    Entry(cls, first.attrs, _ext(rng), list(first.captions), pixels)
                )
                continue
            n_distinct = int(rng.integers(1, 5)) if (split, pos) in layout.padded else 5
            attrs, captions = _unique_scene(cls, n_distinct, rng, seen_sets)
            pixels = SCENES[cls].draw(attrs, rng)
            entries[split].append(Entry(cls, attrs, _ext(rng), captions, pixels))
    return entries


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
    kind = SCENES[cls]
    for _ in range(200):
        a = attrs if attrs is not None else kind.attrs(rng)
        captions = _pick_captions(kind.captions(a), n_distinct, rng)
        key = frozenset(captions)
        if key not in seen:
            seen.add(key)
            return a, captions
    raise AssertionError(f"could not draw a new caption set for class {cls}")


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


# --- step 4: planted duplicates of test images ------------------------------------------


def _plant_duplicates(
    sizes: _Sizes, test: list[Entry], dup_sources: list[int], seen_sets: set[frozenset[str]]
) -> tuple[list[Entry], list[Entry]]:
    """Exact copies (all to train), then near copies alternately to train and the CSV."""
    dup_train: list[Entry] = []
    dup_csv: list[Entry] = []
    for j, src_pos in enumerate(dup_sources):
        rng = np.random.default_rng([sizes.seed, 3, j])
        src = test[src_pos]
        src.data = encode(src.pixels, src.ext)
        if j < sizes.n_exact:
            _, captions = _unique_scene(src.cls, 5, rng, seen_sets, src.attrs)
            copy = Entry(src.cls, src.attrs, src.ext, captions, data=src.data)
            copy.notes = {"source": src, "kind": "exact", "folder": "images"}
            dup_train.append(copy)
            continue
        k = j - sizes.n_exact
        to_train = k % 2 == 0
        ext, data = _near_bytes(src, k, rng)
        if to_train:
            _, captions = _unique_scene(src.cls, 5, rng, seen_sets, src.attrs)
        else:
            n = sizes.captions_per_csv_image
            captions = _pick_captions(SCENES[src.cls].captions(src.attrs), n, rng, n)
        copy = Entry(src.cls, src.attrs, ext, captions, data=data)
        copy.notes = {"source": src, "kind": "near"}
        copy.notes["folder"] = "images" if to_train else "rsmitd_images"
        (dup_train if to_train else dup_csv).append(copy)
    return dup_train, dup_csv


def _near_bytes(src: Entry, k: int, rng: np.random.Generator) -> tuple[str, bytes]:
    """The ``k``-th near copy of a test image: a brightness shift or a JPEG re-encoding."""
    source_pixels = decode(src.data)
    if k % 4 in (0, 1):
        delta = int(rng.integers(3, 6)) * (1 if rng.random() < 0.5 else -1)
        shifted = np.clip(source_pixels.astype(np.int16) + delta, 0, 255).astype(np.uint8)
        return src.ext, encode(shifted, src.ext)
    return ".jpg", encode(source_pixels, ".jpg", NEAR_JPEG_QUALITY)


def _insert_at_even(
    base: list[Entry], extra: list[Entry], rng: np.random.Generator, every: int = 2
) -> list[Entry]:
    """Insert ``extra`` into ``base`` at random boundaries that are multiples of ``every``."""
    points = sorted(int(p) * every for p in rng.integers(0, len(base) // every + 1, len(extra)))
    out: list[Entry] = []
    queue = list(zip(points, extra, strict=True))
    for i, entry in enumerate(base):
        while queue and queue[0][0] == i:
            out.append(queue.pop(0)[1])
        out.append(entry)
    out.extend(e for _, e in queue)
    return out


# --- step 5: CSV scenes (fresh draws) ---------------------------------------------------


def _draw_csv(sizes: _Sizes, dup_csv: list[Entry]) -> list[Entry]:
    csv_rng = np.random.default_rng([sizes.seed, 2])
    n = sizes.captions_per_csv_image
    entries: list[Entry] = []
    for i, cls in enumerate(_balanced_classes(sizes.n_csv_images - sizes.n_near_csv, csv_rng)):
        rng = np.random.default_rng([sizes.seed, 2, i])
        kind = SCENES[cls]
        attrs = kind.attrs(rng)
        captions = _pick_captions(kind.captions(attrs), n, rng, n)
        entries.append(Entry(cls, attrs, _ext(rng), captions, kind.draw(attrs, rng)))
    return _insert_at_even(entries, dup_csv, csv_rng, every=1)


# --- step 6: names ----------------------------------------------------------------------


def _name_files(entries: list[Entry]) -> None:
    """Per-class counters across both image sets, in order, so that no name is reused."""
    counters = dict.fromkeys(SCENE_CLASSES, 0)
    for entry in entries:
        counters[entry.cls] += 1
        entry.filename = f"{entry.cls}_{counters[entry.cls]}{entry.ext}"
