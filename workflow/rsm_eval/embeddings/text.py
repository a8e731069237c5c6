"""Caption embedding: tokenizing in windows, sorting by length, and cutting each batch to
its longest caption (text context trimming, below)."""

from __future__ import annotations

from typing import Any

from .. import cas, models
from .batches import _autocast, _ChunkWriter, _run_batches

# ------------------------------------------------------------------ text context trimming
#
# CLIP's text tower is causal and, in open_clip's CLIP with `text_pool_type == "argmax"`,
# pools the output at the end-of-text token (the largest token id). Under a causal mask a
# position never attends to a later one, so the tokens after the end-of-text token of the
# longest caption in a batch cannot change any pooled output: cutting the batch to that length
# computes the same function. Only the floating-point summation order changes (matrix shapes
# differ), by ~1e-7; tests/test_text_trim.py checks trimmed == full within 1e-6 on the demo
# model and on ViT-B-32's text tower. This is why trimming does NOT bump
# models.FEATURE_VERSION: the features are the same function of the caption, and features
# cached before trimming remain valid.


def can_trim_text(model: Any) -> bool:
    """Whether `encode_text_trimmed` may cut the context of `model`'s text tower.

    True only for a plain `open_clip.model.CLIP` (not a subclass, not CustomTextCLIP or CoCa)
    with argmax pooling, an open_clip `Transformer` text tower and a 2-D causal mask covering
    the positional embedding; everything else uses the model's own `encode_text`.
    """
    import torch
    from open_clip.model import CLIP
    from open_clip.transformer import Transformer

    if type(model) is not CLIP or getattr(model, "text_pool_type", None) != "argmax":
        return False
    if not isinstance(model.transformer, Transformer):
        return False
    mask = getattr(model, "attn_mask", None)
    pos = getattr(model, "positional_embedding", None)
    if not isinstance(mask, torch.Tensor) or not isinstance(pos, torch.Tensor) or pos.ndim != 2:
        return False
    n = pos.shape[0]
    if mask.ndim != 2 or tuple(mask.shape) != (n, n):
        return False
    causal = torch.full((n, n), float("-inf"), dtype=mask.dtype, device=mask.device).triu_(1)
    return bool(torch.equal(mask, causal))


def trimmed_length(tokens: Any) -> int:
    """1 + the largest end-of-text (argmax) position in a (batch, context) token batch."""
    if tokens.shape[0] == 0:
        return int(tokens.shape[1])
    return int(tokens.argmax(dim=-1).max()) + 1


def _encode_text_cut(model: Any, text: Any) -> Any:
    """open_clip 3.3.0's `CLIP.encode_text`, step by step, on a batch whose width may be less
    than the context (at least `trimmed_length(text)`; `can_trim_text(model)` must hold)."""
    from open_clip.transformer import text_global_pool
    from torch import nn

    length = text.shape[1]
    cast_dtype = model.transformer.get_cast_dtype()
    x = model.token_embedding(text).to(cast_dtype)  # [batch, length, width]
    x = x + model.positional_embedding[:length].to(cast_dtype)
    # The transformer transposes for batch_first=False itself; a 2-D (L, L) mask serves both.
    x = model.transformer(x, attn_mask=model.attn_mask[:length, :length].contiguous())
    x = model.ln_final(x)  # [batch, length, width]
    x = text_global_pool(x, text, model.text_pool_type, eos_token_id=model.text_eos_id)
    if model.text_projection is not None:
        if isinstance(model.text_projection, nn.Linear):
            x = model.text_projection(x)
        else:
            x = x @ model.text_projection
    return x


def encode_text_trimmed(model: Any, tokens: Any, *, trim: bool | None = None) -> Any:
    """`model.encode_text(tokens)`, computed on the batch cut to its longest caption.

    Reproduces open_clip 3.3.0's `CLIP.encode_text` (token embedding, positional embedding,
    transformer with the causal mask, ln_final, argmax pooling, text projection) on the first
    `trimmed_length(tokens)` positions. `tokens` may already be cut to any width that keeps
    every end-of-text token. `trim` is `can_trim_text(model)` (computed when None); when it
    is False, or the tokens are not a (batch, width <= context) matrix, this is exactly
    `model.encode_text(tokens)`.
    """
    if trim is None:
        trim = can_trim_text(model)
    if not trim or tokens.ndim != 2 or tokens.shape[1] > model.positional_embedding.shape[0]:
        return model.encode_text(tokens)
    return _encode_text_cut(model, tokens[:, : trimmed_length(tokens)])


class _TokenWindows:
    """Map-style dataset: window i -> token ids (LongTensor) of texts[i*size:(i+1)*size].

    Tokenizing is pure Python (~0.1 ms a caption); served by DataLoader workers it overlaps
    with the forward pass instead of preceding it."""

    def __init__(self, texts: list[str], tokenizer: Any, size: int):
        self.texts, self.tokenizer, self.size = texts, tokenizer, size

    def __len__(self) -> int:
        return -(-len(self.texts) // self.size)

    def __getitem__(self, i: int):
        return self.tokenizer(self.texts[i * self.size : (i + 1) * self.size])


def _text_batches(windows, keys: list[str], window: int, batch_size: int, trim: bool):
    """(keys, tokens) batches in window order; with `trim`, each window is sorted by token
    length (stable) so that batches are homogeneous, and each batch is cut to its longest
    caption here, on the host, before it is copied to the device."""
    import torch

    for w, tokens in enumerate(windows):
        wkeys = keys[w * window : w * window + len(tokens)]
        if trim:
            order = torch.argsort(tokens.argmax(dim=-1), stable=True)
            tokens = tokens[order]
            wkeys = [wkeys[i] for i in order.tolist()]
        for s in range(0, len(wkeys), batch_size):
            batch = tokens[s : s + batch_size]
            if trim:
                batch = batch[:, : trimmed_length(batch)]
            yield wkeys[s : s + batch_size], batch


def _embed_texts(
    loaded: models.Loaded,
    texts: list[str],
    keys: list[str],
    writer: _ChunkWriter,
    device: str,
    batch_size: int,
    workers: int,
    autocast: bool,
    window: int | None = None,
) -> None:
    import torch

    model = loaded.model
    trim = can_trim_text(model)
    window = max(window or text_window(batch_size), batch_size)
    windows = torch.utils.data.DataLoader(
        _TokenWindows(texts, loaded.tokenizer, window),
        batch_size=None,
        num_workers=min(workers, -(-len(texts) // window)),
    )

    def encode(tokens):
        tokens = tokens.to(device, non_blocking=True)
        return _encode_text_cut(model, tokens) if trim else loaded.encode_text(tokens)

    with torch.inference_mode(), _autocast(device, autocast):
        batches = _text_batches(windows, keys, window, batch_size, trim)
        _run_batches(batches, encode, writer, device, "captions", workers)


TEXT_WINDOW_BATCHES = 32


def text_window(batch_size: int) -> int:
    """Captions tokenized, sorted by length and batched together: 32 batches. A shard of a
    split takes whole windows (shards.take), so its batches are the unsharded job's."""
    return TEXT_WINDOW_BATCHES * batch_size


def text_key(caption: str, prefix: str = "") -> str:
    """Feature-store key of a caption as embedded (with the protocol's prefix, if any)."""
    return cas.sha256_text(prefix + caption)
