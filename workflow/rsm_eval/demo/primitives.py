"""Drawing primitives shared by the scene drawers, and the image codec of the demo files."""

from __future__ import annotations

import io
import math
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

SIZE = 128
"""Edge length in pixels of every generated image."""

JPEG_QUALITY = 90
# Near duplicates are re-encoded at a lower quality, so their bytes always differ.
NEAR_JPEG_QUALITY = 75

Rgb = tuple[int, int, int]
Attrs = dict[str, Any]
"""A scene's attributes: what its drawer draws and its captioner describes."""

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


def jit(rgb: Rgb, rng: np.random.Generator, amount: int = 12) -> Rgb:
    """Jitter a colour so that no two scenes share exact tones."""
    shift = rng.integers(-amount, amount + 1, size=3)
    return tuple(int(v) for v in np.clip(np.asarray(rgb) + shift, 0, 255))


def shade(rgb: Rgb, delta: int) -> Rgb:
    return tuple(int(min(255, max(0, v + delta))) for v in rgb)


def canvas(rgb: Rgb, size: int = SIZE) -> tuple[Image.Image, ImageDraw.ImageDraw]:
    img = Image.new("RGB", (size, size), rgb)
    return img, ImageDraw.Draw(img)


def orient(img: Image.Image, orientation: str) -> Image.Image:
    """Turn a scene drawn with horizontal structure into the requested orientation."""
    if orientation == "vertical":
        return img.transpose(Image.Transpose.TRANSPOSE)
    if orientation == "diagonal":
        # Drawn on an oversized canvas, so the rotated crop has no empty corners.
        offset = (img.width - SIZE) // 2
        rotated = img.rotate(45, resample=Image.Resampling.BILINEAR)
        return rotated.crop((offset, offset, offset + SIZE, offset + SIZE))
    return img


def big(orientation: str) -> int:
    """Canvas size needed to draw a scene before :func:`orient`."""
    return int(math.ceil(SIZE * math.sqrt(2))) + 2 if orientation == "diagonal" else SIZE


def texture(img: Image.Image, rng: np.random.Generator, grain: float, mottle: float) -> np.ndarray:
    """Add low-frequency mottling and per-pixel grain, like sensor noise on real imagery."""
    arr = np.asarray(img, dtype=np.float32)
    low = Image.fromarray(rng.normal(0.0, mottle, (8, 8)).astype(np.float32), mode="F")
    low_arr = np.asarray(low.resize((SIZE, SIZE), Image.Resampling.BILINEAR))
    arr = arr + low_arr[..., None] + rng.normal(0.0, grain, arr.shape)
    return np.clip(np.rint(arr), 0, 255).astype(np.uint8)


def wave(length: int, rng: np.random.Generator, amp: float, period: tuple[int, int]) -> np.ndarray:
    phase = rng.uniform(0, 2 * math.pi)
    lam = rng.uniform(*period)
    return amp * np.sin(2 * math.pi * np.arange(length) / lam + phase)


def encode(pixels: np.ndarray, ext: str, quality: int = JPEG_QUALITY) -> bytes:
    buf = io.BytesIO()
    img = Image.fromarray(pixels, mode="RGB")
    if ext == ".jpg":
        img.save(buf, format="JPEG", quality=quality)
    else:
        img.save(buf, format="TIFF")  # PIL writes uncompressed TIFF without a timestamp
    return buf.getvalue()


def decode(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as img:
        return np.asarray(img.convert("RGB"))
