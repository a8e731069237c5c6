"""Deterministic generator of a small, offline, remote-sensing-like retrieval benchmark.

The bundled demo of RSM-Eval must run without network access on a small CPU, so this
package draws synthetic aerial scenes (128x128 RGB, numpy + PIL) for twelve land-cover
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

The package, in reading order: :mod:`.classes` (the scene classes as data: each class's
attribute table, drawer and captioner), :mod:`.primitives` (canvas, colours, texture, the
image codec), :mod:`.drawers`, :mod:`.captions`, :mod:`.benchmark` (the generator in named
steps) and :mod:`.files` (writing and the summary).
"""

from .benchmark import generate_benchmark
from .classes import SCENE_CLASSES, SCENES, SceneClass, class_of
from .files import SENTENCES_PER_IMAGE, SPLITS
from .primitives import COLOURS, JPEG_QUALITY, NEAR_JPEG_QUALITY, SIZE, decode, encode

__all__ = [
    "COLOURS",
    "JPEG_QUALITY",
    "NEAR_JPEG_QUALITY",
    "SCENES",
    "SCENE_CLASSES",
    "SENTENCES_PER_IMAGE",
    "SIZE",
    "SPLITS",
    "SceneClass",
    "class_of",
    "decode",
    "encode",
    "generate_benchmark",
]
