"""Text context trimming: the trimmed text tower equals open_clip's own `encode_text`.

`encode_text_trimmed` cuts a batch of token ids to its longest caption; CLIP's text tower is
causal and pools at the end-of-text token, so the result must equal the full 77-token
`encode_text` up to float rounding, and anything that is not a plain argmax-pooled causal
`open_clip.model.CLIP` must go through the model's own method.

Tolerance: 1e-6, max abs, on the embeddings as the stage stores them (L2-normalised). The raw
outputs (entries up to ~3 for these random models) are compared relative to their largest
entry: float32 GEMMs of different shapes (and, with MKL, different memory alignment) round
differently, by a few ulps, even for the same length; a wrong mask, position or pooling index
would differ by O(1).
"""

from __future__ import annotations

import json

import numpy as np
import open_clip
import pytest
import torch
from conftest import TINY_ARCH
from rsm_eval import embeddings, models
from rsm_eval.config import Model
from rsm_eval.featstore import FeatureStore

TOL = 1e-6  # max abs, L2-normalised embeddings
RAW_RTOL = 1e-5  # max abs / max |full|, raw encode_text outputs

# Varying lengths in one batch: 1 word, typical captions, and one longer than the context
# (truncated by the tokenizer to exactly 77 tokens, end-of-text in the last position).
CAPTIONS = [
    "pond",
    "many buildings and some green trees are around a playground .",
    "two planes are parked near the terminal of an airport with several runways and some "
    "grey buildings beside a large parking lot .",
    " ".join(["dense residential area with red roofs"] * 20),
    "a river crosses the farmland",
    "",
]


@pytest.fixture(scope="module")
def tiny():
    return models.build(Model(name="tiny", arch=str(TINY_ARCH), random=0))


@pytest.fixture(scope="module")
def vit_b32():
    """ViT-B-32-quickgelu, randomly initialised (no download); only its text tower is used."""
    torch.manual_seed(0)
    model = open_clip.create_model("ViT-B-32-quickgelu", pretrained=None).eval()
    return model, open_clip.get_tokenizer("ViT-B-32-quickgelu")


def _max_abs(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max())


def _assert_same(trimmed: torch.Tensor, full: torch.Tensor) -> None:
    assert trimmed.shape == full.shape
    assert float(full.abs().max()) > 0.1  # not a degenerate comparison
    normalize = torch.nn.functional.normalize
    assert _max_abs(normalize(trimmed, dim=-1), normalize(full, dim=-1)) <= TOL
    assert _max_abs(trimmed, full) <= RAW_RTOL * float(full.abs().max())


def test_tokenizer_assumptions(tiny):
    tokens = tiny.tokenizer(CAPTIONS)
    eot = tokens.argmax(dim=-1)
    assert tokens.shape == (len(CAPTIONS), 77)
    assert int(eot[3]) == 76  # the long caption reaches the 77-token limit
    assert int(eot[0]) == 2  # start, "pond", end
    assert embeddings.trimmed_length(tokens) == 77
    assert embeddings.trimmed_length(tokens[[0, 1, 4]]) == int(eot[[0, 1, 4]].max()) + 1


@pytest.mark.parametrize("rows", [[0, 1, 2, 4, 5], [0, 1, 2, 3, 4, 5], [3], [0], [5, 0]])
def test_trimmed_equals_full_on_tiny_model(tiny, rows):
    assert embeddings.can_trim_text(tiny.model)
    tokens = tiny.tokenizer([CAPTIONS[i] for i in rows])
    with torch.inference_mode():
        full = tiny.model.encode_text(tokens)
        trimmed = embeddings.encode_text_trimmed(tiny.model, tokens)
    _assert_same(trimmed, full)


def test_trimmed_equals_full_on_vit_b32_text_tower(vit_b32):
    model, tokenizer = vit_b32
    assert embeddings.can_trim_text(model)
    tokens = tokenizer(CAPTIONS)
    short = tokenizer([CAPTIONS[i] for i in (0, 1, 2, 4)])
    with torch.inference_mode():
        _assert_same(embeddings.encode_text_trimmed(model, tokens), model.encode_text(tokens))
        full = model.encode_text(short)
        _assert_same(embeddings.encode_text_trimmed(model, short), full)
        # Cut on the host already (as the embedding stage does): the same numbers.
        cut = short[:, : embeddings.trimmed_length(short)]
        assert cut.shape[1] < 40
        _assert_same(embeddings.encode_text_trimmed(model, cut), full)


def test_trimmed_batch_first_false(tiny):
    """open_clip's Transformer also runs sequence-first; the 2-D mask serves both layouts."""
    tokens = tiny.tokenizer(CAPTIONS)
    model = tiny.model
    try:
        model.transformer.batch_first = False
        for block in model.transformer.resblocks:
            block.attn.batch_first = False
        with torch.inference_mode():
            full = model.encode_text(tokens)
            trimmed = embeddings.encode_text_trimmed(model, tokens[[0, 1, 4]])
        _assert_same(trimmed, full[[0, 1, 4]])
    finally:
        model.transformer.batch_first = True
        for block in model.transformer.resblocks:
            block.attn.batch_first = True


class _Recorder(open_clip.model.CLIP):
    """A CLIP subclass (may override anything): must get its own encode_text called."""

    calls = 0

    def encode_text(self, text, normalize: bool = False):
        type(self).calls += 1
        return super().encode_text(text, normalize)


def _tiny_cfg(**text_overrides) -> dict:
    cfg = json.loads(TINY_ARCH.read_text())
    cfg["text_cfg"].update(text_overrides)
    return cfg


def test_fallback_subclass_uses_own_encode_text():
    torch.manual_seed(0)
    model = _Recorder(**_tiny_cfg()).eval()
    tokens = open_clip.get_tokenizer("ViT-B-32")(CAPTIONS[:3])
    assert not embeddings.can_trim_text(model)
    with torch.inference_mode():
        out = embeddings.encode_text_trimmed(model, tokens)
        ref = open_clip.model.CLIP.encode_text(model, tokens)
    assert _Recorder.calls == 1
    assert torch.equal(out, ref)


@pytest.mark.parametrize(
    "overrides",
    [{"no_causal_mask": True}, {"pool_type": "last"}, {"pool_type": "first"}],
    ids=["bidirectional", "pool-last", "pool-first"],
)
def test_fallback_non_causal_or_other_pooling(overrides, monkeypatch):
    torch.manual_seed(0)
    model = open_clip.model.CLIP(**_tiny_cfg(**overrides)).eval()
    tokens = open_clip.get_tokenizer("ViT-B-32")(CAPTIONS[:3])
    assert not embeddings.can_trim_text(model)
    calls = []
    original = model.encode_text
    monkeypatch.setattr(model, "encode_text", lambda t: calls.append(t.shape) or original(t))
    with torch.inference_mode():
        out = embeddings.encode_text_trimmed(model, tokens)
    assert calls == [tokens.shape]  # the full 77-token batch, untouched
    with torch.inference_mode():
        assert torch.equal(out, original(tokens))


def test_fallback_modified_mask_and_foreign_model(tiny):
    model = open_clip.model.CLIP(**_tiny_cfg()).eval()
    model.attn_mask = torch.zeros_like(model.attn_mask)  # no longer causal
    assert not embeddings.can_trim_text(model)

    class Foreign(torch.nn.Module):
        def encode_text(self, text):
            return text.float()[:, :4]

    tokens = tiny.tokenizer(CAPTIONS[:2])
    assert not embeddings.can_trim_text(Foreign())
    assert torch.equal(embeddings.encode_text_trimmed(Foreign(), tokens), tokens.float()[:, :4])
    # Forcing trim=False on a trimmable model is the model's own method.
    with torch.inference_mode():
        out = embeddings.encode_text_trimmed(tiny.model, tokens, trim=False)
        assert torch.equal(out, tiny.model.encode_text(tokens))


@pytest.mark.parametrize("workers", [0, 2])
def test_embedding_stage_sorts_trims_and_matches_full(tiny, tmp_path, workers):
    """The stage (windows, length sort, per-batch cut, chunked commits) stores, for every
    caption, the normalised full-context embedding."""
    rng = np.random.default_rng(0)
    words = [
        "the",
        "a",
        "many",
        "green",
        "trees",
        "buildings",
        "river",
        "road",
        "near",
        "beside",
        "large",
        "small",
    ]
    texts = [" ".join(rng.choice(words, size=int(n))) for n in rng.integers(1, 40, size=45)]
    texts += [CAPTIONS[3], CAPTIONS[5]]
    keys = [embeddings.text_key(f"{i}:{t}") for i, t in enumerate(texts)]
    store = FeatureStore(tmp_path / "cache", "addr", "text")
    writer = embeddings._ChunkWriter(store, len(keys), chunk_rows=10, what="captions")
    embeddings._embed_texts(
        tiny, texts, keys, writer, "cpu", batch_size=4, workers=workers, autocast=False, window=16
    )
    feats, bad = store.fetch(keys)
    assert not bad
    with torch.inference_mode():
        ref = torch.nn.functional.normalize(tiny.model.encode_text(tiny.tokenizer(texts)), dim=-1)
    assert np.abs(feats - ref.numpy()).max() <= TOL


def test_sorted_batches_are_homogeneous(tiny):
    texts = [" ".join(["word"] * n) for n in (30, 1, 12, 2, 29, 13, 1, 30)]
    keys = [str(i) for i in range(len(texts))]
    windows = [tiny.tokenizer(texts[:4]), tiny.tokenizer(texts[4:])]
    batches = list(embeddings._text_batches(windows, keys, 4, 2, trim=True))
    assert [b[0] for b in batches] == [["1", "3"], ["2", "0"], ["6", "5"], ["4", "7"]]
    assert [b[1].shape[1] for b in batches] == [4, 32, 15, 32]
    untrimmed = list(embeddings._text_batches(windows, keys, 4, 2, trim=False))
    assert [b[0] for b in untrimmed] == [["0", "1"], ["2", "3"], ["4", "5"], ["6", "7"]]
    assert {b[1].shape[1] for b in untrimmed} == {77}
