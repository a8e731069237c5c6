"""Test-set leakage audit: which test images also occur, exactly or nearly, in training data.

Three signals, from strict to loose:

* **Exact**: the same decoded picture. ``pixel_sha256`` is the sha256 of the image's shape
  and its decoded 8-bit RGB pixels (``PIL.Image.convert("RGB")``, first frame), not of the
  file bytes: two TIFFs that differ only in metadata or compression are exact duplicates,
  while a picture re-encoded as JPEG is not (its pixels changed).
* **Near**: a perceptual hash within ``max_hamming`` bits. ``phash`` is a 64-bit DCT hash:
  greyscale (ITU-R 601 luma, float), resized to 32x32 (Lanczos, antialiased), 2-D DCT-II,
  the 8x8 lowest frequencies compared with their median, bit 63 = coefficient (0, 0),
  row-major. It survives brightness shifts, re-encoding and mild resampling, not rotation
  or cropping. ``dhash`` (64-bit gradient hash on a 9x8 resize) is a second, independent
  opinion available through ``max_dhash``.
* **Confirmed**: near pairs whose image embeddings (supplied by the caller) have cosine
  similarity >= ``threshold``. Flat, featureless images (sea, desert) have unstable hashes
  and can collide; the embedding check removes such false alarms.

Scale: comparing hashes is a blocked brute force, XOR plus popcount over the full
(n_test x n_train) grid in tiles of at most ``_TILE`` pairs, so time is O(n_test * n_train)
word operations and memory O(tile): 2k x 200k takes about 0.7 s of XOR/popcount plus
0.5-1 s of input validation on one CPU core, with ~70 MB peak. Multi-index hashing would
only pay off at tens of millions of training images. Decoding the images dominates
(~2 ms per 256 px TIFF); callers should cache hashes by file sha256.
"""

from .confirm import audit, confirm, confirm_with_model
from .images import dhash, image_hash, image_hashes, phash, pixel_sha256, thumbnail_data_uri
from .pairs import find_duplicates
from .stage import audit_sources, gather_hashes, hash_dataset, leaked_images

__all__ = [
    "audit",
    "audit_sources",
    "confirm",
    "confirm_with_model",
    "dhash",
    "find_duplicates",
    "gather_hashes",
    "hash_dataset",
    "image_hash",
    "image_hashes",
    "leaked_images",
    "phash",
    "pixel_sha256",
    "thumbnail_data_uri",
]
