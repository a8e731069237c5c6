"""Embedding stage: image and caption features of one split, computed once, cached by content.

Only rows the feature store lacks are computed: an image is keyed by its file's sha256, a
caption by the sha256 of its text, both under the model's address, so identical captions
are embedded once, renamed images are not embedded again, and a new checkpoint with old bytes
finds its old features. Results are committed in chunks as they are computed, so an
interrupted job resumes where it stopped. The forward pass is fp32 without autocast, as the
published protocol is.

Speed. Images are decoded and preprocessed by DataLoader workers (`workers`), pinned and
copied asynchronously when the device is CUDA, and results are fetched one batch late so the
device does not wait for the host. Captions are tokenized by window (in workers as well),
sorted by token length within a window, and run through `encode_text_trimmed`, which cuts each
batch to its longest caption instead of CLIP's full 77-token context: the same embeddings, at a
fraction of the cost for remote-sensing captions (typically 10-30 tokens).
"""

# The private names are the building blocks other stages reuse (localize's crops and
# captions) and tests and benchmarks drive directly.
from .batches import Progress, _ChunkWriter, _embed_images, _ImageFiles, _run_batches
from .cached import FeatureRun, embed_image_files, embed_texts
from .stage import EmbedResult, embed_split, read_features
from .text import (
    TEXT_WINDOW_BATCHES,
    _embed_texts,
    _text_batches,
    can_trim_text,
    encode_text_trimmed,
    text_key,
    text_window,
    trimmed_length,
)

__all__ = [
    "TEXT_WINDOW_BATCHES",
    "EmbedResult",
    "FeatureRun",
    "Progress",
    "_ChunkWriter",
    "_ImageFiles",
    "_embed_images",
    "_embed_texts",
    "_run_batches",
    "_text_batches",
    "can_trim_text",
    "embed_image_files",
    "embed_split",
    "embed_texts",
    "encode_text_trimmed",
    "read_features",
    "text_key",
    "text_window",
    "trimmed_length",
]
