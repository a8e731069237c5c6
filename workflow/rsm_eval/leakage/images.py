"""Decoding and hashing one image: the exact pixel digest, the perceptual hashes (pHash,
dHash; the package docstring defines them) and a thumbnail for the report."""

from __future__ import annotations

import base64
import hashlib
import io
import math
import warnings
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ..errors import RsmEvalError

_PHASH_SIZE = 32  # resize edge before the DCT
_PHASH_LOW = 8  # low-frequency block edge: 64 bits


def _dct_matrix(n: int, rows: int) -> np.ndarray:
    """First ``rows`` rows of the orthonormal DCT-II matrix of size n (float64)."""
    k = np.arange(rows)[:, None]
    i = np.arange(n)[None, :]
    m = np.cos(np.pi * (2 * i + 1) * k / (2 * n)) * math.sqrt(2.0 / n)
    m[0] /= math.sqrt(2.0)
    return m


_DCT = _dct_matrix(_PHASH_SIZE, _PHASH_LOW)
_BIT_WEIGHTS = [1 << (63 - j) for j in range(64)]


def _load_rgb(path: Path) -> np.ndarray:
    """Decoded 8-bit RGB pixels (h, w, 3) of an image file; RsmEvalError naming it if bad."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                return np.asarray(im.convert("RGB"))
    except FileNotFoundError:
        raise RsmEvalError(f"{path}: image file does not exist") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise RsmEvalError(f"{path}: image exceeds the decompression-bomb limit") from None
    except Exception as exc:  # PIL raises many types for corrupt files
        raise RsmEvalError(f"{path}: image cannot be decoded ({exc})") from None


def pixel_sha256(rgb: np.ndarray) -> str:
    """sha256 of an (h, w, 3) uint8 array: ``b"rgb8:{h}x{w}\\n"`` then the row-major bytes."""
    arr = np.ascontiguousarray(rgb, dtype=np.uint8)
    if arr.ndim != 3 or arr.shape[2] != 3:
        raise RsmEvalError(f"pixel_sha256: expected an (h, w, 3) RGB array, got {arr.shape}")
    h = hashlib.sha256(f"rgb8:{arr.shape[0]}x{arr.shape[1]}\n".encode())
    h.update(arr.data)
    return h.hexdigest()


def _grey(rgb: np.ndarray) -> Image.Image:
    """Float greyscale ("F") image, so that resizing does not round to 8 bits first."""
    luma = rgb.astype(np.float32) @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    return Image.fromarray(np.ascontiguousarray(luma))


def _bits_to_int(bits: np.ndarray) -> int:
    """64 booleans (first = most significant) as an int in [0, 2**64)."""
    return sum(w for w, b in zip(_BIT_WEIGHTS, bits.ravel().tolist(), strict=True) if b)


def _resize(grey: Image.Image, size: tuple[int, int]) -> np.ndarray:
    # reducing_gap: box-reduce by an integer factor first, then Lanczos; ~4x faster than a
    # full Lanczos from 256 px and still antialiased.
    return np.asarray(grey.resize(size, Image.Resampling.LANCZOS, reducing_gap=2.0), np.float64)


def _phash_grey(grey: Image.Image) -> int:
    low = _DCT @ _resize(grey, (_PHASH_SIZE, _PHASH_SIZE)) @ _DCT.T
    return _bits_to_int(low > np.median(low))


def _dhash_grey(grey: Image.Image) -> int:
    small = _resize(grey, (9, 8))
    return _bits_to_int(small[:, 1:] > small[:, :-1])


def phash(rgb: np.ndarray) -> int:
    """64-bit DCT perceptual hash of an (h, w, 3) uint8 image (module docstring)."""
    return _phash_grey(_grey(rgb))


def dhash(rgb: np.ndarray) -> int:
    """64-bit difference hash: is each pixel of a 9x8 greyscale resize darker than its right
    neighbour (row-major, first = most significant bit)."""
    return _dhash_grey(_grey(rgb))


def image_hash(path: Path | str) -> dict[str, Any]:
    """``path``, ``pixel_sha256``, ``phash``, ``dhash``, ``width``, ``height`` of one image."""
    path = Path(path)
    rgb = _load_rgb(path)
    if rgb.shape[0] == 0 or rgb.shape[1] == 0:
        raise RsmEvalError(f"{path}: image has no pixels ({rgb.shape[1]}x{rgb.shape[0]})")
    grey = _grey(rgb)
    return {
        "path": str(path),
        "pixel_sha256": pixel_sha256(rgb),
        "phash": _phash_grey(grey),
        "dhash": _dhash_grey(grey),
        "width": int(rgb.shape[1]),
        "height": int(rgb.shape[0]),
    }


def image_hashes(paths: Iterable[Path | str], *, threads: int = 4) -> list[dict[str, Any]]:
    """:func:`image_hash` of each path, in input order; decoding runs on ``threads`` threads."""
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise RsmEvalError(f"threads: expected a positive int, got {threads!r}")
    paths = list(paths)
    if threads == 1 or len(paths) < 2:
        return [image_hash(p) for p in paths]
    with ThreadPoolExecutor(max_workers=threads) as pool:
        return list(pool.map(image_hash, paths))


def thumbnail_data_uri(path: Path | str, size: int = 64) -> str:
    """A PNG ``data:`` URI of the image shrunk to fit ``size`` x ``size`` (aspect kept)."""
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise RsmEvalError(f"size: expected a positive int, got {size!r}")
    img = Image.fromarray(_load_rgb(Path(path)))
    img.thumbnail((size, size), Image.Resampling.LANCZOS)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")
